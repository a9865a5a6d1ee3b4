"""The Dice-gradient lab: gradient maps, dynamic range, the two-valued Dice gradient (eq. 6)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from losslab.analysis import GradientMaps, dice_gradient_values, dynamic_range_db, gradient_maps
from losslab.losses import (
    CompoundLoss,
    CrossEntropyLoss,
    DiceLoss,
    EditingLoss,
    MarginCalibrationLoss,
    MimeLoss,
    get_loss,
)


def _example(seed: int = 0, c: int = 3, shape=(8, 8)):
    g = torch.Generator().manual_seed(seed)
    logits = torch.randn(1, c, *shape, generator=g, dtype=torch.float64)
    target = torch.randint(0, c, (1, *shape), generator=g)
    return logits, target


def test_dice_gradient_is_two_valued_per_class_and_matches_eq6():
    logits, target = _example()
    maps = gradient_maps(DiceLoss(epsilon=0.0, reduction="sum"), logits, target)
    assert isinstance(maps, GradientMaps)
    g = maps.wrt_probabilities
    assert g.shape == (1, 3, 8, 8)
    probs = torch.softmax(logits, 1)
    fg, bg = dice_gradient_values(probs, target)
    y = torch.nn.functional.one_hot(target, 3).movedim(-1, 1).numpy().astype(bool)
    for k in range(3):
        values = np.unique(np.round(g[0, k], 6))
        assert values.size == 2, values  # exactly two values per class (eq. 6)
        # DiceLoss averages over |K| = 3 classes
        np.testing.assert_allclose(g[0, k][y[0, k]], fg[0, k].item() / 3, rtol=1e-5)
        np.testing.assert_allclose(g[0, k][~y[0, k]], bg[0, k].item() / 3, rtol=1e-5)
        assert fg[0, k] < 0 < bg[0, k]  # a weighted negative of the ground truth


def test_dice_gradient_values_bound_eq7():
    logits, target = _example(1)
    probs = torch.softmax(logits, 1)
    fg, bg = dice_gradient_values(probs, target)
    union = probs.sum((2, 3)) + torch.nn.functional.one_hot(target, 3).movedim(-1, 1).sum((2, 3))
    assert torch.all(fg.abs() <= 2 / union + 1e-12) and torch.all(bg.abs() <= 2 / union + 1e-12)


def test_cross_entropy_gradient_wrt_probabilities_is_minus_y_over_s():
    logits, target = _example(2)
    maps = gradient_maps(CrossEntropyLoss(reduction="sum"), logits, target)
    s = torch.softmax(logits, 1).numpy()
    y = torch.nn.functional.one_hot(target, 3).movedim(-1, 1).numpy()
    np.testing.assert_allclose(maps.wrt_probabilities, -y / s, rtol=1e-5)
    # and w.r.t. the logits: s - y
    np.testing.assert_allclose(maps.wrt_logits, s - y, rtol=1e-5, atol=1e-7)


def test_dice_has_small_range_and_ce_a_larger_one():
    # A smooth prediction of a disc: CE's gradient -y/s spreads over decades, Dice's has two values.
    yy, xx = torch.meshgrid(torch.arange(32.0), torch.arange(32.0), indexing="ij")
    r = ((yy - 16) ** 2 + (xx - 16) ** 2).sqrt()
    target = (r < 8).long()[None]
    logits = torch.stack([torch.zeros_like(r), (8 - r) / 3])[None].double()
    dice = gradient_maps(DiceLoss(epsilon=0.0, reduction="sum"), logits, target)
    ce = gradient_maps(CrossEntropyLoss(reduction="sum"), logits, target)
    fg = target[0].bool().numpy()
    dice_db = dynamic_range_db(dice.wrt_probabilities[0, 1], mask=fg)
    ce_db = dynamic_range_db(ce.wrt_probabilities[0, 1], mask=fg)
    assert dice_db == pytest.approx(0.0, abs=1e-4)  # one value on the foreground of a class
    assert ce_db > 2.0
    # over the whole class map Dice has exactly its two magnitudes: |fg| / |bg| = (U - I) / I (eq. 6)
    fg_v, bg_v = dice_gradient_values(torch.softmax(logits, 1), target)
    expected = 10 * math.log10(abs(fg_v[0, 1].item()) / bg_v[0, 1].item())
    assert dice.dynamic_range_db(class_index=1) == pytest.approx(abs(expected), rel=1e-4)


def test_dynamic_range_db_conventions():
    assert dynamic_range_db(np.array([1.0, -10.0, 0.0])) == pytest.approx(10.0)
    assert dynamic_range_db(np.array([1.0, -10.0]), amplitude=True) == pytest.approx(20.0)
    assert math.isnan(dynamic_range_db(np.zeros(3)))
    with pytest.raises(ValueError, match="mask"):
        dynamic_range_db(np.ones(3), mask=np.ones(2, dtype=bool))


def test_mime_gradient_wrt_probabilities_is_omega():
    logits, target = _example(3)
    maps = gradient_maps(MimeLoss(reduction="sum"), logits, target)
    y = torch.nn.functional.one_hot(target, 3).movedim(-1, 1).numpy()
    np.testing.assert_allclose(maps.wrt_probabilities, -2.0 * y + 0.1, rtol=1e-6)


def test_compound_gradients_add_up():
    logits, target = _example(4)
    dice = gradient_maps(DiceLoss(reduction="sum"), logits, target)
    ce = gradient_maps(CrossEntropyLoss(reduction="sum"), logits, target)
    both = gradient_maps(
        CompoundLoss([(1.0, DiceLoss()), (2.0, CrossEntropyLoss())], reduction="sum"), logits, target
    )
    np.testing.assert_allclose(
        both.wrt_probabilities, dice.wrt_probabilities + 2 * ce.wrt_probabilities, rtol=1e-5
    )
    np.testing.assert_allclose(both.wrt_logits, dice.wrt_logits + 2 * ce.wrt_logits, rtol=1e-5, atol=1e-7)


def test_logit_gradient_matches_autograd_and_caller_graph_untouched():
    logits, target = _example(5)
    logits = logits.float().requires_grad_(True)
    loss = get_loss("tversky")
    maps = gradient_maps(loss, logits, target)
    assert logits.grad is None
    loss(logits.double(), target).backward()
    np.testing.assert_allclose(maps.wrt_logits, logits.grad.numpy(), rtol=1e-5, atol=1e-8)
    assert maps.probabilities.dtype == np.float32


def test_losses_without_probabilities_and_extra_arguments():
    logits, target = _example(6)
    maps = gradient_maps(MarginCalibrationLoss(class_counts=[50, 10, 4]), logits, target)
    assert maps.wrt_probabilities is None
    with pytest.raises(ValueError, match="logits"):
        maps.dynamic_range_db()
    assert maps.dynamic_range_db("logits") > 0
    z = torch.randn(1, 1, 6, 6)
    y = torch.randint(0, 2, (1, 6, 6))
    a = torch.rand(1, 6, 6)
    maps = gradient_maps(EditingLoss(), z, y, y.float(), a)
    assert maps.wrt_logits.shape == (1, 1, 6, 6)
    with pytest.raises(ValueError, match="scalar"):
        gradient_maps(DiceLoss(reduction="none"), logits, target)
    with pytest.raises(ValueError, match="which"):
        gradient_maps(DiceLoss(), logits, target).dynamic_range_db("both")
