"""``losslab metrics``: every segmentation metric, and the ICE editing metric, from the command line."""

from __future__ import annotations

import argparse
import json
import math
import sys
import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # the heavy modules (numpy, SimpleITK, torch) load when a command runs, not for --help
    from ..io import Image

#: :data:`losslab.io.MAX_LABELS` (not imported here: losslab.io loads numpy and SimpleITK)
MAX_LABELS = 1000


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
    p.add_argument(
        "--labels",
        type=int,
        nargs="+",
        help=f"label values to score (default: all non-zero values, at most {MAX_LABELS})",
    )
    p.add_argument(
        "--json",
        action="store_true",
        help="print JSON instead of a table (undefined or infinite values are null; see its 'warnings')",
    )
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
    p.add_argument("--overwrite", action="store_true", help="replace an existing --dmap file")
    p.set_defaults(func=run_metrics)


def _read(path: Path, role: str, max_labels: int | None = MAX_LABELS) -> Image:
    """Read a mask or label map for ``role``; refuse what cannot be one (damaged file, NaN / inf, non-integer
    values, a 4D image, more than ``max_labels`` labels)."""
    from ..io import check_label_values, read_image

    try:
        image = read_image(path)
    except FileNotFoundError:
        raise FileNotFoundError(f"{role} file not found: {path}") from None
    if image.array.ndim not in (2, 3):
        raise ValueError(
            f"{path}: the {role} must be a 2D or 3D mask or label map, got an array of shape {image.array.shape}"
        )
    check_label_values(image, role, max_labels, hint="Name the labels to score with --labels to go on.")
    return image


def _labels_of(reference: Image, compared: Image, labels: list[int] | None) -> list[int]:
    import numpy as np

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
    import numpy as np

    from ..io import check_same_grid
    from ..metrics import attention_map, compare_masks, editing_metric, overlap_per_class, pixel_accuracy

    check_same_grid(reference, compared, ("reference", "compared"))
    spacing = reference.geometry.array_spacing
    labels = _labels_of(reference, compared, labels)
    names = {**compared.labels, **reference.labels}
    rows = []
    caught: list[warnings.WarningMessage] = []
    with warnings.catch_warnings(record=True) as caught_overlap:
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
    caught += caught_overlap
    report: dict[str, Any] = {
        "reference": str(reference.path),
        "compared": str(compared.path),
        "spacing_mm": list(spacing),
        "rows": rows,
        "summary": summary,
        "warnings": [],
    }
    editing_inputs = (initial, scribble, cas)
    if any(x is not None for x in editing_inputs):
        if not all(x is not None for x in editing_inputs):
            raise ValueError("the editing metric needs --initial, --scribble and --cas together")
        for image, role in ((initial, "initial"), (scribble, "scribble"), (cas, "cas")):
            check_same_grid(reference, image, ("reference", role))
        with warnings.catch_warnings(record=True) as caught_editing:
            warnings.simplefilter("always")
            if sigma_mm is not None:
                a = attention_map(scribble.array > 0, sigma_mm, spacing)
                sigma_text = f"{sigma_mm} mm"
            else:
                a = attention_map(scribble.array > 0, sigma)
                sigma_text = f"{sigma} voxels"
            result = editing_metric(cas.array > 0, initial.array > 0, compared.array > 0, a, spacing)
        caught += caught_editing
        report["editing"] = {"sigma": sigma_text, **result.stats}
        report["_editing_result"] = result
    # Every warning, once, in the order raised: they go into the table and the JSON.
    report["warnings"] = list(dict.fromkeys(one_line(w.message) for w in caught))
    return report


def one_line(message: Any) -> str:
    return " ".join(str(message).split())


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
    """The report as standard JSON: NaN (undefined) and inf (a distance to an empty mask) become ``null``;
    the report's ``warnings`` say why."""
    from ..io import json_ready

    clean = {k: v for k, v in report.items() if not k.startswith("_")}
    return json.dumps(json_ready(clean), indent=2, allow_nan=False)


def run_metrics(args: argparse.Namespace) -> int:
    from ..io import check_outputs, image_suffix, write_image

    roles = ("reference", "compared", "initial", "scribble", "cas")
    inputs = {role: getattr(args, role) for role in roles}
    if args.dmap:
        if not all(inputs[role] for role in ("initial", "scribble", "cas")):
            raise ValueError("--dmap needs the editing metric (--initial, --scribble and --cas)")
        image_suffix(args.dmap)
        check_outputs({"--dmap": args.dmap}, inputs, overwrite=args.overwrite)
    # Named labels lift the limit on the number of labels (an intensity image is refused otherwise).
    limit = None if args.labels else MAX_LABELS
    reference = _read(args.reference, "reference", limit)
    compared = _read(args.compared, "compared", limit)
    extra = {
        role: _read(inputs[role], f"--{role} mask") if inputs[role] else None
        for role in ("initial", "scribble", "cas")
    }
    report = compute_metrics(
        reference, compared, args.labels, **extra, sigma=args.sigma, sigma_mm=args.sigma_mm
    )
    if args.dmap:
        write_image(args.dmap, report["_editing_result"].d_map, reference.geometry)
    if args.json:
        for w in report["warnings"]:
            print(f"losslab metrics: warning: {w}", file=sys.stderr)
        print(to_json(report))
    else:
        print(format_table(report))
    return 0
