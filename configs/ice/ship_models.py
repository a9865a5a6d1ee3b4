"""Ship the ICE models trained by configs/ice/run_protocol.sh into the registry (LossLab/losslab/models/).

Usage (from the repository root):
    python configs/ice/ship_models.py docs/ice-results/64/evaluation.json [docs/ice-results/64-edited/evaluation.json]

For each model: a slim checkpoint (weights, model_info, the training's history and config with paths made
relative to the repository) written as ``<registry>/<name>/model.pt``, and a card ``model.json`` (task, grid,
inputs, sigma, training data and command, date, held-out metrics, sha256) written by
:func:`losslab.models.register_model`. The editing models' metrics are read from the JSON of
``losslab ice evaluate`` on the held-out test split (never typed in; the optional second JSON, of
``--metric-contours edited``, adds Table 1 with y_cas = the edited contour); the segmentation model's (Dice and the
p95 distance from the CAS contours to its prediction) are computed here on the same test cases.
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
from losslab.metrics.editing import contour_distance  # noqa: E402
from losslab.metrics.overlap import dice_score  # noqa: E402

RUNS = ROOT / "losslab-output" / "ice64-runs"
DATA = ROOT / "losslab-output" / "ice64"
GRID = {"size": [64, 64, 64], "spacing_mm": [2.2048, 2.2048, 2.2048]}
DATA_COMMAND = "losslab ice simulate losslab-output/ice64 --cases 100 --size 64 --spacing 2.2048 --seed 0"
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


def _relative(value):
    if isinstance(value, dict):
        return {k: _relative(v) for k, v in value.items()}
    if isinstance(value, str) and value.startswith(str(ROOT)):
        return str(Path(value).relative_to(ROOT))
    return value


def segmentation_metrics(path: Path) -> dict:
    predictor = load_predictor(path, device="cpu")
    dice, cas = [], []
    for folder in dataset_cases(DATA / "dataset.json", "test").values():
        case = read_case(folder)
        pred = np.asarray(predictor.predict(case.image[None]).labels) == 1
        dice.append(dice_score(pred, case.label != 0))
        cas.append(contour_distance(case.cas_mask(), pred, case.spacing)["p95"])
    return {
        "summary": {"mean_dice": round(100 * float(np.mean(dice)), 2)},
        "dice_mean": float(np.mean(dice)),
        "cas_to_prediction_p95_mm_mean": float(np.mean(cas)),
        "cases": len(dice),
    }


def main(evaluation_json: str, edited_json: str | None = None) -> None:
    evaluation = json.loads(Path(evaluation_json).read_text())
    edited = json.loads(Path(edited_json).read_text()) if edited_json else None
    if edited is not None and edited["settings"].get("metric_contours") != "edited":
        sys.exit(f"{edited_json}: not an evaluation with --metric-contours edited")
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
                "data": DATA_COMMAND + " (train split: 70 cases; val: 15)",
                "command": command,
                "protocol": "configs/ice/run_protocol.sh",
                "epochs": int(state["epoch"]),
                "wall_time_s": round(sum(h.get("time_s", 0.0) for h in state["history"]), 1),
                "date": today,
            },
        }
        if method == "segmentation":
            card["metrics"] = segmentation_metrics(folder / "model.pt")
            card["evaluation"] = (
                "the 15 test cases of losslab-output/ice64 (seeds 85-99), never seen in training"
            )
        else:
            card["sigma_mm"] = info["ice"]["sigma_mm"]
            card["training"]["method"] = method
            card["training"]["initial"] = "prediction of ice-segmentation-64 (cached per case)"
            card["evaluation"] = (
                f"losslab ice evaluate on the {len(evaluation['cases'])} held-out test cases of losslab-output/ice64 "
                "(seeds 85-99; docs/ice-results/64/evaluation.json), y_init from ice-segmentation-64"
            )
            card["metrics"] = {
                "table1_p95_mm": evaluation["table1"][method],
                "table1_y_init_unchanged_p95_mm": evaluation["unchanged"],
                "no_editing_p95_mm": evaluation["table1"]["no_editing"]["overall"],
                "sequential_p95_mm": evaluation["sequential"][method],
                "first_edit_drift_mm": evaluation["first_edit_drift"][method],
            }
            if edited is not None:
                card["metrics"]["table1_edited_contour_p95_mm"] = edited["table1"][method]
                card["evaluation"] += "; Table 1 with y_cas = the edited contour: docs/ice-results/64-edited"
        models.register_model(folder, card, files=["model.pt"])
        print(f"{name}: {folder} ({(folder / 'model.pt').stat().st_size / 1e6:.1f} MB)")


if __name__ == "__main__":
    if len(sys.argv) not in (2, 3):
        sys.exit(__doc__.split("\n\n")[1])
    main(*sys.argv[1:])
