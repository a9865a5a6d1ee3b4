"""Weighted sums of losses: the margin paper's "Ours + Dice", the label-set code's "leaf-Dice + marginal CE".

One design: :class:`CompoundLoss` holds ``(weight, loss)`` terms and returns ``sum_t w_t * loss_t(*args)``.
From a config it is built through the registry like any other loss::

    get_loss("compound", terms=[{"name": "dice", "weight": 1.0}, {"name": "cross_entropy", "weight": 1.0}])

Each term is a mapping with ``name`` (a registered loss), an optional ``weight`` (default 1.0) and that
loss's own options. All terms receive the same forward arguments, so they must share a signature (e.g. all
``(input, target)``).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import nn

from ._utils import check_number, check_reduction


class CompoundLoss(nn.Module):
    """Weighted sum of losses, ``L = sum_t w_t L_t``.

    Args:
        terms: a sequence of ``(weight, loss_module)`` pairs, or of mappings
            ``{"name": registered_name, "weight": w, **options}`` built with :func:`get_loss`.
        reduction: if given, overrides the ``reduction`` of every term (each term must have one); ``None``
            keeps each term's own reduction (they must then agree in shape).

    Raises:
        ValueError: no terms, a malformed term, a negative or non-finite weight, or an invalid term option.
    """

    def __init__(self, terms: Sequence[Any], reduction: str | None = None) -> None:
        super().__init__()
        if isinstance(terms, (str, bytes, Mapping)) or not isinstance(terms, Sequence) or len(terms) == 0:
            raise ValueError(
                "terms must be a non-empty list of (weight, loss) pairs or of "
                "{'name': ..., 'weight': ..., **options} mappings"
            )
        if reduction is not None:
            check_reduction(reduction)
        self.reduction = reduction
        weights: list[float] = []
        losses: list[nn.Module] = []
        for i, term in enumerate(terms):
            weight, loss = _build_term(i, term, reduction)
            weights.append(weight)
            losses.append(loss)
        self.losses = nn.ModuleList(losses)
        self.weights: torch.Tensor
        self.register_buffer("weights", torch.tensor(weights, dtype=torch.float32))

    def forward(self, *args: Any, **kwargs: Any) -> torch.Tensor:
        values = [w * loss(*args, **kwargs) for w, loss in zip(self.weights, self.losses)]
        return torch.stack(values).sum(0)

    def extra_repr(self) -> str:
        return "weights=" + ", ".join(f"{float(w):g}" for w in self.weights)


def _build_term(i: int, term: Any, reduction: str | None) -> tuple[float, nn.Module]:
    from .registry import get_loss

    if isinstance(term, Mapping):
        spec = dict(term)
        if "name" not in spec:
            raise ValueError(f"terms[{i}] must have a 'name' (a registered loss); got keys {sorted(spec)}")
        name = spec.pop("name")
        weight = spec.pop("weight", 1.0)
        if name == "compound":
            raise ValueError(f"terms[{i}]: a compound loss cannot nest another 'compound'; list its terms")
        if reduction is not None:
            spec["reduction"] = reduction
        loss = get_loss(name, **spec)
    elif isinstance(term, Sequence) and not isinstance(term, (str, bytes)) and len(term) == 2:
        weight, loss = term
        if not isinstance(loss, nn.Module):
            raise ValueError(f"terms[{i}] must be (weight, nn.Module); got a {type(loss).__name__}")
        if reduction is not None:
            if not hasattr(loss, "reduction"):
                raise ValueError(f"terms[{i}] ({type(loss).__name__}) has no reduction to override")
            loss.reduction = reduction
    else:
        raise ValueError(f"terms[{i}] must be a (weight, loss) pair or a mapping with 'name'; got {term!r}")
    weight = check_number(f"terms[{i}] weight", weight, non_negative=True)
    return weight, loss
