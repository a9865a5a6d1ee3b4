"""The loss library of LossLab: every loss of the four papers and their baselines.

Build losses by name with :func:`get_loss` and list them with :func:`available_losses` (see
:mod:`losslab.losses.registry`); weighted sums with ``get_loss("compound", terms=[...])``
(:class:`CompoundLoss`). Conventions shared by all losses are in :mod:`losslab.losses._utils` and
``docs/losses.md``.
"""

from __future__ import annotations

from .compound import CompoundLoss
from .cross_entropy import CrossEntropyLoss, FocalLoss, cross_entropy, focal_loss
from .dice import (
    DiceLoss,
    GeneralizedDiceLoss,
    TverskyLoss,
    dice_loss,
    generalized_dice_loss,
    soft_dice_per_class,
    tversky_loss,
)
from .registry import LossInfo, LossOption, available_losses, get_loss, register_loss

for _name, _cls in {
    "cross_entropy": CrossEntropyLoss,
    "focal": FocalLoss,
    "dice": DiceLoss,
    "generalized_dice": GeneralizedDiceLoss,
    "tversky": TverskyLoss,
    "compound": CompoundLoss,
}.items():
    register_loss(_name)(_cls)

__all__ = [
    "CompoundLoss",
    "CrossEntropyLoss",
    "DiceLoss",
    "FocalLoss",
    "GeneralizedDiceLoss",
    "LossInfo",
    "LossOption",
    "TverskyLoss",
    "available_losses",
    "cross_entropy",
    "dice_loss",
    "focal_loss",
    "generalized_dice_loss",
    "get_loss",
    "register_loss",
    "soft_dice_per_class",
    "tversky_loss",
]
