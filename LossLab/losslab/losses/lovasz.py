"""Lovasz-softmax loss (Berman, Rannen Triki and Blaschko, CVPR 2018), a baseline of
margin-calibration-li2021 (its released code uses it per image, over the classes present).

Vectorised: one sort per (image, class) row, batched in a single ``torch.sort``; no loop over voxels,
classes or images.
"""

from __future__ import annotations

import torch
from torch import nn

from ._utils import (
    check_bool,
    check_choice,
    check_ignore_index,
    check_input,
    check_label_range,
    check_reduction,
    float32_compute,
    label_map,
    num_classes,
    probabilities,
    reduce,
)

CLASS_CHOICES = ("present", "all")


def lovasz_softmax_loss(
    input: torch.Tensor,
    target: torch.Tensor,
    classes: str = "present",
    per_image: bool = True,
    ignore_index: int | None = None,
    reduction: str = "mean",
) -> torch.Tensor:
    """Functional twin of :class:`LovaszSoftmaxLoss`."""
    check_choice("classes", classes, CLASS_CHOICES)
    check_bool("per_image", per_image)
    check_reduction(reduction)
    if not per_image and reduction == "none":
        raise ValueError("reduction='none' needs per_image=True (per_image=False gives one value per batch)")
    check_input(input)
    probs = probabilities(input)
    n = num_classes(input)
    labels = label_map(target, input)
    check_label_range(labels, n, ignore_index)
    p = probs.flatten(2)  # (B, C, N)
    y = labels.flatten(1)  # (B, N)
    if not per_image:
        p = p.transpose(0, 1).reshape(1, n, -1)
        y = y.reshape(1, -1)
    valid = torch.ones_like(y, dtype=torch.bool) if ignore_index is None else y != ignore_index
    fg = (y.unsqueeze(1) == torch.arange(n, device=y.device).view(1, n, 1)) & valid.unsqueeze(1)
    fg = fg.to(p.dtype)  # (B', C, N)
    errors = (fg - p).abs()
    # Ignored pixels get error -1: sorted (descending) after every valid pixel, then zeroed out, so the
    # cumulative sums over the valid prefix are exactly those of the valid pixels alone.
    errors = torch.where(valid.unsqueeze(1), errors, torch.full_like(errors, -1.0))
    errors_sorted, order = torch.sort(errors, dim=2, descending=True)
    fg_sorted = torch.gather(fg, 2, order)
    valid_sorted = torch.gather(valid.unsqueeze(1).expand_as(fg), 2, order).to(p.dtype)
    grad = _lovasz_grad(fg_sorted)
    per_class = (errors_sorted * valid_sorted * grad).sum(2)  # (B', C)
    if classes == "present":
        present = (fg.sum(2) > 0).to(p.dtype)
        count = present.sum(1)
        # An image with no valid pixel contributes 0 (Berman's reference code does the same).
        per_image_loss = (per_class * present).sum(1) / count.clamp_min(1.0)
    else:
        per_image_loss = per_class.mean(1)
    if not per_image:
        return per_image_loss[0]
    return reduce(per_image_loss, reduction)


def _lovasz_grad(fg_sorted: torch.Tensor) -> torch.Tensor:
    """Gradient of the Lovasz extension of the Jaccard loss w.r.t. sorted errors (Berman et al., Alg. 1)."""
    gts = fg_sorted.sum(-1, keepdim=True)
    intersection = gts - fg_sorted.cumsum(-1)
    union = gts + (1.0 - fg_sorted).cumsum(-1)
    jaccard = 1.0 - intersection / union
    return torch.cat([jaccard[..., :1], jaccard[..., 1:] - jaccard[..., :-1]], dim=-1)


class LovaszSoftmaxLoss(nn.Module):
    """Lovasz-softmax loss (Berman et al., CVPR 2018, eq. (12) and Alg. 1), a baseline of
    margin-calibration-li2021.

    The convex Lovasz extension of the Jaccard loss of each class, applied to the errors
    ``|1(y_i = c) - p_ic|`` of the softmax probabilities, averaged over classes. Per image and over the
    classes present in the image by default, as the margin paper's released code uses it.

    Args:
        classes: "present" (average over the classes present in the target; an image with none gives 0) or
            "all".
        per_image: compute per image (``True``) or over the whole batch as one image (``False``; then
            ``reduction`` "mean" and "sum" both return that single value and "none" is refused).
        ignore_index: a label whose pixels are left out.
        reduction: "mean" | "sum" | "none" (``(B,)``).

    Shapes:
        input: logits ``(B, C, *spatial)`` (``C == 1``: binary, two-class ``[1 - sigmoid, sigmoid]``).
        target: label map ``(B, *spatial)`` or ``(B, 1, *spatial)``.
    """

    def __init__(
        self,
        classes: str = "present",
        per_image: bool = True,
        ignore_index: int | None = None,
        reduction: str = "mean",
    ) -> None:
        super().__init__()
        self.classes = check_choice("classes", classes, CLASS_CHOICES)
        self.per_image = check_bool("per_image", per_image)
        self.ignore_index = check_ignore_index(ignore_index)
        self.reduction = check_reduction(reduction)
        if not per_image and reduction == "none":
            raise ValueError(
                "reduction='none' needs per_image=True (per_image=False gives one value per batch)"
            )

    @float32_compute
    def forward(self, input: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return lovasz_softmax_loss(
            input, target, self.classes, self.per_image, self.ignore_index, self.reduction
        )
