"""Label-set losses for partial supervision, label-set-losses-fidon2021.

Encoding (the authors' released code): the target map holds leaf labels ``0..C-1`` (one per output channel)
and set labels above them; ``label_sets = {set_label: [leaf labels]}`` says which leaves each set label
stands for. A voxel labelled ``s`` is "one of the leaves ``label_sets[s]``, unknown which". Each set label
must be larger than every leaf label (so at least ``C``).

- :class:`LeafDiceLoss`: the leaf-Dice, eq. (4): set-labelled voxels have an all-zero leaf target; the
  predicted probabilities count over all voxels.
- :class:`MarginalDiceLoss`, :class:`MarginalCrossEntropyLoss`: the only axiom-compliant conversions of
  Dice and cross-entropy, ``L(Phi(p; g), Psi_0(g))``, eq. (7).
- :class:`SoftTargetDiceLoss`: ``L_Dice(p, Psi_0(g))`` without ``Phi`` (the paper's Baseline 2); it does
  *not* satisfy the label-set axiom (2).

Helpers: :func:`validate_label_sets`, :func:`marginalize` (``Phi``), :func:`label_set_target` (``Psi_0``),
:func:`leaf_one_hot`.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from ._utils import (
    check_choice,
    check_input,
    check_number,
    check_reduction,
    float32_compute,
    label_map,
    log_probabilities,
    probabilities,
    reduce,
)
from .dice import class_stats

LabelSets = dict[int, tuple[int, ...]]


def _as_int(value: Any, what: str) -> int:
    if isinstance(value, bool):
        raise ValueError(f"{what} must be an integer label; got {value!r}")
    if isinstance(value, int):
        return value
    if isinstance(value, str) and value.strip().lstrip("-").isdigit():  # JSON / YAML object keys
        return int(value)
    if isinstance(value, torch.Tensor) and value.numel() == 1 and not value.is_floating_point():
        return int(value)
    if (
        hasattr(value, "dtype")
        and getattr(value.dtype, "kind", "") in "iu"
        and getattr(value, "ndim", 1) == 0
    ):
        return int(value)  # numpy integer scalar
    raise ValueError(f"{what} must be an integer label; got {value!r}")


def validate_label_sets(label_sets: Any, num_classes: int | None = None) -> LabelSets:
    """Check a ``{set_label: [leaf labels]}`` map and return it normalised (int keys, sorted int tuples).

    Rules (the released code's encoding): every set label is an integer larger than each leaf of its set;
    sets are non-empty, without repeats, of non-negative leaves. With ``num_classes`` (``C``, the number of
    output channels) also: leaves lie in ``0..C-1`` and set labels are ``>= C`` (a set label below ``C``
    would be read as that leaf label). This is the one validation of label sets: the losses and the
    training engine's dataset manifests (:func:`losslab.engine.load_manifest`) both call it; messages name
    the offending leaf or set label.

    Raises:
        ValueError: explaining the first violation found.
    """
    if not isinstance(label_sets, Mapping):
        raise ValueError(
            f"label_sets must be a mapping {{set_label: [leaf labels]}}; got {type(label_sets).__name__}"
        )
    out: LabelSets = {}
    for key, leaves in label_sets.items():
        s = _as_int(key, "a label_sets key (set label)")
        if s in out:
            raise ValueError(f"label_sets gives set label {s} twice")
        if (
            isinstance(leaves, (str, bytes))
            or not isinstance(leaves, (Sequence, torch.Tensor))
            or len(leaves) == 0
        ):
            raise ValueError(f"label_sets[{s}] must be a non-empty list of leaf labels; got {leaves!r}")
        ls = [_as_int(c, f"a leaf label of label_sets[{s}]") for c in leaves]
        repeated = sorted({c for c in ls if ls.count(c) > 1})
        if repeated:
            raise ValueError(
                f"label_sets[{s}] = {ls} repeats leaf label(s) {repeated}: list each leaf of a set once"
            )
        negative = [c for c in ls if c < 0]
        if negative:
            raise ValueError(f"label_sets[{s}] = {ls} has negative leaf label(s) {negative}")
        if num_classes is not None:
            outside = [c for c in ls if c >= num_classes]
            if outside:
                raise ValueError(
                    f"label_sets[{s}] = {ls}: leaf label(s) {outside} out of range; the network outputs "
                    f"only {num_classes} classes, so leaf labels are 0..{num_classes - 1}"
                )
        if s <= max(ls):
            raise ValueError(
                f"set label {s} must be larger than every leaf label of its set {sorted(ls)}: leaf labels "
                "are 0..C-1 and set labels come after them (the encoding of the label-set paper's code)"
            )
        if num_classes is not None:
            if s < num_classes:
                raise ValueError(
                    f"set label {s} is also a leaf label (the network outputs {num_classes} classes, "
                    f"0..{num_classes - 1}): set labels must be above the leaf labels; renumber the set "
                    f"labels from {num_classes} upwards"
                )
        out[s] = tuple(sorted(ls))
    return out


@dataclass(frozen=True)
class _Encoded:
    """A validated label-set target: the label map, its leaf voxels and the set labels present in it."""

    labels: torch.Tensor  # (B, *spatial) int64
    is_leaf: torch.Tensor  # (B, *spatial) bool
    present: tuple[tuple[int, tuple[int, ...]], ...]  # (set label, its leaves) found in the batch
    num_classes: int

    def leaf_one_hot(self, dtype: torch.dtype) -> torch.Tensor:
        """One-hot of the leaf labels ``(B, C, *spatial)``; all-zero on set-labelled voxels."""
        b, c = self.labels.shape[0], self.num_classes
        out = torch.zeros((b, c, *self.labels.shape[1:]), dtype=dtype, device=self.labels.device)
        index = self.labels.clamp_max(c - 1).unsqueeze(1)
        return out.scatter_(1, index, self.is_leaf.unsqueeze(1).to(dtype))

    def psi0(self, dtype: torch.dtype) -> torch.Tensor:
        """``Psi_0(g)`` (eq. 6): ``1/|g_i|`` on the leaves of ``g_i``, 0 elsewhere."""
        out = self.leaf_one_hot(dtype)
        for s, leaves in self.present:
            mask = (self.labels == s).unsqueeze(1).to(dtype)
            out[:, list(leaves)] += mask / len(leaves)
        return out

    def phi(self, probs: torch.Tensor) -> torch.Tensor:
        """``Phi(p; g)``: per voxel, the probabilities of the leaves of its set replaced by their mean."""
        out = probs
        for s, leaves in self.present:
            idx = torch.tensor(leaves, device=probs.device)
            sub = out.index_select(1, idx)
            mean = sub.mean(dim=1, keepdim=True)
            out = out.index_copy(1, idx, torch.where((self.labels == s).unsqueeze(1), mean, sub))
        return out


def _encode(target: Any, input: torch.Tensor, label_sets: LabelSets) -> _Encoded:
    """Validate ``target`` against ``label_sets`` and the input's ``C`` (one O(N) pass: min/max, bincount).

    A loop over the set labels *present in the batch* follows in the losses (a handful: one per partially
    annotated case), never over voxels.
    """
    check_input(input)
    c = input.shape[1]
    if c < 2:
        raise ValueError(
            f"label-set losses need a softmax over C >= 2 leaf classes; got input {tuple(input.shape)}"
        )
    validate_label_sets(label_sets, c)
    labels = label_map(target, input)
    present: list[tuple[int, tuple[int, ...]]] = []
    if labels.numel():
        lo, hi = (int(v) for v in torch.aminmax(labels))
        if lo < 0:
            raise ValueError(f"target holds negative labels (min {lo}); leaf labels are 0..{c - 1}")
        if hi >= c:
            counts = torch.bincount(labels.flatten(), minlength=hi + 1)[c:].tolist()
            found = [c + j for j, n in enumerate(counts) if n > 0]
            unknown = [v for v in found if v not in label_sets]
            if unknown:
                raise ValueError(
                    f"target holds label(s) {unknown} that are neither leaf labels 0..{c - 1} nor set labels "
                    f"of label_sets (keys {sorted(label_sets)})"
                )
            present = [(v, label_sets[v]) for v in found]
    return _Encoded(labels, labels < c, tuple(present), c)


def leaf_one_hot(
    target: torch.Tensor, input: torch.Tensor, label_sets: Mapping[int, Sequence[int]]
) -> torch.Tensor:
    """One-hot of the leaf labels ``(B, C, *spatial)``; voxels with a set label get an all-zero row."""
    return _encode(target, input, validate_label_sets(label_sets)).leaf_one_hot(input.dtype)


def label_set_target(
    target: torch.Tensor, input: torch.Tensor, label_sets: Mapping[int, Sequence[int]]
) -> torch.Tensor:
    """``Psi_0(g)`` (eq. 6): ``1/|g_i|`` on the leaves of ``g_i``, 0 elsewhere; ``(B, C, *spatial)``."""
    return _encode(target, input, validate_label_sets(label_sets)).psi0(input.dtype)


def marginalize(
    probs: torch.Tensor, target: torch.Tensor, label_sets: Mapping[int, Sequence[int]]
) -> torch.Tensor:
    """``Phi(p; g)`` (Sec. 2.1): on each voxel, the probabilities of the leaves of ``g_i`` are replaced by
    their mean; the others are kept. ``probs`` ``(B, C, *spatial)`` (probabilities, not logits)."""
    return _encode(target, probs, validate_label_sets(label_sets)).phi(probs)


_CHUNK = 1 << 17  # spatial chunk of _square_sum: (B, C, chunk) temporaries the allocator reuses


def _square_sum(flat: torch.Tensor) -> torch.Tensor:
    """``sum_i p_ic^2`` ``(B, C)`` of ``(B, C, N)`` over spatial chunks (no ``(B, C, N)`` temporary)."""
    out = torch.zeros(flat.shape[:2], dtype=flat.dtype, device=flat.device)
    for start in range(0, flat.shape[2], _CHUNK):
        x = flat[:, :, start : start + _CHUNK]
        out += (x * x).sum(-1)
    return out


def _consecutive(idx: torch.Tensor) -> bool:
    """Whether the (sorted, distinct: validate_label_sets) leaves ``idx`` are consecutive channels."""
    return int(idx[-1]) - int(idx[0]) == idx.numel() - 1


def _leaves(flat: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
    """The channels ``idx`` of ``(B, C, N)``: a view when they are consecutive, else a copy."""
    if _consecutive(idx):
        return flat.narrow(1, int(idx[0]), idx.numel())
    return flat.index_select(1, idx)


class _SetDiceStats(torch.autograd.Function):
    """``sum_i phi_ic psi_ic`` and ``sum_i phi_ic^alpha`` per image and class ``(B, C)`` of the marginal
    (``phi = Phi(p; g)``) or soft-target (``phi = p``) Dice, with ``psi = Psi_0(g)``, without dense
    ``(B, C, N)`` membership / ``Phi`` / ``Psi_0`` tensors.

    Leaf voxels count as in the plain Dice (a gather and a scatter-add on the label map); each set label
    ``s`` present (a handful) adds a correction on the channels of its leaves ``S``, from sums masked to
    its voxels: there ``psi_ic = 1/|S|`` and (marginal) ``phi_ic = m_i = mean_{c' in S} p_ic'``. The
    backward is written out: ``d/dp_ic = G_inter_c psi_ic + alpha G_psum_c p_ic^(alpha-1)``, and on the
    voxels of ``s`` (marginal) the leaves of ``S`` share ``1/|S| sum_{c in S} (G_inter_c / |S| +
    alpha G_psum_c m_i^(alpha-1))``. Checked against the dense formulas and by gradcheck in the tests.
    """

    @staticmethod
    def forward(
        ctx: Any,
        probs: torch.Tensor,
        index: torch.Tensor,
        leaf: torch.Tensor,
        sets: tuple[tuple[torch.Tensor, torch.Tensor], ...],
        alpha: int,
        marginal: bool,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        flat = probs.flatten(2)  # (B, C, N)
        psum = flat.sum(-1) if alpha == 1 else _square_sum(flat)
        p_y = flat.gather(1, index.unsqueeze(1))[:, 0] * leaf
        inter = torch.zeros_like(psum).scatter_add_(1, index, p_y)
        means = []
        for mask, idx in sets:  # mask (B, N) 0/1, idx the leaves of the set
            k = idx.numel()
            sub = _leaves(flat, idx)  # (B, |S|, N)
            if marginal:
                m = sub.mean(dim=1)  # (B, N)
                means.append(m)
                mm = m * mask
                inter[:, idx] += (mm.sum(-1) / k).unsqueeze(1)
                if alpha == 1:
                    psum[:, idx] += mm.sum(-1, keepdim=True) - (sub * mask.unsqueeze(1)).sum(-1)
                else:
                    psum[:, idx] += (mm * m).sum(-1, keepdim=True) - (sub * sub * mask.unsqueeze(1)).sum(-1)
            else:
                inter[:, idx] += (sub * mask.unsqueeze(1)).sum(-1) / k
        ctx.save_for_backward(probs if alpha == 2 else None, index, leaf, *means)
        ctx.sets, ctx.alpha, ctx.marginal, ctx.shape = sets, alpha, marginal, probs.shape
        return inter, psum

    @staticmethod
    def backward(ctx: Any, g_inter: torch.Tensor, g_psum: torch.Tensor) -> tuple[torch.Tensor | None, ...]:
        probs, index, leaf, *means = ctx.saved_tensors
        b, c = ctx.shape[:2]
        if ctx.alpha == 1:
            grad = g_psum.unsqueeze(-1).expand(b, c, index.shape[1]).contiguous()
        else:
            grad = probs.flatten(2) * (2.0 * g_psum).unsqueeze(-1)
        grad.scatter_add_(1, index.unsqueeze(1), (g_inter.gather(1, index) * leaf).unsqueeze(1))
        for j, (mask, idx) in enumerate(ctx.sets):
            k = idx.numel()
            if ctx.marginal:
                shared = g_inter[:, idx].sum(1, keepdim=True) / (k * k)  # (B, 1)
                if ctx.alpha == 1:
                    value = (shared + g_psum[:, idx].sum(1, keepdim=True) / k).expand_as(mask)
                else:
                    value = torch.addcmul(
                        shared, means[j], g_psum[:, idx].sum(1, keepdim=True), value=2.0 / k
                    )
                sub = _leaves(grad, idx)
                new = torch.where(mask.unsqueeze(1) > 0, value.unsqueeze(1), sub)
                if _consecutive(idx):
                    sub.copy_(new)  # sub is a view of grad
                else:
                    grad.index_copy_(1, idx, new)
            else:
                grad.index_add_(1, idx, (g_inter[:, idx] / k).unsqueeze(-1) * mask.unsqueeze(1))
        return grad.view(ctx.shape), None, None, None, None, None


def _set_dice(
    probs: torch.Tensor, enc: _Encoded, marginal: bool, alpha: int, epsilon: float, reduction: str
) -> torch.Tensor:
    """Mean-class Dice loss of ``Phi(p; g)`` (``marginal``) or ``p`` against ``Psi_0(g)``."""
    b, c = probs.shape[:2]
    index = enc.labels.clamp_max(c - 1).flatten(1)  # (B, N)
    leaf = enc.is_leaf.flatten(1).to(probs.dtype)
    sets = tuple(
        ((enc.labels == s).flatten(1).to(probs.dtype), torch.tensor(leaves, device=probs.device))
        for s, leaves in enc.present
    )
    inter, psum = _SetDiceStats.apply(probs, index, leaf, sets, alpha, marginal)
    with torch.no_grad():  # sum_i psi_ic^alpha: leaf counts, plus |s| / |S|^alpha on the leaves of each set
        ysum = torch.zeros((b, c), dtype=probs.dtype, device=probs.device).scatter_add_(1, index, leaf)
        for mask, idx in sets:
            ysum[:, idx] += mask.sum(-1, keepdim=True) / idx.numel() ** alpha
    dice = 2.0 * inter / (psum + ysum + epsilon)
    return reduce((1.0 - dice).mean(dim=1), reduction)


class _LabelSetDice(nn.Module):
    def __init__(
        self,
        label_sets: Mapping[int, Sequence[int]],
        alpha: int = 2,
        epsilon: float = 1e-5,
        reduction: str = "mean",
    ) -> None:
        super().__init__()
        self.label_sets = validate_label_sets(label_sets)
        self.alpha = check_choice("alpha", alpha, (1, 2))
        self.epsilon = check_number("epsilon", epsilon, non_negative=True)
        self.reduction = check_reduction(reduction)

    def extra_repr(self) -> str:
        return f"label_sets={self.label_sets}, alpha={self.alpha}, epsilon={self.epsilon:g}"


class LeafDiceLoss(_LabelSetDice):
    """Leaf-Dice loss, label-set-losses-fidon2021 eq. (4).

    Per image ``L = 1 - 1/|L| sum_c 2 sum_i 1(g_i = {c}) p_ic / (sum_i 1(g_i = {c})^alpha + sum_i p_ic^alpha
    + epsilon)``: the Dice of each leaf class against the voxels annotated with that leaf only, while the
    probabilities ``p`` count over *all* voxels (set-labelled ones included), so leaves outside a voxel's
    set are pushed to 0 there. The mean runs over all ``C`` leaf classes; ``epsilon`` sits in the
    denominator only (a leaf absent from the annotation and the prediction counts as loss 1), as in the
    authors' code.

    It satisfies the label-set axiom (eq. 2) in the setting of the paper's Sec. 2.2, which is the fetal
    use: per image, the set-labelled voxels stand for the leaves that were *not annotated in that image*
    (so those leaves never appear as leaf labels in it). If an image mixes a set with leaf labels of its
    own members, eq. (4) is still computed but is no longer invariant; use :class:`MarginalDiceLoss` or
    :class:`MarginalCrossEntropyLoss` there (they satisfy the axiom for any label-set map).

    Args:
        label_sets: ``{set_label: [leaf labels]}``, each set label larger than its leaves (and ``>= C``).
        alpha: 1 or 2 (2 squares the denominator terms; the released code's default).
        epsilon: ``>= 0``.
        reduction: "mean" | "sum" | "none" (``(B,)``).

    Shapes:
        input: logits ``(B, C, *spatial)``; target: ``(B, *spatial)`` or ``(B, 1, *spatial)`` int, leaf labels
        ``0..C-1`` and set labels from ``label_sets``.
    """

    @float32_compute
    def forward(self, input: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        enc = _encode(target, input, self.label_sets)
        labels = enc.labels.clamp_max(enc.num_classes - 1)
        inter, psum, ysum = class_stats(probabilities(input), labels, None, self.alpha, mask=enc.is_leaf)
        dice = 2.0 * inter / (psum + ysum + self.epsilon)
        return reduce((1.0 - dice).mean(dim=1), self.reduction)


class MarginalDiceLoss(_LabelSetDice):
    """Marginal Dice loss, label-set-losses-fidon2021 eq. (7) with the mean-class Dice:
    ``L_Dice(Phi(p; g), Psi_0(g))``.

    ``Phi`` replaces the probabilities of the leaves of each voxel's set by their mean, ``Psi_0`` spreads the
    target uniformly over the set (``1/|g_i|``). The Dice is that of :class:`DiceLoss` (``alpha``, epsilon in
    the denominator only, mean over the ``C`` classes per image). Satisfies the label-set axiom (eq. 2).

    Args, shapes: as :class:`LeafDiceLoss`.
    """

    @float32_compute
    def forward(self, input: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        enc = _encode(target, input, self.label_sets)
        return _set_dice(probabilities(input), enc, True, self.alpha, self.epsilon, self.reduction)


class SoftTargetDiceLoss(_LabelSetDice):
    """Soft-target Dice loss ``L_Dice(p, Psi_0(g))``, label-set-losses-fidon2021 Sec. 4 (Baseline 2).

    The Dice of the raw probabilities against the soft target ``Psi_0(g)`` (``1/|g_i|`` on the leaves of the
    set), *without* the marginalisation ``Phi``. It does **not** satisfy the label-set axiom (eq. 2): two
    predictions that differ only inside a voxel's set get different losses. Kept as the paper's baseline.

    Args, shapes: as :class:`LeafDiceLoss`.
    """

    @float32_compute
    def forward(self, input: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        enc = _encode(target, input, self.label_sets)
        return _set_dice(probabilities(input), enc, False, self.alpha, self.epsilon, self.reduction)


class MarginalCrossEntropyLoss(nn.Module):
    """Marginal cross-entropy, label-set-losses-fidon2021 eq. (7) with the cross-entropy:
    ``L_CE(Phi(p; g), Psi_0(g))``.

    Per voxel this is ``-log( 1/|g_i| sum_{c in g_i} p_ic )`` (the log of the *mean* probability of the set,
    as in the authors' code; it differs from ``-log P(g_i)`` by the constant ``log |g_i|``), computed with a
    log-sum-exp of the log-softmax. Leaf-labelled voxels give the usual ``-log p_{i, g_i}``. Averaged over
    the voxels of each image (``(B,)`` under "none"), then over the batch ("mean") or summed ("sum").
    Satisfies the label-set axiom (eq. 2).

    Args:
        label_sets: ``{set_label: [leaf labels]}``.
        reduction: "mean" | "sum" | "none".

    Shapes:
        as :class:`LeafDiceLoss`.
    """

    def __init__(self, label_sets: Mapping[int, Sequence[int]], reduction: str = "mean") -> None:
        super().__init__()
        self.label_sets = validate_label_sets(label_sets)
        self.reduction = check_reduction(reduction)

    @float32_compute
    def forward(self, input: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        enc = _encode(target, input, self.label_sets)
        logp = log_probabilities(input)
        index = enc.labels.clamp_max(enc.num_classes - 1).unsqueeze(1)
        per_voxel = -logp.gather(1, index)[:, 0]  # leaf voxels: -log p_y
        for s, leaves in enc.present:  # set voxels: -log(mean_{c in S} p_c), by a log-sum-exp
            in_set = torch.logsumexp(logp.index_select(1, torch.tensor(leaves, device=logp.device)), dim=1)
            per_voxel = torch.where(enc.labels == s, math.log(len(leaves)) - in_set, per_voxel)
        return reduce(per_voxel.flatten(1).mean(1), self.reduction)

    def extra_repr(self) -> str:
        return f"label_sets={self.label_sets}"
