"""Cross-entropy and focal loss (the baselines of the four papers).

- :class:`CrossEntropyLoss`: dice-gradient-mime-kervadec eq. (4); the "CE" baseline of every paper.
- :class:`FocalLoss`: Lin et al. 2017, a baseline of margin-calibration-li2021 (Sec. 4).
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from ._utils import (
    as_weight,
    check_ignore_index,
    check_input,
    check_label_range,
    check_number,
    check_reduction,
    float32_compute,
    label_map,
    log_probabilities,
    num_classes,
)


def _voxel_terms(
    input: torch.Tensor,
    target: Any,
    weight: torch.Tensor | None,
    ignore_index: int | None,
    gamma: float = 0.0,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-voxel loss ``w_y * (1 - p_y)^gamma * (-log p_y)`` and per-voxel weight ``w_y`` (0 where ignored).

    Both ``(B, *spatial)``.
    """
    check_input(input)
    labels = label_map(target, input)
    n = num_classes(input)
    check_label_range(labels, n, ignore_index)
    if weight is not None and weight.numel() != n:
        raise ValueError(
            f"weight has {weight.numel()} entries but the input encodes {n} classes"
            + (" (binary input: weights for [background, foreground])" if input.shape[1] == 1 else "")
        )
    valid = None if ignore_index is None else labels != ignore_index
    safe = labels if valid is None else torch.where(valid, labels, torch.zeros_like(labels))
    # log-softmax + NLL is what F.cross_entropy does; spelled out so the gradient lab can probe log p.
    nll = F.nll_loss(log_probabilities(input), safe, reduction="none")
    if gamma != 0.0:
        logp_y = -nll
        nll = (1.0 - logp_y.exp()).clamp_min(0.0).pow(gamma) * nll
    w = torch.ones_like(nll) if weight is None else weight.to(device=nll.device, dtype=nll.dtype)[safe]
    if valid is not None:
        w = w * valid.to(nll.dtype)
    return nll * w, w


def _reduce_voxels(loss: torch.Tensor, w: torch.Tensor, reduction: str) -> torch.Tensor:
    """PyTorch's convention: "mean" = sum(w * l) / sum(w) over the batch, "sum" = sum(w * l)."""
    if reduction == "sum":
        return loss.sum()
    if reduction == "mean":
        return loss.sum() / w.sum()
    b = loss.shape[0]
    return loss.reshape(b, -1).sum(-1) / w.reshape(b, -1).sum(-1)


def cross_entropy(
    input: torch.Tensor,
    target: torch.Tensor,
    weight: torch.Tensor | None = None,
    ignore_index: int | None = None,
    reduction: str = "mean",
) -> torch.Tensor:
    """Functional twin of :class:`CrossEntropyLoss` (same arguments, same result)."""
    check_reduction(reduction)
    ignore_index = check_ignore_index(ignore_index)
    loss, w = _voxel_terms(input, target, weight, ignore_index)
    return _reduce_voxels(loss, w, reduction)


class CrossEntropyLoss(nn.Module):
    """Cross-entropy on logits, dice-gradient-mime-kervadec eq. (4).

    ``L = sum_i w_{y_i} (-log s_i^{(y_i)}) / sum_i w_{y_i}`` over the non-ignored voxels ``i``: with no
    weights this is eq. (4) up to its constant ``1/|K|`` (the paper divides by ``|K||Omega|``; we follow
    PyTorch and divide by ``|Omega|``, which only rescales the gradient). Identical to
    ``torch.nn.functional.cross_entropy`` (multi-class) or ``binary_cross_entropy_with_logits`` (binary).

    Args:
        weight: per-class weights ``(C,)`` (``(2,)`` = [background, foreground] for a binary input), kept
            as a buffer; ``None`` for none.
        ignore_index: a label whose voxels contribute nothing (neither to the sum nor to the count).
        reduction: "mean" (weighted mean over all non-ignored voxels of the batch, as PyTorch), "sum" (sum
            over voxels), or "none" (the weighted mean per image, shape ``(B,)``).

    Shapes:
        input: logits ``(B, C, *spatial)``; ``C == 1`` means binary (sigmoid).
        target: label map ``(B, *spatial)`` or ``(B, 1, *spatial)`` in ``0..C-1`` (``0..1`` if binary).

    Raises:
        ValueError: invalid option, shape mismatch, labels out of range, or weights of the wrong length.

    Note:
        An image whose voxels are all ignored gives NaN under "none" (0/0), and a batch that is all ignored
        gives NaN under "mean", as in PyTorch.
    """

    def __init__(
        self,
        weight: Any = None,
        ignore_index: int | None = None,
        reduction: str = "mean",
    ) -> None:
        super().__init__()
        self.reduction = check_reduction(reduction)
        self.ignore_index = check_ignore_index(ignore_index)
        self.weight: torch.Tensor | None
        self.register_buffer("weight", as_weight("weight", weight))

    @float32_compute
    def forward(self, input: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return cross_entropy(input, target, self.weight, self.ignore_index, self.reduction)


def focal_loss(
    input: torch.Tensor,
    target: torch.Tensor,
    gamma: float = 2.0,
    weight: torch.Tensor | None = None,
    ignore_index: int | None = None,
    reduction: str = "mean",
) -> torch.Tensor:
    """Functional twin of :class:`FocalLoss`."""
    check_reduction(reduction)
    gamma = check_number("gamma", gamma, non_negative=True)
    ignore_index = check_ignore_index(ignore_index)
    loss, w = _voxel_terms(input, target, weight, ignore_index, gamma=gamma)
    return _reduce_voxels(loss, w, reduction)


class FocalLoss(nn.Module):
    """Focal loss (Lin et al., ICCV 2017, eq. (5) with ``alpha_t`` = class weights), a baseline of
    margin-calibration-li2021 (Sec. 4.2).

    Per voxel ``-w_{y} (1 - p_y)^gamma log p_y`` with ``p_y`` the softmax (sigmoid if binary) probability of
    the true class; ``gamma = 0`` gives :class:`CrossEntropyLoss` exactly. Reduced like
    :class:`CrossEntropyLoss`: "mean" divides by the sum of the voxel weights (the voxel count without
    weights), "sum" sums, "none" gives the per-image mean ``(B,)``.

    Args:
        gamma: focusing parameter ``>= 0`` (2 in the focal-loss paper).
        weight: per-class weights ``alpha`` ``(C,)`` (``(2,)`` for a binary input), a buffer.
        ignore_index: a label to leave out.
        reduction: "mean" | "sum" | "none".

    Shapes:
        input ``(B, C, *spatial)`` logits; target label map ``(B, *spatial)`` or ``(B, 1, *spatial)``.
    """

    def __init__(
        self,
        gamma: float = 2.0,
        weight: Any = None,
        ignore_index: int | None = None,
        reduction: str = "mean",
    ) -> None:
        super().__init__()
        self.gamma = check_number("gamma", gamma, non_negative=True)
        self.reduction = check_reduction(reduction)
        self.ignore_index = check_ignore_index(ignore_index)
        self.weight: torch.Tensor | None
        self.register_buffer("weight", as_weight("weight", weight))

    @float32_compute
    def forward(self, input: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return focal_loss(input, target, self.gamma, self.weight, self.ignore_index, self.reduction)
