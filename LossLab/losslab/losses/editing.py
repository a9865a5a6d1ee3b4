"""The editing loss of ice-editing-shahin2023, eqs. (1)-(3) and Algorithm 1.

Near the user's scribble (weight ``A``) the prediction must match the ground truth; far from it (weight
``1 - A``) it must keep the initial segmentation. ``A`` is the Gaussian heatmap of the scribble computed by
:func:`losslab.metrics.attention_map`, the one function that the interaction encoding and the editing
metric also use.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..metrics.attention import DEFAULT_SIGMA, attention_map
from ._utils import check_input, check_number, check_reduction, float32_compute


def _spatial_map(x: Any, input: torch.Tensor, name: str) -> torch.Tensor:
    """``x`` as ``(B, *spatial)`` float of the input's dtype/device; accepts ``(B, 1, *spatial)`` too."""
    if not isinstance(x, torch.Tensor):
        raise ValueError(f"{name} must be a torch.Tensor; got {type(x).__name__}")
    b, spatial = input.shape[0], tuple(input.shape[2:])
    if x.ndim == input.ndim and x.shape[1] == 1:
        x = x[:, 0]
    if tuple(x.shape) != (b, *spatial):
        raise ValueError(
            f"{name} must have shape {(b, *spatial)} or {(b, 1, *spatial)} to match input "
            f"{tuple(input.shape)}; got {tuple(x.shape)}"
        )
    x = x.to(dtype=input.dtype)
    if x.numel() and (x.min() < 0 or x.max() > 1):
        raise ValueError(f"{name} must hold values in [0, 1]; found {float(x.min()):g}..{float(x.max()):g}")
    return x


def editing_loss(
    input: torch.Tensor,
    target: torch.Tensor,
    initial: torch.Tensor,
    attention: torch.Tensor,
    reduction: str = "mean",
) -> torch.Tensor:
    """Functional twin of :class:`EditingLoss`."""
    check_reduction(reduction)
    check_input(input)
    if input.shape[1] != 1:
        raise ValueError(
            f"EditingLoss is binary (eqs. 2-3): input must have one channel of logits (B, 1, *spatial); "
            f"got {tuple(input.shape)}"
        )
    z = input[:, 0]
    y = _spatial_map(target, input, "target")
    y_init = _spatial_map(initial, input, "initial")
    a = _spatial_map(attention, input, "attention")
    edit = F.binary_cross_entropy_with_logits(z, y, reduction="none")
    preserve = F.binary_cross_entropy_with_logits(z, y_init, reduction="none")
    per_voxel = a * edit + (1.0 - a) * preserve
    if reduction == "sum":
        return per_voxel.sum()
    if reduction == "mean":
        return per_voxel.mean()
    return per_voxel.flatten(1).mean(1)


class EditingLoss(nn.Module):
    """Editing loss, ice-editing-shahin2023 eqs. (1)-(3) and Algorithm 1.

    ``L = mean( A * BCE(y_hat, y) + (1 - A) * BCE(y_hat, y_init) )``: the A-weighted cross-entropy to the
    ground truth ``y`` (``L_edit``, eq. 2) plus the (1 - A)-weighted cross-entropy to the initial
    segmentation ``y_init`` (``L_preserve``, eq. 3), on the sigmoid probabilities ``y_hat`` of the logits.
    The paper's eqs. (2)-(3) are sums; Algorithm 1 returns their mean, which is ``reduction="mean"``
    ("sum" gives the sums, "none" the per-image means ``(B,)``).

    ``A`` is the Gaussian heatmap of the scribble, ``exp(-d^2 / (2 sigma_edit^2))``; build it with
    :meth:`attention` (which calls :func:`losslab.metrics.attention_map`, sigma_edit = 20 voxels in the
    paper). ``initial`` may be soft (probabilities of the previous prediction, in sequential editing
    ``y_init^{t+1} = y_hat^t``).

    Args:
        sigma: ``sigma_edit`` used by :meth:`attention` (voxels, or mm with ``spacing``), ``> 0``.
        spacing: voxel size in mm for :meth:`attention` (``None``: distances in voxels).
        reduction: "mean" | "sum" | "none".

    Forward:
        input: logits ``(B, 1, *spatial)``.
        target: binary ground truth ``y``, ``(B, *spatial)`` or ``(B, 1, *spatial)``.
        initial: initial segmentation ``y_init`` in ``[0, 1]``, same shapes.
        attention: ``A`` in ``[0, 1]``, same shapes.

    Raises:
        ValueError: more than one input channel, shape mismatches, or maps outside ``[0, 1]``.
    """

    def __init__(
        self,
        sigma: float = DEFAULT_SIGMA,
        spacing: float | Sequence[float] | None = None,
        reduction: str = "mean",
    ) -> None:
        super().__init__()
        self.sigma = check_number("sigma", sigma, positive=True)
        self.spacing = spacing
        self.reduction = check_reduction(reduction)

    def attention(self, scribble: np.ndarray | torch.Tensor) -> torch.Tensor:
        """``A`` for a batch of scribble masks ``(B, *spatial)`` (or one mask ``(*spatial)``), float32.

        Each mask goes through :func:`losslab.metrics.attention_map` with this loss's ``sigma`` and
        ``spacing``; the result is a tensor (on the scribble's device when it is a tensor).
        """
        return attention_from_scribbles(scribble, self.sigma, self.spacing)

    @float32_compute
    def forward(
        self, input: torch.Tensor, target: torch.Tensor, initial: torch.Tensor, attention: torch.Tensor
    ) -> torch.Tensor:
        return editing_loss(input, target, initial, attention, self.reduction)


def attention_from_scribbles(
    scribble: np.ndarray | torch.Tensor,
    sigma: float = DEFAULT_SIGMA,
    spacing: float | Sequence[float] | None = None,
    batched: bool | None = None,
) -> torch.Tensor:
    """Batch wrapper of :func:`losslab.metrics.attention_map`: ``(B, *spatial)`` masks -> ``(B, *spatial)`` A.

    ``batched=None`` treats a 4-D (or more) mask as a batch of 3-D masks and anything smaller as one mask;
    pass ``batched=True`` for a batch of 2-D masks ``(B, H, W)``.
    """
    device = scribble.device if isinstance(scribble, torch.Tensor) else torch.device("cpu")
    # On the CPU the numpy branch of attention_map (an exact Euclidean distance transform) is the fast one.
    masks: Any = (
        scribble.detach().cpu().numpy()
        if device.type == "cpu" and isinstance(scribble, torch.Tensor)
        else scribble
    )
    if not isinstance(masks, torch.Tensor):
        masks = np.asarray(masks)
    if batched is None:
        batched = masks.ndim >= 4
    if not batched:
        return torch.as_tensor(attention_map(masks, sigma=sigma, spacing=spacing), device=device)
    maps = [torch.as_tensor(attention_map(m, sigma=sigma, spacing=spacing), device=device) for m in masks]
    return torch.stack(maps)
