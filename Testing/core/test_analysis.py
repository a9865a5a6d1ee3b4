"""The Dice-gradient lab: gradient maps, dynamic range, the two-valued Dice gradient (eq. 6)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from losslab.analysis import (
    GradientMaps,
    dice_gradient_values,
    dynamic_range_db,
    gradient_maps,
    gradient_report,
    logits_from_probabilities,
    smoothed_one_hot,
)
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


# The lab on one prediction (what the Slicer module's gradient lab shows) ---------------------------------


def _disc_case(n: int = 12):
    """A target with two nested discs (labels 0, 1, 2) and softmax probabilities of random logits."""
    yy, xx = np.meshgrid(np.arange(n), np.arange(n), indexing="ij")
    r = np.hypot(yy - n / 2, xx - n / 2)
    target = np.where(r < 2.5, 2, np.where(r < 4.5, 1, 0))
    z = np.random.default_rng(7).normal(size=(3, n, n))
    probs = np.exp(z) / np.exp(z).sum(0)
    return target, probs


def test_smoothed_one_hot_and_logits_from_probabilities():
    labels = np.array([[0, 1], [2, 1]])
    s = smoothed_one_hot(labels, 3, smoothing=0.3)
    assert s.shape == (3, 2, 2) and s.dtype == np.float64
    np.testing.assert_allclose(s.sum(0), 1.0)
    assert s[1, 0, 1] == pytest.approx(0.7 + 0.1) and s[0, 0, 1] == pytest.approx(0.1)
    assert s[2, 1, 0] == pytest.approx(0.8) and s[0, 0, 0] == pytest.approx(0.8)
    z = logits_from_probabilities(s)
    np.testing.assert_allclose(torch.softmax(torch.from_numpy(z), 0).numpy(), s, rtol=1e-12)
    assert np.isfinite(logits_from_probabilities(np.array([0.0, 1.0]))).all()  # zero is floored
    for bad in (0.0, 1.0, -0.1):
        with pytest.raises(ValueError, match="smoothing must be in"):
            smoothed_one_hot(labels, 3, smoothing=bad)
    with pytest.raises(ValueError, match=r"labels must be in 0..1, got values 0..2"):
        smoothed_one_hot(labels, 2)


def test_gradient_report_dice_is_two_valued_with_the_closed_form_range():
    target, probs = _disc_case()
    report = gradient_report(
        DiceLoss(epsilon=0.0, reduction="sum"), probs, target, class_names=["bg", "outer", "inner"]
    )
    assert report.wrt == "probabilities" and report.class_names == ["bg", "outer", "inner"]
    assert report.gradient.shape == (3, 12, 12)
    # eq. (6): two values per class, divided by |K| = 3 (DiceLoss averages its classes)
    fg, bg = dice_gradient_values(torch.from_numpy(probs[None]), torch.from_numpy(target[None]))
    y = np.eye(3)[target].transpose(2, 0, 1).astype(bool)
    for c, name in enumerate(report.class_names):
        np.testing.assert_allclose(report.gradient[c][y[c]], fg[0, c].item() / 3, rtol=1e-5)
        np.testing.assert_allclose(report.gradient[c][~y[c]], bg[0, c].item() / 3, rtol=1e-5)
        expected_db = 10 * math.log10(abs(fg[0, c].item()) / abs(bg[0, c].item()))
        assert report.per_class_db[name] == pytest.approx(abs(expected_db), rel=1e-4)
    rows = {name: (value, unit) for name, value, unit in report.rows}
    assert rows["Loss"] == (pytest.approx(report.loss), "DiceLoss")
    assert report.loss == pytest.approx(
        DiceLoss(epsilon=0.0, reduction="sum")(
            torch.from_numpy(np.log(probs)[None]), torch.from_numpy(target[None])
        ).item()
    )
    assert rows["Dynamic range (all classes)"] == (pytest.approx(dynamic_range_db(report.gradient)), "dB")
    assert report.dynamic_range_db == pytest.approx(dynamic_range_db(report.gradient))
    for c, name in enumerate(report.class_names):
        magnitudes = sorted({abs(fg[0, c].item()) / 3, abs(bg[0, c].item()) / 3})
        assert rows[f"Distinct values {name}"] == (2.0, "values")
        assert rows[f"Max |gradient| {name}"][0] == pytest.approx(magnitudes[1], rel=1e-5)
        assert rows[f"Min non-zero |gradient| {name}"][0] == pytest.approx(magnitudes[0], rel=1e-5)
        assert rows[f"Dynamic range {name}"] == (pytest.approx(report.per_class_db[name]), "dB")


def test_gradient_report_logits_and_cross_entropy():
    target, probs = _disc_case()
    report = gradient_report(CrossEntropyLoss(reduction="sum"), probs, target, wrt="logits", loss_name="ce")
    y = np.eye(3)[target].transpose(2, 0, 1)
    np.testing.assert_allclose(report.gradient, probs - y, rtol=1e-5, atol=1e-7)  # dL/dz = s - y
    assert report.class_names == ["class0", "class1", "class2"] and report.rows[0][2] == "ce"
    by_probs = gradient_report(CrossEntropyLoss(reduction="sum"), probs, target)
    np.testing.assert_allclose(by_probs.gradient, -y / probs, rtol=1e-5)  # dL/ds = -y / s
    # many values, a wide range: the paper's contrast with Dice
    dice = gradient_report(DiceLoss(epsilon=0.0, reduction="sum"), probs, target)
    assert by_probs.dynamic_range_db > dice.dynamic_range_db + 3.0


def test_gradient_report_clear_errors():
    target, probs = _disc_case()
    with pytest.raises(ValueError, match="wrt must be one of"):
        gradient_report(DiceLoss(), probs, target, wrt="both")
    with pytest.raises(ValueError, match=r"over the target's grid \(12, 12\), got \(3, 11, 12\)"):
        gradient_report(DiceLoss(), probs[:, 1:], target)
    with pytest.raises(ValueError, match="2 class names"):
        gradient_report(DiceLoss(), probs, target, class_names=["a", "b"])
    with pytest.raises(ValueError, match="does not go through the class probabilities"):
        gradient_report(MarginCalibrationLoss(class_counts=[5, 3, 2]), probs, target)
    assert gradient_report(MarginCalibrationLoss(class_counts=[5, 3, 2]), probs, target, wrt="logits").rows
    with pytest.raises(ValueError, match="'editing' needs further inputs"):
        gradient_report(EditingLoss(), probs[:1], target, loss_name="editing")
