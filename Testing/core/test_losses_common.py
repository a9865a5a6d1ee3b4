"""Properties every registered loss shares: reductions, autocast, dtype, 2D and 3D, buffers on .to()."""

from __future__ import annotations

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


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("spatial", [(6, 5), (4, 3, 5)], ids=["2d", "3d"])
def test_reductions_2d_and_3d(name, spatial):
    loss, ch = _build(name, "none")
    args = _inputs(name, ch, spatial)
    none = loss(*args)
    assert none.shape == (2,) and torch.isfinite(none).all()
    mean = _build(name, "mean")[0](*args)
    assert mean.ndim == 0 and torch.isfinite(mean)
    total = _build(name, "sum")[0](*args)
    assert total.ndim == 0 and torch.isfinite(total)


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
