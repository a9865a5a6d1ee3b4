"""The loss library of LossLab: every loss of the four papers and their baselines.

Build losses by name with :func:`get_loss` and list them with :func:`available_losses` (see
:mod:`losslab.losses.registry`); weighted sums with ``get_loss("compound", terms=[...])``
(:class:`CompoundLoss`). Conventions shared by all losses are in :mod:`losslab.losses._utils` and
``docs/losses.md``.

=========================  ==============================  =============================================
registry name              class                           paper
=========================  ==============================  =============================================
cross_entropy              CrossEntropyLoss                dice-gradient eq. (4); baseline of all
focal                      FocalLoss                       baseline of margin-calibration
dice                       DiceLoss                        dice-gradient eq. (3)
generalized_dice           GeneralizedDiceLoss             baseline of margin-calibration
tversky                    TverskyLoss                     baseline of margin-calibration
lovasz_softmax             LovaszSoftmaxLoss               baseline of margin-calibration
mime                       MimeLoss                        dice-gradient eqs. (8)-(9)
negative_mime              NegativeMimeLoss                dice-gradient eq. (10)
margin_calibration         MarginCalibrationLoss           margin-calibration eqs. (4), (27)-(29)
editing                    EditingLoss                     ice-editing eqs. (1)-(3), Alg. 1
leaf_dice                  LeafDiceLoss                    label-set eq. (4)
marginal_dice              MarginalDiceLoss                label-set eq. (7)
marginal_cross_entropy     MarginalCrossEntropyLoss        label-set eq. (7)
soft_target_dice           SoftTargetDiceLoss              label-set Sec. 4, Baseline 2
compound                   CompoundLoss                    weighted sums of the above
=========================  ==============================  =============================================
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
from .editing import EditingLoss, attention_from_scribbles, editing_loss
from .label_set import (
    LeafDiceLoss,
    MarginalCrossEntropyLoss,
    MarginalDiceLoss,
    SoftTargetDiceLoss,
    label_set_target,
    leaf_one_hot,
    marginalize,
    validate_label_sets,
)
from .lovasz import LovaszSoftmaxLoss, lovasz_softmax_loss
from .margin import (
    MarginCalibrationLoss,
    Margins,
    class_margins,
    compute_margins,
    count_labels,
    margin_calibration_loss,
)
from .mime import MimeLoss, NegativeMimeLoss, mime_loss, negative_mime_loss
from .registry import LossInfo, LossOption, available_losses, get_loss, register_loss

for _name, _cls in {
    "cross_entropy": CrossEntropyLoss,
    "focal": FocalLoss,
    "dice": DiceLoss,
    "generalized_dice": GeneralizedDiceLoss,
    "tversky": TverskyLoss,
    "lovasz_softmax": LovaszSoftmaxLoss,
    "mime": MimeLoss,
    "negative_mime": NegativeMimeLoss,
    "margin_calibration": MarginCalibrationLoss,
    "editing": EditingLoss,
    "leaf_dice": LeafDiceLoss,
    "marginal_dice": MarginalDiceLoss,
    "marginal_cross_entropy": MarginalCrossEntropyLoss,
    "soft_target_dice": SoftTargetDiceLoss,
    "compound": CompoundLoss,
}.items():
    register_loss(_name)(_cls)

__all__ = [
    "CompoundLoss",
    "CrossEntropyLoss",
    "DiceLoss",
    "EditingLoss",
    "FocalLoss",
    "GeneralizedDiceLoss",
    "LeafDiceLoss",
    "LossInfo",
    "LossOption",
    "LovaszSoftmaxLoss",
    "MarginCalibrationLoss",
    "MarginalCrossEntropyLoss",
    "MarginalDiceLoss",
    "Margins",
    "MimeLoss",
    "NegativeMimeLoss",
    "SoftTargetDiceLoss",
    "TverskyLoss",
    "attention_from_scribbles",
    "available_losses",
    "class_margins",
    "compute_margins",
    "count_labels",
    "cross_entropy",
    "dice_loss",
    "editing_loss",
    "focal_loss",
    "generalized_dice_loss",
    "get_loss",
    "label_set_target",
    "leaf_one_hot",
    "lovasz_softmax_loss",
    "margin_calibration_loss",
    "marginalize",
    "mime_loss",
    "negative_mime_loss",
    "register_loss",
    "soft_dice_per_class",
    "tversky_loss",
    "validate_label_sets",
]
