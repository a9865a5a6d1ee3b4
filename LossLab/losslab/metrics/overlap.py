"""Overlap metrics: Dice, IoU (Jaccard), mIoU and pixel accuracy, for binary masks and label maps.

Conventions:

- Binary masks: any non-zero voxel is foreground. Dice = 2|P & R| / (|P| + |R|), IoU = |P & R| / |P | R|.
  When both masks are empty the score is undefined: ``NaN`` and a ``UserWarning`` (aggregations skip it).
- Label maps: the class list is explicit (``labels``). Each listed class is scored one-vs-rest; voxels whose
  value is not listed belong to no listed class. ``mean`` scores (mean Dice, mIoU) average the listed classes
  that are defined (``NaN`` classes are skipped and counted).
- Pixel accuracy: the fraction of voxels whose reference value is a listed class where the prediction
  equals the reference.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence

import numpy as np
import torch


def _as_numpy(x: np.ndarray | torch.Tensor) -> np.ndarray:
    if isinstance(x, torch.Tensor):
        return x.detach().cpu().numpy()
    return np.asarray(x)


def _check_shapes(pred: np.ndarray, ref: np.ndarray) -> None:
    if pred.shape != ref.shape:
        raise ValueError(
            f"prediction and reference must have the same shape, got {pred.shape} and {ref.shape}"
        )


def confusion_matrix(
    pred: np.ndarray | torch.Tensor, ref: np.ndarray | torch.Tensor, labels: Sequence[int]
) -> np.ndarray:
    """Confusion counts over the listed classes plus one "unlisted" row/column.

    Args:
        pred, ref: integer label maps of the same shape.
        labels: the class values to score, in order (distinct integers).

    Returns:
        ``int64`` array ``(C + 1, C + 1)``: entry ``[r, p]`` counts voxels with reference class ``r`` and
        predicted class ``p`` (index ``C`` is "any value not in ``labels``").
    """
    pred_np, ref_np = _as_numpy(pred), _as_numpy(ref)
    _check_shapes(pred_np, ref_np)
    labels = [int(v) for v in labels]
    if len(labels) == 0:
        raise ValueError("labels must list at least one class value, got an empty list")
    if len(set(labels)) != len(labels):
        raise ValueError(f"labels must be distinct, got {labels}")
    n = len(labels)
    ref_idx = _label_index(ref_np, labels)
    pred_idx = _label_index(pred_np, labels)
    counts = np.bincount((ref_idx * (n + 1) + pred_idx).ravel(), minlength=(n + 1) ** 2)
    return counts.reshape(n + 1, n + 1).astype(np.int64)


def _label_index(values: np.ndarray, labels: list[int]) -> np.ndarray:
    n = len(labels)
    if not np.issubdtype(values.dtype, np.integer) and values.dtype != bool:
        if not np.all(np.equal(np.mod(values, 1), 0)):
            raise ValueError(f"label maps must hold integer values, got dtype {values.dtype} with fractions")
        values = values.astype(np.int64)
    values = values.astype(np.int64, copy=False)
    lo, hi = min(labels), max(labels)
    if lo >= 0 and hi < 65536:
        # Look-up table shifted by one: negative values map to slot 0 and values above the largest label to
        # the last slot, both "unlisted" (index n).
        table = np.full(hi + 3, n, dtype=np.int64)
        table[np.asarray(labels) + 1] = np.arange(n)
        return table[np.clip(values, -1, hi + 1) + 1]
    out = np.full(values.shape, n, dtype=np.int64)
    for index, value in enumerate(labels):
        out[values == value] = index
    return out


def _binary_counts(pred: np.ndarray | torch.Tensor, ref: np.ndarray | torch.Tensor) -> tuple[int, int, int]:
    p, r = _as_numpy(pred).astype(bool, copy=False), _as_numpy(ref).astype(bool, copy=False)
    _check_shapes(p, r)
    return int(np.count_nonzero(p & r)), int(np.count_nonzero(p)), int(np.count_nonzero(r))


def _ratio(num: float, den: float, what: str) -> float:
    if den == 0:
        warnings.warn(f"{what}: prediction and reference are both empty, the score is NaN", UserWarning, 3)
        return float("nan")
    return num / den


def dice_score(pred: np.ndarray | torch.Tensor, ref: np.ndarray | torch.Tensor) -> float:
    """Dice ``2|P & R| / (|P| + |R|)`` of two binary masks; ``NaN`` (with a warning) if both are empty."""
    inter, n_pred, n_ref = _binary_counts(pred, ref)
    return _ratio(2.0 * inter, n_pred + n_ref, "Dice")


def iou_score(pred: np.ndarray | torch.Tensor, ref: np.ndarray | torch.Tensor) -> float:
    """IoU (Jaccard) ``|P & R| / |P | R|`` of two binary masks; ``NaN`` (with a warning) if both are empty."""
    inter, n_pred, n_ref = _binary_counts(pred, ref)
    return _ratio(float(inter), n_pred + n_ref - inter, "IoU")


def overlap_per_class(
    pred: np.ndarray | torch.Tensor, ref: np.ndarray | torch.Tensor, labels: Sequence[int]
) -> dict[int, dict[str, float]]:
    """Dice and IoU of each listed class of two label maps.

    Returns:
        ``{label: {"dice", "iou", "reference_voxels", "compared_voxels"}}``; classes absent from both maps
        score ``NaN`` (one warning names them).
    """
    cm = confusion_matrix(pred, ref, labels)
    out: dict[int, dict[str, float]] = {}
    empty = []
    for index, value in enumerate(int(v) for v in labels):
        tp = float(cm[index, index])
        n_ref = float(cm[index, :].sum())
        n_pred = float(cm[:, index].sum())
        if n_ref + n_pred == 0:
            empty.append(value)
            dice = iou = float("nan")
        else:
            dice = 2.0 * tp / (n_ref + n_pred)
            iou = tp / (n_ref + n_pred - tp)
        out[value] = {"dice": dice, "iou": iou, "reference_voxels": n_ref, "compared_voxels": n_pred}
    if empty:
        warnings.warn(
            f"classes {empty} are absent from both label maps: their scores are NaN", UserWarning, 2
        )
    return out


def mean_iou(pred: np.ndarray | torch.Tensor, ref: np.ndarray | torch.Tensor, labels: Sequence[int]) -> float:
    """mIoU: the mean IoU over the listed classes that are defined (absent-from-both classes skipped)."""
    scores = [row["iou"] for row in overlap_per_class(pred, ref, labels).values()]
    return _nanmean(scores)


def mean_dice(
    pred: np.ndarray | torch.Tensor, ref: np.ndarray | torch.Tensor, labels: Sequence[int]
) -> float:
    """Mean Dice over the listed classes that are defined (absent-from-both classes skipped)."""
    scores = [row["dice"] for row in overlap_per_class(pred, ref, labels).values()]
    return _nanmean(scores)


def pixel_accuracy(
    pred: np.ndarray | torch.Tensor, ref: np.ndarray | torch.Tensor, labels: Sequence[int]
) -> float:
    """Fraction of voxels with a listed reference class whose predicted value equals the reference."""
    cm = confusion_matrix(pred, ref, labels)
    n = len(labels)
    total = cm[:n, :].sum()
    if total == 0:
        warnings.warn(
            "pixel accuracy: no reference voxel has a listed class, the score is NaN", UserWarning, 2
        )
        return float("nan")
    return float(np.trace(cm[:n, :n]) / total)


def _nanmean(values: Sequence[float]) -> float:
    arr = np.asarray(values, dtype=np.float64)
    arr = arr[np.isfinite(arr)]
    return float(arr.mean()) if arr.size else float("nan")
