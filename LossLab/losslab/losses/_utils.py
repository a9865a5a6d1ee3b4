"""Shared plumbing of the losses: option validation, target encoding, probabilities and reductions.

Conventions used by every loss of :mod:`losslab.losses`:

- ``input`` holds logits ``(B, C, *spatial)`` (any number of spatial axes; 2D and 3D in practice). ``C == 1``
  means a binary problem: the probability of the foreground is ``sigmoid(input)`` and the background
  channel ``1 - sigmoid(input)`` is made explicit, so a binary input behaves like a two-class softmax
  ``[background, foreground]`` (the dice-gradient paper's ``K = 1``, ``|K| = 2``).
- ``target`` is an integer label map ``(B, *spatial)`` or ``(B, 1, *spatial)`` with values in ``0..C-1``
  (``0..1`` when ``C == 1``), or, where a loss says so, a one-hot / soft target of the same shape as
  ``input`` (a floating tensor).
- ``reduction`` acts on the batch axis: ``"none"`` returns one value per image ``(B,)``, ``"mean"`` and
  ``"sum"`` their mean and sum (a loss documents where it departs from this, e.g. to match PyTorch).
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager, nullcontext
from contextvars import ContextVar
from typing import Any, TypeVar

import torch
import torch.nn.functional as F

REDUCTIONS = ("mean", "sum", "none")

_F = TypeVar("_F", bound=Callable[..., Any])


# ----------------------------------------------------------------------------------------------- options
def check_choice(name: str, value: Any, choices: Sequence[Any]) -> Any:
    """Return ``value`` if it is one of ``choices``; raise ``ValueError`` naming the option otherwise."""
    if isinstance(value, bool) or value not in choices:
        listed = ", ".join(repr(c) for c in choices)
        raise ValueError(f"{name} must be one of {listed}; got {value!r}")
    return value


def check_reduction(reduction: str) -> str:
    """Validate a ``reduction`` option ("mean" | "sum" | "none")."""
    if not isinstance(reduction, str):
        raise ValueError(f"reduction must be one of 'mean', 'sum', 'none'; got {reduction!r}")
    return check_choice("reduction", reduction, REDUCTIONS)


def check_number(
    name: str,
    value: Any,
    *,
    positive: bool = False,
    non_negative: bool = False,
    at_most: float | None = None,
) -> float:
    """Return ``value`` as a finite float, checking its sign / upper bound; ``ValueError`` naming ``name``."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        try:
            value = float(value)  # numpy scalars, 0-d tensors
        except (TypeError, ValueError):
            raise ValueError(f"{name} must be a number; got {value!r}") from None
    value = float(value)
    if not math.isfinite(value):
        raise ValueError(f"{name} must be a finite number; got {value!r}")
    if positive and value <= 0:
        raise ValueError(f"{name} must be > 0; got {value!r}")
    if non_negative and value < 0:
        raise ValueError(f"{name} must be >= 0; got {value!r}")
    if at_most is not None and value > at_most:
        raise ValueError(f"{name} must be <= {at_most}; got {value!r}")
    return value


def check_bool(name: str, value: Any) -> bool:
    """Return ``value`` if it is a bool; ``ValueError`` naming ``name`` otherwise (no truthiness guessing)."""
    if not isinstance(value, bool):
        raise ValueError(f"{name} must be True or False; got {value!r}")
    return value


def check_ignore_index(ignore_index: Any) -> int | None:
    """``None`` or an integer label to leave out of the loss."""
    if ignore_index is None:
        return None
    if isinstance(ignore_index, bool) or not isinstance(ignore_index, int):
        raise ValueError(f"ignore_index must be an integer label or None; got {ignore_index!r}")
    return int(ignore_index)


def as_weight(name: str, weight: Any, length: int | None = None) -> torch.Tensor | None:
    """A 1-D float tensor of non-negative per-class weights (or ``None``), for a buffer."""
    if weight is None:
        return None
    try:
        w = torch.as_tensor(weight, dtype=torch.float32).detach().clone()
    except (TypeError, ValueError, RuntimeError):
        raise ValueError(f"{name} must be a sequence of per-class numbers; got {weight!r}") from None
    if w.ndim != 1 or w.numel() == 0:
        raise ValueError(f"{name} must be a 1-D sequence of per-class weights; got shape {tuple(w.shape)}")
    if not torch.isfinite(w).all() or (w < 0).any():
        raise ValueError(f"{name} must hold finite non-negative numbers; got {w.tolist()}")
    if length is not None and w.numel() != length:
        raise ValueError(f"{name} must have {length} entries; got {w.numel()}")
    return w


# ------------------------------------------------------------------------------------------------ shapes
def check_input(input: Any, name: str = "input") -> torch.Tensor:
    """Check that ``input`` is a floating tensor ``(B, C, *spatial)`` with at least one spatial axis."""
    if not isinstance(input, torch.Tensor):
        raise ValueError(
            f"{name} must be a torch.Tensor of logits (B, C, *spatial); got {type(input).__name__}"
        )
    if not input.is_floating_point():
        raise ValueError(f"{name} must be a floating tensor of logits; got dtype {input.dtype}")
    if input.ndim < 3:
        raise ValueError(
            f"{name} must have shape (B, C, *spatial) with at least one spatial axis; "
            f"got {tuple(input.shape)}"
        )
    return input


def num_classes(input: torch.Tensor) -> int:
    """Number of classes encoded by logits ``(B, C, ...)``: ``C``, or 2 for a binary (sigmoid) input."""
    c = input.shape[1]
    return 2 if c == 1 else c


def label_map(target: Any, input: torch.Tensor, name: str = "target") -> torch.Tensor:
    """Return the integer label map ``(B, *spatial)`` (int64) of ``target``.

    Accepts ``(B, *spatial)`` or ``(B, 1, *spatial)``, integer dtype or a floating tensor holding integers.

    Raises:
        ValueError: wrong type, shape, or non-integer values.
    """
    if not isinstance(target, torch.Tensor):
        raise ValueError(f"{name} must be a torch.Tensor label map; got {type(target).__name__}")
    spatial = tuple(input.shape[2:])
    b = input.shape[0]
    if target.ndim == input.ndim and target.shape[1] == 1 and tuple(target.shape[2:]) == spatial:
        target = target[:, 0]
    if target.ndim != input.ndim - 1 or target.shape[0] != b or tuple(target.shape[1:]) != spatial:
        raise ValueError(
            f"{name} must be a label map of shape {(b, *spatial)} or {(b, 1, *spatial)} to match input "
            f"{tuple(input.shape)}; got {tuple(target.shape)}"
        )
    if target.dtype == torch.bool:
        return target.long()
    if target.is_floating_point():
        if not torch.equal(target, torch.round(target)):
            raise ValueError(
                f"{name} is a floating label map with non-integer values; pass integer labels "
                "(or a one-hot / soft target of the input's shape where the loss accepts one)"
            )
        return target.long()
    if target.is_complex():
        raise ValueError(f"{name} must hold integer labels; got dtype {target.dtype}")
    return target.long()


def check_label_range(
    labels: torch.Tensor, n: int, ignore_index: int | None = None, name: str = "target"
) -> None:
    """Raise ``ValueError`` if a label (other than ``ignore_index``) is outside ``0..n-1``."""
    if labels.numel() == 0:
        return
    valid = labels if ignore_index is None else labels[labels != ignore_index]
    if valid.numel() == 0:
        return
    lo, hi = int(valid.min()), int(valid.max())
    if lo < 0 or hi >= n:
        extra = f" (ignore_index={ignore_index} excepted)" if ignore_index is not None else ""
        raise ValueError(f"{name} labels must lie in 0..{n - 1}{extra}; found values in {lo}..{hi}")


def one_hot(
    labels: torch.Tensor, n: int, dtype: torch.dtype, valid: torch.Tensor | None = None
) -> torch.Tensor:
    """One-hot ``(B, n, *spatial)`` of an int64 label map ``(B, *spatial)``; zero where ``valid`` is False."""
    idx = labels if valid is None else torch.where(valid, labels, torch.zeros_like(labels))
    out = torch.zeros((labels.shape[0], n, *labels.shape[1:]), dtype=dtype, device=labels.device)
    out.scatter_(1, idx.unsqueeze(1), 1.0)
    if valid is not None:
        out = out * valid.unsqueeze(1).to(dtype)
    return out


def _is_dense_target(target: Any, input: torch.Tensor) -> bool:
    return (
        isinstance(target, torch.Tensor)
        and target.is_floating_point()
        and target.shape == input.shape
        and input.shape[1] > 1
    )


def target_one_hot(
    target: Any, input: torch.Tensor, *, allow_soft: bool = True, name: str = "target"
) -> torch.Tensor:
    """The target as a (one-hot or soft) tensor with the class layout of :func:`probabilities`.

    An integer label map becomes one-hot over ``num_classes(input)`` classes. A floating tensor of exactly
    the input's shape (``C > 1``) is taken as already one-hot / soft.
    """
    if allow_soft and _is_dense_target(target, input):
        return target.to(input.dtype)
    labels = label_map(target, input, name=name)
    n = num_classes(input)
    check_label_range(labels, n, name=name)
    return one_hot(labels, n, input.dtype)


def target_labels_or_dense(
    target: Any, input: torch.Tensor, name: str = "target"
) -> tuple[torch.Tensor | None, torch.Tensor | None]:
    """``(labels, None)`` for a label map (validated, int64 ``(B, *spatial)``), or ``(None, dense)`` for a
    one-hot / soft target of the input's shape. Lets the losses skip building a one-hot tensor."""
    if _is_dense_target(target, input):
        return None, target.to(input.dtype)
    labels = label_map(target, input, name=name)
    check_label_range(labels, num_classes(input), name=name)
    return labels, None


# The gradient lab (losslab.analysis) needs dL/ds with the probabilities s as free variables (the
# dice-gradient paper's eq. (5)-(6)), which the gradient w.r.t. the logits cannot give back. While a probe
# is active, the probability / log-probability tensors that the losses compute are recorded with their
# gradients retained. Outside the lab this costs one ContextVar lookup per call.
_PROBE: ContextVar[list[tuple[str, torch.Tensor]] | None] = ContextVar(
    "losslab_probability_probe", default=None
)


@contextmanager
def probe_probabilities() -> Iterator[list[tuple[str, torch.Tensor]]]:
    """Record each ``("p", probs)`` / ``("logp", log_probs)`` tensor the losses compute (grads retained)."""
    records: list[tuple[str, torch.Tensor]] = []
    token = _PROBE.set(records)
    try:
        yield records
    finally:
        _PROBE.reset(token)


def _record(kind: str, x: torch.Tensor) -> torch.Tensor:
    records = _PROBE.get()
    if records is not None and x.requires_grad:
        x.retain_grad()
        records.append((kind, x))
    return x


def probabilities(input: torch.Tensor) -> torch.Tensor:
    """Class probabilities ``(B, n, *spatial)``: softmax, or ``[1 - sigmoid, sigmoid]`` if C = 1."""
    if input.shape[1] == 1:
        p = torch.sigmoid(input)
        return _record("p", torch.cat([1.0 - p, p], dim=1))
    return _record("p", torch.softmax(input, dim=1))


def log_probabilities(input: torch.Tensor) -> torch.Tensor:
    """Log of :func:`probabilities`, computed stably."""
    if input.shape[1] == 1:
        return _record("logp", torch.cat([F.logsigmoid(-input), F.logsigmoid(input)], dim=1))
    return _record("logp", torch.log_softmax(input, dim=1))


# ------------------------------------------------------------------------------------------- reductions
def reduce(per_sample: torch.Tensor, reduction: str) -> torch.Tensor:
    """Reduce a per-image loss ``(B,)``: mean, sum, or keep it ("none")."""
    if reduction == "mean":
        return per_sample.mean()
    if reduction == "sum":
        return per_sample.sum()
    return per_sample


def spatial_sum(x: torch.Tensor) -> torch.Tensor:
    """Sum over all axes after the first two: ``(B, C, *spatial) -> (B, C)``."""
    return x.flatten(2).sum(-1)


# ------------------------------------------------------------------------------------ float32 computing
def _upcast(x: Any) -> Any:
    if isinstance(x, torch.Tensor) and x.dtype in (torch.float16, torch.bfloat16):
        return x.float()
    return x


def float32_compute(forward: _F) -> _F:
    """Decorate a ``forward``: half-precision tensor arguments go to float32 and autocast is off inside.

    So a loss computes in float32 under ``torch.autocast`` (sums over millions of voxels in fp16 would
    overflow or lose the small gradients), while float64 inputs (gradcheck) stay float64.
    """

    @functools.wraps(forward)
    def wrapper(self: Any, *args: Any, **kwargs: Any) -> Any:
        args = tuple(_upcast(a) for a in args)
        kwargs = {k: _upcast(v) for k, v in kwargs.items()}
        device_type = next(
            (a.device.type for a in (*args, *kwargs.values()) if isinstance(a, torch.Tensor)), "cpu"
        )
        ctx = (
            torch.autocast(device_type=device_type, enabled=False)
            if device_type in ("cpu", "cuda")
            else nullcontext()
        )
        with ctx:
            return forward(self, *args, **kwargs)

    return wrapper  # type: ignore[return-value]
