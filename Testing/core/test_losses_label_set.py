"""Label-set losses (label-set-losses-fidon2021): encoding, Phi / Psi_0, known values, the axiom (eq. 2)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch.autograd import gradcheck

from losslab.losses import (
    CrossEntropyLoss,
    DiceLoss,
    LeafDiceLoss,
    MarginalCrossEntropyLoss,
    MarginalDiceLoss,
    SoftTargetDiceLoss,
    get_loss,
    label_set_target,
    leaf_one_hot,
    marginalize,
    validate_label_sets,
)

SETS = {4: [1, 2], 5: [0, 2, 3]}
AXIOM_LOSSES = (LeafDiceLoss, MarginalDiceLoss, MarginalCrossEntropyLoss)


def test_paper_example_of_phi():
    # L = {l1, l2, l3}, g_i = {l1, l2}: p, q, h all marginalise to (0.4, 0.4, 0.2) (Sec. 2.1)
    probs = torch.tensor([[0.4, 0.4, 0.2], [0.8, 0.0, 0.2], [0.0, 0.8, 0.2]], dtype=torch.float64).T[None]
    target = torch.full((1, 3), 3)
    out = marginalize(probs, target, {3: [0, 1]})
    torch.testing.assert_close(out[0].T, torch.tensor([[0.4, 0.4, 0.2]] * 3, dtype=torch.float64))


def test_psi0_and_leaf_one_hot():
    logits = torch.zeros(1, 4, 3)
    target = torch.tensor([[1, 4, 5]])
    psi = label_set_target(target, logits, SETS)
    expected = torch.tensor([[0, 1, 0, 0], [0, 0.5, 0.5, 0], [1 / 3, 0, 1 / 3, 1 / 3]]).T[None]
    torch.testing.assert_close(psi, expected)
    leaf = leaf_one_hot(target, logits, SETS)
    torch.testing.assert_close(leaf, torch.tensor([[0, 1, 0, 0], [0, 0, 0, 0], [0, 0, 0, 0]]).T[None].float())


def _reference_leaf_dice(p: np.ndarray, g: list, c: int, alpha: int, eps: float) -> float:
    """Eq. (4) with explicit loops; p (C, N), g a list of leaf labels or sets."""
    total = 0.0
    for k in range(c):
        ind = np.array([1.0 if gi == k else 0.0 for gi in g])
        num = 2 * (ind * p[k]).sum()
        den = (ind**alpha).sum() + (p[k] ** alpha).sum() + eps
        total += num / den
    return 1 - total / c


def _reference_dice(p: np.ndarray, y: np.ndarray, alpha: int, eps: float) -> float:
    d = [
        2 * (p[k] * y[k]).sum() / ((p[k] ** alpha).sum() + (y[k] ** alpha).sum() + eps) for k in range(len(p))
    ]
    return 1 - float(np.mean(d))


@pytest.mark.parametrize("alpha", [1, 2])
def test_known_values_against_loop_references(alpha):
    torch.manual_seed(0)
    logits = torch.randn(1, 4, 6, dtype=torch.float64)
    target = torch.tensor([[0, 1, 4, 4, 5, 3]])
    g = [0, 1, "s4", "s4", "s5", 3]
    p = torch.softmax(logits, 1)[0].numpy()
    eps = 1e-5
    leaf = LeafDiceLoss(SETS, alpha=alpha, epsilon=eps)(logits, target).item()
    assert leaf == pytest.approx(_reference_leaf_dice(p, g, 4, alpha, eps), abs=1e-12)
    members = {0: [0], 1: [1], 3: [3], "s4": [1, 2], "s5": [0, 2, 3]}
    phi = p.copy()
    psi = np.zeros_like(p)
    for i, gi in enumerate(g):
        s = members[gi]
        phi[s, i] = p[s, i].mean()
        psi[s, i] = 1 / len(s)
    marg = MarginalDiceLoss(SETS, alpha=alpha, epsilon=eps)(logits, target).item()
    assert marg == pytest.approx(_reference_dice(phi, psi, alpha, eps), abs=1e-12)
    soft = SoftTargetDiceLoss(SETS, alpha=alpha, epsilon=eps)(logits, target).item()
    assert soft == pytest.approx(_reference_dice(p, psi, alpha, eps), abs=1e-12)
    ce = MarginalCrossEntropyLoss(SETS)(logits, target).item()
    expected_ce = np.mean([-np.log(p[members[gi], i].mean()) for i, gi in enumerate(g)])
    assert ce == pytest.approx(expected_ce, abs=1e-12)


def test_without_set_labels_they_reduce_to_the_fully_supervised_losses():
    torch.manual_seed(1)
    logits = torch.randn(2, 4, 5, 5, dtype=torch.float64)
    target = torch.randint(0, 4, (2, 5, 5))
    dice2 = DiceLoss(alpha=2)(logits, target)
    for cls in (LeafDiceLoss, MarginalDiceLoss, SoftTargetDiceLoss):
        torch.testing.assert_close(cls(SETS)(logits, target), dice2)
    torch.testing.assert_close(
        MarginalCrossEntropyLoss(SETS)(logits, target), CrossEntropyLoss()(logits, target)
    )


def _same_marginal(probs: torch.Tensor, target: torch.Tensor, sets: dict, mix: torch.Tensor) -> torch.Tensor:
    """A q with Phi(q; g) = Phi(p; g): in each voxel's set, redistribute the set's mass with weights mix."""
    q = probs.clone()
    for s, leaves in sets.items():
        where = target == s  # (B, *spatial)
        mass = probs[:, leaves].sum(1)  # (B, *spatial)
        w = mix[:, leaves]
        w = w / w.sum(1, keepdim=True)
        for j, leaf in enumerate(leaves):
            q[:, leaf] = torch.where(where, mass * w[:, j], q[:, leaf])
    return q


def _missing_labels_target(g: torch.Generator, b: int, shape: tuple[int, ...]) -> torch.Tensor:
    """Partial annotations as in Sec. 2.2: per image one set label (or none) holding every leaf that is not
    annotated in that image; the other leaves appear as leaf labels."""
    images = []
    for _ in range(b):
        choice = int(torch.randint(0, 3, (1,), generator=g))
        if choice == 0:
            allowed = [0, 1, 2, 3]
        else:
            s = (4, 5)[choice - 1]
            allowed = [c for c in range(4) if c not in SETS[s]] + [s]
        idx = torch.randint(0, len(allowed), shape, generator=g)
        images.append(torch.tensor(allowed)[idx])
    return torch.stack(images)


@settings(max_examples=40, deadline=None)
@given(seed=st.integers(0, 2**31 - 1), spread=st.floats(0.1, 4.0))
def test_label_set_axiom_eq2(seed, spread):
    g = torch.Generator().manual_seed(seed)
    b, c, shape = 3, 4, (3, 4)
    p = torch.softmax(spread * torch.randn(b, c, *shape, generator=g, dtype=torch.float64), 1)
    mix = torch.rand(b, c, *shape, generator=g, dtype=torch.float64) + 1e-3
    # Marginal losses: any label-set map (leaf and set labels mixed freely in an image).
    anything = torch.randint(0, 6, (b, *shape), generator=g)
    q = _same_marginal(p, anything, SETS, mix)
    torch.testing.assert_close(marginalize(p, anything, SETS), marginalize(q, anything, SETS))
    for cls in (MarginalDiceLoss, MarginalCrossEntropyLoss):
        loss = cls(SETS, reduction="none")
        torch.testing.assert_close(loss(p.log(), anything), loss(q.log(), anything), rtol=1e-9, atol=1e-9)
    # Leaf-Dice: the paper's setting (Sec. 2.2), one set of missing leaves per image.
    missing = _missing_labels_target(g, b, shape)
    q = _same_marginal(p, missing, SETS, mix)
    torch.testing.assert_close(marginalize(p, missing, SETS), marginalize(q, missing, SETS))
    for cls in AXIOM_LOSSES:
        loss = cls(SETS, reduction="none")
        torch.testing.assert_close(loss(p.log(), missing), loss(q.log(), missing), rtol=1e-9, atol=1e-9)


def test_soft_target_dice_violates_the_axiom():
    target = torch.tensor([[4, 4, 0, 3]])  # leaves 1 and 2 not annotated: the set {1, 2} (label 4)
    p = torch.tensor(
        [[[0.1, 0.1, 0.7, 0.1], [0.4, 0.4, 0.1, 0.1], [0.4, 0.4, 0.1, 0.1], [0.1, 0.1, 0.1, 0.7]]],
        dtype=torch.float64,
    )
    q = p.clone()
    q[0, 1, :2], q[0, 2, :2] = 0.8, 0.0  # same set mass on {1, 2}, all on leaf 1
    torch.testing.assert_close(marginalize(p, target, SETS), marginalize(q, target, SETS))
    soft = SoftTargetDiceLoss(SETS)
    assert abs(soft(p.log(), target).item() - soft(q.log(), target).item()) > 1e-2
    for cls in AXIOM_LOSSES:
        assert cls(SETS)(p.log(), target).item() == pytest.approx(cls(SETS)(q.log(), target).item(), abs=1e-9)


def test_leaf_dice_axiom_needs_missing_leaves():
    # Sec. 2.2's assumption: a set's leaves are not also annotated as leaves in the same image. When they
    # are, eq. (4) is still computed but is no longer invariant (documented; the marginal losses are).
    target = torch.tensor([[4, 4, 1, 0]])
    p = torch.tensor(
        [[[0.1, 0.1, 0.1, 0.7], [0.4, 0.4, 0.7, 0.1], [0.4, 0.4, 0.1, 0.1], [0.1, 0.1, 0.1, 0.1]]],
        dtype=torch.float64,
    )
    q = p.clone()
    q[0, 1, :2], q[0, 2, :2] = 0.8, 0.0
    leaf = LeafDiceLoss(SETS)
    assert abs(leaf(p.log(), target).item() - leaf(q.log(), target).item()) > 1e-3


@pytest.mark.parametrize("cls", [*AXIOM_LOSSES, SoftTargetDiceLoss], ids=lambda c: c.__name__)
def test_gradcheck(cls):
    torch.manual_seed(2)
    x = torch.randn(2, 4, 3, 3, dtype=torch.float64, requires_grad=True)
    t = torch.randint(0, 6, (2, 3, 3))
    loss = cls(SETS)
    assert gradcheck(lambda z: loss(z, t), (x,), eps=1e-6, atol=1e-6)


def test_validate_label_sets():
    assert validate_label_sets({"9": [3, 1], 10: (2,)}) == {9: (1, 3), 10: (2,)}
    with pytest.raises(ValueError, match="larger than every leaf"):
        validate_label_sets({2: [1, 3]})
    with pytest.raises(ValueError, match="non-empty"):
        validate_label_sets({5: []})
    with pytest.raises(ValueError, match="repeats"):
        validate_label_sets({5: [1, 1]})
    with pytest.raises(ValueError, match="mapping"):
        validate_label_sets([[5, [1]]])
    with pytest.raises(ValueError, match="integer"):
        validate_label_sets({5: [1.5]})
    with pytest.raises(ValueError, match=r"renumber the set labels from 4"):
        validate_label_sets({3: [0, 1]}, num_classes=4)
    with pytest.raises(ValueError, match="outputs only 4 classes"):
        validate_label_sets({9: [0, 5]}, num_classes=4)


def test_forward_errors():
    x = torch.randn(1, 4, 3)
    with pytest.raises(ValueError, match=r"label\(s\) \[6\]"):
        LeafDiceLoss(SETS)(x, torch.tensor([[0, 6, 4]]))
    with pytest.raises(ValueError, match="outputs only 3 classes"):
        MarginalDiceLoss(SETS)(torch.randn(1, 3, 3), torch.tensor([[0, 1, 2]]))
    with pytest.raises(ValueError, match="C >= 2"):
        MarginalCrossEntropyLoss({2: [0, 1]})(torch.randn(1, 1, 3), torch.tensor([[0, 1, 2]]))
    with pytest.raises(ValueError, match="shape"):
        SoftTargetDiceLoss(SETS)(x, torch.tensor([[0, 1]]))
    with pytest.raises(ValueError, match="alpha"):
        get_loss("leaf_dice", label_sets=SETS, alpha=3)
    with pytest.raises(ValueError, match="label_sets"):
        get_loss("marginal_dice")
