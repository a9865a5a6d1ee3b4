"""Config-driven training: one run, resumable, on CUDA / MPS / CPU, alone or under torch.distributed.

>>> from losslab.engine import train
>>> result = train("config.json", overrides=["epochs=3"], progress=print)
>>> result.model_path                                   # output_dir/model.pt (best validation epoch)

Every epoch writes (rank 0 only) ``metrics.jsonl`` (one JSON object per epoch), ``curves.png`` (losses, Dice,
learning rate) and ``checkpoints/last.pt``; ``checkpoints/best.pt`` when validation improves; ``model.pt``
(the best, or last, weights with everything inference needs) at the end. All writes are atomic.

Determinism: the model is initialised from ``seed``; each epoch's case order and each sample's crop and
augmentation are drawn from generators seeded by (seed, epoch, position) only, and the global RNGs are
re-seeded from (seed, epoch) at the start of each epoch. A run resumed from ``last.pt`` therefore redoes
exactly what the uninterrupted run did (bit for bit on CPU), and every DDP rank draws the same augmentation
for the same sample as a single process would.
"""

from __future__ import annotations

import json
import math
import os
import random
import sys
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
from torch import nn

from ..io import save_figure, write_text
from ..nets import network_spec
from .checkpoint import load_checkpoint, rng_state, save_checkpoint
from .config import ConfigError, load_config
from .data import (
    DatasetError,
    Manifest,
    VolumeDataset,
    epoch_order,
    load_manifest,
    split_cases,
    training_batch,
)
from .device import amp_dtype, autocast, select_device
from .inference import predict_logits

ProgressCallback = Callable[[dict[str, Any]], None]
StopFlag = threading.Event | Callable[[], bool] | Any


class TrainingStopped(Exception):
    """Raised internally when the stop flag is set; :func:`train` returns normally with ``stopped=True``."""


@dataclass
class TrainResult:
    """What a run produced. ``history`` holds one dict per epoch (the lines of ``metrics.jsonl``)."""

    output_dir: Path
    model_path: Path | None
    history: list[dict[str, Any]] = field(default_factory=list)
    best_epoch: int | None = None
    stopped: bool = False
    early_stopped: bool = False
    epochs_done: int = 0
    #: the trained network (last epoch's weights, in this process; under DDP the unwrapped module)
    model: nn.Module | None = field(default=None, repr=False)


# ------------------------------------------------------------------------------------------- helpers
def _is_set(stop: StopFlag) -> bool:
    if stop is None:
        return False
    if callable(stop) and not hasattr(stop, "is_set"):
        return bool(stop())
    return bool(stop.is_set())


def seed_everything(seed: int) -> None:
    """Seed Python, numpy and torch (all devices)."""
    random.seed(seed)
    np.random.seed(seed % (2**32))  # noqa: NPY002 (user code may rely on the legacy global state)
    torch.manual_seed(seed)


def _atomic_text(path: Path, text: str) -> None:
    write_text(path, text)


def build_loss(loss_config: Mapping[str, Any], label_sets: Mapping[int, list[int]] | None) -> nn.Module:
    """The loss named in the config, built through :func:`losslab.losses.get_loss` only.

    When the dataset declares ``label_sets`` (partial annotations) and the loss (or a term of a compound
    loss) takes a ``label_sets`` option that the config leaves out, the manifest's map is passed in.
    """
    from ..losses import available_losses, get_loss

    infos = available_losses()
    name = loss_config["name"]
    if name not in infos:
        raise ConfigError(f"config key 'loss.name': unknown loss {name!r}; available losses: {sorted(infos)}")
    options = dict(loss_config.get("options") or {})
    if label_sets:
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


def dice_per_class(
    prediction: torch.Tensor, label: torch.Tensor, num_classes: int, label_sets: Mapping[int, list[int]]
) -> list[float]:
    """Hard Dice of each foreground class ``1..K-1`` for one case (NaN when the class is absent from both,
    or when the case leaves it unannotated: a set label containing it appears in ``label``)."""
    present = set(torch.unique(label).tolist())
    unannotated = {leaf for s, leaves in label_sets.items() if s in present for leaf in leaves}
    out = []
    for c in range(1, num_classes):
        if c in unannotated:
            out.append(float("nan"))
            continue
        p, t = prediction == c, label == c
        denom = int(p.sum()) + int(t.sum())
        out.append(float("nan") if denom == 0 else 2.0 * int((p & t).sum()) / denom)
    return out


def _nanmean(values: Iterable[float]) -> float | None:
    vals = [v for v in values if v is not None and not math.isnan(v)]
    return float(sum(vals) / len(vals)) if vals else None


def _grad_scaler():
    """fp16 gradient scaler (``torch.amp.GradScaler`` from torch 2.3, ``torch.cuda.amp`` before)."""
    if hasattr(torch.amp, "GradScaler"):
        return torch.amp.GradScaler("cuda")
    return torch.cuda.amp.GradScaler()


def _distributed(device_name: str) -> tuple[int, int, int, bool]:
    """(rank, world size, local rank, created): joins or creates the process group from torchrun's
    environment (NCCL when the run uses CUDA, else gloo)."""
    created = False
    if dist.is_available() and not dist.is_initialized() and int(os.environ.get("WORLD_SIZE", "1")) > 1:
        use_nccl = torch.cuda.is_available() and device_name != "cpu" and not device_name.startswith("mps")
        dist.init_process_group(backend="nccl" if use_nccl else "gloo")
        created = True
    if dist.is_available() and dist.is_initialized():
        rank = dist.get_rank()
        return rank, dist.get_world_size(), int(os.environ.get("LOCAL_RANK", rank)), created
    return 0, 1, 0, False


class _Reporter:
    """Progress: the callback when given, else a tqdm bar on an interactive terminal."""

    def __init__(self, callback: ProgressCallback | None, enabled: bool, total_steps: int, initial: int):
        self.callback = callback
        self.bar = None
        if enabled and callback is None and sys.stderr.isatty():
            from tqdm.auto import tqdm

            self.bar = tqdm(total=total_steps, initial=initial, unit="batch", dynamic_ncols=True)
        self.enabled = enabled

    def __call__(self, event: dict[str, Any]) -> None:
        if not self.enabled:
            return
        if self.bar is not None:
            if event["event"] == "batch":
                self.bar.update(1)
                self.bar.set_postfix(epoch=event["epoch"], loss=f"{event['loss']:.4f}")
            elif event["event"] == "epoch":
                dice = event.get("val_dice_mean")
                self.bar.write(
                    f"epoch {event['epoch']}: train {event['train_loss']:.4f}"
                    + (f", val {event['val_loss']:.4f}" if event.get("val_loss") is not None else "")
                    + (f", dice {dice:.3f}" if dice is not None else "")
                    + f", {event['time_s']:.1f} s"
                )
        if self.callback is not None:
            self.callback(event)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


def plot_curves(history: list[dict[str, Any]], path: Path, labels: list[str]) -> None:
    """Write the loss, Dice and learning-rate curves as one PNG (atomically)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(13, 4), dpi=80)
    FigureCanvasAgg(fig)
    ax_loss, ax_dice, ax_lr = fig.subplots(1, 3)
    epochs = [h["epoch"] for h in history]
    ax_loss.plot(epochs, [h["train_loss"] for h in history], label="train")
    val = [(h["epoch"], h["val_loss"]) for h in history if h.get("val_loss") is not None]
    if val:
        ax_loss.plot(*zip(*val), label="validation")
    ax_loss.set(title="loss", xlabel="epoch")
    ax_loss.legend()
    for name in labels[1:]:
        pts = [
            (h["epoch"], h["val_dice"][name]) for h in history if h.get("val_dice", {}).get(name) is not None
        ]
        if pts:
            ax_dice.plot(*zip(*pts), label=name)
    ax_dice.set(title="validation Dice", xlabel="epoch", ylim=(0, 1))
    if len(labels) > 1 and ax_dice.lines:
        ax_dice.legend(fontsize="small")
    ax_lr.plot(epochs, [h["lr"] for h in history])
    ax_lr.set(title="learning rate", xlabel="epoch", yscale="log")
    fig.tight_layout()
    save_figure(fig, path)


# ------------------------------------------------------------------------------------------- training
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


def _resolve_network(config: dict[str, Any], manifest: Manifest) -> dict[str, Any]:
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


def train(
    config: str | os.PathLike | Mapping[str, Any],
    overrides: Iterable[str] = (),
    *,
    resume: bool = False,
    progress: ProgressCallback | None = None,
    stop: StopFlag = None,
) -> TrainResult:
    """Train one model as the config says.

    Args:
        config: path of a JSON / YAML config, or a config dict (see ``docs/engine.md``).
        overrides: ``key.sub=value`` strings applied on top (e.g. ``["epochs=3", "optimizer.lr=1e-3"]``).
        resume: continue from ``output_dir/checkpoints/last.pt`` (a fresh start when it does not exist).
        progress: called with event dicts: ``{"event": "start", "epochs", "steps_per_epoch", ...}``,
            ``{"event": "batch", "epoch", "step", "steps", "loss"}``, ``{"event": "epoch", <metrics>}``,
            ``{"event": "end", "model_path", "stopped", "early_stopped", "best_epoch"}``.
        stop: a ``threading.Event`` / ``multiprocessing.Event`` (or a callable returning bool) checked after
            every batch; when set, training stops, keeping the last completed epoch's checkpoint, and the
            result has ``stopped=True``. ``--resume`` later continues from there.

    Under ``torchrun`` (or an initialised process group) each rank trains on its part of every global batch
    (``batch_size`` samples per rank) with DistributedDataParallel; rank 0 writes the files.

    Raises:
        ConfigError / DatasetError (ValueError): an invalid config or dataset, naming the key or the case.
        FileNotFoundError: the config, manifest or a data file is missing.
    """
    cfg = load_config(config, overrides)
    rank, world, local_rank, created_group = _distributed(cfg["device"])
    try:
        return _train(cfg, rank, world, local_rank, resume, progress, stop)
    finally:
        if created_group:
            dist.destroy_process_group()


def _train(cfg, rank, world, local_rank, resume, progress, stop) -> TrainResult:
    main = rank == 0
    out_dir = Path(cfg["output_dir"])
    ckpt_dir = out_dir / "checkpoints"
    device = select_device(cfg["device"], local_rank)
    dtype = amp_dtype(device, cfg["amp"])
    scaler = _grad_scaler() if dtype == torch.float16 else None
    if device.type == "cuda":
        torch.cuda.set_device(device)
        torch.backends.cudnn.benchmark = not cfg["deterministic"]
        torch.backends.cudnn.deterministic = cfg["deterministic"]

    manifest = load_manifest(cfg["data"]["manifest"])
    split_seed = cfg["data"]["split_seed"] if cfg["data"]["split_seed"] is not None else cfg["seed"]
    train_ids, val_ids = split_cases(
        manifest,
        cfg["data"]["train_split"],
        cfg["data"]["val_split"],
        cfg["data"]["val_fraction"],
        split_seed,
    )
    spec = _resolve_network(cfg, manifest)
    train_set = VolumeDataset(manifest, train_ids, cfg["data"]["normalize"], cfg["data"]["cache"])
    val_set = VolumeDataset(manifest, val_ids, cfg["data"]["normalize"], cfg["data"]["cache"])
    loss_fn = build_loss(cfg["loss"], manifest.label_sets).to(device)
    loss_inputs = {kw: manifest.channel_index(ch) for kw, ch in cfg["loss"]["inputs"].items()}

    patch = cfg["data"]["patch_size"]
    if patch is None:
        shapes = [tuple(train_set[i]["image"].shape[1:]) for i in range(len(train_set))]
        patch = [max(s[a] for s in shapes) for a in range(len(shapes[0]))]
    dims = int(spec.get("spatial_dims", 3))
    if len(patch) != dims:
        raise ConfigError(f"config key 'data.patch_size' has {len(patch)} axes; the network is {dims}D")
    info = model_info(cfg, manifest, spec, patch)

    seed_everything(cfg["seed"])
    from ..nets import UNet

    model = UNet(**spec).to(device)
    memory_format = torch.contiguous_format
    if cfg["channels_last"] and dims == 3 and device.type in ("cpu", "cuda"):
        memory_format = torch.channels_last_3d
        model = model.to(memory_format=memory_format)
    optimizer = build_optimizer(cfg, model.parameters())
    scheduler = build_scheduler(cfg, optimizer)
    history: list[dict[str, Any]] = []
    start_epoch = 0
    best = {"epoch": None, "value": None, "since": 0}
    es_monitor = cfg["early_stopping"]["monitor"]

    last_path = ckpt_dir / "last.pt"
    if resume and last_path.is_file():
        state = load_checkpoint(last_path)
        if state["model_info"]["network"] != info["network"]:
            raise ConfigError(
                f"cannot resume from {str(last_path)!r}: it holds network {state['model_info']['network']}, "
                f"the config asks for {info['network']}"
            )
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        if scheduler is not None and state.get("scheduler"):
            scheduler.load_state_dict(state["scheduler"])
        if scaler is not None and state.get("scaler"):
            scaler.load_state_dict(state["scaler"])
        history = list(state["history"])
        best = dict(state["best"])
        start_epoch = int(state["epoch"])
        if main:  # the checkpoint's history is the truth: drop lines of an epoch the kill interrupted
            _atomic_text(out_dir / "metrics.jsonl", "".join(json.dumps(h) + "\n" for h in history))
    elif main:
        out_dir.mkdir(parents=True, exist_ok=True)
        if (out_dir / "metrics.jsonl").exists():
            (out_dir / "metrics.jsonl").unlink()

    net: nn.Module = model
    if world > 1:
        net = nn.parallel.DistributedDataParallel(
            model,
            device_ids=[device.index] if device.type == "cuda" else None,
            gradient_as_bucket_view=True,  # no gradient copies (and no stride warnings with channels-last)
        )

    batch, global_batch = cfg["batch_size"], cfg["batch_size"] * world
    steps = math.ceil(len(train_set) / global_batch)
    aug = cfg["augmentation"] if cfg["augmentation"]["enabled"] else None
    report = _Reporter(progress, main, steps * cfg["epochs"], steps * start_epoch)
    report(
        {
            "event": "start",
            "epochs": cfg["epochs"],
            "start_epoch": start_epoch,
            "steps_per_epoch": steps,
            "train_cases": len(train_ids),
            "val_cases": len(val_ids),
            "device": str(device),
            "world_size": world,
            "output_dir": str(out_dir),
        }
    )
    result = TrainResult(out_dir, None, history, best["epoch"], epochs_done=start_epoch, model=model)
    try:
        for epoch in range(start_epoch, cfg["epochs"]):
            if cfg["early_stopping"]["patience"] and best["since"] >= cfg["early_stopping"]["patience"]:
                result.early_stopped = True
                break
            t0 = time.perf_counter()
            seed_everything(cfg["seed"] * 100_003 + epoch)
            net.train()
            order = epoch_order(len(train_set), cfg["seed"], epoch, global_batch if world > 1 else 1)
            total, count = torch.zeros((), device=device), 0
            for step in range(steps):
                lo = step * global_batch + rank * batch
                positions = [p for p in range(lo, lo + batch) if p < len(order)]
                images, labels = training_batch(
                    train_set, positions, order, patch, aug, cfg["seed"], epoch, device=device
                )
                images = images.to(device, non_blocking=True).contiguous(memory_format=memory_format)
                labels = labels.to(device, non_blocking=True)
                optimizer.zero_grad(set_to_none=True)
                with autocast(device, dtype):
                    logits = net(images)
                extra = {kw: images[:, c] for kw, c in loss_inputs.items()}
                loss = loss_fn(logits.float(), labels, **extra)
                if not torch.isfinite(loss):
                    raise FloatingPointError(
                        f"the training loss became {loss.item()} at epoch {epoch + 1}, step {step + 1}; "
                        f"lower optimizer.lr (now {optimizer.param_groups[0]['lr']}) or check the data"
                    )
                if scaler is not None:
                    scaler.scale(loss).backward()
                    scaler.step(optimizer)
                    scaler.update()
                else:
                    loss.backward()
                    optimizer.step()
                total += loss.detach()
                count += 1
                report(
                    {
                        "event": "batch",
                        "epoch": epoch + 1,
                        "step": step + 1,
                        "steps": steps,
                        "loss": float(loss.detach()),
                    }
                )
                if _is_set(stop):
                    raise TrainingStopped
            if world > 1:
                dist.all_reduce(total)
                total /= world
            record: dict[str, Any] = {
                "epoch": epoch + 1,
                "train_loss": float(total) / max(count, 1),
                "lr": float(optimizer.param_groups[0]["lr"]),
            }
            if val_ids and (epoch + 1) % cfg["val_every"] == 0:
                record.update(_validate(model, val_set, loss_fn, loss_inputs, manifest, cfg, device, dtype))
            record["time_s"] = time.perf_counter() - t0
            improved = _update_best(best, record, es_monitor, cfg["early_stopping"]["min_delta"])
            if scheduler is not None:
                monitored = record.get(
                    cfg["scheduler"]["monitor"]
                    if cfg["scheduler"]["monitor"] != "val_dice"
                    else "val_dice_mean"
                )
                if monitored is not None:
                    scheduler.step(monitored)
            history.append(record)
            result.epochs_done = epoch + 1
            if main:
                payload = {
                    "model": model.state_dict(),
                    "optimizer": optimizer.state_dict(),
                    "scheduler": scheduler.state_dict() if scheduler is not None else None,
                    "scaler": scaler.state_dict() if scaler is not None else None,
                    "config": cfg,
                    "model_info": info,
                    "epoch": epoch + 1,
                    "history": history,
                    "best": best,
                    "metrics": record,
                    "rng": rng_state(),
                }
                with open(out_dir / "metrics.jsonl", "a", encoding="utf-8") as handle:
                    handle.write(json.dumps(record) + "\n")
                save_checkpoint(last_path, payload)
                if improved:
                    save_checkpoint(ckpt_dir / "best.pt", payload)
                every = cfg["plot_every"]
                if (every and (epoch + 1) % every == 0) or epoch + 1 == cfg["epochs"]:
                    plot_curves(history, out_dir / "curves.png", manifest.labels)
            report({"event": "epoch", "epochs": cfg["epochs"], "improved": improved, **record})
    except TrainingStopped:
        result.stopped = True
    finally:
        report.close()
    result.best_epoch = best["epoch"]
    if main and history and (result.stopped or result.early_stopped) and cfg["plot_every"] != 1:
        plot_curves(history, out_dir / "curves.png", manifest.labels)
    if not result.stopped and main:
        source = ckpt_dir / ("best.pt" if best["epoch"] is not None else "last.pt")
        state = load_checkpoint(source)
        final = {k: state[k] for k in ("model", "config", "model_info", "epoch", "history", "metrics")}
        final["history"] = history
        result.model_path = save_checkpoint(out_dir / "model.pt", final)
        _atomic_text(
            out_dir / "summary.json",
            json.dumps(
                {
                    "model": "model.pt",
                    "weights_epoch": int(state["epoch"]),
                    "best_epoch": best["epoch"],
                    "epochs_done": result.epochs_done,
                    "early_stopped": result.early_stopped,
                    "final_metrics": history[-1] if history else None,
                },
                indent=2,
            ),
        )
    report_end = {
        "event": "end",
        "model_path": str(result.model_path) if result.model_path else None,
        "stopped": result.stopped,
        "early_stopped": result.early_stopped,
        "best_epoch": result.best_epoch,
        "epochs_done": result.epochs_done,
    }
    if main and progress is not None:
        progress(report_end)
    return result


def _update_best(best: dict[str, Any], record: dict[str, Any], monitor: str, min_delta: float) -> bool:
    key = "val_dice_mean" if monitor == "val_dice" else "val_loss"
    value = record.get(key)
    if value is None:  # no validation this epoch: patience counts validated epochs only
        return False
    better = best["value"] is None or (
        value > best["value"] + min_delta if monitor == "val_dice" else value < best["value"] - min_delta
    )
    if better:
        best.update(epoch=record["epoch"], value=value, since=0)
    else:
        best["since"] += 1
    return better


def _validate(model, val_set, loss_fn, loss_inputs, manifest, cfg, device, dtype) -> dict[str, Any]:
    model.eval()
    losses, dices = [], []
    window, overlap = cfg["inference"]["window"], cfg["inference"]["overlap"]
    with torch.no_grad():
        for i in range(len(val_set)):
            sample = val_set[i]
            image = sample["image"][None].to(device)
            if cfg["channels_last"] and image.ndim == 5 and device.type in ("cpu", "cuda"):
                image = image.contiguous(memory_format=torch.channels_last_3d)
            label = sample["label"][None].to(device)
            logits = predict_logits(model, image, window, overlap, dtype)
            extra = {kw: image[:, c] for kw, c in loss_inputs.items()}
            losses.append(float(loss_fn(logits, label, **extra)))
            prediction = logits.argmax(1) if logits.shape[1] > 1 else (logits[:, 0] > 0).long()
            dices.append(dice_per_class(prediction[0], label[0], manifest.num_classes, manifest.label_sets))
    per_class = {name: _nanmean(d[c] for d in dices) for c, name in enumerate(manifest.labels[1:])}
    return {
        "val_loss": float(np.mean(losses)),
        "val_dice": per_class,
        "val_dice_mean": _nanmean(per_class.values()),
    }


def ensemble_configs(config: Mapping[str, Any]) -> list[dict[str, Any]]:
    """The configs of an ensemble's members: member ``k`` gets seed ``seed + k``, its own random validation
    split (when the manifest has no fixed one) and ``output_dir/member{k}``."""
    base = dict(config)
    members = []
    for k in range(base["ensemble"]["members"]):
        member = json.loads(json.dumps(base))
        member["seed"] = base["seed"] + k
        if base["data"]["split_seed"] is not None:
            member["data"]["split_seed"] = base["data"]["split_seed"] + k
        member["output_dir"] = str(Path(base["output_dir"]) / f"member{k}")
        member["ensemble"] = {"members": 1, "member": None}
        members.append(member)
    return members


def write_ensemble_index(output_dir: str | os.PathLike, members: int) -> Path:
    """Write ``output_dir/ensemble.json`` naming ``member{k}/model.pt`` (the folder ``infer`` loads)."""
    path = Path(output_dir) / "ensemble.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    _atomic_text(path, json.dumps({"members": [f"member{k}/model.pt" for k in range(members)]}, indent=2))
    return path


def train_ensemble(
    config: str | os.PathLike | Mapping[str, Any],
    overrides: Iterable[str] = (),
    *,
    resume: bool = False,
    progress: ProgressCallback | None = None,
    stop: StopFlag = None,
) -> list[TrainResult]:
    """Train the ``ensemble.members`` members of a config one after the other (or only ``ensemble.member``).

    Each member is an independent run (:func:`ensemble_configs`); to use several GPUs, start one process
    per member with ``ensemble.member=k device=cuda:k``. ``output_dir/ensemble.json`` lists the members, so
    ``output_dir`` is the model folder that :func:`load_predictor` and ``losslab infer`` take.
    """
    cfg = load_config(config, overrides)
    members = ensemble_configs(cfg)
    chosen = range(len(members)) if cfg["ensemble"]["member"] is None else [cfg["ensemble"]["member"]]
    results = []
    write_ensemble_index(cfg["output_dir"], len(members))
    for k in chosen:

        def tagged(event, k=k):
            progress({**event, "member": k, "members": len(members)})

        result = train(members[k], resume=resume, progress=tagged if progress else None, stop=stop)
        results.append(result)
        if result.stopped:
            break
    return results


def run(
    config: str | os.PathLike | Mapping[str, Any],
    overrides: Iterable[str] = (),
    **kwargs: Any,
) -> list[TrainResult]:
    """Train a single model or an ensemble, as ``ensemble.members`` says (what ``losslab train`` does)."""
    cfg = load_config(config, overrides)
    if cfg["ensemble"]["members"] > 1:
        return train_ensemble(cfg, **kwargs)
    return [train(cfg, **kwargs)]


__all__ = [
    "DatasetError",
    "TrainResult",
    "build_loss",
    "dice_per_class",
    "ensemble_configs",
    "run",
    "train",
    "train_ensemble",
]
