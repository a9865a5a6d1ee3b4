"""The evaluation protocol of ice-editing-shahin2023 (Sec. 3.3-3.4, Table 1, Fig. 3, Fig. 4) on ICE cases.

For each case: ``y_init`` is the segmentation model's prediction of ``x``.

- **Table 1** (one edit): the CAS contour furthest from ``y_init`` (:func:`furthest_cas_interaction`) is the
  scribble; each editing model gives ``y_hat``; the editing metric ``D`` (eqs. 4-6,
  :func:`losslab.metrics.editing_metric`) with ``y_cas`` = all the case's CAS contour voxels and ``A`` = the
  scribble's Gaussian map (``sigma_mm``, the paper's 20 voxels of 1.1024 mm by default); its 95th percentile
  overall, near (``A >= 0.5``) and far. "No Editing" is the distance from the CAS contours to ``y_init``.
  Columns are means over cases; when ``intercnn`` is among the methods, a two-sided Wilcoxon signed-rank test
  (``scipy.stats.wilcoxon``) of each other method against it, per column. The row "y_init unchanged" is
  ``D`` of ``y_hat = y_init``: a model that edits nothing. Its far column is the floor of the far error, not
  0: eq. 5 weighs every CAS contour by ``A``, and a contour with ``0 < A < 0.5`` that disagrees with
  ``y_init`` counts in the far region whatever the model does there. ``contours="edited"`` (the CLI's
  ``--metric-contours edited``) takes ``y_cas`` = the edited frame's contour alone: every ``y_cas`` voxel
  then has ``A = 1``, the far region holds ``D_preserve`` alone (0 for ``y_hat = y_init``) and near measures
  the scribble's own contour.
- **Fig. 3** (sequential edits): up to ``edits`` times, the furthest CAS contour not used before
  (:class:`CASEditSequence`) is the next scribble; an InterCNN model gets the union of all scribbles so far,
  the others the new one; the current prediction is the next ``y_init``. After each edit, the 95th
  percentile of the distance from all the CAS contours to the prediction.
- **Fig. 4 as a number** (first-edit drift): after edits 2..K, how far the first edit's region moved from its
  state after edit 1: the 95th percentile of the symmetric contour distance (mm) between the prediction after
  edit 1 and after edit t, on the contour voxels near the first scribble (its ``A >= 0.5``,
  :data:`losslab.ice.editing.NEAR_THRESHOLD`); 0: untouched.

Editing models are anything with ``edit(image, initial, scribble, spacing) -> EditResult``
(:class:`losslab.ice.EditingModel`); the segmentation model is a path / registered name, an engine
``Predictor``, or a callable ``image -> mask``.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ..metrics import boundary, editing_metric
from ..metrics.editing import contour_distance
from .dataset import dataset_cases, read_case
from .editing import NEAR_THRESHOLD
from .interactions import PAPER_SIGMA_MM, CASEditSequence, encode, furthest_cas_interaction
from .simulate import ICECase

COLUMNS = ("overall", "near", "far")
#: ``y_cas`` of the metric D: every CAS contour of the case, or the edited frame's alone
METRIC_CONTOURS = ("all", "edited")
#: the method name that gets accumulated edits (and is the reference of the Wilcoxon tests)
INTERCNN = "intercnn"


def segmenter(model: Any, device: str = "cpu") -> Callable[[np.ndarray], np.ndarray]:
    """A function ``image -> boolean mask`` from a segmentation model path / registered name, a
    ``Predictor`` or a callable."""
    if callable(model) and not hasattr(model, "predict"):
        return lambda image: np.asarray(model(image)) != 0
    if not hasattr(model, "predict"):
        from .. import models as registry
        from ..engine.inference import load_predictor

        path = Path(model)
        if not path.exists():
            path = registry.model_path(str(model))
        model = load_predictor(path, device=device)
    if int(model.info.network["in_channels"]) != 1:
        raise ValueError(
            f"the segmentation model takes {model.info.network['in_channels']} input channels; it must take "
            "the image alone (1 channel)"
        )
    predictor = model
    return lambda image: np.asarray(predictor.predict(np.asarray(image, np.float32)[None]).labels) == 1


def is_intercnn(name: str) -> bool:
    """Methods named ``intercnn`` (any case, or starting with ``intercnn``) get accumulated edits."""
    return name.lower().startswith(INTERCNN)


def _p95(stats: Mapping[str, float]) -> float:
    return float(stats["p95"])


def first_edit_drift(after_first: np.ndarray, after_t: np.ndarray, near: np.ndarray, spacing) -> float:
    """How far the first edit's region moved (mm): the 95th percentile of the symmetric Manhattan contour
    distance between the prediction after edit 1 and after edit t, on contour voxels where ``near``."""
    values = []
    for a, b in ((after_first, after_t), (after_t, after_first)):
        contour = boundary(np.asarray(a, bool)) & near
        if contour.any():
            values.append(contour_distance(contour, b, spacing)["p95"])
    return float(max(values)) if values else 0.0


def evaluate_case(
    case: ICECase,
    initial: np.ndarray,
    models: Mapping[str, Any],
    edits: int = 10,
    sigma_mm: float = PAPER_SIGMA_MM,
    contours: str = "all",
) -> dict[str, Any]:
    """Table 1, Fig. 3 and Fig. 4 values of one case (see the module docstring). ``contours``: ``y_cas`` of
    the metric ``D``, ``"all"`` the case's CAS contours (default) or ``"edited"`` the edited frame's.

    Returns:
        ``{"no_editing": {"overall"}, "table1": {name: {"overall", "near", "far"}}, "unchanged": {"overall",
        "near", "far"}, "sequential": {name:
        [p95 after edit 1..k]}, "first_edit_drift": {name: [drift after edit 2..k]}, "edit_frames": ...}``
        (``k <= edits``: fewer when the case has fewer frames with a contour).
    """
    if contours not in METRIC_CONTOURS:
        raise ValueError(f"contours must be one of {METRIC_CONTOURS}, got {contours!r}")
    initial = np.asarray(initial) != 0
    spacing = case.spacing
    cas = case.cas_mask()
    first = furthest_cas_interaction(case, initial)
    if first is None:
        raise ValueError("the case has no CAS contour: nothing to edit")
    attention = encode(first.voxels, spacing, sigma_mm)
    metric_cas = cas if contours == "all" else first.voxels
    unchanged = editing_metric(metric_cas, initial, initial, attention, spacing)
    out: dict[str, Any] = {
        "table1": {},
        "sequential": {},
        "first_edit_drift": {},
        "first_edit_frame": first.frame,
        "unchanged": {c: _p95(unchanged.stats[c]) for c in COLUMNS},
    }
    for name, model in models.items():
        result = model.edit(case.image, initial, first.voxels, spacing)
        metric = editing_metric(metric_cas, initial, result.mask, attention, spacing)
        out["table1"][name] = {c: _p95(metric.stats[c]) for c in COLUMNS}
        out["sequential"][name], out["first_edit_drift"][name] = _sequence(
            case, initial, model, name, edits, sigma_mm
        )
    # "No Editing" is the paper's: the distance from the CAS contours (all of them) to y_init.
    out["start"] = float(contour_distance(cas, initial, spacing)["p95"])
    out["no_editing"] = {"overall": out["start"]}
    return out


def _sequence(case, initial, model, name, edits, sigma_mm) -> tuple[list[float], list[float]]:
    seq = CASEditSequence(case)
    cas = case.cas_mask()
    prediction = initial.copy()
    scribbles = np.zeros(case.grid.shape, bool)
    curve, drift = [], []
    after_first = near_first = None
    for _ in range(edits):
        edit = seq.next(prediction)
        if edit is None:
            break
        scribbles |= edit.voxels
        scribble = scribbles if is_intercnn(name) else edit.voxels
        prediction = np.asarray(model.edit(case.image, prediction, scribble, case.spacing).mask, bool)
        curve.append(float(contour_distance(cas, prediction, case.spacing)["p95"]))
        if after_first is None:
            after_first = prediction.copy()
            near_first = encode(edit.voxels, case.spacing, sigma_mm) >= NEAR_THRESHOLD
        else:
            drift.append(first_edit_drift(after_first, prediction, near_first, case.spacing))
    return curve, drift


def _nanmean_ragged(rows: Sequence[Sequence[float]]) -> list[float]:
    n = max((len(r) for r in rows), default=0)
    out = []
    for k in range(n):
        values = [r[k] for r in rows if len(r) > k and not math.isnan(r[k])]
        out.append(float(np.mean(values)) if values else float("nan"))
    return out


def summarize(cases: Sequence[Mapping[str, Any]], names: Sequence[str]) -> dict[str, Any]:
    """Means over cases (Table 1, Fig. 3 curves, drift) and the Wilcoxon p-values against InterCNN."""
    table = {
        name: {c: float(np.mean([case["table1"][name][c] for case in cases])) for c in COLUMNS}
        for name in names
    }
    table["no_editing"] = {"overall": float(np.mean([case["no_editing"]["overall"] for case in cases]))}
    out: dict[str, Any] = {
        "table1": table,
        "sequential": {name: _nanmean_ragged([case["sequential"][name] for case in cases]) for name in names},
        "sequential_start": float(np.mean([case["start"] for case in cases])),
        "first_edit_drift": {
            name: _nanmean_ragged([case["first_edit_drift"][name] for case in cases]) for name in names
        },
    }
    if all("unchanged" in case for case in cases):
        out["unchanged"] = {c: float(np.mean([case["unchanged"][c] for case in cases])) for c in COLUMNS}
    reference = next((n for n in names if is_intercnn(n)), None)
    if reference is not None:
        from scipy.stats import wilcoxon

        tests: dict[str, dict[str, float | None]] = {}
        for name in names:
            if name == reference:
                continue
            tests[name] = {}
            for c in COLUMNS:
                a = np.array([case["table1"][name][c] for case in cases])
                b = np.array([case["table1"][reference][c] for case in cases])
                if len(a) < 2 or np.all(a == b):
                    tests[name][c] = None
                else:
                    tests[name][c] = float(wilcoxon(a, b, alternative="two-sided").pvalue)
        out["wilcoxon_vs_intercnn"] = {"reference": reference, "pvalues": tests}
    return out


def _mark(p: float | None) -> str:
    if p is None:
        return ""
    return "‡" if p < 0.001 else "†" if p < 0.01 else ""


def table1_markdown(summary: Mapping[str, Any], names: Sequence[str], n_cases: int) -> str:
    """Table 1 as markdown: p95 of D (mm), mean over cases; †/‡: p < 0.01 / 0.001 against InterCNN."""
    contours = (summary.get("settings") or {}).get("metric_contours", "all")
    tests = (summary.get("wilcoxon_vs_intercnn") or {}).get("pvalues", {})
    lines = [
        f"Table 1: 95th percentile of the editing metric D (mm), one edit, mean over {n_cases} case(s).",
        "",
        "| method | overall | near | far |",
        "| --- | --- | --- | --- |",
        f"| No Editing | {summary['table1']['no_editing']['overall']:.3f} | | |",
    ]
    if "unchanged" in summary:
        row = summary["unchanged"]
        lines.append("| y_init unchanged (D) | " + " | ".join(f"{row[c]:.3f}" for c in COLUMNS) + " |")
    for name in names:
        row = summary["table1"][name]
        marks = tests.get(name, {})
        cells = " | ".join(f"{row[c]:.3f}{_mark(marks.get(c))}" for c in COLUMNS)
        lines.append(f"| {name} | {cells} |")
    lines += ["", "No Editing: p95 distance from all the CAS contours to y_init (the paper's)."]
    if "unchanged" in summary:
        lines[-1] += (
            " y_init unchanged: D of a model that edits nothing; its far column is the floor of any model's far error."
        )
    if contours == "edited":
        lines.append("y_cas of D: the edited frame's CAS contour alone (--metric-contours edited).")
    if tests:
        lines += ["", "Two-sided Wilcoxon signed-rank test against InterCNN: †: p < 0.01, ‡: p < 0.001."]
        for name, values in tests.items():
            shown = ", ".join(f"{c} p={'n/a' if v is None else f'{v:.3g}'}" for c, v in values.items())
            lines.append(f"- {name}: {shown}")
    return "\n".join(lines) + "\n"


def plot_sequential(summary: Mapping[str, Any], path: str | os.PathLike, title: str = "") -> Path:
    """Fig. 3: the p95 distance from all CAS contours to the prediction after each edit, one curve per
    method (edit 0: ``y_init``)."""
    from matplotlib.figure import Figure

    from ..io import save_figure

    fig = Figure(figsize=(5.5, 4))
    ax = fig.subplots()
    for name, curve in summary["sequential"].items():
        ys = [summary["sequential_start"], *curve]
        ax.plot(range(len(ys)), ys, marker="o", label=name)
    ax.set_xlabel("edit")
    ax.set_ylabel("p95 distance CAS -> prediction (mm)")
    ax.set_title(title or "Sequential edits (Fig. 3)")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    return save_figure(fig, path, dpi=110)


def evaluate(
    dataset: str | os.PathLike,
    segmentation_model: Any,
    editing_models: Mapping[str, Any],
    *,
    edits: int = 10,
    split: str = "test",
    sigma_mm: float = PAPER_SIGMA_MM,
    device: str = "cpu",
    progress: bool = True,
    contours: str = "all",
) -> dict[str, Any]:
    """Run the protocol on the cases of ``split`` (``"all"``: every case) of a ``losslab ice simulate``
    dataset. ``editing_models`` maps names to :class:`EditingModel` objects, paths or registered names.

    ``contours``: ``y_cas`` of the metric D (``"all"`` or ``"edited"``, see the module docstring).

    Returns the JSON-ready result: ``table1``, ``unchanged`` (D of ``y_hat = y_init``), ``sequential``,
    ``first_edit_drift`` (means), ``cases`` (per case values) and ``wilcoxon_vs_intercnn`` when InterCNN is
    there.
    """
    if edits < 1:
        raise ValueError(f"edits must be at least 1, got {edits}")
    if not editing_models:
        raise ValueError("give at least one editing model (NAME=PATH)")
    if contours not in METRIC_CONTOURS:
        raise ValueError(f"contours must be one of {METRIC_CONTOURS}, got {contours!r}")
    if "no_editing" in editing_models:
        raise ValueError("'no_editing' is the baseline's name; name the editing model otherwise")
    folders, segment, models = protocol_inputs(dataset, split, segmentation_model, editing_models, device)
    from tqdm.auto import tqdm

    per_case = []
    for cid, folder in tqdm(list(folders.items()), desc="evaluating", unit="case", disable=not progress):
        case = read_case(folder)
        values = evaluate_case(case, segment(case.image), models, edits, sigma_mm, contours)
        per_case.append({"case": cid, **values})
    names = list(models)
    summary = summarize(per_case, names)
    return {
        **summary,
        "cases": per_case,
        "settings": {
            "dataset": str(dataset),
            "split": split,
            "edits": edits,
            "sigma_mm": sigma_mm,
            "metric_contours": contours,
            "precision": "float32",
            "models": {n: str(editing_models[n]) for n in names},
        },
    }


def protocol_inputs(
    dataset, split: str, segmentation_model: Any, editing_models: Mapping[str, Any], device: str
):
    """What the paper's protocol and the ideal-user protocol (:mod:`.ideal`) both start from: the case folders of
    ``split`` (``"all"``: every case; none is an error), the segmentation function and the editing models loaded
    in float32 (objects with ``edit`` are taken as they are)."""
    folders = dataset_cases(dataset, None if split == "all" else split)
    if not folders:
        raise ValueError(f"the dataset {str(dataset)!r} has no case in split {split!r}")
    segment = segmenter(segmentation_model, device)
    models = {name: m if hasattr(m, "edit") else _load(m, device, name) for name, m in editing_models.items()}
    return folders, segment, models


def _load(model, device, name):
    from .editing import EditingModel

    # float32 (amp=False): the protocol's figures must not depend on whether the CPU has native bfloat16
    loaded = EditingModel.load(model, device=device, amp=False)
    loaded.name = name
    return loaded


def write_outputs(
    result: Mapping[str, Any], outdir: str | os.PathLike, json_path: str | os.PathLike | None = None
):
    """``table1.md``, ``fig3.png`` and ``evaluation.json`` (or ``json_path``) in ``outdir``."""
    from ..io import json_ready, write_text

    outdir = Path(outdir)
    outdir.mkdir(parents=True, exist_ok=True)
    names = list(result["sequential"])
    write_text(outdir / "table1.md", table1_markdown(result, names, len(result["cases"])))
    plot_sequential(result, outdir / "fig3.png")
    path = Path(json_path) if json_path else outdir / "evaluation.json"
    write_text(path, json.dumps(json_ready(result), indent=1, allow_nan=False) + "\n")  # NaN: null
    return {"table1": outdir / "table1.md", "fig3": outdir / "fig3.png", "json": path}


__all__ = [
    "COLUMNS",
    "METRIC_CONTOURS",
    "evaluate",
    "evaluate_case",
    "first_edit_drift",
    "plot_sequential",
    "segmenter",
    "summarize",
    "table1_markdown",
    "write_outputs",
]
