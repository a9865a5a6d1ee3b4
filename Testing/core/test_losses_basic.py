"""Cross-entropy, focal, Dice, generalized Dice and Tversky: known values, gradients, conventions."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from torch.autograd import gradcheck

from losslab.losses import (
    CrossEntropyLoss,
    DiceLoss,
    FocalLoss,
    GeneralizedDiceLoss,
    TverskyLoss,
    cross_entropy,
    dice_loss,
    focal_loss,
    generalized_dice_loss,
    tversky_loss,
)


def _two_voxels() -> tuple[torch.Tensor, torch.Tensor]:
    """Logits giving p = [0.25, 0.75] at both voxels of a 1x2 image; target [1, 0]."""
    logits = torch.tensor([[[0.0, 0.0], [math.log(3.0), math.log(3.0)]]], dtype=torch.float64)
    return logits, torch.tensor([[1, 0]])


# ---------------------------------------------------------------------------------------------- Dice
def test_dice_known_value_alpha1():
    x, t = _two_voxels()
    # class 0: I = 0.25, U = 1 + 0.5 -> 1/3; class 1: I = 0.75, U = 1 + 1.5 -> 0.6
    expected = ((1 - 1 / 3) + (1 - 0.6)) / 2
    assert DiceLoss(epsilon=0.0)(x, t).item() == pytest.approx(expected, abs=1e-12)


def test_dice_known_value_alpha2():
    x, t = _two_voxels()
    d0 = 0.5 / (1 + 2 * 0.25**2)
    d1 = 1.5 / (1 + 2 * 0.75**2)
    expected = ((1 - d0) + (1 - d1)) / 2
    assert DiceLoss(alpha=2, epsilon=0.0)(x, t).item() == pytest.approx(expected, abs=1e-12)


def test_dice_absent_class_counts_as_one():
    torch.manual_seed(0)
    x = torch.randn(1, 3, 4, 4, dtype=torch.float64)
    t = torch.randint(0, 2, (1, 4, 4))  # class 2 absent from the target
    per_class = DiceLoss(epsilon=1e-5, reduction="none")
    p = x.softmax(1)
    y = F.one_hot(t, 3).movedim(-1, 1).double()
    dice = 2 * (p * y).sum((2, 3)) / ((p + y).sum((2, 3)) + 1e-5)
    assert dice[0, 2].item() == 0.0  # epsilon only in the denominator
    assert per_class(x, t).item() == pytest.approx((1 - dice).mean().item(), abs=1e-12)


def test_dice_include_background_and_onehot_target():
    torch.manual_seed(1)
    x = torch.randn(2, 3, 5, 5, dtype=torch.float64)
    t = torch.randint(0, 3, (2, 5, 5))
    onehot = F.one_hot(t, 3).movedim(-1, 1).double()
    assert dice_loss(x, onehot).item() == pytest.approx(dice_loss(x, t).item(), abs=1e-12)
    assert dice_loss(x, t.unsqueeze(1)).item() == pytest.approx(dice_loss(x, t).item(), abs=1e-12)
    p = x.softmax(1)[:, 1:]
    y = onehot[:, 1:]
    d = 2 * (p * y).sum((2, 3)) / ((p + y).sum((2, 3)) + 1e-5)
    got = DiceLoss(include_background=False, reduction="none")(x, t)
    torch.testing.assert_close(got, (1 - d).mean(1))


def test_dice_binary_sigmoid_equals_two_class_softmax():
    torch.manual_seed(2)
    z = torch.randn(2, 1, 6, 6, dtype=torch.float64)
    t = torch.randint(0, 2, (2, 6, 6))
    two = torch.cat([torch.zeros_like(z), z], 1)  # softmax([0, z]) = [1 - sigmoid(z), sigmoid(z)]
    for loss in (DiceLoss(), DiceLoss(alpha=2), CrossEntropyLoss(), TverskyLoss(), GeneralizedDiceLoss()):
        torch.testing.assert_close(loss(z, t), loss(two, t))


def test_dice_reductions_and_function_twin():
    torch.manual_seed(3)
    x = torch.randn(3, 4, 4, 4, 4)
    t = torch.randint(0, 4, (3, 4, 4, 4))
    none = DiceLoss(reduction="none")(x, t)
    assert none.shape == (3,)
    torch.testing.assert_close(DiceLoss(reduction="mean")(x, t), none.mean())
    torch.testing.assert_close(DiceLoss(reduction="sum")(x, t), none.sum())
    torch.testing.assert_close(dice_loss(x, t, alpha=2), DiceLoss(alpha=2)(x, t))


def test_dice_matches_monai():
    monai_losses = pytest.importorskip("monai.losses")
    torch.manual_seed(4)
    x = torch.randn(2, 3, 6, 6, 6)
    t = torch.randint(0, 3, (2, 1, 6, 6, 6))
    # MONAI puts smooth_nr in the numerator too; with smooth_nr=0 the conventions agree.
    ref = monai_losses.DiceLoss(softmax=True, to_onehot_y=True, smooth_nr=0.0, smooth_dr=1e-5)(x, t)
    torch.testing.assert_close(DiceLoss(epsilon=1e-5)(x, t), ref)
    ref2 = monai_losses.DiceLoss(
        softmax=True, to_onehot_y=True, squared_pred=True, smooth_nr=0.0, smooth_dr=1e-5
    )(x, t)
    torch.testing.assert_close(DiceLoss(alpha=2, epsilon=1e-5)(x, t), ref2)


# --------------------------------------------------------------------------------------- cross-entropy
def test_cross_entropy_known_value():
    x, t = _two_voxels()
    expected = (-math.log(0.75) - math.log(0.25)) / 2
    assert CrossEntropyLoss()(x, t).item() == pytest.approx(expected, abs=1e-12)


def test_cross_entropy_matches_torch_with_weights_and_ignore():
    torch.manual_seed(5)
    x = torch.randn(2, 4, 5, 6)
    t = torch.randint(0, 5, (2, 5, 6))  # label 4 = ignored
    w = [1.0, 2.0, 0.5, 3.0]
    for red in ("mean", "sum"):
        ref = F.cross_entropy(x, t, weight=torch.tensor(w), ignore_index=4, reduction=red)
        torch.testing.assert_close(CrossEntropyLoss(weight=w, ignore_index=4, reduction=red)(x, t), ref)
    none = CrossEntropyLoss(weight=w, ignore_index=4, reduction="none")(x, t)
    for b in range(2):
        ref = F.cross_entropy(x[b : b + 1], t[b : b + 1], weight=torch.tensor(w), ignore_index=4)
        torch.testing.assert_close(none[b], ref)
    torch.testing.assert_close(
        cross_entropy(x, t, torch.tensor(w), 4), CrossEntropyLoss(weight=w, ignore_index=4)(x, t)
    )


def test_cross_entropy_binary_is_bce():
    torch.manual_seed(6)
    z = torch.randn(2, 1, 7)
    t = torch.randint(0, 2, (2, 7))
    ref = F.binary_cross_entropy_with_logits(z[:, 0], t.float())
    torch.testing.assert_close(CrossEntropyLoss()(z, t), ref)


def test_weight_is_buffer_and_moves_with_module():
    loss = CrossEntropyLoss(weight=[1.0, 2.0])
    assert "weight" in dict(loss.named_buffers())
    assert loss.double().weight.dtype == torch.float64


# ------------------------------------------------------------------------------------------------ focal
def test_focal_known_value_and_gamma0_is_ce():
    x, t = _two_voxels()
    expected = (-(0.25**2) * math.log(0.75) - 0.75**2 * math.log(0.25)) / 2
    assert FocalLoss(gamma=2)(x, t).item() == pytest.approx(expected, abs=1e-12)
    torch.manual_seed(7)
    x = torch.randn(2, 3, 4, 4)
    t = torch.randint(0, 3, (2, 4, 4))
    torch.testing.assert_close(FocalLoss(gamma=0.0)(x, t), CrossEntropyLoss()(x, t))
    torch.testing.assert_close(focal_loss(x, t, 2.0), FocalLoss()(x, t))


# ------------------------------------------------------------------------------------ GDL and Tversky
def test_generalized_dice_known_value():
    x, t = _two_voxels()
    # both classes have volume 1 -> w = 1: 1 - 2 (0.25 + 0.75) / (1.5 + 2.5)
    assert GeneralizedDiceLoss(epsilon=0.0)(x, t).item() == pytest.approx(0.5, abs=1e-12)


def test_generalized_dice_matches_monai():
    monai_losses = pytest.importorskip("monai.losses")
    torch.manual_seed(8)
    x = torch.randn(2, 3, 6, 6)
    t = torch.randint(0, 2, (2, 1, 6, 6))  # class 2 absent: the infinite-weight convention
    ref = monai_losses.GeneralizedDiceLoss(softmax=True, to_onehot_y=True, smooth_nr=0.0, smooth_dr=1e-5)(
        x, t
    )
    torch.testing.assert_close(generalized_dice_loss(x, t), ref)


def test_tversky_known_value_and_dice_special_case():
    x, t = _two_voxels()
    # class 0: TP .25 FP .25 FN .75; class 1: TP .75 FP .75 FN .25
    t0 = 0.25 / (0.25 + 0.3 * 0.25 + 0.7 * 0.75)
    t1 = 0.75 / (0.75 + 0.3 * 0.75 + 0.7 * 0.25)
    assert TverskyLoss(epsilon=0.0)(x, t).item() == pytest.approx(((1 - t0) + (1 - t1)) / 2, abs=1e-12)
    torch.manual_seed(9)
    x = torch.randn(2, 3, 5, 5)
    t = torch.randint(0, 3, (2, 5, 5))
    torch.testing.assert_close(tversky_loss(x, t, 0.5, 0.5, epsilon=0.0), dice_loss(x, t, epsilon=0.0))


# ------------------------------------------------------------------------------------------ gradcheck
@pytest.mark.parametrize(
    "loss",
    [
        CrossEntropyLoss(weight=[1.0, 2.0, 0.5], ignore_index=3),
        FocalLoss(gamma=2.0),
        DiceLoss(),
        DiceLoss(alpha=2, include_background=False),
        GeneralizedDiceLoss(),
        TverskyLoss(alpha=0.2, beta=0.8),
    ],
    ids=lambda m: type(m).__name__,
)
def test_gradcheck_float64(loss):
    torch.manual_seed(10)
    x = torch.randn(2, 3, 3, 3, dtype=torch.float64, requires_grad=True)
    t = torch.randint(0, 3, (2, 3, 3))
    if isinstance(loss, CrossEntropyLoss):
        t[0, 0, 0] = 3
    loss = loss.double()
    assert gradcheck(lambda z: loss(z, t), (x,), eps=1e-6, atol=1e-6)


# ------------------------------------------------------------------------------------- float32 compute
@pytest.mark.parametrize("cls", [CrossEntropyLoss, FocalLoss, DiceLoss, GeneralizedDiceLoss, TverskyLoss])
def test_half_inputs_compute_in_float32_under_autocast(cls):
    torch.manual_seed(11)
    x = torch.randn(1, 3, 4, 4)
    t = torch.randint(0, 3, (1, 4, 4))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = cls()(x.bfloat16(), t)
    assert out.dtype == torch.float32
    torch.testing.assert_close(out, cls()(x.bfloat16().float(), t))


# --------------------------------------------------------------------------------------------- errors
@pytest.mark.parametrize(
    "make, option",
    [
        (lambda: DiceLoss(alpha=3), "alpha"),
        (lambda: DiceLoss(epsilon=-1.0), "epsilon"),
        (lambda: DiceLoss(include_background=1), "include_background"),
        (lambda: DiceLoss(reduction="avg"), "reduction"),
        (lambda: CrossEntropyLoss(weight=[1.0, -1.0]), "weight"),
        (lambda: CrossEntropyLoss(ignore_index=1.5), "ignore_index"),
        (lambda: FocalLoss(gamma=-1), "gamma"),
        (lambda: TverskyLoss(alpha=float("nan")), "alpha"),
        (lambda: GeneralizedDiceLoss(reduction=None), "reduction"),
    ],
)
def test_invalid_options_raise_naming_the_option(make, option):
    with pytest.raises(ValueError, match=option):
        make()


@pytest.mark.parametrize("cls", [CrossEntropyLoss, FocalLoss, DiceLoss, GeneralizedDiceLoss, TverskyLoss])
def test_shape_and_label_errors(cls):
    x = torch.randn(2, 3, 4, 4)
    with pytest.raises(ValueError, match="shape"):
        cls()(x, torch.zeros(2, 4, 5, dtype=torch.long))
    with pytest.raises(ValueError, match="0..2"):
        cls()(x, torch.full((2, 4, 4), 3))
    with pytest.raises(ValueError, match="spatial"):
        cls()(torch.randn(2, 3), torch.zeros(2, dtype=torch.long))


def test_weight_length_must_match_classes():
    x = torch.randn(2, 3, 4, 4)
    with pytest.raises(ValueError, match="weight has 2 entries"):
        CrossEntropyLoss(weight=[1.0, 2.0])(x, torch.zeros(2, 4, 4, dtype=torch.long))
