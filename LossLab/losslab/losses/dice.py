"""Soft Dice losses: mean-class Dice, generalized Dice and Tversky.

- :class:`DiceLoss`: dice-gradient-mime-kervadec eq. (3) (``alpha=1``); ``alpha=2`` squares the denominator
  terms (V-Net; the "mean Dice" of label-set-losses-fidon2021 eq. (4) and its released code).
- :class:`GeneralizedDiceLoss`: Sudre et al. 2017, a baseline of margin-calibration-li2021.
- :class:`TverskyLoss`: Salehi et al. 2017, a baseline of margin-calibration-li2021.

Epsilon convention (all three): ``epsilon`` is added to the denominator only. A class absent from both the
target and the prediction therefore has Dice 0 and loss 1 (not 0), as in label-set-losses-fidon2021 eq. (4)
and its released code; its gradient is still 0, so it only shifts the value of the loss.
"""

from __future__ import annotations

import torch
from torch import nn

from ._utils import (
    check_bool,
    check_choice,
    check_input,
    check_number,
    check_reduction,
    float32_compute,
    probabilities,
    reduce,
    spatial_sum,
    target_labels_or_dense,
)


def soft_dice_per_class(
    probs: torch.Tensor, onehot: torch.Tensor, alpha: int = 1, epsilon: float = 1e-5
) -> torch.Tensor:
    """Soft Dice ``2 sum(y s) / (sum(y^a) + sum(s^a) + eps)`` per image, class: ``(B, C, *sp) -> (B, C)``."""
    inter = spatial_sum(probs * onehot)
    if alpha == 1:
        denom = spatial_sum(probs) + spatial_sum(onehot)
    else:
        denom = spatial_sum(probs * probs) + spatial_sum(onehot * onehot)
    return 2.0 * inter / (denom + epsilon)


def class_stats(
    probs: torch.Tensor,
    labels: torch.Tensor | None,
    dense: torch.Tensor | None,
    alpha: int = 1,
    mask: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Per image and class ``(B, C)``: ``sum_i y s``, ``sum_i s^alpha`` and ``sum_i y^alpha``.

    With a label map (``labels``, optionally restricted to the voxels where ``mask`` is True) the target
    terms come from a gather and a scatter-add over ``(B, N)``, without building a one-hot ``(B, C, N)``
    tensor; with a ``dense`` (one-hot / soft) target they are plain products.
    """
    flat = probs.flatten(2)
    psum = flat.sum(-1) if alpha == 1 else (flat * flat).sum(-1)
    if dense is not None:
        y = dense.flatten(2)
        inter = (flat * y).sum(-1)
        ysum = y.sum(-1) if alpha == 1 else (y * y).sum(-1)
        return inter, psum, ysum
    if labels is None:
        raise ValueError("class_stats needs labels or a dense target")
    index = labels.flatten(1).unsqueeze(1)  # (B, 1, N)
    p_y = flat.gather(1, index)[:, 0]  # (B, N)
    ones = torch.ones_like(p_y)
    if mask is not None:
        m = mask.flatten(1).to(p_y.dtype)
        p_y, ones = p_y * m, m
    zeros = torch.zeros(flat.shape[:2], dtype=flat.dtype, device=flat.device)
    inter = zeros.scatter_add(1, index[:, 0], p_y)
    ysum = zeros.scatter_add(1, index[:, 0], ones)
    return inter, psum, ysum


def _stats(
    input: torch.Tensor, target: torch.Tensor, alpha: int, include_background: bool
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    check_input(input)
    labels, dense = target_labels_or_dense(target, input)
    inter, psum, ysum = class_stats(probabilities(input), labels, dense, alpha)
    if not include_background:
        inter, psum, ysum = inter[:, 1:], psum[:, 1:], ysum[:, 1:]
    return inter, psum, ysum


def dice_loss(
    input: torch.Tensor,
    target: torch.Tensor,
    alpha: int = 1,
    epsilon: float = 1e-5,
    include_background: bool = True,
    reduction: str = "mean",
) -> torch.Tensor:
    """Functional twin of :class:`DiceLoss`."""
    check_choice("alpha", alpha, (1, 2))
    check_reduction(reduction)
    inter, psum, ysum = _stats(input, target, alpha, include_background)
    dice = 2.0 * inter / (psum + ysum + epsilon)
    return reduce((1.0 - dice).mean(dim=1), reduction)


class DiceLoss(nn.Module):
    """Mean-class soft Dice loss, dice-gradient-mime-kervadec eq. (3).

    Per image ``L = 1/|K| sum_k (1 - 2 sum_i y_ik s_ik / (sum_i y_ik^a + sum_i s_ik^a + epsilon))`` with ``s``
    the softmax probabilities (``[1 - sigmoid, sigmoid]`` for a binary input), ``y`` the one-hot target and
    ``a = alpha``: ``alpha=1`` is eq. (3); ``alpha=2`` squares the denominator terms (V-Net, and the mean Dice
    of label-set-losses-fidon2021 eq. (4)).

    Conventions:
        - Sums run over the voxels of each image; classes are averaged per image, then ``reduction`` acts
          on the batch.
        - ``epsilon`` sits in the denominator only: a class absent from both target and prediction counts
          as loss 1 (label-set-losses-fidon2021 eq. (4) and its released code), not 0.
        - ``include_background=False`` drops channel 0 after the softmax (the softmax still covers it).
        - The gradient w.r.t. the probabilities is two-valued per class, eq. (6); see
          :mod:`losslab.analysis`.

    Args:
        alpha: 1 (eq. 3) or 2 (squared denominator terms).
        epsilon: ``>= 0``, added to each class's denominator.
        include_background: whether class 0 takes part in the mean.
        reduction: "mean" | "sum" | "none" over the batch (``"none"`` -> ``(B,)``).

    Shapes:
        input: logits ``(B, C, *spatial)`` (``C == 1``: binary, sigmoid).
        target: label map ``(B, *spatial)`` / ``(B, 1, *spatial)``, or a one-hot / soft target of the input's
            shape (float, ``C > 1``).

    Raises:
        ValueError: invalid option (e.g. ``alpha=3``), shape mismatch or labels out of range.
    """

    def __init__(
        self,
        alpha: int = 1,
        epsilon: float = 1e-5,
        include_background: bool = True,
        reduction: str = "mean",
    ) -> None:
        super().__init__()
        self.alpha = check_choice("alpha", alpha, (1, 2))
        self.epsilon = check_number("epsilon", epsilon, non_negative=True)
        self.include_background = check_bool("include_background", include_background)
        self.reduction = check_reduction(reduction)

    @float32_compute
    def forward(self, input: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return dice_loss(input, target, self.alpha, self.epsilon, self.include_background, self.reduction)


def generalized_dice_loss(
    input: torch.Tensor,
    target: torch.Tensor,
    epsilon: float = 1e-5,
    include_background: bool = True,
    reduction: str = "mean",
) -> torch.Tensor:
    """Functional twin of :class:`GeneralizedDiceLoss`."""
    check_reduction(reduction)
    inter, psum, volume = _stats(input, target, 1, include_background)
    w = 1.0 / (volume * volume)
    # Classes absent from the target: weight = the largest finite weight of the image (MONAI's convention).
    absent = torch.isinf(w)
    w = torch.where(absent, torch.zeros_like(w), w)
    w = w + absent.to(w.dtype) * w.max(dim=1, keepdim=True).values
    w = w.detach()
    numer = (w * inter).sum(1)
    denom = (w * (psum + volume)).sum(1)
    return reduce(1.0 - 2.0 * numer / (denom + epsilon), reduction)


class GeneralizedDiceLoss(nn.Module):
    """Generalized Dice loss (Sudre et al., DLMIA 2017, eq. (1)), a baseline of margin-calibration-li2021.

    Per image ``L = 1 - 2 sum_k w_k sum_i y_ik s_ik / (sum_k w_k sum_i (y_ik + s_ik) + epsilon)`` with
    ``w_k = 1 / (sum_i y_ik)^2`` (treated as a constant). A class absent from an image's target would have an
    infinite weight; it gets the largest weight of the present classes instead (MONAI's convention).

    Args:
        epsilon: ``>= 0``, in the denominator only.
        include_background: whether class 0 takes part.
        reduction: "mean" | "sum" | "none" (``(B,)``).

    Shapes:
        input ``(B, C, *spatial)`` logits; target label map or one-hot of the input's shape.
    """

    def __init__(
        self, epsilon: float = 1e-5, include_background: bool = True, reduction: str = "mean"
    ) -> None:
        super().__init__()
        self.epsilon = check_number("epsilon", epsilon, non_negative=True)
        self.include_background = check_bool("include_background", include_background)
        self.reduction = check_reduction(reduction)

    @float32_compute
    def forward(self, input: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return generalized_dice_loss(input, target, self.epsilon, self.include_background, self.reduction)


def tversky_loss(
    input: torch.Tensor,
    target: torch.Tensor,
    alpha: float = 0.3,
    beta: float = 0.7,
    epsilon: float = 1e-5,
    include_background: bool = True,
    reduction: str = "mean",
) -> torch.Tensor:
    """Functional twin of :class:`TverskyLoss`."""
    check_reduction(reduction)
    tp, psum, ysum = _stats(input, target, 1, include_background)
    fp = psum - tp
    fn = ysum - tp
    ti = tp / (tp + alpha * fp + beta * fn + epsilon)
    return reduce((1.0 - ti).mean(dim=1), reduction)


class TverskyLoss(nn.Module):
    """Tversky loss (Salehi et al., MLMI 2017, eq. (3)), a baseline of margin-calibration-li2021.

    Per image ``L = 1/|K| sum_k (1 - TP_k / (TP_k + alpha FP_k + beta FN_k + epsilon))`` with soft counts
    ``TP = sum y s``, ``FP = sum (1-y) s``, ``FN = sum y (1-s)``. ``alpha = beta = 0.5`` gives
    :class:`DiceLoss` (``alpha=1``); the defaults 0.3 / 0.7 are Salehi et al.'s, weighting false negatives.

    Args:
        alpha: weight of the false positives, ``>= 0``.
        beta: weight of the false negatives, ``>= 0``.
        epsilon: ``>= 0``, in the denominator only (absent class -> loss 1, as :class:`DiceLoss`).
        include_background: whether class 0 takes part.
        reduction: "mean" | "sum" | "none" (``(B,)``).
    """

    def __init__(
        self,
        alpha: float = 0.3,
        beta: float = 0.7,
        epsilon: float = 1e-5,
        include_background: bool = True,
        reduction: str = "mean",
    ) -> None:
        super().__init__()
        self.alpha = check_number("alpha", alpha, non_negative=True)
        self.beta = check_number("beta", beta, non_negative=True)
        self.epsilon = check_number("epsilon", epsilon, non_negative=True)
        self.include_background = check_bool("include_background", include_background)
        self.reduction = check_reduction(reduction)

    @float32_compute
    def forward(self, input: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return tversky_loss(
            input, target, self.alpha, self.beta, self.epsilon, self.include_background, self.reduction
        )
