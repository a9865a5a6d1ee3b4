"""``losslab metrics``: every segmentation metric, and the ICE editing metric, from the command line."""

from __future__ import annotations

import argparse
import json
import math
import warnings
from pathlib import Path
from typing import Any

import numpy as np

from ..io import Image, check_same_grid, read_image, write_image
from ..metrics import attention_map, compare_masks, editing_metric, overlap_per_class, pixel_accuracy


def register_commands(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "metrics",
        help="Dice, IoU, HD, HD95, ASSD of two segmentations (and the ICE editing metric)",
        description=(
            "Compare a segmentation with a reference: per label Dice, IoU, HD, HD95 and ASSD (mm). Files: NIfTI, "
            "NRRD or .seg.nrrd on the same voxel grid. With --initial, --scribble and --cas (binary mask files) "
            "it adds the editing metric D of ice-editing-shahin2023 (COMPARED is the edited segmentation)."
        ),
    )
    p.add_argument("reference", type=Path, help="reference segmentation (label map or binary mask)")
    p.add_argument("compared", type=Path, help="segmentation to evaluate, on the reference's grid")
    p.add_argument("--labels", type=int, nargs="+", help="label values to score (default: all non-zero)")
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")
    g = p.add_argument_group("editing metric (all three files together)")
    g.add_argument("--initial", type=Path, help="initial segmentation y_init (binary mask)")
    g.add_argument("--scribble", type=Path, help="scribble voxels (binary mask)")
    g.add_argument("--cas", type=Path, help="CAS contour voxels y_cas (binary mask of contour voxels)")
    g.add_argument(
        "--sigma", type=float, default=20.0, help="sigma of the attention map A in voxels (paper: 20)"
    )
    g.add_argument("--sigma-mm", type=float, help="sigma in mm instead of voxels (overrides --sigma)")
    g.add_argument(
        "--dmap",
        type=Path,
        help="also write the D map (NaN off the contours) to this file; prefer .nrrd: ITK's NIfTI reader, used by Slicer, reads NaN as 0",
    )
    p.set_defaults(func=run_metrics)


def _read(path: Path, role: str) -> Image:
    try:
        return read_image(path)
    except FileNotFoundError:
        raise FileNotFoundError(f"{role} file not found: {path}") from None


def _labels_of(reference: Image, compared: Image, labels: list[int] | None) -> list[int]:
    if labels:
        return [int(v) for v in labels]
    values = np.union1d(np.unique(reference.array), np.unique(compared.array))
    found = [int(v) for v in values if v != 0]
    if not found:
        raise ValueError("both segmentations are empty: there is no label to score (use --labels)")
    if any(float(v) != int(v) for v in values):
        raise ValueError("segmentations must hold integer labels; got fractional values")
    return found


def compute_metrics(
    reference: Image,
    compared: Image,
    labels: list[int] | None = None,
    initial: Image | None = None,
    scribble: Image | None = None,
    cas: Image | None = None,
    sigma: float = 20.0,
    sigma_mm: float | None = None,
) -> dict[str, Any]:
    """The report of ``losslab metrics`` as a dict (per-label rows, summary, optional editing metric)."""
    check_same_grid(reference, compared, ("reference", "compared"))
    spacing = reference.geometry.array_spacing
    labels = _labels_of(reference, compared, labels)
    names = {**compared.labels, **reference.labels}
    rows = []
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        for value in labels:
            row = compare_masks(compared.array == value, reference.array == value, spacing)
            rows.append({"label": value, "name": names.get(value, str(value)), **row})
        summary = {"labels": labels}
        if len(labels) > 1:
            per = overlap_per_class(compared.array, reference.array, labels)
            summary["mean_dice"] = float(np.nanmean([r["dice"] for r in per.values()]))
            summary["mean_iou"] = float(np.nanmean([r["iou"] for r in per.values()]))
            summary["pixel_accuracy"] = pixel_accuracy(compared.array, reference.array, [0, *labels])
    report: dict[str, Any] = {
        "reference": str(reference.path),
        "compared": str(compared.path),
        "spacing_mm": list(spacing),
        "rows": rows,
        "summary": summary,
        "warnings": sorted({str(w.message) for w in caught}),
    }
    editing_inputs = (initial, scribble, cas)
    if any(x is not None for x in editing_inputs):
        if not all(x is not None for x in editing_inputs):
            raise ValueError("the editing metric needs --initial, --scribble and --cas together")
        for image, role in ((initial, "initial"), (scribble, "scribble"), (cas, "cas")):
            check_same_grid(reference, image, ("reference", role))
        if sigma_mm is not None:
            a = attention_map(scribble.array > 0, sigma_mm, spacing)
            sigma_text = f"{sigma_mm} mm"
        else:
            a = attention_map(scribble.array > 0, sigma)
            sigma_text = f"{sigma} voxels"
        result = editing_metric(cas.array > 0, initial.array > 0, compared.array > 0, a, spacing)
        report["editing"] = {"sigma": sigma_text, **result.stats}
        report["_editing_result"] = result
    return report


def _fmt(value: float) -> str:
    if isinstance(value, float) and (math.isnan(value) or math.isinf(value)):
        return str(value)
    return f"{value:.4f}" if isinstance(value, float) else str(value)


def format_table(report: dict[str, Any]) -> str:
    cols = ["label", "name", "dice", "iou", "hd", "hd95", "assd"]
    lines = ["\t".join(["label", "name", "Dice", "IoU", "HD (mm)", "HD95 (mm)", "ASSD (mm)"])]
    for row in report["rows"]:
        lines.append("\t".join(_fmt(row[c]) for c in cols))
    for key, value in report["summary"].items():
        if key != "labels":
            lines.append(f"{key}\t{_fmt(value)}")
    if "editing" in report:
        ed = report["editing"]
        lines.append(f"editing metric D (sigma {ed['sigma']})\tp95 (mm)\tmean (mm)\tvoxels")
        for region in ("overall", "near", "far", "no_editing", "cas_to_prediction"):
            s = ed[region]
            lines.append(f"{region}\t{_fmt(s['p95'])}\t{_fmt(s['mean'])}\t{s['count']}")
    for w in report.get("warnings", []):
        lines.append(f"warning: {w}")
    return "\n".join(lines)


def to_json(report: dict[str, Any]) -> str:
    clean = {k: v for k, v in report.items() if not k.startswith("_")}

    def fix(x: Any) -> Any:
        if isinstance(x, float) and (math.isnan(x) or math.isinf(x)):
            return str(x)  # JSON has no NaN / inf: "nan", "inf"
        if isinstance(x, dict):
            return {k: fix(v) for k, v in x.items()}
        if isinstance(x, list):
            return [fix(v) for v in x]
        return x

    return json.dumps(fix(clean), indent=2)


def run_metrics(args: argparse.Namespace) -> int:
    reference = _read(args.reference, "reference")
    compared = _read(args.compared, "compared")
    extra = {
        role: _read(getattr(args, role), role) if getattr(args, role) else None
        for role in ("initial", "scribble", "cas")
    }
    report = compute_metrics(
        reference, compared, args.labels, **extra, sigma=args.sigma, sigma_mm=args.sigma_mm
    )
    if args.dmap:
        if "_editing_result" not in report:
            raise ValueError("--dmap needs the editing metric (--initial, --scribble and --cas)")
        write_image(args.dmap, report["_editing_result"].d_map, reference.geometry)
    print(to_json(report) if args.json else format_table(report))
    return 0
