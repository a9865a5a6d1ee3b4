"""The editing loss (ice-editing-shahin2023 eqs. 1-3, Algorithm 1)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch.autograd import gradcheck

from losslab.losses import EditingLoss, attention_from_scribbles, editing_loss, get_loss
from losslab.metrics import attention_map


def test_known_value():
    z = torch.full((1, 1, 1), math.log(3.0), dtype=torch.float64)  # y_hat = 0.75
    y = torch.ones(1, 1)
    y_init = torch.zeros(1, 1)
    a = torch.full((1, 1), 0.25)
    expected = 0.25 * -math.log(0.75) + 0.75 * -math.log(0.25)
    assert EditingLoss()(z, y, y_init, a).item() == pytest.approx(expected, abs=1e-12)


def test_soft_initial_and_limits():
    torch.manual_seed(0)
    z = torch.randn(2, 1, 4, 4, 4, dtype=torch.float64)
    y = torch.randint(0, 2, (2, 4, 4, 4)).double()
    y_init = torch.rand(2, 1, 4, 4, 4, dtype=torch.float64)  # soft, channel axis accepted
    loss = EditingLoss()
    ones, zeros = torch.ones(2, 4, 4, 4), torch.zeros(2, 4, 4, 4)
    torch.testing.assert_close(loss(z, y, y_init, ones), F.binary_cross_entropy_with_logits(z[:, 0], y))
    torch.testing.assert_close(
        loss(z, y, y_init, zeros), F.binary_cross_entropy_with_logits(z[:, 0], y_init[:, 0])
    )
    a = torch.rand(2, 4, 4, 4, dtype=torch.float64)
    per_voxel = a * F.binary_cross_entropy_with_logits(z[:, 0], y, reduction="none") + (
        1 - a
    ) * F.binary_cross_entropy_with_logits(z[:, 0], y_init[:, 0], reduction="none")
    torch.testing.assert_close(loss(z, y, y_init, a), per_voxel.mean())
    torch.testing.assert_close(EditingLoss(reduction="sum")(z, y, y_init, a), per_voxel.sum())
    torch.testing.assert_close(EditingLoss(reduction="none")(z, y, y_init, a), per_voxel.flatten(1).mean(1))
    torch.testing.assert_close(editing_loss(z, y, y_init, a), loss(z, y, y_init, a))


def test_attention_is_the_metrics_function():
    scribble = np.zeros((2, 9, 9, 9), dtype=bool)
    scribble[0, 4, 4, 2:7] = True
    scribble[1, 1, 2, 3] = True
    loss = EditingLoss(sigma=2.5, spacing=(1.0, 1.5, 2.0))
    a = loss.attention(scribble)
    assert a.shape == (2, 9, 9, 9) and a.dtype == torch.float32
    for b in range(2):
        np.testing.assert_array_equal(
            a[b].numpy(), attention_map(scribble[b], sigma=2.5, spacing=(1.0, 1.5, 2.0))
        )
    one = attention_from_scribbles(torch.from_numpy(scribble[0]), sigma=2.5)
    np.testing.assert_array_equal(one.numpy(), attention_map(scribble[0], sigma=2.5))
    two_d = attention_from_scribbles(scribble[:, :, :, 3], sigma=2.0, batched=True)
    assert two_d.shape == (2, 9, 9)


def test_editing_keeps_far_region_and_follows_scribble():
    # Gradient sign: near the scribble (A = 1) it pulls to y, far (A = 0) to y_init.
    z = torch.zeros(1, 1, 2, requires_grad=True)
    y = torch.tensor([[1.0, 1.0]])
    y_init = torch.tensor([[0.0, 0.0]])
    a = torch.tensor([[1.0, 0.0]])
    EditingLoss()(z, y, y_init, a).backward()
    assert z.grad[0, 0, 0] < 0 < z.grad[0, 0, 1]


def test_gradcheck():
    torch.manual_seed(1)
    z = torch.randn(2, 1, 3, 3, dtype=torch.float64, requires_grad=True)
    y = torch.randint(0, 2, (2, 3, 3))
    y_init = torch.rand(2, 3, 3, dtype=torch.float64)
    a = torch.rand(2, 3, 3, dtype=torch.float64)
    assert gradcheck(lambda x: EditingLoss()(x, y, y_init, a), (z,), eps=1e-6, atol=1e-6)


def test_errors():
    z = torch.randn(1, 1, 4, 4)
    ok = torch.rand(1, 4, 4)
    with pytest.raises(ValueError, match="one channel"):
        EditingLoss()(torch.randn(1, 2, 4, 4), ok, ok, ok)
    with pytest.raises(ValueError, match="attention must have shape"):
        EditingLoss()(z, ok, ok, torch.rand(1, 4, 5))
    with pytest.raises(ValueError, match=r"initial must hold values in \[0, 1\]"):
        EditingLoss()(z, ok, ok * 2 + 0.5, ok)
    with pytest.raises(ValueError, match="sigma"):
        get_loss("editing", sigma=0)
    with pytest.raises(ValueError, match="reduction"):
        EditingLoss(reduction="mean ")
