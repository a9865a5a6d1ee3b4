"""The Dice-gradient lab: gradient maps of any loss, their dynamic range, and the two-valued Dice gradient.

dice-gradient-mime-kervadec Sec. 2.2 shows that the gradient of the Dice loss w.r.t. the probabilities is
two-valued per class (eq. 6) -- a weighted negative of the ground truth -- with a small dynamic range (about
1.5 dB on the paper's example, against 10 dB for the cross-entropy). This module lets a user look at that for
any loss of :mod:`losslab.losses` and any (prediction, target) pair:

- :func:`gradient_maps`: ``dL/ds`` (the probabilities ``s`` as free variables, as in eq. 5) and ``dL/dz``
  (the logits) as numpy arrays ``(B, C, *spatial)``, ready to show as volumes.
- :func:`dynamic_range_db`: the ratio of the largest to the smallest gradient magnitude, in decibels.
- :func:`dice_gradient_values`: the two values of eq. (6) per image and class, in closed form.
- :func:`gradient_report`: the whole lab on one prediction, as the Slicer module shows it: from class
  probabilities ``s`` and a label map, the chosen map (``dL/ds`` or ``dL/dz``), the dynamic range per
  class and overall, and a table of summary rows. :func:`smoothed_one_hot` turns a hard prediction into
  probabilities with finite logits; :func:`logits_from_probabilities` gives ``z = log s``.

Example::

    from losslab.analysis import gradient_maps
    from losslab.losses import get_loss

    maps = gradient_maps(get_loss("dice", reduction="sum"), logits, target)
    maps.wrt_probabilities          # (B, C, *spatial) numpy
    maps.dynamic_range_db()         # dB over all voxels and classes
"""

from __future__ import annotations

import copy
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import nn

from .losses._utils import probabilities, probe_probabilities, spatial_sum, target_one_hot

__all__ = [
    "WRT",
    "GradientMaps",
    "GradientReport",
    "dice_gradient_values",
    "dynamic_range_db",
    "gradient_maps",
    "gradient_report",
    "logits_from_probabilities",
    "smoothed_one_hot",
]

#: what a gradient is taken with respect to
WRT = ("probabilities", "logits")


def dynamic_range_db(
    gradient: np.ndarray | torch.Tensor,
    mask: np.ndarray | torch.Tensor | None = None,
    amplitude: bool = False,
) -> float:
    """Dynamic range of a gradient map: ``10 log10(max |g| / min |g|)`` over its non-zero entries.

    The paper defines the dynamic range as "the ratio between its maximum and minimum value" and reports
    it in dB without saying which decibel; LossLab uses the power convention ``10 log10(ratio)`` by
    default and the amplitude convention ``20 log10(ratio)`` with ``amplitude=True``. Zero entries (e.g.
    the gradient of an absent class) are left out, as their ratio would be infinite.

    Args:
        gradient: any array.
        mask: optional boolean array of the same shape selecting the entries to consider.
        amplitude: use ``20 log10`` instead of ``10 log10``.

    Returns:
        The range in dB (0.0 for a constant magnitude); NaN if no non-zero entry is selected.
    """
    g = gradient.detach().cpu().numpy() if isinstance(gradient, torch.Tensor) else np.asarray(gradient)
    mag = np.abs(g.astype(np.float64))
    if mask is not None:
        m = mask.detach().cpu().numpy() if isinstance(mask, torch.Tensor) else np.asarray(mask)
        if m.shape != mag.shape:
            raise ValueError(f"mask has shape {m.shape}, the gradient {mag.shape}")
        mag = mag[m.astype(bool)]
    mag = mag[mag > 0]
    if mag.size == 0:
        return float("nan")
    return (20.0 if amplitude else 10.0) * math.log10(float(mag.max()) / float(mag.min()))


@dataclass
class GradientMaps:
    """The result of :func:`gradient_maps`; arrays are float32 numpy ``(B, C, *spatial)``.

    Attributes:
        loss: the loss value.
        probabilities: the class probabilities ``s`` (softmax; ``[1 - sigmoid, sigmoid]`` for one channel).
        wrt_probabilities: ``dL/ds`` with ``s`` as free variables (eq. 5), or ``None`` for a loss that does
            not go through the class probabilities (margin calibration, editing: they work on the logits).
        wrt_logits: ``dL/dz`` for the logits ``z`` given.
    """

    loss: float
    probabilities: np.ndarray
    wrt_probabilities: np.ndarray | None
    wrt_logits: np.ndarray

    def dynamic_range_db(
        self, which: str = "probabilities", class_index: int | None = None, amplitude: bool = False
    ) -> float:
        """:func:`dynamic_range_db` of one map ("probabilities" or "logits"), optionally of one class."""
        if which not in ("probabilities", "logits"):
            raise ValueError(f"which must be 'probabilities' or 'logits'; got {which!r}")
        g = self.wrt_probabilities if which == "probabilities" else self.wrt_logits
        if g is None:
            raise ValueError("this loss has no gradient w.r.t. the probabilities; use which='logits'")
        if class_index is not None:
            g = g[:, class_index]
        return dynamic_range_db(g, amplitude=amplitude)


def gradient_maps(loss: nn.Module, logits: Any, target: Any, *extra: Any) -> GradientMaps:
    """Gradient maps of ``loss(logits, target, *extra)`` w.r.t. the probabilities and the logits.

    The loss is evaluated once in float64 on a detached copy of ``logits`` (nothing of the caller's graph
    is touched). ``dL/ds`` is read on the probability tensors the loss computes internally, so it is the
    gradient with the probabilities as independent variables, the quantity of eqs. (5)-(6) -- not the
    projection onto the simplex that ``dL/dz`` implies. When a loss uses the probabilities several times
    (a compound loss), the contributions add up.

    Args:
        loss: any loss module of :mod:`losslab.losses` (its ``reduction`` scales the maps: use "sum" to
            read the paper's per-class values, "mean" to see what training sees).
        logits: ``(B, C, *spatial)`` tensor or array.
        target: the loss's target (label map, one-hot...).
        *extra: further forward arguments (``initial``, ``attention`` of the editing loss).

    Returns:
        :class:`GradientMaps`.

    Raises:
        ValueError: if the loss value is not a scalar (use a reduction other than "none").
    """
    z = torch.as_tensor(np.asarray(logits) if not isinstance(logits, torch.Tensor) else logits)
    z = z.detach().to(torch.float64).clone().requires_grad_(True)
    extra = tuple(_to_float64(e) for e in extra)
    target = _to_float64(target)
    loss64 = _float64_copy(loss)
    with probe_probabilities() as records:
        value = loss64(z, target, *extra)
        if value.ndim != 0:
            raise ValueError(
                f"the loss must return a scalar to differentiate; got shape {tuple(value.shape)}"
            )
        value.backward()
    with torch.no_grad():
        probs = probabilities(z)
        wrt_p: torch.Tensor | None = None
        for kind, tensor in records:
            if tensor.grad is None or tensor.shape != probs.shape:
                continue
            g = tensor.grad if kind == "p" else tensor.grad / tensor.exp()
            wrt_p = g if wrt_p is None else wrt_p + g
    return GradientMaps(
        loss=float(value.detach()),
        probabilities=probs.cpu().numpy().astype(np.float32),
        wrt_probabilities=None if wrt_p is None else wrt_p.cpu().numpy().astype(np.float32),
        wrt_logits=z.grad.cpu().numpy().astype(np.float32),
    )


def _to_float64(x: Any) -> Any:
    if isinstance(x, torch.Tensor) and x.is_floating_point():
        return x.detach().to(torch.float64)
    return x


def _float64_copy(loss: nn.Module) -> nn.Module:
    return copy.deepcopy(loss).to(torch.float64)


def dice_gradient_values(
    probs: torch.Tensor, target: Any, epsilon: float = 0.0
) -> tuple[torch.Tensor, torch.Tensor]:
    """The two values of the Dice gradient, dice-gradient-mime-kervadec eq. (6), per image and class.

    For ``L_k = 1 - 2 I_k / (U_k + epsilon)`` (eq. 3's term of class ``k``, ``alpha = 1``), with
    ``I = sum_i y s`` and ``U = sum_i (y + s)``::

        dL_k/ds_ik = -2 (U + eps - I) / (U + eps)^2   if y_ik = 1      (negative: push s up)
                   =  2 I / (U + eps)^2               otherwise        (positive: push s down)

    The whole map takes only these two values per class -- a weighted negative of the ground truth. The
    gradient of :class:`~losslab.losses.DiceLoss` (mean over ``|K|`` classes, then over the batch) is these
    values divided by ``|K|`` (and by ``B`` under "mean").

    Args:
        probs: probabilities ``(B, C, *spatial)``.
        target: label map ``(B, *spatial)`` or one-hot ``(B, C, *spatial)``.
        epsilon: the Dice loss's epsilon (denominator only).

    Returns:
        ``(on_foreground, on_background)``, each ``(B, C)``.
    """
    # target_one_hot reads the class layout from its second argument; probs has the same layout as logits.
    y = target_one_hot(target, probs).to(probs.dtype)
    inter = spatial_sum(probs * y)
    union = spatial_sum(probs) + spatial_sum(y) + epsilon
    return -2.0 * (union - inter) / union**2, 2.0 * inter / union**2


# The lab on one prediction --------------------------------------------------------------------------------


def smoothed_one_hot(labels: Any, n_classes: int, smoothing: float = 0.05) -> np.ndarray:
    """Class probabilities from a hard label map: ``(1 - smoothing) * onehot + smoothing / K``.

    Every entry is positive, so ``log s`` (:func:`logits_from_probabilities`) is finite, and each voxel's
    probabilities sum to one.

    Args:
        labels: integer label map ``(*spatial)`` with values in ``0..n_classes - 1``.
        n_classes: ``K``, the number of classes (background included).
        smoothing: in (0, 1).

    Returns:
        float64 ``(K, *spatial)``.

    Raises:
        ValueError: ``smoothing`` outside (0, 1), ``n_classes < 2``, or a label outside ``0..K-1``.
    """
    if not 0.0 < float(smoothing) < 1.0:
        raise ValueError(f"smoothing must be in (0, 1), got {smoothing!r}")
    if int(n_classes) < 2:
        raise ValueError(f"n_classes must be at least 2 (background and one class), got {n_classes!r}")
    y = np.asarray(labels)
    if y.size and (y.min() < 0 or y.max() >= n_classes):
        raise ValueError(f"labels must be in 0..{n_classes - 1}, got values {y.min()}..{y.max()}")
    one_hot = np.moveaxis(np.eye(int(n_classes))[y.astype(np.int64)], -1, 0)
    return (1.0 - float(smoothing)) * one_hot + float(smoothing) / int(n_classes)


def logits_from_probabilities(probabilities: Any, floor: float = 1e-12) -> np.ndarray:
    """``z = log max(s, floor)``: logits whose softmax over the class axis (axis 0) is ``s`` (when ``s``
    sums to one and is above ``floor``). float64, same shape."""
    return np.log(np.clip(np.asarray(probabilities, dtype=np.float64), floor, None))


@dataclass
class GradientReport:
    """The result of :func:`gradient_report`.

    Attributes:
        maps: :class:`GradientMaps` of the prediction (batch of one).
        wrt: "probabilities" or "logits": which of ``maps`` the rest describes.
        gradient: that map, float32 ``(K, *spatial)``.
        class_names: the ``K`` class names (background first).
        per_class_db: dynamic range of each class's map, by name (NaN where the map is all zero).
        dynamic_range_db: over all classes.
        rows: ``(name, value, unit)`` summary rows: the loss, the dynamic ranges, and per class the largest
            and smallest non-zero gradient magnitude and the number of distinct values (2 for Dice, eq. 6).
    """

    maps: GradientMaps
    wrt: str
    gradient: np.ndarray
    class_names: list[str]
    per_class_db: dict[str, float]
    dynamic_range_db: float
    rows: list[tuple[str, float, str]] = field(default_factory=list)

    @property
    def loss(self) -> float:
        return self.maps.loss


def gradient_report(
    loss: nn.Module,
    probabilities: Any,
    target: Any,
    *,
    wrt: str = "probabilities",
    class_names: Sequence[str] | None = None,
    loss_name: str | None = None,
) -> GradientReport:
    """The gradient lab on one prediction: the map of ``loss`` w.r.t. ``wrt`` and its dynamic ranges.

    The prediction is given as class probabilities ``s``; the loss receives the logits ``z = log s``
    (:func:`logits_from_probabilities`; ``softmax(z) = s``), so ``dL/ds`` is eq. (5)'s gradient with the
    probabilities as free variables (dice-gradient-mime-kervadec Fig. 1) and ``dL/dz`` what training
    back-propagates.

    Args:
        loss: a loss of ``(logits, target)`` (:mod:`losslab.losses`).
        probabilities: ``(K, *spatial)`` class probabilities (a model's, or :func:`smoothed_one_hot`).
        target: integer label map ``(*spatial)``.
        wrt: "probabilities" (``dL/ds``) or "logits" (``dL/dz``).
        class_names: ``K`` names (default ``class0``, ``class1``...).
        loss_name: the loss's name for the summary rows (default: its class name).

    Returns:
        :class:`GradientReport`.

    Raises:
        ValueError: ``wrt`` unknown; shapes that disagree; ``class_names`` not ``K`` long; a loss that needs
            further inputs (editing); ``wrt="probabilities"`` for a loss that works on the logits only
            (margin calibration).
    """
    if wrt not in WRT:
        raise ValueError(f"wrt must be one of {WRT}, got {wrt!r}")
    probs = np.asarray(probabilities, dtype=np.float64)
    labels = np.asarray(target)
    if probs.ndim < 2 or probs.shape[1:] != labels.shape:
        raise ValueError(
            f"probabilities must be (classes, *spatial) over the target's grid {labels.shape}, got {probs.shape}"
        )
    n_classes = probs.shape[0]
    names = [f"class{c}" for c in range(n_classes)] if class_names is None else list(class_names)
    if len(names) != n_classes:
        raise ValueError(f"{len(names)} class names {names} for {n_classes} classes of probabilities")
    name = loss_name or type(loss).__name__
    logits = torch.from_numpy(logits_from_probabilities(probs)[None])
    try:
        maps = gradient_maps(loss, logits, torch.from_numpy(labels.astype(np.int64)[None]))
    except TypeError as exc:
        raise ValueError(
            f"loss {name!r} needs further inputs ({exc}); the gradient lab takes losses of (prediction, "
            "target) only"
        ) from None
    source = maps.wrt_probabilities if wrt == "probabilities" else maps.wrt_logits
    if source is None:
        raise ValueError(
            f"loss {name!r} does not go through the class probabilities (it works on the logits): "
            "choose the gradient w.r.t. the logits"
        )
    per_class = {n: maps.dynamic_range_db(wrt, class_index=c) for c, n in enumerate(names)}
    overall = maps.dynamic_range_db(wrt)
    rows: list[tuple[str, float, str]] = [
        ("Loss", float(maps.loss), name),
        ("Dynamic range (all classes)", overall, "dB"),
    ]
    for c, cname in enumerate(names):
        g = source[0, c]
        magnitude = np.abs(g[g != 0])
        rows.append((f"Dynamic range {cname}", per_class[cname], "dB"))
        rows.append((f"Max |gradient| {cname}", float(magnitude.max()) if magnitude.size else 0.0, ""))
        rows.append(
            (f"Min non-zero |gradient| {cname}", float(magnitude.min()) if magnitude.size else 0.0, "")
        )
        rows.append((f"Distinct values {cname}", float(np.unique(g).size), "values"))
    return GradientReport(
        maps=maps,
        wrt=wrt,
        gradient=source[0],
        class_names=names,
        per_class_db=per_class,
        dynamic_range_db=overall,
        rows=rows,
    )
