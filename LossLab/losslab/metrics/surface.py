"""Surface distances in mm: Hausdorff (HD), percentile Hausdorff (HD95) and average symmetric surface
distance (ASSD), for binary masks with anisotropic spacing, on CPU (numpy) or GPU (torch).

Conventions (MONAI's, so values agree with ``monai.metrics.compute_hausdorff_distance``):

- Surfaces are the boundary voxels of each mask (:func:`losslab.metrics.boundary`: foreground voxels with a
  face-neighbour in the background; the image border counts as background).
- Directed distances: from each boundary voxel of one mask to the nearest boundary voxel of the other,
  between voxel centres, in mm (``spacing`` in the array's axis order).
- ``HD_p = max(P_p(d(pred -> ref)), P_p(d(ref -> pred)))`` where ``P_p`` is the ``p``-th percentile with
  linear interpolation (numpy / torch ``quantile``); HD is the plain maximum.
- ASSD is the mean of both directed distance sets pooled together:
  ``(sum d(pred -> ref) + sum d(ref -> pred)) / (|dP| + |dR|)``.
- Empty masks: both empty gives ``NaN``; exactly one empty gives ``inf``. Both come with a ``UserWarning``;
  :class:`SegmentationMetrics` aggregations skip them and count them.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

from ._distance import boundary, bounding_box, nearest_distances

ArrayLike = np.ndarray | torch.Tensor


def _crop_to_union(pred: ArrayLike, ref: ArrayLike) -> tuple[ArrayLike, ArrayLike]:
    """Crop both masks to the bounding box of their union plus one voxel (boundaries are unchanged)."""
    box = bounding_box(pred | ref, margin=1)
    return pred[box], ref[box]


def _as_bool(x: ArrayLike, device: torch.device | None = None) -> ArrayLike:
    if isinstance(x, torch.Tensor):
        return x.to(device).bool() if device is not None else x.bool()
    return np.asarray(x).astype(bool, copy=False)


def surface_distances(
    pred: ArrayLike,
    ref: ArrayLike,
    spacing: float | Sequence[float] | None = None,
    metric: str = "euclidean",
) -> tuple[ArrayLike, ArrayLike]:
    """Directed surface distances between two binary masks.

    Args:
        pred: binary mask ``(*spatial)`` (numpy array or torch tensor on any device).
        ref: binary mask of the same shape.
        spacing: voxel size in mm per array axis (or one number); ``None`` measures in voxels.
        metric: ``"euclidean"`` (default), ``"manhattan"`` (spacing-weighted L1) or ``"chessboard"``.

    Returns:
        ``(d_pred_to_ref, d_ref_to_pred)``: float64 vectors, one distance per boundary voxel of ``pred``
        (resp. ``ref``). If the other mask is empty the distances are ``inf``. Torch inputs give tensors on
        the input's device.
    """
    if isinstance(pred, torch.Tensor) or isinstance(ref, torch.Tensor):
        device = pred.device if isinstance(pred, torch.Tensor) else ref.device
        pred_b, ref_b = _as_bool(torch.as_tensor(pred), device), _as_bool(torch.as_tensor(ref), device)
    else:
        pred_b, ref_b = _as_bool(pred), _as_bool(ref)
    if tuple(pred_b.shape) != tuple(ref_b.shape):
        raise ValueError(
            f"prediction and reference must have the same shape, got {tuple(pred_b.shape)} and "
            f"{tuple(ref_b.shape)}"
        )
    if bool(pred_b.any()) or bool(ref_b.any()):
        pred_b, ref_b = _crop_to_union(pred_b, ref_b)
    edge_pred, edge_ref = boundary(pred_b), boundary(ref_b)
    return (
        nearest_distances(edge_pred, edge_ref, spacing, metric),
        nearest_distances(edge_ref, edge_pred, spacing, metric),
    )


def _percentile(d: ArrayLike, percentile: float | None) -> float:
    if isinstance(d, torch.Tensor):
        d = d.detach().cpu().numpy()
    if percentile is None:
        return float(d.max())
    return float(np.percentile(d, percentile))


def _check_percentile(percentile: float | None) -> None:
    if percentile is not None and not 0 <= percentile <= 100:
        raise ValueError(f"percentile must be between 0 and 100 (or None for the maximum), got {percentile}")


def _empty_value(n_pred: int, n_ref: int, what: str) -> float | None:
    if n_pred == 0 and n_ref == 0:
        warnings.warn(f"{what}: prediction and reference are both empty, the distance is NaN", UserWarning, 3)
        return float("nan")
    if n_pred == 0 or n_ref == 0:
        side = "prediction" if n_pred == 0 else "reference"
        warnings.warn(f"{what}: the {side} is empty, the distance is inf", UserWarning, 3)
        return float("inf")
    return None


def hausdorff_from_distances(
    d_pred_to_ref: ArrayLike, d_ref_to_pred: ArrayLike, percentile: float | None = None
) -> float:
    """HD (``percentile=None``) or percentile HD from the two directed distance sets (MONAI convention)."""
    _check_percentile(percentile)
    empty = _empty_value(len(d_pred_to_ref), len(d_ref_to_pred), "Hausdorff distance")
    if empty is not None:
        return empty
    return max(_percentile(d_pred_to_ref, percentile), _percentile(d_ref_to_pred, percentile))


def assd_from_distances(d_pred_to_ref: ArrayLike, d_ref_to_pred: ArrayLike) -> float:
    """ASSD from the two directed distance sets: their pooled mean."""
    empty = _empty_value(len(d_pred_to_ref), len(d_ref_to_pred), "ASSD")
    if empty is not None:
        return empty
    total = float(d_pred_to_ref.sum()) + float(d_ref_to_pred.sum())
    return total / (len(d_pred_to_ref) + len(d_ref_to_pred))


def hausdorff_distance(
    pred: ArrayLike,
    ref: ArrayLike,
    spacing: float | Sequence[float] | None = None,
    percentile: float | None = None,
) -> float:
    """Hausdorff distance in mm (``percentile=None``) or its percentile version (95: HD95).

    Args:
        pred, ref: binary masks of the same shape ``(*spatial)``, numpy or torch (GPU tensors run on GPU).
        spacing: voxel size in mm per array axis, or one number; ``None``: voxel units.
        percentile: ``None`` for the maximum, else a value in ``[0, 100]``.

    Returns:
        The distance (float). ``NaN`` if both masks are empty, ``inf`` if one is (with a warning).

    Raises:
        ValueError: shapes differ, ``spacing`` or ``percentile`` is invalid.
    """
    _check_percentile(percentile)
    return hausdorff_from_distances(*surface_distances(pred, ref, spacing), percentile=percentile)


def hd95(pred: ArrayLike, ref: ArrayLike, spacing: float | Sequence[float] | None = None) -> float:
    """95th-percentile Hausdorff distance in mm (MONAI's ``percentile=95`` convention)."""
    return hausdorff_distance(pred, ref, spacing, percentile=95)


def average_symmetric_surface_distance(
    pred: ArrayLike, ref: ArrayLike, spacing: float | Sequence[float] | None = None
) -> float:
    """ASSD in mm: mean of the pooled directed surface distances (see the module docstring)."""
    return assd_from_distances(*surface_distances(pred, ref, spacing))


def compare_masks(
    pred: ArrayLike, ref: ArrayLike, spacing: float | Sequence[float] | None = None
) -> dict[str, float]:
    """Every overlap and surface metric of two binary masks, with one surface-distance computation.

    Args:
        pred, ref: binary masks of the same shape: bool, integer (non-zero is inside) or floating point
            holding only 0 and 1. Floating-point masks with any other value (0.5, NaN, inf: a probability map
            or a damaged file) are refused rather than thresholded: threshold them yourself.
        spacing: voxel size in mm per array axis (or one number); ``None``: voxel units.

    Returns:
        ``{"dice", "iou", "hd", "hd95", "assd", "reference_voxels", "compared_voxels"}`` (floats, mm for
        distances). Empty masks follow the conventions of :mod:`losslab.metrics.overlap` and this module.

    Raises:
        ValueError: a floating-point mask holds values other than 0 and 1 (the message says which values).
    """
    from .overlap import dice_score, iou_score

    for name, mask in (("pred", pred), ("ref", ref)):
        _check_binary_float(mask, name)
    d1, d2 = surface_distances(pred, ref, spacing)
    pred_np = pred.detach().cpu().numpy() if isinstance(pred, torch.Tensor) else np.asarray(pred)
    ref_np = ref.detach().cpu().numpy() if isinstance(ref, torch.Tensor) else np.asarray(ref)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        row = {
            "dice": dice_score(pred_np, ref_np),
            "iou": iou_score(pred_np, ref_np),
            "hd": hausdorff_from_distances(d1, d2, None),
            "hd95": hausdorff_from_distances(d1, d2, 95),
            "assd": assd_from_distances(d1, d2),
        }
    # One warning for the pair rather than one per metric.
    if caught:
        warnings.warn(f"compare_masks: {caught[-1].message}", UserWarning, stacklevel=2)
    row["reference_voxels"] = float(np.count_nonzero(ref_np))
    row["compared_voxels"] = float(np.count_nonzero(pred_np))
    return row


def _check_binary_float(mask: ArrayLike, name: str) -> None:
    if isinstance(mask, torch.Tensor):
        if not mask.is_floating_point():
            return
        bad = mask[(mask != 0) & (mask != 1)]
        values = bad.detach().cpu().numpy()
    else:
        arr = np.asarray(mask)
        if not np.issubdtype(arr.dtype, np.floating):
            return
        values = arr[(arr != 0) & (arr != 1)]
    if values.size:
        shown = ", ".join(f"{v:g}" for v in np.unique(values)[:5])
        raise ValueError(
            f"compare_masks: {name} must be a binary mask (0 and 1), got {values.size} voxels with other "
            f"values ({shown}{', ...' if np.unique(values).size > 5 else ''}); threshold a probability map first"
        )


@dataclass
class MetricSummary:
    """Aggregate of one metric over cases: mean / std / median over the finite values, and counts."""

    mean: float
    std: float
    median: float
    count: int
    skipped_nan: int
    skipped_inf: int

    @classmethod
    def of(cls, values: Sequence[float]) -> MetricSummary:
        arr = np.asarray(values, dtype=np.float64)
        finite = arr[np.isfinite(arr)]
        nan = float("nan")
        return cls(
            mean=float(finite.mean()) if finite.size else nan,
            std=float(finite.std()) if finite.size else nan,
            median=float(np.median(finite)) if finite.size else nan,
            count=int(finite.size),
            skipped_nan=int(np.isnan(arr).sum()),
            skipped_inf=int(np.isinf(arr).sum()),
        )


class SegmentationMetrics:
    """Accumulates per-class metrics of label-map pairs over cases and aggregates them.

    Example::

        metrics = SegmentationMetrics(labels=[1, 2, 3], spacing=(0.8, 0.8, 0.8), label_names=["WM", "Vent", "Cer"])
        for pred, ref in cases:
            metrics(pred, ref)
        summary = metrics.aggregate()  # {"WM": {"dice": MetricSummary, ...}, ...}

    Args:
        labels: class values to score, one-vs-rest (explicit list, background usually left out).
        spacing: default voxel size in mm (array axis order); a call may pass its own.
        label_names: display names, one per label (default: the label values as text).
        metrics: which of ``"dice", "iou", "hd", "hd95", "assd"`` to compute (default: all).
    """

    ALL = ("dice", "iou", "hd", "hd95", "assd")

    def __init__(
        self,
        labels: Sequence[int],
        spacing: float | Sequence[float] | None = None,
        label_names: Sequence[str] | None = None,
        metrics: Sequence[str] | None = None,
    ) -> None:
        self.labels = [int(v) for v in labels]
        if not self.labels:
            raise ValueError("labels must list at least one class value")
        if label_names is not None and len(label_names) != len(self.labels):
            raise ValueError(
                f"label_names must have one name per label ({len(self.labels)}), got {len(label_names)}"
            )
        self.label_names = [str(n) for n in label_names] if label_names else [str(v) for v in self.labels]
        self.metrics = tuple(metrics) if metrics else self.ALL
        unknown = sorted(set(self.metrics) - set(self.ALL))
        if unknown:
            raise ValueError(f"unknown metrics {unknown}; choose from {list(self.ALL)}")
        self.spacing = spacing
        self.rows: list[dict[str, float | str | int]] = []

    def __call__(
        self,
        pred: ArrayLike,
        ref: ArrayLike,
        spacing: float | Sequence[float] | None = None,
        case: str | None = None,
    ) -> list[dict[str, float | str | int]]:
        """Score one case; returns (and stores) one row per class."""
        spacing = self.spacing if spacing is None else spacing
        case = case if case is not None else f"case{len({r['case'] for r in self.rows})}"
        rows = []
        with warnings.catch_warnings(record=True):
            warnings.simplefilter("always")
            for value, name in zip(self.labels, self.label_names):
                full = compare_masks(pred == value, ref == value, spacing)
                row: dict[str, float | str | int] = {"case": case, "label": value, "name": name}
                row.update({k: full[k] for k in self.metrics})
                rows.append(row)
        self.rows.extend(rows)
        return rows

    def aggregate(self) -> dict[str, dict[str, MetricSummary]]:
        """Per class name and metric: mean / std / median of the finite values; NaN and inf are counted."""
        out: dict[str, dict[str, MetricSummary]] = {}
        for name in self.label_names:
            rows = [r for r in self.rows if r["name"] == name]
            out[name] = {m: MetricSummary.of([float(r[m]) for r in rows]) for m in self.metrics}
        return out

    def reset(self) -> None:
        self.rows.clear()
