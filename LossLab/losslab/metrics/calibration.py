"""Class-wise expected calibration error (classwise-ECE, Kull et al. 2019), the calibration measure of
dice-gradient-mime-kervadec (Sec. 3.4, Fig. 3).

For each class ``k``, the predicted probabilities ``p_k`` of all voxels are put in ``n_bins`` equal-width bins
over ``[0, 1]`` (a probability of exactly 1 goes to the last bin). In bin ``b``: confidence ``conf_b`` = mean of
``p_k``, accuracy ``acc_b`` = fraction of its voxels whose label is ``k``. Then
``ECE_k = sum_b |B_b| / N * |acc_b - conf_b|`` and classwise-ECE is the mean of ``ECE_k`` over the classes.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch


def _prepare(
    probs: np.ndarray | torch.Tensor, labels: np.ndarray | torch.Tensor
) -> tuple[np.ndarray, np.ndarray]:
    p = probs.detach().cpu().numpy() if isinstance(probs, torch.Tensor) else np.asarray(probs)
    y = labels.detach().cpu().numpy() if isinstance(labels, torch.Tensor) else np.asarray(labels)
    if p.ndim == y.ndim + 1 and p.shape[1:] == y.shape:  # (C, *spatial) and (*spatial)
        p = p[None]
        y = y[None]
    if p.ndim != y.ndim + 1 or p.shape[0] != y.shape[0] or p.shape[2:] != y.shape[1:]:
        raise ValueError(
            "probs must be (C, *spatial) with labels (*spatial), or (B, C, *spatial) with labels "
            f"(B, *spatial); got probs {p.shape} and labels {y.shape}"
        )
    if p.size and (np.nanmin(p) < 0 or np.nanmax(p) > 1):
        raise ValueError(
            f"probs must be probabilities in [0, 1] (apply softmax to logits first), got [{p.min()}, {p.max()}]"
        )
    n_class = p.shape[1]
    p = np.moveaxis(p, 1, -1).reshape(-1, n_class).astype(np.float64)
    return p, y.reshape(-1).astype(np.int64)


def reliability_bins(
    probs: np.ndarray | torch.Tensor, labels: np.ndarray | torch.Tensor, n_bins: int = 10
) -> dict[str, np.ndarray]:
    """Per-class reliability-diagram data.

    Args:
        probs: probabilities ``(C, *spatial)`` or ``(B, C, *spatial)``.
        labels: integer labels ``(*spatial)`` or ``(B, *spatial)`` with values in ``0..C-1``.
        n_bins: number of equal-width bins (>= 1).

    Returns:
        ``{"count", "confidence", "accuracy"}``, each ``(C, n_bins)``; empty bins have count 0 and NaN
        confidence / accuracy. Also ``"edges"`` ``(n_bins + 1,)``.
    """
    if int(n_bins) != n_bins or n_bins < 1:
        raise ValueError(f"n_bins must be a positive integer, got {n_bins}")
    n_bins = int(n_bins)
    p, y = _prepare(probs, labels)
    n_class = p.shape[1]
    bins = np.minimum((p * n_bins).astype(np.int64), n_bins - 1)  # (N, C)
    offsets = np.arange(n_class) * n_bins
    flat = (bins + offsets).ravel()
    hits = (y[:, None] == np.arange(n_class)[None, :]).astype(np.float64).ravel()
    size = n_class * n_bins
    count = np.bincount(flat, minlength=size).reshape(n_class, n_bins).astype(np.float64)
    conf_sum = np.bincount(flat, weights=p.ravel(), minlength=size).reshape(n_class, n_bins)
    acc_sum = np.bincount(flat, weights=hits, minlength=size).reshape(n_class, n_bins)
    with np.errstate(invalid="ignore", divide="ignore"):
        confidence = np.where(count > 0, conf_sum / count, np.nan)
        accuracy = np.where(count > 0, acc_sum / count, np.nan)
    return {
        "count": count,
        "confidence": confidence,
        "accuracy": accuracy,
        "edges": np.linspace(0.0, 1.0, n_bins + 1),
    }


def classwise_ece(
    probs: np.ndarray | torch.Tensor,
    labels: np.ndarray | torch.Tensor,
    n_bins: int = 10,
    classes: Sequence[int] | None = None,
) -> tuple[float, np.ndarray]:
    """Class-wise expected calibration error.

    Args:
        probs, labels, n_bins: as in :func:`reliability_bins`.
        classes: which classes enter the mean (default: all ``C``).

    Returns:
        ``(classwise_ece, per_class_ece)``: the mean over ``classes`` and the ``(C,)`` vector of ``ECE_k``.
    """
    rel = reliability_bins(probs, labels, n_bins)
    count = rel["count"]
    total = count.sum(axis=1, keepdims=True)
    gap = np.abs(np.nan_to_num(rel["accuracy"]) - np.nan_to_num(rel["confidence"]))
    per_class = (count / np.maximum(total, 1) * gap).sum(axis=1)
    chosen = list(range(count.shape[0])) if classes is None else [int(c) for c in classes]
    bad = [c for c in chosen if not 0 <= c < count.shape[0]]
    if bad:
        raise ValueError(f"classes {bad} are out of range for {count.shape[0]} classes")
    return float(per_class[chosen].mean()), per_class
