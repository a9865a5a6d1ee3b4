"""What a run is built from: the loss, optimizer, scheduler and network named in a config, and the model
information a checkpoint carries for inference."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

import torch
from torch import nn

from ..nets import network_spec
from .config import ConfigError
from .data import Manifest


def build_loss(loss_config: Mapping[str, Any], label_sets: Mapping[int, list[int]] | None) -> nn.Module:
    """The loss named in the config, built through :func:`losslab.losses.get_loss` only.

    When the dataset declares ``label_sets`` (partial annotations) and the loss (or a term of a compound
    loss) takes a ``label_sets`` option that the config leaves out, the manifest's map is passed in; a
    manifest without set labels passes ``{}`` (every voxel annotated), so a label-set loss also trains on
    a fully annotated dataset.
    """
    from ..losses import available_losses, get_loss

    infos = available_losses()
    name = loss_config["name"]
    if name not in infos:
        raise ConfigError(f"config key 'loss.name': unknown loss {name!r}; available losses: {sorted(infos)}")
    options = dict(loss_config.get("options") or {})
    if label_sets is not None:
        sets = {int(k): list(v) for k, v in label_sets.items()}
        if "label_sets" in infos[name].options and "label_sets" not in options:
            options["label_sets"] = sets
        if name == "compound" and isinstance(options.get("terms"), list):
            terms = []
            for term in options["terms"]:
                term = dict(term)
                tname = term.get("name")
                if tname in infos and "label_sets" in infos[tname].options and "label_sets" not in term:
                    term["label_sets"] = sets
                terms.append(term)
            options["terms"] = terms
    try:
        return get_loss(name, **options)
    except ValueError as exc:
        raise ConfigError(f"config key 'loss': {exc}") from None


def build_optimizer(config: Mapping[str, Any], params: Iterable[nn.Parameter]) -> torch.optim.Optimizer:
    opt = config["optimizer"]
    if opt["name"] == "adam":
        return torch.optim.Adam(
            params, lr=opt["lr"], betas=tuple(opt["betas"]), weight_decay=opt["weight_decay"]
        )
    if opt["name"] == "adamw":
        return torch.optim.AdamW(
            params, lr=opt["lr"], betas=tuple(opt["betas"]), weight_decay=opt["weight_decay"]
        )
    return torch.optim.SGD(params, lr=opt["lr"], momentum=opt["momentum"], weight_decay=opt["weight_decay"])


def build_scheduler(config: Mapping[str, Any], optimizer: torch.optim.Optimizer):
    """Halve the learning rate on a validation plateau (dice-gradient-mime-kervadec: 20 epochs, x0.5)."""
    sch = config["scheduler"]
    if sch["name"] == "none":
        return None
    return torch.optim.lr_scheduler.ReduceLROnPlateau(
        optimizer,
        mode="min" if sch["monitor"] == "val_loss" else "max",
        factor=sch["factor"],
        patience=sch["patience"],
        min_lr=sch["min_lr"],
    )


def model_info(
    config: Mapping[str, Any], manifest: Manifest, spec: Mapping[str, Any], patch_size=None
) -> dict[str, Any]:
    """What a checkpoint must carry for inference without the dataset."""
    return {
        "network": dict(spec),
        "labels": list(manifest.labels),
        "label_sets": {int(k): list(v) for k, v in manifest.label_sets.items()},
        "channel_names": manifest.channel_names,
        "n_image_channels": manifest.n_image_channels,
        "normalize": config["data"]["normalize"],
        "window": config["inference"]["window"],
        "patch_size": list(patch_size) if patch_size else None,
        "overlap": config["inference"]["overlap"],
    }


def resolve_network(config: dict[str, Any], manifest: Manifest) -> dict[str, Any]:
    """The network's keywords; ``in_channels`` / ``out_channels`` come from the dataset unless the config or
    its preset sets them, in which case they must agree with it."""
    spec = network_spec(config["network"])
    n_in = len(manifest.channel_names)
    spec.setdefault("in_channels", n_in)
    spec.setdefault("out_channels", manifest.num_classes)
    where = f"network preset {config['network']['preset']!r}" if "preset" in config["network"] else "network"
    if spec["in_channels"] != n_in:
        raise ConfigError(
            f"config key 'network.in_channels': the {where} takes {spec['in_channels']} input "
            f"channel(s), but the dataset has {n_in}: {manifest.channel_names}"
        )
    allowed = (manifest.num_classes, 1) if manifest.num_classes == 2 else (manifest.num_classes,)
    if spec["out_channels"] not in allowed:
        raise ConfigError(
            f"config key 'network.out_channels': the {where} gives {spec['out_channels']} output "
            f"channel(s), but the dataset has {manifest.num_classes} labels {manifest.labels}; set "
            f"network.out_channels={manifest.num_classes}"
        )
    return spec


def grad_scaler():
    """fp16 gradient scaler (``torch.amp.GradScaler`` from torch 2.3, ``torch.cuda.amp`` before)."""
    if hasattr(torch.amp, "GradScaler"):
        return torch.amp.GradScaler("cuda")
    return torch.cuda.amp.GradScaler()


__all__ = [
    "build_loss",
    "build_optimizer",
    "build_scheduler",
    "grad_scaler",
    "model_info",
    "resolve_network",
]
