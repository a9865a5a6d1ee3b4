"""Lovasz-softmax: known value, a loop reference of Berman et al.'s algorithm, ignore_index, gradcheck."""

from __future__ import annotations

import math

import pytest
import torch
from torch.autograd import gradcheck

from losslab.losses import LovaszSoftmaxLoss, lovasz_softmax_loss


def _reference(probs: torch.Tensor, labels: torch.Tensor, classes: str, ignore: int | None) -> torch.Tensor:
    """Berman et al.'s Alg. 1 for one image, one class at a time (probs (C, N), labels (N,))."""
    if ignore is not None:
        keep = labels != ignore
        probs, labels = probs[:, keep], labels[keep]
    losses = []
    for c in range(probs.shape[0]):
        fg = (labels == c).to(probs.dtype)
        if classes == "present" and fg.sum() == 0:
            continue
        errors = (fg - probs[c]).abs()
        errors_sorted, perm = torch.sort(errors, descending=True)
        fg_sorted = fg[perm]
        p = len(fg_sorted)
        gts = fg_sorted.sum()
        grad = torch.zeros(p, dtype=probs.dtype)
        prev = 0.0
        for i in range(p):
            inter = gts - fg_sorted[: i + 1].sum()
            union = gts + (1 - fg_sorted[: i + 1]).sum()
            jac = 1 - inter / union
            grad[i] = jac - prev
            prev = jac
        losses.append((errors_sorted * grad).sum())
    return torch.stack(losses).mean() if losses else torch.zeros((), dtype=probs.dtype)


def test_known_value():
    x = torch.tensor([[[0.0, 0.0], [math.log(3.0), math.log(3.0)]]], dtype=torch.float64)
    t = torch.tensor([[1, 0]])
    # class 0: sorted errors [.75, .25], grad [1, 0] -> .75; class 1: errors [.75, .25], grad [.5, .5] -> .5
    assert LovaszSoftmaxLoss()(x, t).item() == pytest.approx(0.625, abs=1e-12)


@pytest.mark.parametrize("classes", ["present", "all"])
@pytest.mark.parametrize("ignore", [None, 9])
def test_matches_loop_reference(classes, ignore):
    torch.manual_seed(0)
    x = torch.randn(3, 4, 5, 6, dtype=torch.float64)
    t = torch.randint(0, 3, (3, 5, 6))  # class 3 absent
    if ignore is not None:
        t[0, :2] = ignore
        t[2] = ignore  # an image with no valid pixel
    probs = torch.softmax(x, 1).flatten(2)
    got = LovaszSoftmaxLoss(classes=classes, ignore_index=ignore, reduction="none")(x, t)
    ref = torch.stack([_reference(probs[b], t[b].flatten(), classes, ignore) for b in range(3)])
    torch.testing.assert_close(got, ref)
    whole = lovasz_softmax_loss(x, t, classes=classes, per_image=False, ignore_index=ignore)
    ref_whole = _reference(probs.transpose(0, 1).reshape(4, -1), t.flatten(), classes, ignore)
    torch.testing.assert_close(whole, ref_whole)


def test_reductions():
    torch.manual_seed(1)
    x = torch.randn(2, 3, 4, 4)
    t = torch.randint(0, 3, (2, 4, 4))
    none = LovaszSoftmaxLoss(reduction="none")(x, t)
    torch.testing.assert_close(LovaszSoftmaxLoss()(x, t), none.mean())
    torch.testing.assert_close(LovaszSoftmaxLoss(reduction="sum")(x, t), none.sum())


def test_gradcheck():
    torch.manual_seed(2)
    x = torch.randn(2, 3, 3, 3, dtype=torch.float64, requires_grad=True)
    t = torch.randint(0, 3, (2, 3, 3))
    loss = LovaszSoftmaxLoss(ignore_index=2)
    assert gradcheck(lambda z: loss(z, t), (x,), eps=1e-6, atol=1e-6)


def test_errors():
    with pytest.raises(ValueError, match="classes"):
        LovaszSoftmaxLoss(classes="some")
    with pytest.raises(ValueError, match="per_image"):
        LovaszSoftmaxLoss(per_image=False, reduction="none")
    with pytest.raises(ValueError, match="per_image"):
        LovaszSoftmaxLoss(per_image="yes")
    with pytest.raises(ValueError, match="0..2"):
        LovaszSoftmaxLoss()(torch.randn(1, 3, 4), torch.tensor([[0, 1, 2, 3]]))
