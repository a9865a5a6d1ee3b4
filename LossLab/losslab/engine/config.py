"""Run configuration: defaults, loading (JSON or YAML), ``key=value`` overrides and validation.

A config is a nested dict; :data:`DEFAULTS` lists every key with its default. Files only need the keys they
change. ``validate_config`` returns the complete config (defaults filled in) or raises ``ValueError`` naming
the key, the value received and what was expected. See ``docs/engine.md`` for the reference.
"""

from __future__ import annotations

import contextlib
import copy
import json
import os
import re
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

DEFAULTS: dict[str, Any] = {
    "data": {
        "manifest": None,  # path to the dataset's JSON manifest (relative paths: to the config file)
        "train_split": "train",  # split name(s) used for training
        "val_split": "val",  # split name for validation / early stopping; missing -> random val_fraction
        "val_fraction": 0.1,  # fraction of the training cases held out when the manifest has no val split
        "split_seed": None,  # seed of that random split (None: the run's seed)
        "keep_in_train": [],  # split names whose cases that random split never takes (e.g. ["full"])
        "normalize": "zscore",  # intensity normalisation of image channels: zscore | zscore_nonzero | minmax | none
        "patch_size": None,  # training crop size; None: pad every volume to the largest training volume
        "cache": True,  # keep the loaded volumes in memory
    },
    "network": {"preset": "ice_segmentation"},
    "loss": {"name": "cross_entropy", "options": {}, "inputs": {}},
    "optimizer": {"name": "adam", "lr": 1e-3, "weight_decay": 0.0, "momentum": 0.9, "betas": [0.9, 0.999]},
    "scheduler": {"name": "plateau", "factor": 0.5, "patience": 20, "min_lr": 0.0, "monitor": "val_loss"},
    "early_stopping": {"patience": None, "monitor": "val_loss", "min_delta": 0.0},
    "augmentation": {
        "enabled": True,
        # axes of the (z, y, x) array; None: the last one (x, left/right for RAS/LPS-aligned volumes)
        "flip": {"prob": 0.5, "axes": None},
        "scale": {"prob": 0.0, "range": [0.9, 1.1]},
        "gamma": {"prob": 0.0, "range": [0.7, 1.5]},
        "contrast": {"prob": 0.0, "range": [0.75, 1.25]},
        "noise": {"prob": 0.0, "std": 0.1},
        # across centres and scanners (losslab.engine.transforms; docs/engine.md): off unless a prob is set
        "affine": {"prob": 0.0, "rotate": 15.0, "scale": [0.9, 1.1], "translate": 0.0},
        "elastic": {"prob": 0.0, "magnitude": 2.0, "points": 5},
        "bias_field": {"prob": 0.0, "coefficient": 0.5, "order": 3},
        "blur": {"prob": 0.0, "sigma": [0.25, 1.0]},
        "resolution": {"prob": 0.0, "factor": [1.0, 2.0], "axes": None},
        "standardize": {"enabled": False, "over": "nonzero"},
        # zero the image outside the label's foreground dilated by dilate[0]..dilate[1] voxels: inputs seen
        # both as masked by a region of interest (a brain mask) and as they are, so either works at inference
        "foreground_mask": {"prob": 0.0, "dilate": [0, 0]},
    },
    "epochs": 100,
    "batch_size": 2,
    "seed": 0,
    "device": "auto",  # auto | cpu | cuda | cuda:N | mps
    "amp": "auto",  # mixed precision: auto (CUDA) | true (CUDA, and CPUs with native bf16) | false
    "output_dir": "losslab-output/run",
    "val_every": 1,
    "inference": {"window": None, "overlap": 0.5},  # sliding window for validation / inference (None: whole)
    "ensemble": {"members": 1, "member": None},  # N runs with seeds seed+k and their own random splits
    "deterministic": True,
    "channels_last": True,  # channels-last 3D memory layout on CPU and CUDA (faster convolutions)
    "plot_every": 1,  # write curves.png every N epochs (0: only at the end)
}

_FREE_FORM = {("loss", "options"), ("loss", "inputs"), ("network",)}
AUG_TRANSFORMS = (
    "flip",
    "scale",
    "gamma",
    "contrast",
    "noise",
    "affine",
    "elastic",
    "bias_field",
    "blur",
    "resolution",
    "foreground_mask",
)


class ConfigError(ValueError):
    """A config value is missing or invalid (a ``ValueError``: the CLI prints it as one line)."""


def _merge(base: dict, update: Mapping, path: tuple[str, ...] = ()) -> dict:
    out = copy.deepcopy(base)
    for key, value in update.items():
        here = (*path, key)
        if path == () and key == "network":
            out[key] = copy.deepcopy(dict(value)) if isinstance(value, Mapping) else value
            continue
        if key not in base:
            raise ConfigError(f"unknown config key {'.'.join(here)!r}; expected one of {sorted(base)}")
        if isinstance(base[key], dict) and here not in _FREE_FORM:
            if not isinstance(value, Mapping):
                raise ConfigError(f"config key {'.'.join(here)!r} must be a mapping, got {value!r}")
            out[key] = _merge(base[key], value, here)
        else:
            out[key] = copy.deepcopy(value)
    return out


def load_config_file(path: str | os.PathLike) -> dict[str, Any]:
    """Read a JSON or YAML config file (not validated). Relative ``data.manifest`` / ``output_dir`` paths
    are resolved against the file's folder."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"config file not found: {str(path)!r}")
    from ..io import read_text

    text = read_text(path, "config")
    if path.suffix.lower() in (".yaml", ".yml"):
        try:
            import yaml
        except ImportError:
            raise ConfigError(f"config {str(path)!r} is YAML but pyyaml is not installed; use JSON") from None
        try:
            data = yaml.safe_load(text)
        except yaml.YAMLError as exc:
            where = getattr(exc, "problem_mark", None)
            at = f" (line {where.line + 1}, column {where.column + 1})" if where is not None else ""
            problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
            raise ConfigError(f"config {str(path)!r} is not valid YAML{at}: {problem}") from None
    else:
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise ConfigError(f"config {str(path)!r} is not valid JSON: {exc}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"config {str(path)!r} must hold a mapping at the top, got {type(data).__name__}")
    data = copy.deepcopy(data)
    base = path.resolve().parent
    manifest = (data.get("data") or {}).get("manifest")
    if isinstance(manifest, str) and not os.path.isabs(manifest):
        data["data"]["manifest"] = str(base / manifest)
    if isinstance(data.get("output_dir"), str) and not os.path.isabs(data["output_dir"]):
        data["output_dir"] = str(base / data["output_dir"])
    return data


def parse_value(text: str) -> Any:
    """Parse an override value: JSON, else YAML (``3``, ``1e-3``, ``true``, ``[1,2]``), else text."""
    with contextlib.suppress(json.JSONDecodeError):  # not JSON: try YAML, then keep the text
        return json.loads(text)
    try:
        import yaml

        value = yaml.safe_load(text)
    except Exception:
        return text
    if isinstance(value, str) and re.fullmatch(r"[-+]?(\d+\.?\d*|\.\d+)[eE][-+]?\d+", value.strip()):
        return float(value)  # YAML 1.1 reads 1e-3 as text
    return value if value is not None or text.strip() in ("null", "~", "") else text


def apply_overrides(config: Mapping[str, Any], overrides: Iterable[str]) -> dict[str, Any]:
    """Apply ``key.sub=value`` overrides (values parsed by :func:`parse_value`) to a copy of ``config``."""
    out = copy.deepcopy(dict(config))
    for item in overrides:
        if "=" not in item:
            raise ConfigError(f"override {item!r} must look like key=value (e.g. epochs=3 optimizer.lr=1e-3)")
        key, text = item.split("=", 1)
        parts = key.strip().split(".")
        if not all(parts):
            raise ConfigError(f"override {item!r} has an empty key")
        node = out
        for part in parts[:-1]:
            child = node.get(part)
            if child is None:
                child = node[part] = {}
            if not isinstance(child, dict):
                raise ConfigError(f"override {item!r}: {part!r} is not a mapping (it holds {child!r})")
            node = child
        node[parts[-1]] = parse_value(text)
    return out


def _number(config, key, value, *, minimum=None, integer=False, allow_none=False, exclusive=False):
    if value is None and allow_none:
        return None
    ok = isinstance(value, (int, float)) and not isinstance(value, bool)
    if ok and integer and float(value) != int(value):
        ok = False
    if ok and minimum is not None and (value <= minimum if exclusive else value < minimum):
        ok = False
    if not ok:
        kind = "an integer" if integer else "a number"
        bound = "" if minimum is None else f" {'>' if exclusive else '>='} {minimum}"
        raise ConfigError(
            f"config key {key!r} must be {kind}{bound}{' or null' if allow_none else ''}, got {value!r}"
        )
    return int(value) if integer else float(value)


def _choice(key, value, choices):
    if value not in choices:
        raise ConfigError(f"config key {key!r} must be one of {list(choices)}, got {value!r}")
    return value


def _range(key, value):
    if (
        not isinstance(value, (list, tuple))
        or len(value) != 2
        or not all(isinstance(v, (int, float)) for v in value)
        or not 0 < value[0] <= value[1]
    ):
        raise ConfigError(f"config key {key!r} must be [low, high] with 0 < low <= high, got {value!r}")
    return [float(value[0]), float(value[1])]


def _flip_axes(axes: Any, dims: int, key: str = "augmentation.flip.axes") -> list[int]:
    """``augmentation.flip.axes`` (or another ``key``) checked against the network's spatial dimensions
    (None: the last axis)."""
    if axes is None:
        return [dims - 1]
    names = "(z, y, x)" if dims == 3 else "(y, x)"
    if (
        not isinstance(axes, (list, tuple))
        or not all(isinstance(a, int) and not isinstance(a, bool) for a in axes)
        or not all(0 <= a < dims for a in axes)
        or len(set(axes)) != len(axes)
    ):
        raise ConfigError(
            f"config key {key!r} must list distinct spatial axes of the {dims}D network, "
            f"each in 0..{dims - 1} {names}, got {axes!r}"
        )
    return list(axes)


def _check_cross_centre_augmentation(cfg: dict, aug: dict, dims: int) -> None:
    """The options of ``affine``, ``elastic``, ``bias_field``, ``blur``, ``resolution`` and ``standardize``
    (:mod:`losslab.engine.transforms`), normalised in place."""
    a = aug["affine"]
    a["rotate"] = _number(cfg, "augmentation.affine.rotate", a["rotate"], minimum=0.0)
    if a["rotate"] > 180:
        raise ConfigError(
            f"config key 'augmentation.affine.rotate' must be in [0, 180] degrees, got {a['rotate']!r}"
        )
    a["scale"] = _range("augmentation.affine.scale", a["scale"])
    a["translate"] = _number(cfg, "augmentation.affine.translate", a["translate"], minimum=0.0)
    if a["translate"] > 0.5:
        raise ConfigError(
            f"config key 'augmentation.affine.translate' is a fraction of each axis's length in [0, 0.5], "
            f"got {a['translate']!r}"
        )
    e = aug["elastic"]
    e["magnitude"] = _number(cfg, "augmentation.elastic.magnitude", e["magnitude"], minimum=0.0)
    e["points"] = _number(cfg, "augmentation.elastic.points", e["points"], minimum=2, integer=True)
    b = aug["bias_field"]
    b["coefficient"] = _number(cfg, "augmentation.bias_field.coefficient", b["coefficient"], minimum=0.0)
    b["order"] = _number(cfg, "augmentation.bias_field.order", b["order"], minimum=1, integer=True)
    if b["order"] > 5:
        raise ConfigError(f"config key 'augmentation.bias_field.order' must be in 1..5, got {b['order']!r}")
    aug["blur"]["sigma"] = _range("augmentation.blur.sigma", aug["blur"]["sigma"])
    r = aug["resolution"]
    r["factor"] = _range("augmentation.resolution.factor", r["factor"])
    if r["factor"][0] < 1:
        raise ConfigError(
            f"config key 'augmentation.resolution.factor' must be [low, high] with 1 <= low <= high (how many "
            f"times coarser), got {r['factor']!r}"
        )
    if r["axes"] is not None:
        r["axes"] = _flip_axes(r["axes"], dims, "augmentation.resolution.axes")
    st = aug["standardize"]
    if not isinstance(st["enabled"], bool):
        raise ConfigError(
            f"config key 'augmentation.standardize.enabled' must be true or false, got {st['enabled']!r}"
        )
    _choice("augmentation.standardize.over", st["over"], ("nonzero", "all"))
    fm = aug["foreground_mask"]
    d = fm["dilate"]
    if (
        not isinstance(d, (list, tuple))
        or len(d) != 2
        or not all(isinstance(v, int) and not isinstance(v, bool) and v >= 0 for v in d)
        or d[0] > d[1]
    ):
        raise ConfigError(
            "config key 'augmentation.foreground_mask.dilate' must be [low, high], whole numbers of voxels "
            f"with 0 <= low <= high, got {d!r}"
        )
    fm["dilate"] = list(d)


def _forward_inputs(cls: type) -> tuple[set[str], set[str] | None]:
    """(required, accepted) keyword inputs of a loss's ``forward`` beyond ``(input, target)``; accepted is
    None when ``forward`` takes ``**kwargs``."""
    import inspect

    params = list(inspect.signature(cls.forward).parameters.values())[1:]  # drop self
    positional = [p for p in params if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
    extra = [p for p in params[2:] if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)]
    if len(positional) < 2 or any(p.kind in (p.VAR_POSITIONAL, p.VAR_KEYWORD) for p in params):
        return set(), None
    return {p.name for p in extra if p.default is p.empty}, {p.name for p in extra}


def check_loss_inputs(loss: Mapping[str, Any]) -> None:
    """Check ``loss.inputs`` against what the loss's ``forward`` takes besides ``(input, target)``.

    The editing loss, for example, needs ``initial`` and ``attention``: without ``loss.inputs`` naming the
    input channels that hold them, training would stop at its first batch. For a compound loss, every term
    is checked (each term receives all the inputs). Unknown loss names are left to the loss builder.

    Raises:
        ConfigError: an input the loss needs is missing from ``loss.inputs``, or one it does not take is given.
    """
    from ..losses import available_losses

    infos = available_losses()
    name = loss["name"]
    if name not in infos:
        return
    terms = [(name, infos[name].cls)]
    if name == "compound" and isinstance((loss.get("options") or {}).get("terms"), list):
        terms = [
            (t["name"], infos[t["name"]].cls)
            for t in loss["options"]["terms"]
            if isinstance(t, Mapping) and t.get("name") in infos
        ]
    given = set(loss["inputs"])
    for term, cls in terms:
        required, accepted = _forward_inputs(cls)
        missing = sorted(required - given)
        if missing:
            raise ConfigError(
                f"config key 'loss.inputs' must name the input channel of {missing} for the loss {term!r} "
                f"(got {dict(loss['inputs'])!r}), e.g. "
                + " ".join(f"loss.inputs.{m}=CHANNEL" for m in missing)
                + " with CHANNEL one of the manifest's 'extra_channels'"
            )
        unknown = sorted(given - accepted) if accepted is not None else []
        if unknown:
            raise ConfigError(
                f"config key 'loss.inputs' gives {unknown}, which the loss {term!r} does not take"
                + (f" (it takes {sorted(accepted)})" if accepted else " (it takes no extra inputs)")
            )


def validate_config(config: Mapping[str, Any]) -> dict[str, Any]:
    """Fill in defaults and check every value. Returns the complete config; raises :class:`ConfigError`."""
    if not isinstance(config, Mapping):
        raise ConfigError(f"a config must be a mapping, got {type(config).__name__}")
    cfg = _merge(DEFAULTS, config)
    data = cfg["data"]
    if not data["manifest"]:
        raise ConfigError("config key 'data.manifest' is required: the path of the dataset's JSON manifest")
    data["manifest"] = str(data["manifest"])
    if isinstance(data["train_split"], str):
        data["train_split"] = [data["train_split"]]
    if not isinstance(data["train_split"], list) or not all(isinstance(s, str) for s in data["train_split"]):
        raise ConfigError(
            f"config key 'data.train_split' must be a split name or a list of names, got "
            f"{data['train_split']!r}"
        )
    _number(cfg, "data.val_fraction", data["val_fraction"], minimum=0.0)
    if data["val_fraction"] >= 1:
        raise ConfigError(f"config key 'data.val_fraction' must be in [0, 1), got {data['val_fraction']!r}")
    _number(cfg, "data.split_seed", data["split_seed"], integer=True, allow_none=True)
    keep = data["keep_in_train"]
    if not isinstance(keep, list) or not all(isinstance(k, str) for k in keep):
        raise ConfigError(f"config key 'data.keep_in_train' must be a list of split names, got {keep!r}")
    _choice("data.normalize", data["normalize"], ("zscore", "zscore_nonzero", "minmax", "none"))
    if data["patch_size"] is not None:
        ps = data["patch_size"]
        if not isinstance(ps, (list, tuple)) or not all(isinstance(v, int) and v > 0 for v in ps):
            raise ConfigError(
                f"config key 'data.patch_size' must be a list of positive integers or null, got {ps!r}"
            )
        data["patch_size"] = list(ps)

    net = cfg["network"]
    if not isinstance(net, dict):
        raise ConfigError(f"config key 'network' must be a mapping, got {net!r}")
    from ..nets import network_spec

    try:
        dims = int(network_spec(net).get("spatial_dims", 3))
    except ValueError as exc:
        raise ConfigError(f"config key 'network': {exc}") from None

    loss = cfg["loss"]
    if not isinstance(loss["name"], str):
        raise ConfigError(f"config key 'loss.name' must be a loss name, got {loss['name']!r}")
    for key in ("options", "inputs"):
        if not isinstance(loss[key], dict):
            raise ConfigError(f"config key 'loss.{key}' must be a mapping, got {loss[key]!r}")
    for kw, channel in loss["inputs"].items():
        if not isinstance(channel, (int, str)) or isinstance(channel, bool):
            raise ConfigError(
                f"config key 'loss.inputs.{kw}' must be an input channel index or name, got {channel!r}"
            )
    check_loss_inputs(loss)

    opt = cfg["optimizer"]
    _choice("optimizer.name", opt["name"], ("adam", "adamw", "sgd"))
    _number(cfg, "optimizer.lr", opt["lr"], minimum=0.0, exclusive=True)
    _number(cfg, "optimizer.weight_decay", opt["weight_decay"], minimum=0.0)
    _number(cfg, "optimizer.momentum", opt["momentum"], minimum=0.0)
    if not (
        isinstance(opt["betas"], (list, tuple))
        and len(opt["betas"]) == 2
        and all(isinstance(b, (int, float)) and 0 <= b < 1 for b in opt["betas"])
    ):
        raise ConfigError(f"config key 'optimizer.betas' must be two numbers in [0, 1), got {opt['betas']!r}")

    sch = cfg["scheduler"]
    _choice("scheduler.name", sch["name"], ("plateau", "none"))
    _number(cfg, "scheduler.factor", sch["factor"], minimum=0.0, exclusive=True)
    if sch["factor"] >= 1:
        raise ConfigError(f"config key 'scheduler.factor' must be in (0, 1), got {sch['factor']!r}")
    _number(cfg, "scheduler.patience", sch["patience"], minimum=0, integer=True)
    _number(cfg, "scheduler.min_lr", sch["min_lr"], minimum=0.0)
    _choice("scheduler.monitor", sch["monitor"], ("val_loss", "val_dice"))
    es = cfg["early_stopping"]
    _number(cfg, "early_stopping.patience", es["patience"], minimum=1, integer=True, allow_none=True)
    _choice("early_stopping.monitor", es["monitor"], ("val_loss", "val_dice"))
    _number(cfg, "early_stopping.min_delta", es["min_delta"], minimum=0.0)

    aug = cfg["augmentation"]
    if not isinstance(aug["enabled"], bool):
        raise ConfigError(f"config key 'augmentation.enabled' must be true or false, got {aug['enabled']!r}")
    for name in AUG_TRANSFORMS:
        prob = _number(cfg, f"augmentation.{name}.prob", aug[name]["prob"], minimum=0.0)
        if prob > 1:
            raise ConfigError(f"config key 'augmentation.{name}.prob' must be in [0, 1], got {prob!r}")
    for name in ("scale", "gamma", "contrast"):
        aug[name]["range"] = _range(f"augmentation.{name}.range", aug[name]["range"])
    _number(cfg, "augmentation.noise.std", aug["noise"]["std"], minimum=0.0)
    aug["flip"]["axes"] = _flip_axes(aug["flip"]["axes"], dims)
    _check_cross_centre_augmentation(cfg, aug, dims)

    cfg["epochs"] = _number(cfg, "epochs", cfg["epochs"], minimum=1, integer=True)
    cfg["batch_size"] = _number(cfg, "batch_size", cfg["batch_size"], minimum=1, integer=True)
    cfg["seed"] = _number(cfg, "seed", cfg["seed"], minimum=0, integer=True)
    cfg["val_every"] = _number(cfg, "val_every", cfg["val_every"], minimum=1, integer=True)
    device = cfg["device"]
    if not isinstance(device, str) or not (
        device in ("auto", "cpu", "cuda", "mps") or device.startswith("cuda:")
    ):
        raise ConfigError(f"config key 'device' must be auto, cpu, cuda, cuda:N or mps, got {device!r}")
    _choice("amp", cfg["amp"], ("auto", True, False))
    if not isinstance(cfg["output_dir"], str) or not cfg["output_dir"]:
        raise ConfigError(f"config key 'output_dir' must be a folder path, got {cfg['output_dir']!r}")
    if not isinstance(cfg["channels_last"], bool):
        raise ConfigError(f"config key 'channels_last' must be true or false, got {cfg['channels_last']!r}")
    _number(cfg, "plot_every", cfg["plot_every"], minimum=0, integer=True)
    if not isinstance(cfg["deterministic"], bool):
        raise ConfigError(f"config key 'deterministic' must be true or false, got {cfg['deterministic']!r}")
    inf = cfg["inference"]
    if inf["window"] is not None and not (
        isinstance(inf["window"], (list, tuple)) and all(isinstance(v, int) and v > 0 for v in inf["window"])
    ):
        raise ConfigError(
            f"config key 'inference.window' must be a list of positive integers or null, "
            f"got {inf['window']!r}"
        )
    _number(cfg, "inference.overlap", inf["overlap"], minimum=0.0)
    if inf["overlap"] >= 1:
        raise ConfigError(f"config key 'inference.overlap' must be in [0, 1), got {inf['overlap']!r}")
    ens = cfg["ensemble"]
    _number(cfg, "ensemble.members", ens["members"], minimum=1, integer=True)
    if ens["member"] is not None:
        _number(cfg, "ensemble.member", ens["member"], minimum=0, integer=True)
        if ens["member"] >= ens["members"]:
            raise ConfigError(
                f"config key 'ensemble.member' must be below ensemble.members="
                f"{ens['members']}, got {ens['member']!r}"
            )
    return cfg


def load_config(
    path_or_config: str | os.PathLike | Mapping[str, Any], overrides: Iterable[str] = ()
) -> dict[str, Any]:
    """Load a config file (or take a dict), apply overrides and validate: the complete config."""
    if isinstance(path_or_config, Mapping):
        raw = copy.deepcopy(dict(path_or_config))
    else:
        raw = load_config_file(path_or_config)
    return validate_config(apply_overrides(raw, overrides))
