"""Networks: a configurable U-Net and the named presets of the papers LossLab reproduces.

>>> from losslab.nets import build_network
>>> net = build_network({"preset": "ice_editing"})            # 3 inputs, 2 classes, filters 8-16-32-64
>>> net = build_network({"preset": "fetal_parcellation", "features": [16, 32, 64, 128, 256]})
>>> net = build_network({"name": "unet", "in_channels": 1, "out_channels": 4, "norm": "instance"})
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from typing import Any

from torch import nn

from .unet import UNet, fuse_batch_norm

#: Named architectures. Every key is a keyword of :class:`UNet`; a config may override any of them.
PRESETS: dict[str, dict[str, Any]] = {
    # ice-editing-shahin2023 Sec. 3.2: the segmentation model that gives y_init (image -> background/atrium).
    "ice_segmentation": dict(
        in_channels=1, out_channels=2, features=(16, 32, 64, 128), norm="batch", act="relu", spatial_dims=3
    ),
    # ice-editing-shahin2023 Sec. 3.2: the editing model, half the filters, inputs (x, y_init, u).
    "ice_editing": dict(
        in_channels=3, out_channels=2, features=(8, 16, 32, 64), norm="batch", act="relu", spatial_dims=3
    ),
    # label-set-losses-fidon2021 Sec. 4: 5 levels, leaky ReLU, instance norm; 8 tissues + background.
    # Widths follow nnU-Net / the paper's released code (32 doubling, capped at 320).
    "fetal_parcellation": dict(
        in_channels=1,
        out_channels=9,
        features=(32, 64, 128, 256, 320),
        norm="instance",
        act="leaky_relu",
        negative_slope=0.01,
        spatial_dims=3,
    ),
    # A 2D variant of the ICE segmentation model, for slices and quick experiments.
    "unet2d": dict(
        in_channels=1, out_channels=2, features=(16, 32, 64, 128), norm="batch", act="relu", spatial_dims=2
    ),
}

NETWORK_NAMES = ("unet",)


def available_presets() -> list[str]:
    """Names accepted by ``build_network({"preset": name})``."""
    return sorted(PRESETS)


def network_spec(config: Mapping[str, Any]) -> dict[str, Any]:
    """Resolve a network config (``preset`` and/or ``name`` plus UNet keywords) to the full keyword dict.

    The result is what checkpoints store, so a model can be rebuilt without the presets of this version.

    Raises:
        ValueError: unknown preset, name or keyword.
    """
    config = dict(config)
    preset = config.pop("preset", None)
    name = config.pop("name", "unet")
    if name not in NETWORK_NAMES:
        raise ValueError(f"network.name must be one of {NETWORK_NAMES}, got {name!r}")
    spec: dict[str, Any] = {}
    if preset is not None:
        if preset not in PRESETS:
            raise ValueError(f"unknown network preset {preset!r}; expected one of {available_presets()}")
        spec.update(copy.deepcopy(PRESETS[preset]))
    allowed = set(UNet.__init__.__code__.co_varnames[1 : UNet.__init__.__code__.co_argcount])
    unknown = sorted(set(config) - allowed)
    if unknown:
        raise ValueError(f"unknown network option(s) {unknown}; expected some of {sorted(allowed)}")
    spec.update(config)
    if "features" in spec:
        spec["features"] = [int(f) for f in spec["features"]]
    return spec


def build_network(config: Mapping[str, Any]) -> UNet:
    """Build a network from a config: ``{"preset": ..., **overrides}`` or ``{"name": "unet", **kwargs}``."""
    return UNet(**network_spec(config))


def count_parameters(model: nn.Module) -> int:
    """Number of trainable parameters."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


__all__ = [
    "PRESETS",
    "UNet",
    "available_presets",
    "build_network",
    "count_parameters",
    "fuse_batch_norm",
    "network_spec",
]
