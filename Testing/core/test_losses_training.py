"""A few hundred steps of a tiny 3D network on a toy problem lower every registered loss."""

from __future__ import annotations

from typing import Any

import pytest
import torch
from torch import nn

from losslab.losses import EditingLoss, available_losses, count_labels, get_loss

STEPS = 200
SIZE = 16


def _toy() -> tuple[torch.Tensor, torch.Tensor]:
    """A ball (label 1) in a shell (label 2) in background (label 0), with a noisy intensity image."""
    g = torch.Generator().manual_seed(0)
    axis = torch.arange(SIZE, dtype=torch.float32)
    z, y, x = torch.meshgrid(axis, axis, axis, indexing="ij")
    r = ((z - 7.5) ** 2 + (y - 7.5) ** 2 + (x - 7.5) ** 2).sqrt()
    label = torch.zeros(SIZE, SIZE, SIZE, dtype=torch.long)
    label[r < 6] = 2
    label[r < 3.5] = 1
    image = label.float() + 0.3 * torch.randn(label.shape, generator=g)
    return image[None, None], label[None]


def _net(out_channels: int) -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv3d(1, 8, 3, padding=1), nn.ReLU(), nn.Conv3d(8, out_channels, 1))


SETS = {3: [0, 2]}  # background and shell not annotated: "one of {0, 2}"


def _case(name: str) -> tuple[nn.Module, int, tuple[Any, ...]]:
    image, label = _toy()
    if name in ("leaf_dice", "marginal_dice", "marginal_cross_entropy", "soft_target_dice"):
        partial = label.clone()
        partial[label != 1] = 3
        return get_loss(name, label_sets=SETS), 3, (partial,)
    if name == "margin_calibration":
        return get_loss(name, class_counts=count_labels([label], 3)), 3, (label,)
    if name == "editing":
        loss = get_loss(name, sigma=4.0)
        truth = (label > 0).float()
        initial = (label == 1).float()
        scribble = torch.zeros(1, SIZE, SIZE, SIZE, dtype=torch.bool)
        scribble[0, 8, 8, 13] = True  # on the boundary of the truth, where the initial mask misses it
        assert isinstance(loss, EditingLoss)
        return loss, 1, (truth, initial, loss.attention(scribble))
    if name == "compound":
        terms = [{"name": "dice", "weight": 1.0}, {"name": "cross_entropy", "weight": 0.5}]
        return get_loss(name, terms=terms), 3, (label,)
    return get_loss(name), 3, (label,)


@pytest.fixture
def one_thread():
    """The toy is tiny: intra-op threads only add overhead (20x on a busy 2-core machine)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.mark.parametrize("name", sorted(available_losses()))
def test_training_lowers_the_loss(name: str, one_thread):
    image, _ = _toy()
    loss_fn, channels, extra = _case(name)
    net = _net(channels)
    opt = torch.optim.Adam(net.parameters(), lr=1e-2)
    history: list[float] = []
    for _ in range(STEPS):
        opt.zero_grad()
        value = loss_fn(net(image), *extra)
        value.backward()
        opt.step()
        history.append(value.item())
    first, last = history[0], sum(history[-10:]) / 10
    assert torch.isfinite(torch.tensor(history)).all()
    assert last < first - 0.05 * max(abs(first), 0.1), (first, last)
    if name in ("dice", "cross_entropy"):
        _, label = _toy()
        with torch.no_grad():
            accuracy = (net(image).argmax(1) == label).float().mean().item()
        assert accuracy > 0.9
