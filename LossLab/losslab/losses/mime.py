"""Mime losses: dice-gradient-mime-kervadec eqs. (8)-(10).

The Dice gradient (eq. 6) is a weighted negative of the ground truth with a small dynamic range; the mime
keeps its sign and drops its magnitude: ``dL/ds = -a`` on the ground truth, ``+b`` elsewhere (eq. 8).
"""

from __future__ import annotations

import torch
from torch import nn

from ._utils import (
    check_input,
    check_number,
    check_reduction,
    float32_compute,
    probabilities,
    reduce,
    target_labels_or_dense,
)


def _y_dot_s(probs: torch.Tensor, target: torch.Tensor, input: torch.Tensor) -> torch.Tensor:
    """``y^T s`` per image ``(B,)``: a gather for a label map, a product for a one-hot / soft target."""
    labels, dense = target_labels_or_dense(target, input)
    if dense is not None:
        return (dense * probs).flatten(1).sum(1)
    return probs.gather(1, labels.unsqueeze(1)).flatten(1).sum(1)


def _per_image(total: torch.Tensor, reduction: str, numel_per_image: int) -> torch.Tensor:
    """``total`` is ``(B,)`` of per-image sums of eq. (9)."""
    if reduction == "sum":
        return total.sum()
    return reduce(total / numel_per_image, reduction)


def mime_loss(
    input: torch.Tensor, target: torch.Tensor, a: float = 1.9, b: float = 0.1, reduction: str = "mean"
) -> torch.Tensor:
    """Functional twin of :class:`MimeLoss`."""
    check_reduction(reduction)
    check_input(input)
    probs = probabilities(input)
    # omega^T s = b sum(s) - (a + b) y^T s, with omega = -a y + b (1 - y)
    total = b * probs.flatten(1).sum(1) - (a + b) * _y_dot_s(probs, target, input)
    return _per_image(total, reduction, probs[0].numel())


class MimeLoss(nn.Module):
    """Mime loss, dice-gradient-mime-kervadec eq. (9): ``L = omega_y^T s``, ``omega_y = -a y + b (1 - y)``.

    ``s`` are the softmax probabilities of all classes (``[1 - sigmoid, sigmoid]`` for a binary input) and
    ``y`` the one-hot target, both flattened over classes and voxels; so ``dL/ds = omega_y`` exactly: ``-a``
    on the ground truth and ``+b`` elsewhere (eq. 8). The defaults ``a=1.9, b=0.1`` give the paper's
    experiment, ``omega_y = -2 y + 0.1`` (Sec. 3.1).

    Reduction:
        - "sum": eq. (9) exactly, summed over the batch.
        - "mean": the sum divided by the number of elements ``B * |K| * |Omega|``.
        - "none": per image, eq. (9) divided by ``|K| * |Omega|`` (so "mean" is its mean), shape ``(B,)``.

    Args:
        a: weight of the ground-truth probabilities, ``> 0``.
        b: weight of the other probabilities, ``>= 0`` (the paper takes ``b > 0``; ``b = 0`` is a scaled
            :class:`NegativeMimeLoss`).
        reduction: "mean" | "sum" | "none".

    Shapes:
        input: logits ``(B, C, *spatial)``; target: label map ``(B, *spatial)`` / ``(B, 1, *spatial)`` or a
        one-hot of the input's shape.

    Note:
        The loss value is not bounded below by 0 and means little on its own; it is its gradient that
        supervises (the paper's point).
    """

    def __init__(self, a: float = 1.9, b: float = 0.1, reduction: str = "mean") -> None:
        super().__init__()
        self.a = check_number("a", a, positive=True)
        self.b = check_number("b", b, non_negative=True)
        self.reduction = check_reduction(reduction)

    @float32_compute
    def forward(self, input: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return mime_loss(input, target, self.a, self.b, self.reduction)


def negative_mime_loss(input: torch.Tensor, target: torch.Tensor, reduction: str = "mean") -> torch.Tensor:
    """Functional twin of :class:`NegativeMimeLoss`."""
    check_reduction(reduction)
    check_input(input)
    probs = probabilities(input)
    total = -_y_dot_s(probs, target, input)
    return _per_image(total, reduction, probs[0].numel())


class NegativeMimeLoss(nn.Module):
    """Negative mime loss, dice-gradient-mime-kervadec eq. (10), with the sign the text intends:
    ``L = -y^T s``.

    Eq. (10) is printed as ``y^T s``, whose minimisation would push the probabilities *away* from the ground
    truth; the text introduces it as "a negative of the ground truth" (Sec. 2.4, and the gradient of eq. (8)
    with ``b = 0``), so LossLab implements ``-y^T s`` (``dL/ds = -y``). Meant for multi-class tasks
    (``K >= 2``), where the classes balance each other; with a binary task it has trivial solutions.

    Reduction as :class:`MimeLoss`: "sum" sums over everything, "mean" divides by ``B * |K| * |Omega|``,
    "none" gives ``(B,)`` per-image means.

    Shapes:
        input: logits ``(B, C, *spatial)``; target: label map or one-hot of the input's shape.
    """

    def __init__(self, reduction: str = "mean") -> None:
        super().__init__()
        self.reduction = check_reduction(reduction)

    @float32_compute
    def forward(self, input: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return negative_mime_loss(input, target, self.reduction)
