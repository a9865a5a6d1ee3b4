"""Training ICE editing models with samples made on the fly (ice-editing-shahin2023 Sec. 3.2, Table 1).

The editing network ``f(x, y_init, u)`` sees, per sample, a simulated case's sparse volume ``x``, an initial
segmentation ``y_init`` and the heatmap ``u`` of a training scribble synthesised where ``y_init`` is worst
(:func:`losslab.ice.training_interaction`). The four methods of the paper's Table 1:

- ``editing``: the editing loss (eqs. 1-3), ``A`` = the scribble's heatmap with ``sigma_edit = sigma_enc``;
- ``ce``: cross-entropy to ``y``;
- ``dice``: soft Dice to ``y``;
- ``intercnn`` (Bredell et al. 2018): per case, edits simulated from the model's own prediction accumulate
  with the earlier ones and are re-input (the prediction as ``y_init``, the union of the scribbles as ``u``)
  for up to ``intercnn.iterations`` rounds (10), then the case starts again from its ``y_init``; CE loss.
  Each time a case is drawn it advances one round (its state is kept between batches in memory, and
  starts again after a resume).

``y_init`` comes from a segmentation model's prediction, computed once per case (``initial.source =
"model"``, the paper's way), or from ``y`` perturbed on the fly (``"perturb"``: local dilations / erosions
and a shift, a cheaper option documented in ``docs/ice.md``); ``initial.perturb_fraction`` mixes the two
(that fraction of the starts is a perturbed ``y``).

Beyond the paper (each off by default, so the paper's recipe is unchanged):

- ``sequence.length`` > 1: **own-output sequences** for ``editing``, ``ce`` and ``dice``: as InterCNN's loop, a
  case's ``y_init`` is the model's own prediction of its previous round (the way a user edits again and
  again), for that many rounds, then a fresh start; ``u`` is each round's own scribble (InterCNN: the union).
- ``scribble_weight`` > 0 (``editing``): the **scribble constraint** of :func:`method_loss`, an extra
  cross-entropy to ``y`` on the scribble's voxels and their neighbours.

The run follows :mod:`losslab.engine`'s conventions and reuses its parts: the run folder refusal
(``--resume`` / ``--overwrite``), ``checkpoints/last.pt`` / ``best.pt`` (atomic), ``metrics.jsonl``,
``curves.png``, ``summary.json``, ``model.pt`` (loadable by :func:`losslab.engine.load_predictor`, with the
channels ``image, initial, heatmap``, so :class:`losslab.ice.EditingModel` edits with it), the divergence
rule, one line per epoch (or a tqdm bar on a terminal) and a ``stop`` flag checked after every batch.
"""

from __future__ import annotations

import copy
import json
import math
import os
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from scipy import ndimage

from ..engine.builders import grad_scaler
from ..engine.checkpoint import (
    check_resume_settings,
    check_run_folder,
    load_checkpoint,
    rng_state,
    run_files,
    save_checkpoint,
    set_rng_state,
)
from ..engine.config import ConfigError, apply_overrides
from ..engine.device import amp_dtype, autocast
from ..engine.reporting import ProgressCallback, Reporter, plot_curves
from ..engine.trainer import TrainingStopped, TrainResult, _is_set, guarded_step, seed_everything
from ..io import json_ready, write_text
from .dataset import dataset_cases, read_case
from .interactions import PAPER_SIGMA_MM, SCRIBBLES, encode, training_interaction
from .simulate import ICECase

METHODS = ("editing", "ce", "dice", "intercnn")
#: the editing model's input channels, in order (what :class:`losslab.ice.EditingModel` feeds it)
CHANNELS = ["image", "initial", "heatmap"]
LABELS = ["background", "left atrium"]

DEFAULTS: dict[str, Any] = {
    "method": "editing",  # editing | ce | dice | intercnn
    "data": {
        "manifest": None,  # dataset.json of `losslab ice simulate` (relative: to the config file)
        "train_split": "train",
        "val_split": "val",  # fixed validation samples (one interaction per case); "none": no validation
        "max_val_cases": 8,
    },
    # where y_init comes from: "model" (a segmentation model's prediction, cached per case) or "perturb"
    # perturb_fraction: with source "model", the fraction of starts that are y perturbed instead
    "initial": {
        "source": "model",
        "model": None,
        "max_radius_mm": 15.0,
        "max_change_voxels": 3,
        "perturb_fraction": 0.0,
    },
    "sigma_mm": PAPER_SIGMA_MM,  # sigma_enc = sigma_edit (mm); the paper's 20 voxels of 1.1024 mm
    "perturbation": {"offset_mm": 0.0, "jitter_mm": 0.0, "fraction": 1.0},  # of the training scribble
    "scribble": "piece",  # piece (the paper's: y's contour along the error) | contour (y's whole contour)
    # own-output sequences (beyond the paper): a case's y_init is the model's own output of its previous
    # round, for `length` rounds, then a fresh start (1: every sample from a fresh y_init, the paper's way)
    "sequence": {"length": 1},
    "scribble_weight": 0.0,  # the scribble constraint of method_loss (editing only; 0: the paper's loss)
    "network": {"preset": "ice_editing"},
    "optimizer": {"lr": 0.005, "betas": [0.9, 0.999]},  # Adam (Supplementary Table 1)
    "batch_size": 4,
    "epochs": 10,
    "steps_per_epoch": None,  # None: ceil(training cases / batch_size)
    "patch_size": None,  # training crop around the scribble (e.g. [48, 48, 48]); None: the whole volume
    "intercnn": {"iterations": 10},
    "seed": 0,
    "device": "cpu",
    "amp": "auto",  # mixed precision: auto (CUDA) | true (CUDA, and CPUs with native bf16) | false
    "threads": None,  # torch.set_num_threads on CPU (None: torch's default)
    "plot_every": 1,
    "output_dir": "losslab-output/ice-editing",
}


# ------------------------------------------------------------------------------------------------ config
def _merge(base: dict, update: Mapping, path: str = "") -> dict:
    out = copy.deepcopy(base)
    for key, value in update.items():
        where = f"{path}{key}"
        if key not in base:
            raise ConfigError(f"config key {where!r}: unknown key; known keys here: {sorted(base)}")
        if isinstance(base[key], dict) and key != "network":
            if not isinstance(value, Mapping):
                raise ConfigError(f"config key {where!r}: expected a mapping, got {value!r}")
            out[key] = _merge(base[key], value, where + ".")
        else:
            out[key] = copy.deepcopy(value)
    return out


def _positive(cfg: Mapping, key: str, value: Any, integer: bool = False, allow_none: bool = False) -> None:
    if value is None and allow_none:
        return
    ok = isinstance(value, (int, float)) and not isinstance(value, bool) and value > 0
    if integer:
        ok = ok and float(value).is_integer()
    if not ok:
        kind = "a positive integer" if integer else "a positive number"
        raise ConfigError(f"config key {key!r}: expected {kind}, got {value!r}")


def _perturbation(values: Mapping[str, Any]) -> None:
    """The training scribble's perturbation (:func:`losslab.ice.interactions.perturb_polyline`), checked
    like ``sigma_mm``: ``offset_mm`` finite (negative: inwards), ``jitter_mm`` finite and >= 0 (an RMS),
    ``fraction`` in (0, 1]."""
    for key, low, low_open, high in (
        ("offset_mm", -math.inf, True, math.inf),
        ("jitter_mm", 0.0, False, math.inf),
        ("fraction", 0.0, True, 1.0),
    ):
        value = values[key]
        number = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
        if not number or value > high or (value <= low if low_open else value < low):
            expected = {
                "offset_mm": "a finite number of mm (negative: inwards)",
                "jitter_mm": "a finite number of mm >= 0 (an RMS)",
                "fraction": "a number in (0, 1]",
            }[key]
            raise ConfigError(f"config key 'perturbation.{key}': expected {expected}, got {value!r}")


def load_training_config(
    config: str | os.PathLike | Mapping[str, Any], overrides: Iterable[str] = ()
) -> dict[str, Any]:
    """The complete, validated config of an ICE editing run (defaults filled in).

    ``config`` is a JSON / YAML file (relative ``data.manifest``, ``initial.model`` and ``output_dir`` are
    resolved against its folder) or a dict. Raises ``ConfigError`` (a ``ValueError``) naming the key.
    """
    if isinstance(config, Mapping):
        data, base = copy.deepcopy(dict(config)), Path.cwd()
    else:
        path = Path(config)
        if not path.is_file():
            raise FileNotFoundError(f"config file not found: {str(path)!r}")
        text = path.read_text(encoding="utf-8")
        try:
            if path.suffix.lower() in (".yaml", ".yml"):
                import yaml

                data = yaml.safe_load(text)
            else:
                data = json.loads(text)
        except Exception as exc:
            raise ConfigError(f"config {str(path)!r} could not be read: {exc}") from None
        if not isinstance(data, dict):
            raise ConfigError(f"config {str(path)!r} must hold a mapping at the top")
        base = path.resolve().parent

        def resolve(value):
            return str(base / value) if isinstance(value, str) and not os.path.isabs(value) else value

        if isinstance(data.get("data"), dict) and data["data"].get("manifest"):
            data["data"]["manifest"] = resolve(data["data"]["manifest"])
        if data.get("output_dir"):
            data["output_dir"] = resolve(data["output_dir"])
        model = (data.get("initial") or {}).get("model")
        if isinstance(model, str) and (base / model).exists():
            data["initial"]["model"] = resolve(model)
    cfg = _merge(DEFAULTS, apply_overrides(data, overrides))
    if cfg["method"] not in METHODS:
        raise ConfigError(f"config key 'method': expected one of {list(METHODS)}, got {cfg['method']!r}")
    if not cfg["data"]["manifest"]:
        raise ConfigError("config key 'data.manifest': required (the dataset.json of `losslab ice simulate`)")
    source = cfg["initial"]["source"]
    if source not in ("model", "perturb"):
        raise ConfigError(f"config key 'initial.source': expected 'model' or 'perturb', got {source!r}")
    if source == "model" and not cfg["initial"]["model"]:
        raise ConfigError(
            "config key 'initial.model': a segmentation model (path or registered name) is required with "
            "initial.source='model' (or set initial.source='perturb')"
        )
    for key in ("sigma_mm", "optimizer.lr", "initial.max_radius_mm"):
        node = cfg
        for part in key.split("."):
            node = node[part]
        _positive(cfg, key, node)
    for key in (
        "batch_size",
        "epochs",
        "intercnn.iterations",
        "data.max_val_cases",
        "initial.max_change_voxels",
        "sequence.length",
    ):
        node = cfg
        for part in key.split("."):
            node = node[part]
        _positive(cfg, key, node, integer=True)
    for key, value, high in (
        ("initial.perturb_fraction", cfg["initial"]["perturb_fraction"], 1.0),
        ("scribble_weight", cfg["scribble_weight"], math.inf),
    ):
        number = isinstance(value, (int, float)) and not isinstance(value, bool)
        if not (number and math.isfinite(value) and 0 <= value <= high):
            expected = "a number in [0, 1]" if high == 1.0 else "a finite number >= 0"
            raise ConfigError(f"config key {key!r}: expected {expected}, got {value!r}")
    if cfg["scribble_weight"] > 0 and cfg["method"] != "editing":
        raise ConfigError(
            "config key 'scribble_weight': the scribble constraint applies to method 'editing' only"
        )
    _perturbation(cfg["perturbation"])
    _positive(cfg, "steps_per_epoch", cfg["steps_per_epoch"], integer=True, allow_none=True)
    _positive(cfg, "threads", cfg["threads"], integer=True, allow_none=True)
    if cfg["scribble"] not in SCRIBBLES:
        raise ConfigError(
            f"config key 'scribble': expected one of {list(SCRIBBLES)}, got {cfg['scribble']!r}"
        )
    if cfg["amp"] not in ("auto", True, False):
        raise ConfigError(f"config key 'amp': expected 'auto', true or false, got {cfg['amp']!r}")
    patch = cfg["patch_size"]
    if patch is not None:
        if not (
            isinstance(patch, list) and len(patch) == 3 and all(isinstance(p, int) and p >= 8 for p in patch)
        ):
            raise ConfigError(f"config key 'patch_size': expected null or 3 integers >= 8, got {patch!r}")
    return cfg


def interaction_args(cfg: Mapping[str, Any]) -> dict[str, Any]:
    """The keyword arguments of :func:`training_interaction` from a run's config."""
    return {**cfg["perturbation"], "scribble": cfg["scribble"]}


# ------------------------------------------------------------------------------------------ initial masks
def perturbed_initial(
    label: np.ndarray,
    spacing: Sequence[float],
    rng: np.random.Generator,
    max_radius_mm: float = 15.0,
    max_change: int = 3,
) -> np.ndarray:
    """A plausible ``y_init`` made from ``y``: one to three balls (radius 5 mm..``max_radius_mm``) centred on
    y's boundary inside which y is dilated or eroded by 1..``max_change`` voxels, then a shift of up to one
    voxel along each axis. The option ``initial.source = "perturb"`` (cheaper than a segmentation model)."""
    y = np.asarray(label) != 0
    out = y.copy()
    edge = y & ~ndimage.binary_erosion(y)
    points = np.argwhere(edge)
    if len(points):
        grid = np.indices(y.shape, sparse=True)
        for _ in range(int(rng.integers(1, 4))):
            centre = points[rng.integers(len(points))]
            radius = rng.uniform(5.0, max(5.0, max_radius_mm))
            ball = sum(((g - c) * s) ** 2 for g, c, s in zip(grid, centre, spacing)) <= radius**2
            steps = int(rng.integers(1, max_change + 1))
            grown = (
                ndimage.binary_dilation(y, iterations=steps)
                if rng.random() < 0.5
                else (ndimage.binary_erosion(y, iterations=steps))
            )
            out = np.where(ball, grown, out)
    shift = rng.integers(-1, 2, size=3)
    return np.roll(out, tuple(int(s) for s in shift), axis=(0, 1, 2)).astype(np.uint8)


def model_initial(cases: Sequence[ICECase], model: str | os.PathLike, device: str = "cpu", progress=None):
    """``y_init`` of each case: the segmentation model's prediction of its ``x`` (uint8), one pass each."""
    from .. import models as registry
    from ..engine.inference import load_predictor

    path = Path(model)
    if not path.exists():
        path = registry.model_path(str(model))
    predictor = load_predictor(path, device=device)
    if int(predictor.info.network["in_channels"]) != 1:
        raise ValueError(
            f"the segmentation model {str(model)!r} takes {predictor.info.network['in_channels']} input "
            "channels; y_init needs a model of the image alone (1 channel)"
        )
    out = []
    for case in _progress(cases, "y_init from the segmentation model", progress):
        out.append((np.asarray(predictor.predict(case.image[None]).labels) == 1).astype(np.uint8))
    return out


def _progress(items, desc, enabled):
    if not enabled:
        return items
    from tqdm.auto import tqdm

    return tqdm(items, desc=desc, unit="case", leave=False, disable=None)  # None: no bar when not a terminal


# --------------------------------------------------------------------------------------------- samples
@dataclass
class InterCNNState:
    """One case's InterCNN loop: the current prediction (re-input as ``y_init``), the union of the scribbles
    so far (encoded as ``u``) and the number of rounds done since the last restart."""

    prediction: np.ndarray
    scribbles: np.ndarray
    rounds: int = 0
    frames: list[int] = field(default_factory=list)


def intercnn_round(
    case: ICECase,
    state: InterCNNState | None,
    initial: np.ndarray,
    iterations: int,
    seed: int,
    accumulate: bool = True,
    **interaction,
) -> tuple[InterCNNState, Any]:
    """Advance one case's sequence of edits by one round: restart from ``initial`` (no state, ``iterations``
    rounds done, or a prediction without error on any frame), synthesise a scribble on the current
    prediction and add it to the accumulated ones (InterCNN; ``accumulate=False``: it replaces them, the
    own-output sequences of the other methods). Returns the state (its ``prediction`` is the input
    ``y_init`` of this round; the caller stores the model's new prediction in it afterwards) and the new
    interaction (``None`` when even ``initial`` has no error)."""
    if state is None or state.rounds >= iterations:
        state = None
    edit = None
    if state is not None:
        edit = training_interaction(case, state.prediction, seed=seed, **interaction)
        if edit is None:
            state = None
    if state is None:
        state = InterCNNState(np.asarray(initial, np.uint8).copy(), np.zeros(case.grid.shape, bool))
        edit = training_interaction(case, state.prediction, seed=seed, **interaction)
    if edit is not None:
        state.scribbles = state.scribbles | edit.voxels if accumulate else edit.voxels.copy()
        state.frames.append(edit.frame)
    state.rounds += 1
    return state, edit


def _crop_box(shape, patch, centre, rng) -> tuple[slice, ...]:
    box = []
    for n, p, c in zip(shape, patch, centre):
        p = min(p, n)
        lo = int(round(c - p / 2 + rng.uniform(-p / 4, p / 4)))
        lo = min(max(lo, 0), n - p)
        box.append(slice(lo, lo + p))
    return tuple(box)


def make_sample(
    case: ICECase,
    initial: np.ndarray,
    scribble: np.ndarray | None,
    sigma_mm: float,
    patch: Sequence[int] | None,
    rng: np.random.Generator,
    scribble_ring: bool = False,
) -> dict[str, np.ndarray]:
    """The arrays of one training sample: ``input`` ``(3, *s)`` (x, y_init, u), ``y``, ``initial``,
    ``attention`` (A = u: sigma_edit = sigma_enc), cropped to ``patch`` around the scribble when given;
    with ``scribble_ring``, also ``scribble``: the scribble's voxels and their 26 neighbours (float 0/1), where
    the scribble constraint of :func:`method_loss` applies."""
    shape = case.grid.shape
    if scribble is not None and scribble.any():
        u = encode(scribble, case.spacing, sigma_mm).astype(np.float32)
        centre = np.argwhere(scribble).mean(0)
    else:
        u = np.zeros(shape, np.float32)
        centre = np.array(shape) / 2
    init = np.asarray(initial, np.float32)
    arrays = {
        "input": np.stack([np.asarray(case.image, np.float32), init, u]),
        "y": np.asarray(case.label, np.float32),
        "initial": init,
        "attention": u,
    }
    if scribble_ring:
        near = np.zeros(shape, bool) if scribble is None else np.asarray(scribble, bool)
        arrays["scribble"] = ndimage.binary_dilation(near, np.ones((3, 3, 3), bool)).astype(np.float32)
    if patch is not None:
        box = _crop_box(shape, patch, centre, rng)
        arrays = {k: v[(slice(None), *box)] if k == "input" else v[box] for k, v in arrays.items()}
    return arrays


def method_loss(
    method: str, logits: torch.Tensor, batch: Mapping[str, torch.Tensor], scribble_weight: float = 0.0
) -> torch.Tensor:
    """The loss of a method on a batch (logits ``(B, 2, *s)``; ``y``, ``initial``, ``attention`` ``(B, *s)``).

    ``editing``: eqs. 1-3 on the foreground logit ``z1 - z0`` (sigmoid of it = softmax of class 1);
    ``ce`` / ``intercnn``: cross-entropy to ``y``; ``dice``: soft Dice to ``y`` (both classes).

    ``scribble_weight`` > 0 (editing only; beyond the paper): plus that weight times the mean cross-entropy
    to ``y`` over ``batch["scribble"]`` (the scribble's voxels and their neighbours): the user drew the
    boundary there, so the edit must put it there, however small the scribble is against the volume.
    """
    from ..losses import get_loss

    if method == "editing":
        from ..losses.editing import editing_loss

        z = logits[:, 1:2] - logits[:, 0:1]
        loss = editing_loss(z.float(), batch["y"], batch["initial"], batch["attention"])
        if scribble_weight > 0:
            ring = batch["scribble"]
            bce = F.binary_cross_entropy_with_logits(z[:, 0].float(), batch["y"], reduction="none")
            loss = loss + scribble_weight * (ring * bce).sum() / ring.sum().clamp_min(1.0)
        return loss
    target = batch["y"].long()
    if method in ("ce", "intercnn"):
        return F.cross_entropy(logits.float(), target)
    if method == "dice":
        return get_loss("dice")(logits.float(), target)
    raise ValueError(f"unknown method {method!r}; expected one of {list(METHODS)}")


def _to_batch(samples: list[dict[str, np.ndarray]], device) -> dict[str, torch.Tensor]:
    return {k: torch.from_numpy(np.stack([s[k] for s in samples])).to(device) for k in samples[0]}


def model_info(cfg: Mapping[str, Any], spec: Mapping[str, Any]) -> dict[str, Any]:
    """What the checkpoint carries for :func:`losslab.engine.load_predictor` and :class:`EditingModel`."""
    return {
        "network": dict(spec),
        "labels": list(LABELS),
        "label_sets": {},
        "channel_names": list(CHANNELS),
        "n_image_channels": 1,
        "normalize": "none",
        "window": None,
        "patch_size": list(cfg["patch_size"]) if cfg["patch_size"] else None,
        "overlap": 0.5,
        "ice": {"method": cfg["method"], "sigma_mm": float(cfg["sigma_mm"])},
    }


# ------------------------------------------------------------------------------------------------ train
@dataclass
class _Data:
    cases: list[ICECase]
    initial: list[np.ndarray]
    val_cases: list[ICECase]
    val_initial: list[np.ndarray]


def _load_data(cfg: Mapping[str, Any], show: bool) -> _Data:
    d = cfg["data"]
    train_dirs = dataset_cases(d["manifest"], d["train_split"])
    if not train_dirs:
        raise ValueError(f"the dataset {d['manifest']!r} has no case in split {d['train_split']!r}")
    cases = [read_case(p) for p in _progress(list(train_dirs.values()), "reading cases", show)]
    val_cases = []
    if d["val_split"] != "none":
        val_dirs = list(dataset_cases(d["manifest"], d["val_split"]).values())[: d["max_val_cases"]]
        val_cases = [read_case(p) for p in val_dirs]
    init = cfg["initial"]
    if init["source"] == "model":
        initial = model_initial(cases + val_cases, init["model"], cfg["device"], show)
    else:
        rng = np.random.default_rng(cfg["seed"] + 7919)
        initial = [
            perturbed_initial(c.label, c.spacing, rng, init["max_radius_mm"], init["max_change_voxels"])
            for c in cases + val_cases
        ]
    n = len(cases)
    return _Data(cases, initial[:n], val_cases, initial[n:])


def _validate(net, cfg, data: _Data, device) -> float | None:
    if not data.val_cases:
        return None
    net.eval()
    total = 0.0
    rng = np.random.default_rng(0)
    with torch.inference_mode():
        for case, initial in zip(data.val_cases, data.val_initial):
            edit = training_interaction(case, initial, seed=0, **interaction_args(cfg))
            sample = make_sample(case, initial, edit.voxels if edit else None, cfg["sigma_mm"], None, rng)
            batch = _to_batch([sample], device)
            logits = net(batch["input"])
            total += float(method_loss("ce" if cfg["method"] == "intercnn" else cfg["method"], logits, batch))
    net.train()
    return total / len(data.val_cases)


@dataclass
class _Run:
    """What a run carries from step to step (and through its checkpoints)."""

    cfg: dict[str, Any]
    out: Path
    device: torch.device
    dtype: Any
    scaler: Any
    net: torch.nn.Module
    optimizer: torch.optim.Optimizer
    data: _Data
    info: dict[str, Any]
    steps: int
    history: list[dict[str, Any]] = field(default_factory=list)
    best: dict[str, Any] = field(default_factory=lambda: {"epoch": None, "value": None})
    start: int = 0
    first_loss: float | None = None
    states: dict[int, InterCNNState] = field(default_factory=dict)


def _start_run(cfg: dict[str, Any], resume: bool, overwrite: bool, show: bool) -> _Run:
    """Check the run folder, set threads / device / precision / seeds, build the network and optimizer, read
    the data (and y_init), and restore a checkpoint when resuming."""
    from ..nets import build_network, network_spec

    out = Path(cfg["output_dir"])
    check_run_folder(out, resume=resume, overwrite=overwrite)
    state = None
    if resume:  # the run's own settings, or a refusal naming what changed, before any work
        last = out / "checkpoints" / "last.pt"
        state = load_checkpoint(last)
        check_resume_settings(state.get("config"), cfg, last)
    if cfg["threads"] and cfg["device"] == "cpu":
        torch.set_num_threads(int(cfg["threads"]))
    device = torch.device(
        cfg["device"] if cfg["device"] != "auto" else ("cuda" if torch.cuda.is_available() else "cpu")
    )
    dtype = amp_dtype(device, cfg["amp"])
    scaler = grad_scaler() if dtype == torch.float16 else None  # fp16 on GPUs without bf16
    seed_everything(cfg["seed"])
    spec = network_spec(cfg["network"])
    if spec.get("in_channels") != 3 or spec.get("out_channels") != 2:
        raise ConfigError(
            f"config key 'network': an editing model takes 3 inputs {CHANNELS} and gives 2 classes; the "
            f"network has in_channels={spec.get('in_channels')}, out_channels={spec.get('out_channels')}"
        )
    data = _load_data(cfg, show)
    net = build_network(spec).to(device)
    optimizer = torch.optim.Adam(
        net.parameters(), lr=cfg["optimizer"]["lr"], betas=tuple(cfg["optimizer"]["betas"])
    )
    steps = cfg["steps_per_epoch"] or math.ceil(len(data.cases) / cfg["batch_size"])
    run = _Run(cfg, out, device, dtype, scaler, net, optimizer, data, model_info(cfg, spec), steps)
    if state is not None:
        net.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        run.history, run.best, run.start = list(state["history"]), dict(state["best"]), int(state["epoch"])
        run.first_loss = state.get("first_loss")
        set_rng_state(state["rng"])
    return run


def _rollout_length(cfg: Mapping[str, Any]) -> int:
    """Rounds a case's own-output sequence lasts (1: every sample starts from a fresh y_init)."""
    return int(cfg["intercnn"]["iterations"] if cfg["method"] == "intercnn" else cfg["sequence"]["length"])


def _start_mask(run: _Run, i: int, rng: np.random.Generator) -> np.ndarray:
    """A fresh y_init for case ``i``: the cached one (the segmentation model's prediction, or y perturbed once),
    or y perturbed now (``initial.source = "perturb"``, or a ``initial.perturb_fraction`` of the starts)."""
    init = run.cfg["initial"]
    case = run.data.cases[i]
    fresh = init["source"] == "perturb" or (
        init["perturb_fraction"] > 0 and rng.random() < init["perturb_fraction"]
    )
    if not fresh:
        return run.data.initial[i]
    return perturbed_initial(case.label, case.spacing, rng, init["max_radius_mm"], init["max_change_voxels"])


def _draw_samples(run: _Run, picks, rng: np.random.Generator):
    """The batch's samples; for sequences (InterCNN, or ``sequence.length`` > 1) the cases' states advance one
    round, and the drawn ``(case, state)`` pairs are returned for the prediction update after the step."""
    cfg = run.cfg
    length = _rollout_length(cfg)
    samples, rounds = [], []
    for i in picks:
        i = int(i)
        case, seed = run.data.cases[i], int(rng.integers(2**31))
        if length > 1:
            state = run.states.get(i)
            restart = state is None or state.rounds >= length
            fresh = restart and cfg["method"] != "intercnn"  # InterCNN restarts from the cached y_init
            start = _start_mask(run, i, rng) if fresh else run.data.initial[i]
            st, edit = intercnn_round(
                case,
                None if restart else state,
                start,
                length,
                seed,
                accumulate=cfg["method"] == "intercnn",
                **interaction_args(cfg),
            )
            run.states[i] = st
            rounds.append((i, st))
            initial, scribble = st.prediction, st.scribbles
        else:
            initial = _start_mask(run, i, rng)
            edit = training_interaction(case, initial, seed=seed, **interaction_args(cfg))
            scribble = edit.voxels if edit is not None else None
        samples.append(
            make_sample(
                case,
                initial,
                scribble,
                cfg["sigma_mm"],
                cfg["patch_size"],
                rng,
                scribble_ring=cfg["scribble_weight"] > 0,
            )
        )
    return samples, rounds


def _train_step(run: _Run, samples, where: str) -> float:
    """One optimiser step on a batch; the engine's divergence rule on its loss and logits."""
    batch = _to_batch(samples, run.device)
    run.optimizer.zero_grad(set_to_none=True)
    with autocast(run.device, run.dtype):
        logits = run.net(batch["input"])
    loss = method_loss(run.cfg["method"], logits.float(), batch, scribble_weight=run.cfg["scribble_weight"])
    return guarded_step(run, loss, logits, where)


def _train_epoch(run: _Run, epoch: int, report, stop) -> dict[str, Any]:
    """The steps of one epoch; returns its record (train loss, lr)."""
    cfg, n = run.cfg, len(run.data.cases)
    run.net.train()
    order_rng = np.random.default_rng([cfg["seed"], epoch])
    order = np.concatenate(
        [order_rng.permutation(n) for _ in range(math.ceil(run.steps * cfg["batch_size"] / n))]
    )
    total, count = 0.0, 0
    for step in range(run.steps):
        picks = order[step * cfg["batch_size"] : (step + 1) * cfg["batch_size"]]
        rng = np.random.default_rng([cfg["seed"], epoch, step])
        samples, rounds = _draw_samples(run, picks, rng)
        value = _train_step(run, samples, f"epoch {epoch + 1}, step {step + 1}")
        if rounds:  # sequences: the model's new prediction of the whole volume is the next y_init
            _update_predictions(run.net, run.data, rounds, cfg, run.device, run.dtype)
        total += value
        count += 1
        report({"event": "batch", "epoch": epoch + 1, "step": step + 1, "steps": run.steps, "loss": value})
        if _is_set(stop):
            raise TrainingStopped
    return {
        "epoch": epoch + 1,
        "train_loss": total / max(count, 1),
        "lr": run.optimizer.param_groups[0]["lr"],
    }


def _end_epoch(run: _Run, record: dict[str, Any], replacing: bool, t0: float) -> bool:
    """Validate, keep the best, write the checkpoints and metrics.jsonl (atomic), remove a replaced run's
    other files once this run has its first epoch, plot. Returns whether the epoch improved."""
    cfg, out = run.cfg, run.out
    val = _validate(run.net, cfg, run.data, run.device)
    if val is not None:
        record["val_loss"] = val
    record["time_s"] = time.perf_counter() - t0
    key = record.get("val_loss", record["train_loss"])
    improved = run.best["value"] is None or key < run.best["value"]
    if improved:
        run.best.update(epoch=record["epoch"], value=key)
    run.history.append(record)
    payload = {
        "model": run.net.state_dict(),
        "optimizer": run.optimizer.state_dict(),
        "config": cfg,
        "model_info": run.info,
        "epoch": record["epoch"],
        "history": run.history,
        "best": run.best,
        "metrics": record,
        "rng": rng_state(),
        "first_loss": run.first_loss,
    }
    written = {"checkpoints/last.pt", "metrics.jsonl"} | ({"checkpoints/best.pt"} if improved else set())
    save_checkpoint(out / "checkpoints" / "last.pt", payload)
    if improved:
        save_checkpoint(out / "checkpoints" / "best.pt", payload)
    write_text(out / "metrics.jsonl", "".join(json.dumps(json_ready(h)) + "\n" for h in run.history))
    if replacing:  # a replaced run's other files go once this run has its first epoch
        for path in run_files(out):
            if path.relative_to(out).as_posix() not in written:
                path.unlink()
    every = cfg["plot_every"]
    if (every and record["epoch"] % every == 0) or record["epoch"] == cfg["epochs"]:
        plot_curves(run.history, out / "curves.png", LABELS)
    return improved


def _finish_run(run: _Run, result: TrainResult) -> None:
    """``model.pt`` (the best epoch's weights, or the last's without validation) and ``summary.json``."""
    source = run.out / "checkpoints" / ("best.pt" if run.best["epoch"] is not None else "last.pt")
    state = load_checkpoint(source)
    final = {k: state[k] for k in ("model", "config", "model_info", "epoch", "metrics")}
    final["history"] = run.history
    result.model_path = save_checkpoint(run.out / "model.pt", final)
    summary = {
        "model": "model.pt",
        "weights_epoch": int(state["epoch"]),
        "best_epoch": run.best["epoch"],
        "epochs_done": result.epochs_done,
        "method": run.cfg["method"],
        "final_metrics": run.history[-1] if run.history else None,
    }
    write_text(run.out / "summary.json", json.dumps(summary, indent=2))


def train_editing(
    config: str | os.PathLike | Mapping[str, Any],
    overrides: Iterable[str] = (),
    *,
    resume: bool = False,
    overwrite: bool = False,
    progress: ProgressCallback | None = None,
    stop=None,
) -> TrainResult:
    """Train an ICE editing model (one method of Table 1) as the config says; see the module docstring.

    Args and raises as :func:`losslab.engine.train` (``RunFolderError`` for an ``output_dir`` holding a
    run without ``resume`` / ``overwrite``; ``TrainingDiverged`` by the engine's divergence rule).
    """
    cfg = load_training_config(config, overrides)
    run = _start_run(cfg, resume, overwrite, show=progress is None)
    report = Reporter(progress, True, run.steps * cfg["epochs"], run.steps * run.start)
    report(
        {
            "event": "start",
            "epochs": cfg["epochs"],
            "start_epoch": run.start,
            "steps_per_epoch": run.steps,
            "train_cases": len(run.data.cases),
            "val_cases": len(run.data.val_cases),
            "device": str(run.device),
            "output_dir": str(run.out),
        }
    )
    result = TrainResult(run.out, None, run.history, run.best["epoch"], epochs_done=run.start, model=run.net)
    replacing = not resume  # a resumed run keeps its own files
    try:
        for epoch in range(run.start, cfg["epochs"]):
            t0 = time.perf_counter()
            record = _train_epoch(run, epoch, report, stop)
            improved = _end_epoch(run, record, replacing, t0)
            replacing = False
            result.epochs_done = epoch + 1
            report({"event": "epoch", "epochs": cfg["epochs"], "improved": improved, **record})
    except TrainingStopped:
        result.stopped = True
    finally:
        report.close()
    result.best_epoch = run.best["epoch"]
    if not result.stopped:
        _finish_run(run, result)
    if progress is not None:
        progress(
            {
                "event": "end",
                "model_path": str(result.model_path) if result.model_path else None,
                "stopped": result.stopped,
                "best_epoch": result.best_epoch,
                "epochs_done": result.epochs_done,
            }
        )
    return result


def _update_predictions(net, data: _Data, rounds, cfg, device, dtype=None) -> None:
    """Sequences: after the step, each drawn case's prediction of the whole volume (x, its round's y_init, u of
    its scribble(s): the union so far for InterCNN, the round's own otherwise) becomes its next y_init."""
    net.eval()
    with torch.inference_mode(), autocast(device, dtype):
        for i, st in rounds:
            case = data.cases[i]
            u = (
                encode(st.scribbles, case.spacing, cfg["sigma_mm"])
                if st.scribbles.any()
                else np.zeros(case.grid.shape)
            )
            x = torch.from_numpy(np.stack([case.image, st.prediction, u]).astype(np.float32))[None].to(device)
            st.prediction = (net(x).argmax(1)[0] == 1).cpu().numpy().astype(np.uint8)
    net.train()


__all__ = [
    "CHANNELS",
    "DEFAULTS",
    "METHODS",
    "InterCNNState",
    "intercnn_round",
    "load_training_config",
    "make_sample",
    "method_loss",
    "model_info",
    "model_initial",
    "perturbed_initial",
    "train_editing",
]
