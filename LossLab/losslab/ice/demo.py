"""The ICE editing demo (``losslab demo``): real edits by real models, and how to read them.

A sparse ICE case is simulated on the spot (64^3 x 2.2048 mm, an atrium of the wide prior with a seed the
shipped models never saw), segmented by the shipped segmentation model (``y_init``), then edited by the shipped
editing-loss model and, side by side, by the CE baseline, two ways:

- **the clinician's contours** (Fig. 3 of ice-editing-shahin2023): 10 times in sequence, the furthest unused
  CAS contour. The report gives per edit the editing metric D (p95 overall / near / far, eqs. 4-6), the
  distance from all CAS contours to the prediction and the Dice to y. The CAS contours were traced on frames
  with pose error and cardiac motion, so they disagree with y by a millimetre or two: following them does not
  bring the mask to y, and Dice to y may fall while D falls.
- **an ideal user** (:mod:`losslab.ice.ideal`): 10 times, y's own contour on the frame where the mask is worst.
  Here Dice to y should rise edit after edit: this is the model doing what the user drew.

The picture shows the ideal user's first edit on its frame (the frame of largest error, where an edit is
visible), with the pixels each model added and removed.
"""

from __future__ import annotations

import json
import math
import os
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from ..metrics import editing_metric
from ..metrics.overlap import dice_score
from .editing import EditingModel
from .geometry import Grid
from .ideal import ideal_edits
from .interactions import CASEditSequence, sample_on_frames, training_interaction
from .simulate import ICECase, SimulationConfig, simulate_case

#: the shipped models the demo uses: segmentation, then the editing models compared
SEGMENTATION_MODEL = "ice-segmentation-64"
EDITING_MODELS = {"editing loss": "ice-editing-64", "CE": "ice-editing-ce-64"}
#: the demo's case: seed 1000 (the shipped models were trained on seeds 0-399), the models' grid
DEMO_SEED = 1000
DEMO_SIZE = 64
DEMO_SPACING = 2.2048
DEMO_FILES = ("report.json", "report.md", "report.png")


def demo_case(seed: int = DEMO_SEED) -> ICECase:
    """The demo's simulated case: an atrium of the wide prior, default realism (misaligned frames and cardiac
    motion)."""
    from .anatomy import make_atrium

    grid = Grid.cube(DEMO_SIZE, DEMO_SPACING)
    return simulate_case(make_atrium(grid, seed), grid, SimulationConfig(), seed=seed)


def _finite(x: float) -> float | None:
    return float(x) if math.isfinite(x) else None


def edit_sequence(case: ICECase, initial: np.ndarray, model: EditingModel, edits: int, tick=None) -> dict:
    """Sequential edits of ``initial`` by one model; per edit its frame, D (p95 overall / near / far), the
    p95 distance from all CAS contours to the prediction and the voxels changed near / far."""
    cas = case.cas_mask()
    seq = CASEditSequence(case)
    prediction = np.asarray(initial, bool)
    rows = []
    for t in range(edits):
        edit = seq.next(prediction)
        if edit is None:
            break
        result = model.edit(case.image, prediction, edit.voxels, case.spacing)
        with warnings.catch_warnings():  # an empty mask gives inf distances, shown as "inf" in the report
            warnings.simplefilter("ignore", UserWarning)
            metric = editing_metric(cas, prediction, result.mask, result.attention, case.spacing)
        rows.append(
            {
                "edit": t + 1,
                "frame": edit.frame,
                "D_overall_p95": _finite(metric.stats["overall"]["p95"]),
                "D_near_p95": _finite(metric.stats["near"]["p95"]),
                "D_far_p95": _finite(metric.stats["far"]["p95"]),
                "cas_to_prediction_p95": _finite(metric.stats["cas_to_prediction"]["p95"]),
                "dice_vs_y": float(dice_score(result.mask, case.label != 0)),
                "changes": result.changes,
            }
        )
        prediction = result.mask
        if tick:
            tick()
    return {"rows": rows, "final": prediction}


def run_demo(
    out_dir: str | os.PathLike,
    *,
    edits: int = 10,
    seed: int = DEMO_SEED,
    root: str | os.PathLike | None = None,
    device: str = "cpu",
    progress: bool = True,
    log: Callable[[str], None] | None = None,
) -> dict[str, Path]:
    """Simulate, segment, edit; write ``report.json``, ``report.md`` and ``report.png`` into ``out_dir``."""
    from tqdm.auto import tqdm

    from .. import models as registry
    from ..engine.inference import load_predictor
    from ..io import json_ready, save_figure, write_text

    out_dir = Path(out_dir)
    say = log or (lambda s: None)
    with tqdm(
        total=3 + 2 * edits * len(EDITING_MODELS), desc="demo", unit="step", disable=not progress
    ) as bar:
        bar.set_postfix_str("simulating a case")
        say(f"simulating a sparse ICE case (seed {seed}, {DEMO_SIZE}^3 x {DEMO_SPACING} mm)")
        case = demo_case(seed)
        bar.update()
        bar.set_postfix_str("loading models")
        say(f"loading {SEGMENTATION_MODEL}, " + ", ".join(EDITING_MODELS.values()))
        seg = load_predictor(registry.model_path(SEGMENTATION_MODEL, root), device=device)
        editors = {
            label: EditingModel.load(name, root=root, device=device) for label, name in EDITING_MODELS.items()
        }
        bar.update()
        bar.set_postfix_str("segmenting")
        initial = np.asarray(seg.predict(case.image[None]).labels) == 1
        bar.update()
        runs, ideal = {}, {}
        for label, model in editors.items():
            bar.set_postfix_str(f"editing: {label}")
            say(
                f"{edits} sequential edits by {EDITING_MODELS[label]} ({label}): CAS contours, then an ideal user"
            )
            runs[label] = edit_sequence(case, initial, model, edits, bar.update)
            ideal[label] = ideal_edits(case, initial, model, edits, seed=seed)
            bar.update(edits)
    y = case.label != 0
    cas = case.cas_mask()
    from ..metrics.editing import contour_distance

    start = _finite(contour_distance(cas, initial, case.spacing)["p95"])
    report: dict[str, Any] = {
        "case": {
            "seed": seed,
            "grid": [DEMO_SIZE] * 3,
            "spacing_mm": DEMO_SPACING,
            "frames": len(case.frames),
        },
        "models": {"segmentation": SEGMENTATION_MODEL, **EDITING_MODELS},
        "sigma_mm": {label: m.sigma_mm for label, m in editors.items()},
        "segmentation": {"dice_vs_y": float(dice_score(initial, y)), "cas_to_initial_p95": start},
        "edits": {label: run["rows"] for label, run in runs.items()},
        "final_dice_vs_y": {label: float(dice_score(run["final"], y)) for label, run in runs.items()},
        "ideal_user": {
            label: {"dice_vs_y": r["dice"], "hd95_mm": r["hd95"], "frames": r["frames"]}
            for label, r in ideal.items()
        },
    }
    paths = {
        "json": write_text(out_dir / DEMO_FILES[0], json.dumps(json_ready(report), indent=1) + "\n"),
        "markdown": write_text(out_dir / DEMO_FILES[1], _markdown(report)),
    }
    figure = _figure(case, initial, editors, report)
    paths["figure"] = save_figure(figure, out_dir / DEMO_FILES[2], dpi=100)
    return paths


def _fmt(v: float | None) -> str:
    return "inf" if v is None else f"{v:.2f}"


def _markdown(report: dict) -> str:
    c = report["case"]
    seg = report["segmentation"]
    labels = list(report["edits"])
    ideal = report["ideal_user"]
    lines = [
        "# LossLab demo: ICE editing by trained models (ice-editing-shahin2023)",
        "",
        f"A simulated sparse ICE case (seed {c['seed']}, {c['frames']} frames, {c['grid'][0]}^3 x "
        f"{c['spacing_mm']} mm) was segmented by `{report['models']['segmentation']}`: Dice to the true left "
        f"atrium y {seg['dice_vs_y']:.3f}. Each editing model then corrected that segmentation in two ways.",
        "",
        "**How to read this.** Dice to y is the overlap with the true anatomy: higher is better, 1 is perfect. "
        "An *ideal user* draws y's own contour on the frame where the mask is worst: there, each edit should "
        "raise Dice, and the editing-loss model should change nothing far from the stroke. The paper's "
        "protocol draws the *clinician's CAS contours* instead, traced on frames with pose error and cardiac "
        "motion: they lie a millimetre or two off y, so following them lowers the distance to the contours "
        "(D and CAS->pred, lower is better) but need not raise Dice to y. D is the editing metric (p95, mm): "
        "near the stroke (A >= 0.5) it measures the edit, far from it what was kept.",
        "",
        "## An ideal user (y's own contour on the worst frame)",
        "",
        "| edit | " + " | ".join(f"{label}: Dice to y" for label in labels) + " |",
        "| --- |" + " --- |" * len(labels),
    ]
    n = max(len(ideal[label]["dice_vs_y"]) for label in labels)
    for t in range(n):
        cells = [
            f"{ideal[label]['dice_vs_y'][t]:.3f}" if t < len(ideal[label]["dice_vs_y"]) else ""
            for label in labels
        ]
        lines.append(f"| {t if t else '0 (y_init)'} | " + " | ".join(cells) + " |")
    lines += [
        "",
        "## The clinician's CAS contours (the paper's Fig. 3 protocol)",
        "",
        "| edit | "
        + " | ".join(
            f"{label}: D overall / near / far | {label}: CAS->pred | {label}: Dice to y" for label in labels
        )
        + " |",
        "| --- |" + " --- | --- | --- |" * len(labels),
    ]
    n = max(len(rows) for rows in report["edits"].values())
    for t in range(n):
        cells = []
        for label in labels:
            rows = report["edits"][label]
            if t < len(rows):
                r = rows[t]
                cells.append(f"{_fmt(r['D_overall_p95'])} / {_fmt(r['D_near_p95'])} / {_fmt(r['D_far_p95'])}")
                cells.append(_fmt(r["cas_to_prediction_p95"]))
                cells.append(f"{r['dice_vs_y']:.3f}")
            else:
                cells += ["", "", ""]
        lines.append(f"| {t + 1} | " + " | ".join(cells) + " |")
    lines += [
        "",
        "Dice to y after all the edits: ideal user "
        + ", ".join(f"{label} {ideal[label]['dice_vs_y'][-1]:.3f}" for label in labels)
        + "; CAS contours "
        + ", ".join(f"{label} {d:.3f}" for label, d in report["final_dice_vs_y"].items())
        + f" (before: {seg['dice_vs_y']:.3f}).",
        "",
        "Models: " + ", ".join(f"{k}: `{v}`" for k, v in report["models"].items()) + " (`losslab models`). "
        "The same protocols on many cases: `losslab ice evaluate` (docs/ice.md).",
    ]
    return "\n".join(lines) + "\n"


def _first_ideal_edit(case: ICECase, initial: np.ndarray, editors: dict, seed: int):
    """The ideal user's first scribble (the frame of largest error) and each model's edit of it."""
    edit = training_interaction(case, initial, seed=seed)
    if edit is None:
        return None, {}
    return edit, {
        label: m.edit(case.image, initial, edit.voxels, case.spacing).mask for label, m in editors.items()
    }


def _figure(case: ICECase, initial, editors, report):
    from matplotlib.figure import Figure
    from matplotlib.ticker import MaxNLocator

    labels = list(editors)
    fig = Figure(figsize=(4.2 * (1 + len(labels)), 8.6))
    axes = fig.subplots(2, 1 + len(labels))
    edit, after = _first_ideal_edit(case, initial, editors, report["case"]["seed"])
    if edit is not None:
        f = edit.frame
        frame = case.frames[f]
        y2d = sample_on_frames(case, case.label != 0, [f])[0]
        init2d = sample_on_frames(case, initial, [f])[0]
        titles = ["before: y_init", *[f"after one edit: {label}" for label in labels]]
        for col, title in enumerate(titles):
            ax = axes[0, col]
            ax.imshow(frame.image, cmap="gray", vmin=0, vmax=1)
            ax.contour(y2d, levels=[0.5], colors="lime", linewidths=0.8)
            ax.contour(init2d, levels=[0.5], colors="cyan", linewidths=1.0)
            if col:
                a2d = sample_on_frames(case, after[labels[col - 1]], [f])[0]
                overlay = np.zeros((*a2d.shape, 4))
                overlay[(a2d != 0) & (init2d == 0)] = (0.1, 0.9, 0.2, 0.55)  # added
                overlay[(a2d == 0) & (init2d != 0)] = (1.0, 0.1, 0.1, 0.55)  # removed
                ax.imshow(overlay)
                ax.contour(a2d, levels=[0.5], colors="magenta", linewidths=1.2)
            for line in edit.polylines:
                ax.plot(line[:, 0], line[:, 1], color="yellow", lw=1.8)
            ax.set_title(f"frame {f} (largest error): {title}", fontsize=9)
            ax.axis("off")
        axes[0, 0].text(
            0.01,
            0.01,
            "y (green line), y_init (cyan), edited (magenta),\nthe user's stroke (yellow); "
            "filled: added (green), removed (red)",
            transform=axes[0, 0].transAxes,
            color="white",
            fontsize=7,
            va="bottom",
        )
    ax = axes[1, 0]
    for label in labels:
        dice = report["ideal_user"][label]["dice_vs_y"]
        ax.plot(range(len(dice)), dice, marker="o", label=f"{label}: ideal user")
        cas = [report["segmentation"]["dice_vs_y"], *[r["dice_vs_y"] for r in report["edits"][label]]]
        ax.plot(range(len(cas)), cas, "--", marker=".", label=f"{label}: CAS contours")
    ax.set_xlabel("edit")
    ax.set_ylabel("Dice to y (higher is better)")
    ax.set_title("Dice to the true anatomy after each edit", fontsize=9)
    ax.legend(fontsize=7)
    ax.grid(alpha=0.3)
    ax = axes[1, 1]
    for label in labels:
        rows = report["edits"][label]
        ys = [report["segmentation"]["cas_to_initial_p95"], *[r["cas_to_prediction_p95"] for r in rows]]
        ax.plot(range(len(ys)), [np.nan if v is None else v for v in ys], marker="o", label=label)
    ax.set_xlabel("edit (CAS contours)")
    ax.set_ylabel("p95 distance CAS -> prediction (mm, lower is better)")
    ax.set_title("this case's Fig. 3", fontsize=9)
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    for col, label in enumerate(labels[: len(axes[1]) - 2], start=2):
        ax = axes[1, col]
        rows = report["edits"][label]
        for key, name in (("D_overall_p95", "overall"), ("D_near_p95", "near"), ("D_far_p95", "far")):
            ax.plot(
                [r["edit"] for r in rows],
                [np.nan if r[key] is None else r[key] for r in rows],
                marker=".",
                label=name,
            )
        ax.set_xlabel("edit (CAS contours)")
        ax.set_ylabel("D p95 (mm, lower is better)")
        ax.set_title(f"{label}: editing metric per edit", fontsize=9)
        ax.legend(fontsize=8)
        ax.grid(alpha=0.3)
    for ax in axes[1]:
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    fig.tight_layout()
    return fig


__all__ = ["DEMO_FILES", "EDITING_MODELS", "SEGMENTATION_MODEL", "demo_case", "edit_sequence", "run_demo"]
