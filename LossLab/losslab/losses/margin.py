"""Distribution-aware margin calibration, margin-calibration-li2021.

- :func:`count_labels` scans a dataset (any iterable of label maps, or of samples holding one) once and
  counts the pixels of each class.
- :func:`compute_margins` turns the counts into the margin-offsets of Corollary 1.1.
- :class:`MarginCalibrationLoss` is the loss of eq. (27) with the rho-calibrated log-loss of eqs. (28)-(29)
  (``variant="paper"``), or the authors' released implementation (``variant="released"``).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from typing import Any, NamedTuple

import numpy as np
import torch
from torch import nn

from ._utils import (
    check_choice,
    check_ignore_index,
    check_input,
    check_label_range,
    check_number,
    check_reduction,
    float32_compute,
    label_map,
)

VARIANTS = ("paper", "released")


class Margins(NamedTuple):
    """Margin-offsets per class ``k`` (Corollary 1.1), float64 tensors of shape ``(C,)``.

    ``rho_k0`` offsets the margin of the pixels *of* class ``k`` (eq. 28), ``rho_0k`` that of the pixels of
    the other classes (eq. 29).
    """

    rho_k0: torch.Tensor
    rho_0k: torch.Tensor


def count_labels(
    dataset: Iterable[Any],
    num_classes: int,
    ignore_index: int | None = None,
    key: int | str | None = None,
) -> np.ndarray:
    """Count the pixels of each class over a dataset: ``n_k`` of margin-calibration-li2021.

    Args:
        dataset: an iterable (a ``torch.utils.data.Dataset``, a ``DataLoader``, a list...) whose items are
            label maps (numpy arrays or tensors of integer labels, any shape, batched or not) or samples
            holding one, picked by ``key``.
        num_classes: ``C``; labels must lie in ``0..C-1`` (or equal ``ignore_index``).
        ignore_index: a label that is not counted (e.g. 255).
        key: ``None`` if items are label maps; else the index (e.g. 1 for ``(image, label)`` pairs) or the
            mapping key (e.g. ``"label"``) of the label map in each item.

    Returns:
        ``(C,)`` int64 array of pixel counts.

    Raises:
        ValueError: a label outside ``0..C-1`` (other than ``ignore_index``), or a non-integer label map.
    """
    if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 2:
        raise ValueError(f"num_classes must be an integer >= 2; got {num_classes!r}")
    ignore_index = check_ignore_index(ignore_index)
    counts = np.zeros(num_classes, dtype=np.int64)
    for i, item in enumerate(dataset):
        labels = item if key is None else item[key]
        if isinstance(labels, torch.Tensor):
            labels = labels.detach().cpu().numpy()
        labels = np.asarray(labels)
        if labels.dtype.kind == "f":
            if not np.array_equal(labels, np.round(labels)):
                raise ValueError(f"item {i} of the dataset has non-integer labels")
        elif labels.dtype.kind not in "iub":
            raise ValueError(f"item {i} of the dataset is not an integer label map (dtype {labels.dtype})")
        flat = labels.astype(np.int64).ravel()
        if ignore_index is not None:
            flat = flat[flat != ignore_index]
        if flat.size == 0:
            continue
        lo, hi = int(flat.min()), int(flat.max())
        if lo < 0 or hi >= num_classes:
            raise ValueError(
                f"item {i} of the dataset has labels in {lo}..{hi}, outside 0..{num_classes - 1}"
                + (f" (ignore_index={ignore_index})" if ignore_index is not None else "")
            )
        counts += np.bincount(flat, minlength=num_classes)
    return counts


def compute_margins(
    class_counts: Sequence[float] | np.ndarray | torch.Tensor, tau: float = 10.0, nu: float = 1.0
) -> Margins:
    """Margin-offsets from a dataset's class pixel counts, margin-calibration-li2021 Corollary 1.1.

    With ``n = sum_k n_k`` and ``p_k = n_k / n``::

        rho_0k = tau * sqrt(n - n_k) / n_k                                  (so that eq. (23) holds)
        mu_k   = p_k sqrt(n_k) / (nu (n - n_k) - p_k sqrt(n - n_k))
        rho_k0 = mu_k * rho_0k

    ``tau`` scales all offsets (the paper's sum-of-offsets constant); ``nu`` is the hyper-parameter of
    Corollary 1.1 (the paper's Table 1 tries tau in {1, 10} and nu in {0.01..10}). Rare classes get the
    large offsets: ``rho_0i / rho_0j = n_j sqrt(n - n_i) / (n_i sqrt(n - n_j))`` (eq. 23).

    Args:
        class_counts: ``(C,)`` pixel counts ``n_k`` (e.g. from :func:`count_labels`), ``C >= 2``.
        tau: scale of the offsets, ``> 0``.
        nu: ``> 0``.

    Returns:
        :class:`Margins` ``(rho_k0, rho_0k)``, float64.

    Raises:
        ValueError: a class with no pixels (its offsets would be infinite: drop the class or check the
            dataset), negative counts, or ``nu`` so small that a denominator of ``mu_k`` is not positive.
    """
    tau = check_number("tau", tau, positive=True)
    nu = check_number("nu", nu, positive=True)
    n_k = torch.as_tensor(np.asarray(class_counts, dtype=np.float64))
    if n_k.ndim != 1 or n_k.numel() < 2:
        raise ValueError(f"class_counts must be a 1-D sequence of >= 2 counts; got shape {tuple(n_k.shape)}")
    if not torch.isfinite(n_k).all() or (n_k < 0).any():
        raise ValueError(f"class_counts must be finite and non-negative; got {n_k.tolist()}")
    empty = torch.nonzero(n_k == 0).flatten().tolist()
    if empty:
        raise ValueError(
            f"class(es) {empty} have no pixels in class_counts: their margin-offsets rho_0k = "
            "tau * sqrt(n - n_k) / n_k are infinite. Count over a dataset where every class appears, "
            "or leave the class out of the model."
        )
    n = n_k.sum()
    rest = n - n_k
    p_k = n_k / n
    rho_0k = tau * rest.sqrt() / n_k
    denom = nu * rest - p_k * rest.sqrt()
    bad = torch.nonzero(denom <= 0).flatten().tolist()
    if bad:
        raise ValueError(
            f"nu={nu} makes nu (n - n_k) - p_k sqrt(n - n_k) <= 0 for class(es) {bad} (Corollary 1.1 needs "
            "it positive); increase nu"
        )
    mu_k = p_k * n_k.sqrt() / denom
    return Margins(rho_k0=mu_k * rho_0k, rho_0k=rho_0k)


# Spatial chunks of the passes over (B, C, ...): their temporaries stay small enough (<= ~8 MiB) for the
# allocator to reuse them from one chunk to the next instead of mapping fresh memory each time, and the
# passes over one chunk run in cache.
_CHUNK_BYTES = 8 << 20


def _chunk_step(s: torch.Tensor) -> int:
    b, c = s.shape[:2]
    return max(1, _CHUNK_BYTES // max(1, b * c * s.element_size()))


def _pixel_terms(
    a: torch.Tensor,
    y: torch.Tensor,
    top: torch.Tensor,
    second: torch.Tensor,
    s_y: torch.Tensor,
    r_neg: torch.Tensor,
    r_pos: torch.Tensor,
    scale: float,
) -> tuple[torch.Tensor, ...]:
    """``(B, n)`` pieces of the per-pixel loss: whether the true class is the top one, and the arguments
    (times ``scale``) of phi for the top class's term, the true class's negative and positive terms."""
    is_a = y == a
    lead = top - second
    lam_y = torch.where(is_a, lead, s_y - top)
    u_top = (lead + r_neg.take(a)).mul_(scale)
    u_neg = (lam_y + r_neg.take(y)).mul_(scale)
    u_pos = (r_pos.take(y) - lam_y).mul_(scale)
    return is_a, u_top, u_neg, u_pos


class _PerPixel(torch.autograd.Function):
    """The per-pixel loss of eq. (27) (summed over the classes, times ``scale``) from the scores ``s`` and the
    true classes ``y``, with a hand-written backward.

    Every class first counts as a negative, ``sum_k phi(z_k)`` with ``z_k = scale (s_k - top + r0_k)``;
    then the top class's term is fixed (its margin is ``top - second``) and the true class's term swapped
    for the positive one, with ``phi(u) = ln(1 + e^u)``. All of it runs over spatial chunks (temporaries
    reused, in cache): the top-two search (as :func:`_top_two_indices`), ``z``, the sum of phi and the
    per-pixel terms. The backward recomputes ``z`` into the gradient tensor itself (``d/ds_k = scale
    sigmoid(z_k)``, in place) and scatter-adds the gradients of ``top``, ``second`` and ``s_y`` into it:
    no dense temporaries beyond the gradient. Checked against the autograd formulation and by gradcheck in
    the tests.
    """

    @staticmethod
    def forward(
        ctx: Any,
        s: torch.Tensor,
        y: torch.Tensor,
        r_neg: torch.Tensor,
        r_pos: torch.Tensor,
        scale: float,
        pos_weight: float,
    ) -> torch.Tensor:
        bsz, c = s.shape[:2]
        flat = s.flatten(2)  # (B, C, N)
        n = flat.shape[2]
        y = y.reshape(bsz, 1, n)
        rn = r_neg.view(1, c, 1)
        zero = torch.zeros((), dtype=s.dtype, device=s.device)
        phi_rn = torch.logaddexp(scale * r_neg, zero)  # (C,): the top class's term as a negative
        idx = torch.empty((2, bsz, 1, n), dtype=torch.int64, device=s.device)  # a, b
        val = torch.empty((3, bsz, 1, n), dtype=s.dtype, device=s.device)  # top, second, s_y
        per_pixel = torch.empty((bsz, n), dtype=s.dtype, device=s.device)
        for start in range(0, n, _chunk_step(s)):
            sl = slice(start, start + _chunk_step(s))
            x, yc = flat[:, :, sl], y[:, :, sl]
            top = torch.amax(x, dim=1, keepdim=True, out=val[0, :, :, sl])
            a = _first_index_of_max(x, top)
            idx[0, :, :, sl] = a
            others = x.scatter(1, a, float("-inf"))
            second = torch.amax(others, dim=1, keepdim=True, out=val[1, :, :, sl])
            idx[1, :, :, sl] = _first_index_of_max(others, second)
            s_y = torch.gather(x, 1, yc, out=val[2, :, :, sl])
            z = torch.sub(x, top, out=others)  # z = scale (s - top + r0), in the buffer of `others`
            z.add_(rn)
            if scale != 1.0:
                z.mul_(scale)
            out = torch.sum(torch.logaddexp(z, zero, out=z), 1, out=per_pixel[:, sl])
            a, yc, top, second, s_y = a[:, 0], yc[:, 0], top[:, 0], second[:, 0], s_y[:, 0]
            _, u_top, u_neg, u_pos = _pixel_terms(a, yc, top, second, s_y, r_neg, r_pos, scale)
            out -= phi_rn.take(a)
            out += torch.logaddexp(u_top, zero)
            out -= torch.logaddexp(u_neg, zero)
            out += torch.logaddexp(u_pos, zero).mul_(pos_weight)
        ctx.save_for_backward(s, y, idx, val, r_neg, r_pos)
        ctx.scale, ctx.pos_weight = scale, pos_weight
        return per_pixel.view(bsz, *s.shape[2:])

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor | None, ...]:
        s, y, idx, val, r_neg, r_pos = ctx.saved_tensors
        scale, pos_weight = ctx.scale, ctx.pos_weight
        bsz, c = s.shape[:2]
        flat = s.flatten(2)
        n = flat.shape[2]
        rn = r_neg.view(1, c, 1)
        g = (grad * scale).reshape(bsz, n)
        gs = torch.empty(s.shape, dtype=s.dtype, device=s.device)
        gflat = gs.view(bsz, c, n)
        for start in range(0, n, _chunk_step(s)):
            sl = slice(start, start + _chunk_step(s))
            gc, yc, a, b = g[:, sl], y[:, :, sl], idx[0, :, :, sl], idx[1, :, :, sl]
            top, second, s_y = val[0, :, :, sl], val[1, :, :, sl], val[2, :, :, sl]
            # d/ds_k = scale sigmoid(z_k) g, written into the gradient itself.
            z = torch.sub(flat[:, :, sl], top, out=gflat[:, :, sl])
            z.add_(rn)
            if scale != 1.0:
                z.mul_(scale)
            sig_sum = z.sigmoid_().sum(1)  # sum_k sigmoid(z_k)
            z.mul_(gc.unsqueeze(1))
            is_a, u_top, u_neg, u_pos = _pixel_terms(
                a[:, 0], yc[:, 0], top[:, 0], second[:, 0], s_y[:, 0], r_neg, r_pos, scale
            )
            # d/dlambda_y of -phi(u_neg) + w phi(u_pos), per unit of scale.
            d_lam = torch.sigmoid(u_neg).add_(torch.sigmoid(u_pos), alpha=pos_weight).neg_()
            d_lead = torch.sigmoid(u_top)
            g_top = (d_lead - sig_sum + torch.where(is_a, d_lam, -d_lam)).mul_(gc)
            g_second = (d_lead + torch.where(is_a, d_lam, 0.0)).mul_(gc).neg_()
            g_y = torch.where(is_a, 0.0, d_lam).mul_(gc)
            z.scatter_add_(1, a, g_top.unsqueeze(1))
            z.scatter_add_(1, b, g_second.unsqueeze(1))
            z.scatter_add_(1, yc, g_y.unsqueeze(1))
        return gs, None, None, None, None, None


def _first_index_of_max(x: torch.Tensor, max_value: torch.Tensor) -> torch.Tensor:
    """Index ``(B, 1, ...)`` of the first class reaching ``max_value`` (no grad; faster than argmax on the CPU
    for a non-innermost axis): the largest of the reversed ranks ``C..1`` of the classes that reach it, in
    ``uint8`` (a quarter of the memory traffic of floats) when ``C <= 255``."""
    c = x.shape[1]
    hit = x == max_value
    shape = (1, c) + (1,) * (x.ndim - 2)
    if c <= 255:
        rank = torch.arange(c, 0, -1, device=x.device, dtype=torch.uint8).view(shape)
        return c - (hit.view(torch.uint8) * rank).amax(dim=1, keepdim=True).long()
    rank = torch.arange(c, 0, -1, device=x.device, dtype=x.dtype).view(shape)
    return (c - (hit * rank).amax(dim=1, keepdim=True)).long()


def _top_two_indices(scores: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Indices ``(B, 1, *spatial)`` of the top class and of the best of the other classes (no grad; with a
    tie at the top, the second index points to the other tied class)."""
    b, c = scores.shape[:2]
    flat = scores.detach().flatten(2)  # (B, C, N)
    n = flat.shape[2]
    out = torch.empty((2, b, 1, n), dtype=torch.int64, device=scores.device)
    step = max(1, _CHUNK_BYTES // max(1, b * c * flat.element_size()))
    with torch.no_grad():
        for start in range(0, n, step):
            x = flat[:, :, start : start + step]
            a = _first_index_of_max(x, x.amax(dim=1, keepdim=True))
            others = x.scatter(1, a, float("-inf"))
            out[0, :, :, start : start + step] = a
            out[1, :, :, start : start + step] = _first_index_of_max(others, others.amax(dim=1, keepdim=True))
    spatial = (b, 1, *scores.shape[2:])
    return out[0].view(spatial), out[1].view(spatial)


def class_margins(scores: torch.Tensor) -> torch.Tensor:
    """Margins ``lambda_ik = s_ik - max_{j != k} s_ij`` (eq. 4) for scores ``(B, C, *spatial)``, ``C >= 2``.

    For the top class the margin is its lead over the runner-up (positive; 0 for a tie); for every other
    class it is its (negative) distance to the top score.
    """
    a, b = _top_two_indices(scores)
    top, second = scores.gather(1, torch.cat([a, b], dim=1)).split(1, dim=1)
    return (scores - top).scatter(1, a, top - second)


def margin_calibration_loss(
    input: torch.Tensor,
    target: torch.Tensor,
    rho_k0: torch.Tensor,
    rho_0k: torch.Tensor,
    variant: str = "paper",
    ignore_index: int | None = None,
    reduction: str = "mean",
) -> torch.Tensor:
    """Functional twin of :class:`MarginCalibrationLoss` (offsets given as ``(C,)`` tensors)."""
    check_choice("variant", variant, VARIANTS)
    check_reduction(reduction)
    check_input(input)
    scores = torch.cat([torch.zeros_like(input), input], dim=1) if input.shape[1] == 1 else input
    c = scores.shape[1]
    if rho_k0.numel() != c or rho_0k.numel() != c:
        raise ValueError(f"the margins are for {rho_k0.numel()} classes but the input encodes {c} classes")
    labels = label_map(target, input)
    check_label_range(labels, c, ignore_index)
    valid = None if ignore_index is None else labels != ignore_index
    safe = labels if valid is None else torch.where(valid, labels, torch.zeros_like(labels))
    # Every class first as a negative ("[y_i != k]" term, lambda_k = s_k - top), on one (B, C, ...) pass;
    # then, on (B, *spatial) gathers, the top class's term is fixed (its lambda is top - second) and the
    # true class's term swapped for the positive one. No one-hot tensor.
    #   paper:    log2(1 + 2^{lambda + rho_0k})  and  log2(1 + 2^{-lambda + rho_k0})        (eqs. 28-29)
    #   released: ln(1 + e^{lambda + rho_0k})    and  C * ln(1 + e^{-lambda + rho_k0})  (BCE, pos_weight C)
    # with log2(1 + 2^z) = ln(1 + e^{z ln 2}) / ln 2.
    scale = math.log(2.0) if variant == "paper" else 1.0
    pos_weight = 1.0 if variant == "paper" else float(c)
    r_pos = rho_k0.to(scores)
    r_neg = rho_0k.to(scores)
    per_pixel = _PerPixel.apply(scores, safe, r_neg, r_pos, scale, pos_weight) / scale
    if valid is not None:
        per_pixel = per_pixel * valid.to(per_pixel.dtype)
    per_classes = 1.0 if variant == "paper" else float(c)  # released: mean over pixels x C
    b = per_pixel.shape[0]
    count = per_pixel[0].numel() * torch.ones(b, dtype=per_pixel.dtype, device=per_pixel.device)
    if valid is not None:
        count = valid.reshape(b, -1).sum(1).to(per_pixel.dtype)
    if reduction == "sum":
        return per_pixel.sum()
    if reduction == "mean":
        return per_pixel.sum() / (count.sum() * per_classes)
    return per_pixel.reshape(b, -1).sum(1) / (count * per_classes)


class MarginCalibrationLoss(nn.Module):
    """Margin-calibrated log-loss, margin-calibration-li2021 eq. (27) with eqs. (28)-(29).

    With margins ``lambda_ik = s_ik - max_{j != k} s_ij`` (eq. 4) of the scores (logits) ``s``::

        variant="paper":     L = 1/n sum_i sum_k [ y_i = k ] log2(1 + 2^(-lambda_ik + rho_k0))
                                             + [ y_i != k ] log2(1 + 2^( lambda_ik + rho_0k))

    summed over the classes and averaged over the ``n`` (non-ignored) pixels. ``variant="released"``
    reproduces the authors' released code (``Margin_logloss``): natural-log BCE with logits on
    ``lambda_ik - rho_k0`` (target 1, true class) and ``lambda_ik + rho_0k`` (target 0, other classes),
    ``pos_weight = C``, averaged over pixels x C. (The released code applies the offsets to the margins
    ``lambda``, as the paper does, not to the raw scores.)

    The offsets come once from the dataset's class pixel counts (:func:`count_labels`,
    :func:`compute_margins`): give ``class_counts`` (with ``tau``, ``nu``) or precomputed ``margins``. They
    are buffers (float32; move with ``.to(device)``).

    Args:
        class_counts: ``(C,)`` pixel counts per class over the training set.
        margins: instead of ``class_counts``: a :class:`Margins` or a ``(2, C)`` array ``[rho_k0, rho_0k]``
            (the released code's layout).
        tau, nu: hyper-parameters of :func:`compute_margins` (defaults 10 and 1, the released code's).
        variant: "paper" | "released".
        ignore_index: a label left out (neither summed nor counted).
        reduction: "mean" (over the pixels of the batch; pixels x C for "released"), "sum" (over pixels and
            classes), or "none" (per-image mean as "mean", ``(B,)``).

    Shapes:
        input: logits ``(B, C, *spatial)``, ``C >= 2`` (``C == 1`` is read as the scores ``[0, z]``).
        target: label map ``(B, *spatial)`` or ``(B, 1, *spatial)``.

    Raises:
        ValueError: neither or both of ``class_counts`` / ``margins``, a class with no pixels, invalid
            options, or margins for a different number of classes than the input.
    """

    def __init__(
        self,
        class_counts: Sequence[float] | None = None,
        margins: Any = None,
        tau: float = 10.0,
        nu: float = 1.0,
        variant: str = "paper",
        ignore_index: int | None = None,
        reduction: str = "mean",
    ) -> None:
        super().__init__()
        self.variant = check_choice("variant", variant, VARIANTS)
        self.reduction = check_reduction(reduction)
        self.ignore_index = check_ignore_index(ignore_index)
        self.tau = check_number("tau", tau, positive=True)
        self.nu = check_number("nu", nu, positive=True)
        if (class_counts is None) == (margins is None):
            raise ValueError(
                "give exactly one of class_counts (pixel counts per class, see count_labels) or margins "
                "(precomputed with compute_margins)"
            )
        if class_counts is not None:
            m = compute_margins(class_counts, self.tau, self.nu)
        else:
            m = _as_margins(margins)
        self.rho_k0: torch.Tensor
        self.rho_0k: torch.Tensor
        self.register_buffer("rho_k0", m.rho_k0.to(torch.float32))
        self.register_buffer("rho_0k", m.rho_0k.to(torch.float32))

    @float32_compute
    def forward(self, input: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return margin_calibration_loss(
            input, target, self.rho_k0, self.rho_0k, self.variant, self.ignore_index, self.reduction
        )

    def extra_repr(self) -> str:
        return f"variant={self.variant!r}, classes={self.rho_k0.numel()}, reduction={self.reduction!r}"


def _as_margins(margins: Any) -> Margins:
    if isinstance(margins, Margins):
        pair = (margins.rho_k0, margins.rho_0k)
    else:
        try:
            arr = torch.as_tensor(np.asarray(margins, dtype=np.float64))
        except (TypeError, ValueError):
            raise ValueError(
                f"margins must be a Margins or a (2, C) array; got {type(margins).__name__}"
            ) from None
        if arr.ndim != 2 or arr.shape[0] != 2:
            raise ValueError(f"margins must have shape (2, C) = [rho_k0, rho_0k]; got {tuple(arr.shape)}")
        pair = (arr[0], arr[1])
    rho_k0, rho_0k = (torch.as_tensor(t, dtype=torch.float64).flatten() for t in pair)
    if rho_k0.numel() != rho_0k.numel() or rho_k0.numel() < 2:
        raise ValueError("margins must hold rho_k0 and rho_0k for the same C >= 2 classes")
    if not (torch.isfinite(rho_k0).all() and torch.isfinite(rho_0k).all()):
        raise ValueError("margins must be finite")
    return Margins(rho_k0, rho_0k)
