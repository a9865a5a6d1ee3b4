"""Ship the ICE models trained by configs/ice/run_protocol.sh into the registry (LossLab/losslab/models/).

Usage (from the repository root):
    python configs/ice/ship_models.py docs/ice-results/atrium64

For each model: a slim checkpoint (weights, model_info, the training's history and config with paths made
relative to the repository) written as ``<registry>/<name>/model.pt``, and a card ``model.json`` (task, grid,
inputs, sigma, training data and command, date, metrics, sha256) written by
:func:`losslab.models.register_model`. Every figure is read from the JSONs that ``losslab ice evaluate`` wrote
into the results folder (never typed in): the ideal-user protocol on the held-out shape families
(``ideal-phantom``, and ``ideal-real`` when real masks were evaluated) and Table 1 / Fig. 3 on the held-out
phantom cases (``table1-phantom``, ``table1-phantom-edited``); the segmentation model's Dice and HD95 on the
training family's test split are computed here, those on the held-out families come from the ideal JSONs.
"""

from __future__ import annotations

import datetime
import json
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "LossLab"))

from losslab import models  # noqa: E402
from losslab.engine.checkpoint import load_checkpoint, save_checkpoint  # noqa: E402
from losslab.engine.inference import load_predictor  # noqa: E402
from losslab.ice import dataset_cases, read_case  # noqa: E402
from losslab.metrics import hd95  # noqa: E402
from losslab.metrics.overlap import dice_score  # noqa: E402

RUNS = ROOT / "losslab-output" / "ice64-runs"
DATA = ROOT / "losslab-output" / "ice64-atrium"
GRID = {"size": [64, 64, 64], "spacing_mm": [2.2048, 2.2048, 2.2048]}
DATA_COMMAND = (
    "losslab ice simulate losslab-output/ice64-atrium --cases 400 --size 64 --spacing 2.2048 --seed 0"
)
SHIPPED = {
    "ice-segmentation-64": ("segmentation", "losslab train configs/ice/segmentation-64.json"),
    "ice-editing-64": ("editing", "losslab ice train configs/ice/editing-64.json"),
    "ice-editing-ce-64": ("ce", "losslab ice train configs/ice/ce-64.json"),
}
TASKS = {
    "segmentation": "ICE left-atrium segmentation (the source of y_init), sparse ICE volume x",
    "editing": "ICE segmentation editing f(x, y_init, u), editing loss (ice-editing-shahin2023 eqs. 1-3)",
    "ce": "ICE segmentation editing f(x, y_init, u), CE loss on y (the paper's baseline)",
}
FAMILIES = {
    "phantom": "the earlier phantom family (losslab ice simulate --prior phantom, seeds 85-99: the test split)",
    "real": "20 real left atria (2018 Atrial Segmentation Challenge LGE-MRI masks, evaluation only; docs/ice.md)",
}


def _relative(value):
    if isinstance(value, dict):
        return {k: _relative(v) for k, v in value.items()}
    if isinstance(value, str) and value.startswith(str(ROOT)):
        return str(Path(value).relative_to(ROOT))
    return value


def segmentation_metrics(path: Path) -> dict:
    """Dice and HD95 of the segmentation model on the training family's held-out test split."""
    predictor = load_predictor(path, device="cpu")
    dice, hd = [], []
    for folder in dataset_cases(DATA / "dataset.json", "test").values():
        case = read_case(folder)
        pred = np.asarray(predictor.predict(case.image[None]).labels) == 1
        dice.append(dice_score(pred, case.label != 0))
        hd.append(hd95(pred, case.label != 0, case.spacing))
    return {
        "dice_mean": float(np.mean(dice)),
        "dice_min": float(np.min(dice)),
        "hd95_mean_mm": float(np.mean(hd)),
        "cases": len(dice),
    }


def _ideal_rows(ideal: dict, method: str) -> dict:
    """The ideal-user figures of one model, per start and condition (from ideal.json's summary)."""
    keys = (
        "start_dice",
        "final_dice",
        "final_dice_min",
        "final_minus_start_min",
        "worst_step_dice_change",
        "harmful_edits",
        "edits",
        "changed_far_total",
    )
    out = {}
    for start, by_model in ideal["summary"]["starts"].items():
        out[start] = {c: {k: row[k] for k in keys} for c, row in by_model[method].items()}
        out[start]["clean"]["dice_per_edit"] = by_model[method]["clean"]["dice"]
    return out


def main(results: str) -> None:
    results = Path(results)
    read = lambda name, file: json.loads((results / name / file).read_text())  # noqa: E731
    ideal = {f: read(f"ideal-{f}", "ideal.json") for f in FAMILIES if (results / f"ideal-{f}").is_dir()}
    table1 = read("table1-phantom", "evaluation.json")
    edited = read("table1-phantom-edited", "evaluation.json")
    if edited["settings"].get("metric_contours") != "edited":
        sys.exit(f"{results / 'table1-phantom-edited'}: not an evaluation with --metric-contours edited")
    today = datetime.date.today().isoformat()
    for name, (method, command) in SHIPPED.items():
        state = load_checkpoint(RUNS / method / "model.pt")
        folder = models.registry_root() / name
        folder.mkdir(parents=True, exist_ok=True)
        slim = {
            "model": state["model"],
            "model_info": state["model_info"],
            "epoch": state["epoch"],
            "history": state["history"],
            "config": _relative(state["config"]),
        }
        save_checkpoint(folder / "model.pt", slim)
        info = state["model_info"]
        card = {
            "name": name,
            "task": TASKS[method],
            "format": "losslab-engine",
            "entry": "model.pt",
            "grid": GRID,
            "labels": info["labels"],
            "inputs": info["channel_names"],
            "network": info["network"],
            "training": {
                "data": DATA_COMMAND + " (atria of the wide prior; train split: 280 cases; val: 60)",
                "command": command,
                "protocol": "configs/ice/run_protocol.sh",
                "epochs": int(state["epoch"]),
                "wall_time_s": round(sum(h.get("time_s", 0.0) for h in state["history"]), 1),
                "date": today,
            },
            "held_out_families": {f: FAMILIES[f] for f in ideal},
        }
        if method == "segmentation":
            card["metrics"] = {
                "summary": {
                    "held_out_family_dice": {
                        f: round(ideal[f]["summary"]["segmentation"]["dice_mean"], 3) for f in ideal
                    }
                },
                "training_family_test": segmentation_metrics(folder / "model.pt"),
                "held_out": {f: ideal[f]["summary"]["segmentation"] for f in ideal},
            }
            card["evaluation"] = (
                "Dice / HD95 to y on the test split of the training family (60 atria, seeds 340-399) and on the "
                "held-out families (held_out_families; from docs/ice-results/atrium64/ideal-*/ideal.json)"
            )
        else:
            card["sigma_mm"] = info["ice"]["sigma_mm"]
            card["training"]["method"] = method
            card["training"]["initial"] = (
                "prediction of ice-segmentation-64 (cached per case); 30 % of the starts y perturbed "
                "(initial.perturb_fraction); own-output sequences of 4 edits (sequence.length)"
            )
            card["evaluation"] = (
                "losslab ice evaluate on the held-out families (docs/ice-results/atrium64): the ideal-user "
                "protocol (ideal-*), Table 1 / Fig. 3 on the phantom test cases (table1-phantom, "
                "table1-phantom-edited), y_init from ice-segmentation-64"
            )
            card["metrics"] = {
                "ideal_user": {f: _ideal_rows(ideal[f], method) for f in ideal},
                "table1_phantom_p95_mm": table1["table1"][method],
                "table1_phantom_edited_contour_p95_mm": edited["table1"][method],
                "table1_phantom_y_init_unchanged_p95_mm": table1["unchanged"],
                "no_editing_phantom_p95_mm": table1["table1"]["no_editing"]["overall"],
                "sequential_phantom_p95_mm": table1["sequential"][method],
                "first_edit_drift_phantom_mm": table1["first_edit_drift"][method],
            }
        models.register_model(folder, card, files=["model.pt"])
        print(f"{name}: {folder} ({(folder / 'model.pt').stat().st_size / 1e6:.1f} MB)")


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit(__doc__.split("\n\n")[1])
    main(sys.argv[1])
