"""The registry of losses: build any loss by name, list every loss with its options.

Configs, the command line and the Slicer GUI all go through :func:`get_loss` and :func:`available_losses`::

    from losslab.losses import get_loss, available_losses

    loss = get_loss("dice", alpha=2, include_background=False)
    both = get_loss("compound", terms=[
        {"name": "leaf_dice", "weight": 1.0, "label_sets": {9: [1, 2]}},
        {"name": "marginal_cross_entropy", "weight": 1.0, "label_sets": {9: [1, 2]}},
    ])
    for name, info in available_losses().items():
        print(name, info.summary, {k: o.default for k, o in info.options.items()})
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from torch import nn

_REGISTRY: dict[str, type[nn.Module]] = {}

#: Marker for an option without a default (the caller must give it).
REQUIRED = inspect.Parameter.empty


@dataclass(frozen=True)
class LossOption:
    """One keyword option of a loss: name, default (``REQUIRED`` if none) and type annotation (as text)."""

    name: str
    default: Any
    annotation: str

    @property
    def required(self) -> bool:
        return self.default is REQUIRED


@dataclass(frozen=True)
class LossInfo:
    """What :func:`available_losses` tells about a loss: its class, a one-line summary and its options."""

    name: str
    cls: type[nn.Module]
    summary: str
    options: dict[str, LossOption] = field(default_factory=dict)


def register_loss(name: str) -> Callable[[type[nn.Module]], type[nn.Module]]:
    """Class decorator / function adding a loss class to the registry under ``name``."""

    def add(cls: type[nn.Module]) -> type[nn.Module]:
        if name in _REGISTRY and _REGISTRY[name] is not cls:
            raise ValueError(f"a loss named {name!r} is already registered ({_REGISTRY[name].__name__})")
        _REGISTRY[name] = cls
        return cls

    return add


def _options(cls: type[nn.Module]) -> dict[str, LossOption]:
    out: dict[str, LossOption] = {}
    for p in list(inspect.signature(cls.__init__).parameters.values())[1:]:
        if p.kind in (p.VAR_POSITIONAL, p.VAR_KEYWORD):
            continue
        annotation = p.annotation if p.annotation is not p.empty else ""
        if not isinstance(annotation, str):
            annotation = getattr(annotation, "__name__", repr(annotation))
        out[p.name] = LossOption(p.name, p.default, annotation)
    return out


def available_losses() -> dict[str, LossInfo]:
    """Every registered loss by name, with its class, summary line and options (defaults and types)."""
    infos = {}
    for name in sorted(_REGISTRY):
        cls = _REGISTRY[name]
        doc = inspect.getdoc(cls) or ""
        summary = doc.strip().split("\n\n")[0].replace("\n", " ")
        infos[name] = LossInfo(name, cls, summary, _options(cls))
    return infos


def get_loss(name: str, **options: Any) -> nn.Module:
    """Build the loss registered as ``name`` with keyword ``options``.

    Raises:
        ValueError: unknown name (the message lists the available ones), an unknown option (the message
            lists the loss's options), a missing required option, or an invalid option value.
    """
    if not isinstance(name, str) or name not in _REGISTRY:
        raise ValueError(f"unknown loss {name!r}; available losses: {', '.join(sorted(_REGISTRY))}")
    cls = _REGISTRY[name]
    known = _options(cls)
    unknown = sorted(set(options) - set(known))
    if unknown:
        raise ValueError(
            f"unknown option(s) {', '.join(unknown)} for loss {name!r}; its options are: "
            f"{', '.join(known) or '(none)'}"
        )
    missing = [k for k, o in known.items() if o.required and k not in options]
    if missing:
        raise ValueError(f"loss {name!r} needs the option(s) {', '.join(missing)}")
    return cls(**options)
