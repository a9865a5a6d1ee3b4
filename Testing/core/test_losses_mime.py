"""Mime and negative mime (dice-gradient-mime-kervadec eqs. 8-10)."""

from __future__ import annotations

import math

import pytest
import torch
from torch.autograd import gradcheck

from losslab.losses import MimeLoss, NegativeMimeLoss, mime_loss, negative_mime_loss
from losslab.losses._utils import probe_probabilities


def _two_voxels():
    logits = torch.tensor([[[0.0, 0.0], [math.log(3.0), math.log(3.0)]]], dtype=torch.float64)
    return logits, torch.tensor([[1, 0]])


def test_mime_known_values():
    x, t = _two_voxels()
    # omega = -2 y + 0.1; s = [.25, .75] at both voxels; y = [[0, 1], [1, 0]] (voxel, class)
    total = (0.1 * 0.25 - 1.9 * 0.75) + (-1.9 * 0.25 + 0.1 * 0.75)
    assert MimeLoss(reduction="sum")(x, t).item() == pytest.approx(total, abs=1e-12)
    assert MimeLoss()(x, t).item() == pytest.approx(total / 4, abs=1e-12)
    assert MimeLoss(a=1.0, b=0.5, reduction="sum")(x, t).item() == pytest.approx(
        (0.5 * 0.25 - 0.75) + (-0.25 + 0.5 * 0.75), abs=1e-12
    )


def test_negative_mime_known_value_and_sign():
    x, t = _two_voxels()
    assert NegativeMimeLoss(reduction="sum")(x, t).item() == pytest.approx(-(0.75 + 0.25), abs=1e-12)
    # a descent step raises the probability of the ground truth (the text's "negative of the ground truth")
    z = x.clone().requires_grad_(True)
    NegativeMimeLoss()(z, t).backward()
    z2 = z.detach() - 1.0 * z.grad
    p_before = torch.softmax(x, 1)[0, t[0], torch.arange(2)]
    p_after = torch.softmax(z2, 1)[0, t[0], torch.arange(2)]
    assert torch.all(p_after > p_before)


@pytest.mark.parametrize("a, b", [(1.9, 0.1), (1.0, 0.5), (3.0, 0.0)])
def test_mime_gradient_wrt_probabilities_is_omega(a, b):
    torch.manual_seed(0)
    x = torch.randn(2, 4, 3, 3, 3, dtype=torch.float64, requires_grad=True)
    t = torch.randint(0, 4, (2, 3, 3, 3))
    with probe_probabilities() as records:
        MimeLoss(a=a, b=b, reduction="sum")(x, t).backward()
    ((kind, probs),) = records
    y = torch.nn.functional.one_hot(t, 4).movedim(-1, 1).double()
    torch.testing.assert_close(probs.grad, -a * y + b * (1 - y))


def test_negative_mime_gradient_is_minus_y():
    torch.manual_seed(1)
    x = torch.randn(1, 3, 5, 5, dtype=torch.float64, requires_grad=True)
    t = torch.randint(0, 3, (1, 5, 5))
    with probe_probabilities() as records:
        NegativeMimeLoss(reduction="sum")(x, t).backward()
    y = torch.nn.functional.one_hot(t, 3).movedim(-1, 1).double()
    torch.testing.assert_close(records[0][1].grad, -y)


def test_reductions_and_twins():
    torch.manual_seed(2)
    x = torch.randn(3, 2, 4, 4)
    t = torch.randint(0, 2, (3, 4, 4))
    for cls, fn in ((MimeLoss, mime_loss), (NegativeMimeLoss, negative_mime_loss)):
        none = cls(reduction="none")(x, t)
        assert none.shape == (3,)
        torch.testing.assert_close(cls(reduction="mean")(x, t), none.mean())
        torch.testing.assert_close(cls(reduction="sum")(x, t), none.sum() * 2 * 16)
        torch.testing.assert_close(fn(x, t), cls()(x, t))


def test_binary_input_uses_both_channels():
    z = torch.tensor([[[0.0, 2.0]]], dtype=torch.float64)
    t = torch.tensor([[1, 0]])
    s = torch.sigmoid(z[0, 0])
    expected = (0.1 * (1 - s[0]) - 1.9 * s[0]) + (-1.9 * (1 - s[1]) + 0.1 * s[1])
    assert MimeLoss(reduction="sum")(z, t).item() == pytest.approx(expected.item(), abs=1e-12)


@pytest.mark.parametrize("loss", [MimeLoss(), NegativeMimeLoss()], ids=lambda m: type(m).__name__)
def test_gradcheck(loss):
    torch.manual_seed(3)
    x = torch.randn(2, 3, 3, 3, dtype=torch.float64, requires_grad=True)
    t = torch.randint(0, 3, (2, 3, 3))
    assert gradcheck(lambda z: loss(z, t), (x,), eps=1e-6, atol=1e-6)


@pytest.mark.parametrize(
    "kwargs, option",
    [({"a": 0.0}, "a"), ({"b": -0.1}, "b"), ({"a": "x"}, "a"), ({"reduction": "max"}, "reduction")],
)
def test_invalid_options(kwargs, option):
    with pytest.raises(ValueError, match=option):
        MimeLoss(**kwargs)


def test_shape_errors():
    with pytest.raises(ValueError, match="shape"):
        MimeLoss()(torch.randn(1, 3, 4, 4), torch.zeros(1, 4, 3, dtype=torch.long))
    with pytest.raises(ValueError, match="0..2"):
        NegativeMimeLoss()(torch.randn(1, 3, 4, 4), torch.full((1, 4, 4), 5))
