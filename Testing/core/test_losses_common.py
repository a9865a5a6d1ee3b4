"""Properties every registered loss shares: reductions, autocast, dtype, 2D and 3D, buffers on .to()."""

from __future__ import annotations

import math
from typing import Any

import pytest
import torch
from torch import nn

from losslab.losses import available_losses, get_loss

SETS = {4: [1, 2]}


def _build(name: str, reduction: str = "mean") -> tuple[nn.Module, int]:
    """A loss with its required options, and its number of input channels."""
    if name in ("leaf_dice", "marginal_dice", "marginal_cross_entropy", "soft_target_dice"):
        return get_loss(name, label_sets=SETS, reduction=reduction), 4
    if name == "margin_calibration":
        return get_loss(name, class_counts=[50, 20, 10, 5], reduction=reduction), 4
    if name == "compound":
        return get_loss(name, terms=[{"name": "dice"}, {"name": "focal"}], reduction=reduction), 4
    if name == "editing":
        return get_loss(name, reduction=reduction), 1
    return get_loss(name, reduction=reduction), 4


def _inputs(name: str, channels: int, spatial: tuple[int, ...], dtype=torch.float32) -> tuple[Any, ...]:
    g = torch.Generator().manual_seed(0)
    b = 2
    logits = torch.randn(b, channels, *spatial, generator=g).to(dtype)
    if name == "editing":
        y = torch.randint(0, 2, (b, *spatial), generator=g)
        return logits, y, torch.rand(b, *spatial, generator=g), torch.rand(b, *spatial, generator=g)
    high = 5 if name in ("leaf_dice", "marginal_dice", "marginal_cross_entropy", "soft_target_dice") else 4
    return logits, torch.randint(0, high, (b, *spatial), generator=g)


NAMES = sorted(available_losses())


#: How each loss documents its reductions (its docstring's ``reduction`` entry). For all of them "none" is
#: one value per image ``(B,)`` and "mean" is the mean of those values (images of equal size, no weights);
#: "sum" is ``none.sum()`` times a normaliser:
#: - per image, then over the batch (region losses and the marginal cross-entropy): 1;
#: - per voxel (cross-entropy, focal, editing, margin calibration "paper"): "none" is the per-image mean over
#:   the voxels and "sum" sums over the voxels: the voxel count;
#: - mime / negative mime: "none" divides eq. (9) by ``|K| * |Omega|`` and "sum" is eq. (9): classes x voxels;
#: - margin calibration "released": "none" is the per-image mean over pixels x C, "sum" sums over both.
#: ``compound`` is checked against its terms instead (``test_compound_reductions_are_the_weighted_terms``).
PER_IMAGE = {
    "dice",
    "generalized_dice",
    "tversky",
    "lovasz_softmax",
    "leaf_dice",
    "marginal_dice",
    "soft_target_dice",
    "marginal_cross_entropy",
}
PER_VOXEL = {"cross_entropy", "focal", "editing", "margin_calibration"}
PER_ELEMENT = {"mime", "negative_mime"}


def _sum_normaliser(name: str, channels: int, spatial: tuple[int, ...], variant: str = "paper") -> int:
    voxels = math.prod(spatial)
    if name in PER_IMAGE:
        return 1
    if name == "margin_calibration" and variant == "released":
        return channels * voxels
    if name in PER_VOXEL:
        return voxels
    if name in PER_ELEMENT:
        return channels * voxels
    raise AssertionError(f"{name}: say in this test how its docstring relates 'sum' to 'none'")


def test_every_loss_has_its_reduction_relation_here():
    assert set(NAMES) == PER_IMAGE | PER_VOXEL | PER_ELEMENT | {"compound"}


def _three(name: str, args, **options) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    out = []
    for reduction in ("none", "mean", "sum"):
        if options:
            loss = get_loss(name, reduction=reduction, **options)
        else:
            loss = _build(name, reduction)[0]
        out.append(loss(*args))
    return tuple(out)


@pytest.mark.parametrize("name", [n for n in NAMES if n != "compound"])
@pytest.mark.parametrize("spatial", [(6, 5), (4, 3, 5)], ids=["2d", "3d"])
def test_reductions_2d_and_3d(name, spatial):
    loss, ch = _build(name, "none")
    args = _inputs(name, ch, spatial)
    none, mean, total = _three(name, args)
    assert none.shape == (2,) and torch.isfinite(none).all()
    assert mean.ndim == 0 and total.ndim == 0
    assert not torch.isclose(none[0], none[1])  # the two images differ: mean, sum and none tell apart
    torch.testing.assert_close(mean, none.mean(), rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(total, none.sum() * _sum_normaliser(name, ch, spatial), rtol=1e-5, atol=1e-5)


def test_margin_calibration_released_variant_reductions():
    args = _inputs("margin_calibration", 4, (4, 3, 5))
    none, mean, total = _three("margin_calibration", args, class_counts=[50, 20, 10, 5], variant="released")
    assert none.shape == (2,)
    torch.testing.assert_close(mean, none.mean(), rtol=1e-5, atol=1e-6)
    expected = none.sum() * _sum_normaliser("margin_calibration", 4, (4, 3, 5), variant="released")
    torch.testing.assert_close(total, expected, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("reduction", ["none", "mean", "sum"])
def test_compound_reductions_are_the_weighted_terms(reduction):
    args = _inputs("compound", 4, (4, 3, 5))
    terms = [{"name": "dice", "weight": 0.7}, {"name": "focal", "weight": 1.5}]
    compound = get_loss("compound", terms=terms, reduction=reduction)(*args)
    expected = 0.7 * get_loss("dice", reduction=reduction)(*args) + 1.5 * get_loss(
        "focal", reduction=reduction
    )(*args)
    torch.testing.assert_close(compound, expected, rtol=1e-5, atol=1e-6)
    assert compound.shape == ((2,) if reduction == "none" else ())


@pytest.mark.parametrize("name", NAMES)
def test_float32_under_autocast_with_bfloat16_logits(name):
    loss, ch = _build(name)
    logits, *rest = _inputs(name, ch, (4, 4, 4))
    half = logits.bfloat16().requires_grad_(True)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = loss(half, *rest)
    assert out.dtype == torch.float32
    out.backward()
    assert half.grad is not None and half.grad.dtype == torch.bfloat16
    torch.testing.assert_close(out, loss(half.detach().float(), *rest))


@pytest.mark.parametrize("name", NAMES)
def test_float64_stays_float64_and_buffers_follow(name):
    loss, ch = _build(name)
    loss = loss.to(torch.float64)
    for buf in loss.buffers():
        assert buf.dtype == torch.float64
    logits, *rest = _inputs(name, ch, (3, 4), dtype=torch.float64)
    assert loss(logits, *rest).dtype == torch.float64


@pytest.mark.parametrize("name", NAMES)
def test_docstrings_name_the_paper_or_source(name):
    doc = available_losses()[name].cls.__doc__ or ""
    assert any(k in doc for k in ("eq.", "Eq.", "et al.", "Sec.", "Weighted sum")), name
