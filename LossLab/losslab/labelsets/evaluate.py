"""Evaluation of fetal parcellations in the layout of the paper's Table 2 (label-set-losses-fidon2021, Sec. 4).

Per case and tissue: Dice score in % (:func:`losslab.metrics.dice_score`) and the 95th-percentile Hausdorff
distance in mm (:func:`losslab.metrics.hd95`, the reference's spacing). A tissue absent from a case's reference
(not annotated there, as in the paper's testing data) is left out of that case (NaN). When the reference has a
tissue and the prediction has none, Dice is 0 and HD95 is the diagonal of the volume in mm (the largest
distance possible in the image; an infinite value would make means meaningless): documented in docs/fetal.md.

Per method and tissue: mean and standard deviation (sample, ``ddof=1``) over the cases. Significance: the
two-sided Wilcoxon signed-rank test (:func:`scipy.stats.wilcoxon`) on the cases where both methods have a value,
against the fully supervised baseline and between leaf-Dice and each other method; ``p < alpha`` (0.01, the
paper's threshold) is significant. Marks as in Table 2: ``*`` significantly better than the baseline, ``†``
significantly worse; in the leaf-Dice comparison table, ``*`` means leaf-Dice is significantly better.
"""

from __future__ import annotations

import math
import os
import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from scipy import stats
from tqdm import tqdm

from .. import io as _io
from ..metrics import dice_score, hd95
from .tissues import ABBREVIATIONS, TISSUES

METRICS = ("dice", "hd95")
METRIC_TITLES = {"dice": "DSC", "hd95": "HD95"}
HIGHER_IS_BETTER = {"dice": True, "hd95": False}
METHOD_TITLES = {
    "fully_supervised": "Fully supervised (Dice)",
    "soft_target_dice": "Soft-target Dice",
    "marginal_dice": "Marginal Dice",
    "leaf_dice": "Leaf-Dice",
}


def case_metrics(pred: np.ndarray, ref: np.ndarray, spacing: Sequence[float]) -> dict[str, dict[str, float]]:
    """``{tissue abbreviation: {"dice": %, "hd95": mm}}`` for one case; NaN where the reference lacks the tissue.

    Args:
        pred, ref: label maps ``(k, j, i)`` with tissue labels 1..8.
        spacing: voxel size per array axis ``(k, j, i)`` in mm.
    """
    pred, ref = np.asarray(pred), np.asarray(ref)
    if pred.shape != ref.shape:
        raise ValueError(f"prediction shape {pred.shape} differs from the reference's {ref.shape}")
    diagonal = float(np.linalg.norm(np.asarray(pred.shape) * np.asarray(spacing, dtype=float)))
    out = {}
    for t in TISSUES:
        r, p = ref == t.label, pred == t.label
        if not r.any():
            out[t.abbreviation] = {"dice": math.nan, "hd95": math.nan}
            continue
        if not p.any():
            out[t.abbreviation] = {"dice": 0.0, "hd95": diagonal}
            continue
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            out[t.abbreviation] = {"dice": 100.0 * dice_score(p, r), "hd95": float(hd95(p, r, spacing))}
    return out


def summary_stats(values: Sequence[float]) -> dict[str, float]:
    """``{"mean", "std", "n"}`` of the finite values (sample std, ddof 1; 0 for one value; NaN for none): the
    mean (std) of Table 2's layout and of the model cards."""
    v = np.asarray([x for x in values if np.isfinite(x)], dtype=float)
    if not v.size:
        return {"mean": math.nan, "std": math.nan, "n": 0}
    return {"mean": float(v.mean()), "std": float(v.std(ddof=1)) if v.size > 1 else 0.0, "n": int(v.size)}


def wilcoxon_p(a: Sequence[float], b: Sequence[float]) -> tuple[float, int]:
    """Two-sided Wilcoxon signed-rank p-value of paired values (pairs with a NaN dropped) and the number of
    pairs; NaN when there are no pairs or every difference is zero."""
    a, b = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    keep = np.isfinite(a) & np.isfinite(b)
    a, b = a[keep], b[keep]
    if not a.size or np.all(a == b):
        return math.nan, int(a.size)
    return float(stats.wilcoxon(a, b, alternative="two-sided").pvalue), int(a.size)


def evaluate_predictions(
    per_case: Mapping[str, Mapping[str, Mapping[str, Mapping[str, float]]]],
    baseline: str | None = "fully_supervised",
    leaf: str | None = "leaf_dice",
    alpha: float = 0.01,
) -> dict[str, Any]:
    """Summaries and tests from per-case metrics ``{method: {case: {tissue: {"dice", "hd95"}}}}``.

    Returns:
        A JSON-ready dict: ``methods`` (per method: ``per_case`` and ``summary[tissue][metric]`` with ``mean``,
        ``std``, ``n``), ``vs_baseline`` and ``vs_leaf`` (per other method, tissue and metric: ``p``, ``n``,
        ``significant``, ``better``), ``cases``, ``tissues``, ``alpha``, ``baseline``, ``leaf``.
    """
    methods = list(per_case)
    if not methods:
        raise ValueError("no method to evaluate")
    cases = sorted(per_case[methods[0]])
    for m in methods:
        if sorted(per_case[m]) != cases:
            raise ValueError(f"method {m!r} has cases {sorted(per_case[m])}, {methods[0]!r} has {cases}")
    for role, name in (("baseline", baseline), ("leaf", leaf)):
        if name is not None and name not in per_case:
            raise ValueError(f"the {role} method {name!r} is not among the methods {methods}")

    def series(m: str, t: str, metric: str) -> list[float]:
        return [per_case[m][c][t][metric] for c in cases]

    result: dict[str, Any] = {
        "cases": cases,
        "tissues": list(ABBREVIATIONS),
        "alpha": alpha,
        "baseline": baseline,
        "leaf": leaf,
        "methods": {},
        "vs_baseline": {},
        "vs_leaf": {},
    }
    for m in methods:
        result["methods"][m] = {
            "per_case": {c: {t: dict(v) for t, v in per_case[m][c].items()} for c in cases},
            "summary": {t: {k: summary_stats(series(m, t, k)) for k in METRICS} for t in ABBREVIATIONS},
        }
    for key, ref in (("vs_baseline", baseline), ("vs_leaf", leaf)):
        if ref is None:
            continue
        for m in methods:
            if m == ref:
                continue
            tests = {}
            for t in ABBREVIATIONS:
                tests[t] = {}
                for k in METRICS:
                    p, n = wilcoxon_p(series(m, t, k), series(ref, t, k))
                    mean_m = result["methods"][m]["summary"][t][k]["mean"]
                    mean_r = result["methods"][ref]["summary"][t][k]["mean"]
                    # "better": the method of the row beats ``ref`` (vs_baseline) / leaf-Dice beats it (vs_leaf)
                    diff = (mean_m - mean_r) if key == "vs_baseline" else (mean_r - mean_m)
                    better = bool(diff > 0) if HIGHER_IS_BETTER[k] else bool(diff < 0)
                    tests[t][k] = {"p": p, "n": n, "significant": bool(p < alpha), "better": better}
            result[key][m] = tests
    return result


#: ``value`` with every NaN / inf float replaced by ``None`` (strict JSON): :func:`losslab.io.json_ready`
json_ready = _io.json_ready


def _fmt(value: float) -> str:
    return "n/a" if not np.isfinite(value) else f"{value:.1f}"


def _mark(test: Mapping[str, Any] | None) -> str:
    if not test or not test["significant"]:
        return ""
    return "*" if test["better"] else "†"


def to_markdown(result: Mapping[str, Any]) -> str:
    """Table 2's layout: one DSC row and one HD95 row per method, ``mean (std)`` per tissue, the best mean in
    bold, ``*`` / ``†`` significantly better / worse than the baseline; then leaf-Dice against each method."""
    tissues = result["tissues"]
    methods = list(result["methods"])
    best = {}
    for k in METRICS:
        for t in tissues:
            means = {m: result["methods"][m]["summary"][t][k]["mean"] for m in methods}
            finite = {m: v for m, v in means.items() if np.isfinite(v)}
            if finite:
                best[(t, k)] = (max if HIGHER_IS_BETTER[k] else min)(finite.values())
    lines = [
        f"Cases: {len(result['cases'])} ({', '.join(result['cases'])}). Dice (DSC) in %, HD95 in mm, "
        f"mean (std). * / †: significantly better / worse than {result['baseline']} "
        f"(two-sided Wilcoxon signed-rank, p < {result['alpha']}).",
        "",
        "| Model | Metric | " + " | ".join(tissues) + " |",
        "| --- | --- | " + " | ".join("---" for _ in tissues) + " |",
    ]
    for m in methods:
        for k in METRICS:
            cells = []
            for t in tissues:
                s = result["methods"][m]["summary"][t][k]
                text = f"{_fmt(s['mean'])} ({_fmt(s['std'])})"
                if (t, k) in best and s["mean"] == best[(t, k)] and len(methods) > 1:
                    text = f"**{_fmt(s['mean'])}** ({_fmt(s['std'])})"
                text += _mark(result["vs_baseline"].get(m, {}).get(t, {}).get(k))
                cells.append(text)
            lines.append(f"| {METHOD_TITLES.get(m, m)} | {METRIC_TITLES[k]} | " + " | ".join(cells) + " |")
    if result.get("vs_leaf"):
        lines += [
            "",
            f"Leaf-Dice ({result['leaf']}) against each method: two-sided Wilcoxon p-values; * leaf-Dice "
            f"significantly better, † significantly worse (p < {result['alpha']}).",
            "",
            "| Compared with | Metric | " + " | ".join(tissues) + " |",
            "| --- | --- | " + " | ".join("---" for _ in tissues) + " |",
        ]
        for m, tests in result["vs_leaf"].items():
            for k in METRICS:
                cells = [
                    ("n/a" if not np.isfinite(tests[t][k]["p"]) else f"{tests[t][k]['p']:.3g}")
                    + _mark(tests[t][k])
                    for t in tissues
                ]
                lines.append(
                    f"| {METHOD_TITLES.get(m, m)} | {METRIC_TITLES[k]} | " + " | ".join(cells) + " |"
                )
    return "\n".join(lines) + "\n"


def find_label_file(folder: Path, case: str) -> Path | None:
    """A case's label map in a folder: ``<case>.nii.gz`` / ``.nii`` / ``.nrrd`` / ``.seg.nrrd``, or
    ``<case>/parcellation.nii.gz`` / ``<case>/seg.nii.gz`` (the atlas's and ``segment``'s layouts)."""
    candidates = [folder / f"{case}{s}" for s in (".nii.gz", ".nii", ".seg.nrrd", ".nrrd")]
    candidates += [folder / case / f"{n}.nii.gz" for n in ("parcellation", "seg", "labels")]
    return next((c for c in candidates if c.is_file()), None)


def read_tissue_labels(path: Path, role: str) -> _io.Image:
    """Read a tissue label map to score: finite integer labels 0..8 only (a probability map, a float 0.5, a
    negative value, a set label above 8 or NaN would be scored as if they were tissues)."""
    image = _io.read_image(path)
    if image.array.ndim != 3:
        raise ValueError(f"{path}: the {role} must be a 3D label map, got shape {image.array.shape}")
    _io.check_label_values(image, role)
    values = {int(v) for v in np.unique(image.array)}
    bad = sorted(v for v in values if not 0 <= v <= max(t.label for t in TISSUES))
    if bad:
        raise ValueError(
            f"{path}: the {role} holds label value(s) {bad[:10]}; expected the tissue labels 0..8 (a label-set "
            "map's set labels are not tissues: score a full parcellation)"
        )
    return image


def evaluate_folders(
    reference: str | os.PathLike,
    methods: Mapping[str, str | os.PathLike],
    cases: Sequence[str] | None = None,
    baseline: str | None = "fully_supervised",
    leaf: str | None = "leaf_dice",
    alpha: float = 0.01,
    progress: bool = True,
) -> dict[str, Any]:
    """Evaluate prediction folders (one per method) against a reference folder; see :func:`find_label_file`
    for the file layouts. ``cases`` default: every case of the reference folder that every method has.

    Raises:
        FileNotFoundError: a named case lacks a reference or a prediction; ValueError: grids differ.
    """
    reference = Path(reference)
    if not reference.is_dir():
        raise FileNotFoundError(f"no such reference folder: {reference}")
    if cases is None:
        names = {p.name.split(".")[0] for p in reference.iterdir()}
        cases = sorted(
            c
            for c in names
            if find_label_file(reference, c) and all(find_label_file(Path(d), c) for d in methods.values())
        )
        if not cases:
            raise ValueError(f"no case has a reference in {reference} and a prediction from every method")
    per_case: dict[str, dict[str, Any]] = {m: {} for m in methods}
    for case in tqdm(list(cases), desc="evaluate", disable=not progress):
        ref_file = find_label_file(reference, case)
        if ref_file is None:
            raise FileNotFoundError(f"no reference label map for case {case!r} in {reference}")
        ref = read_tissue_labels(ref_file, f"reference of case {case!r}")
        for m, folder in methods.items():
            pred_file = find_label_file(Path(folder), case)
            if pred_file is None:
                raise FileNotFoundError(f"method {m!r}: no prediction for case {case!r} in {folder}")
            pred = read_tissue_labels(pred_file, f"{m} prediction of case {case!r}")
            _io.check_same_grid(pred, ref, (f"{m} prediction", "reference"))
            per_case[m][case] = case_metrics(pred.array, ref.array, ref.geometry.array_spacing)
    return evaluate_predictions(per_case, baseline, leaf, alpha)
