"""Config-driven training: one run, resumable, on CUDA / MPS / CPU, alone or under torch.distributed.

>>> from losslab.engine import train
>>> result = train("config.json", overrides=["epochs=3"], progress=print)
>>> result.model_path                                   # output_dir/model.pt (best validation epoch)

Every epoch writes (rank 0 only) ``metrics.jsonl`` (one JSON object per epoch), ``curves.png`` (losses, Dice,
learning rate) and ``checkpoints/last.pt``; ``checkpoints/best.pt`` when validation improves; ``model.pt``
(the best, or last, weights with everything inference needs) at the end. All writes are atomic.

The run folder: a new run refuses an ``output_dir`` that already holds a run unless ``overwrite``; even then
nothing of the old run is touched until the new run has completed its first epoch (the files are then
replaced, and the old run's files that the new run has not written yet are removed), so a run that fails at
its start (bad data, a diverging loss in epoch 1, Ctrl-C) leaves the old run whole. ``resume`` needs
``checkpoints/last.pt``.

Divergence (:func:`check_divergence`): training stops with :class:`TrainingDiverged` (a ``ValueError``:
exit code 2 on the command line) when a batch's loss is NaN or infinite, when the network's outputs reach
``|logit| > LOGIT_LIMIT`` (1e4; softmax and sigmoid saturate near 40 in float32, so no working training gets
there), or when a batch's loss exceeds ``LOSS_GROWTH`` (1000) times the magnitude of the run's first batch
loss (kept in the checkpoints, so a resumed run compares with the same reference). The bad step is not
taken and no file of that epoch is written.

Determinism: the model is initialised from ``seed``; each epoch's case order and each sample's crop and
augmentation are drawn from generators seeded by (seed, epoch, position) only, and the global RNGs are
re-seeded from (seed, epoch) at the start of each epoch. A run resumed from ``last.pt`` therefore redoes
exactly what the uninterrupted run did (bit for bit on CPU), and every DDP rank draws the same augmentation
for the same sample as a single process would.

The code is split by job: :mod:`.builders` (loss, optimizer, scheduler, network), :mod:`.reporting`
(progress, curves), :mod:`.checkpoint` (checkpoints, the run folder); this module holds the loop of one run.
:mod:`.ensemble` sits above it (members, ``ensemble.json``, and :func:`~losslab.engine.ensemble.run`, which
trains one model or an ensemble as the config says); nothing here imports it.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import random
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

from ..io import folder_lock, json_ready, write_text
from .builders import (
    build_loss,
    build_optimizer,
    build_scheduler,
    grad_scaler,
    model_info,
    resolve_network,
)
from .checkpoint import (
    check_resumable,
    check_resume_settings,
    check_run_folder,
    load_checkpoint,
    rng_state,
    run_files,
    save_checkpoint,
)
from .config import DEFAULTS, ConfigError, load_config
from .data import (
    DatasetError,
    Manifest,
    VolumeDataset,
    check_cases,
    epoch_order,
    load_manifest,
    split_cases,
    training_batch,
)
from .device import amp_dtype, autocast, select_device
from .inference import predict_logits
from .reporting import ProgressCallback, Reporter, plot_curves

StopFlag = threading.Event | Callable[[], bool] | Any

#: a network output beyond this magnitude means the weights have blown up (see the module docstring)
LOGIT_LIMIT = 1e4
#: a batch loss above this many times the magnitude of the run's first batch loss means divergence
LOSS_GROWTH = 1000.0
#: below this magnitude, the first batch loss is no reference (the growth rule is skipped)
_TINY_REFERENCE = 1e-6


class TrainingStopped(Exception):
    """Raised internally when the stop flag is set; :func:`train` returns normally with ``stopped=True``."""


class TrainingDiverged(ValueError, FloatingPointError):
    """The training loss or the network's outputs diverged (a ``ValueError``, and a ``FloatingPointError``
    as the NaN check raised before): lower the learning rate or check the data."""


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


def check_divergence(
    loss: float, peak_logit: float, reference: float | None, *, where: str, lr: float
) -> None:
    """Raise :class:`TrainingDiverged` when a batch shows divergence (the rule of the module docstring).

    Args:
        loss: the batch's loss.
        peak_logit: the largest ``|logit|`` of the batch's network output.
        reference: the run's first batch loss (None: this is the first batch).
        where: ``"epoch E, step S"`` for the message.
        lr: the current learning rate, for the message.
    """
    hint = f"lower optimizer.lr (now {lr:g}) or check the data"
    if not math.isfinite(loss):
        raise TrainingDiverged(f"training diverged at {where}: the loss became {loss}; {hint}")
    if not peak_logit <= LOGIT_LIMIT:  # also NaN
        raise TrainingDiverged(
            f"training diverged at {where}: the network's outputs reached |logit| = {peak_logit:.3g} "
            f"(limit {LOGIT_LIMIT:g}; softmax saturates near 40), loss {loss:.4g}; {hint}"
        )
    if reference is not None and abs(reference) > _TINY_REFERENCE and loss > LOSS_GROWTH * abs(reference):
        raise TrainingDiverged(
            f"training diverged at {where}: the loss {loss:.4g} is over {LOSS_GROWTH:g} times the run's "
            f"first batch loss {reference:.4g}; {hint}"
        )


def guarded_step(run: Any, loss: torch.Tensor, logits: torch.Tensor, where: str) -> float:
    """One optimiser step on a batch's loss, after the divergence rule (:func:`check_divergence`) on the loss and
    the logits; through ``run.scaler`` when it has one; the first step's loss becomes ``run.first_loss`` (the
    rule's reference). ``run``: anything with ``optimizer``, ``scaler`` and ``first_loss`` (the engine's and
    ``losslab ice train``'s runs). Returns the loss's value."""
    value = float(loss.detach())
    low, high = torch.aminmax(logits.detach())  # no |logits|-sized temporary
    check_divergence(
        value,
        float(torch.maximum(-low, high)),  # NaN propagates
        run.first_loss,
        where=where,
        lr=run.optimizer.param_groups[0]["lr"],
    )
    if run.first_loss is None:
        run.first_loss = value
    if run.scaler is not None:
        run.scaler.scale(loss).backward()
        run.scaler.step(run.optimizer)
        run.scaler.update()
    else:
        loss.backward()
        run.optimizer.step()
    return value


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


# ------------------------------------------------------------------------------------------- training
def train(
    config: str | os.PathLike | Mapping[str, Any],
    overrides: Iterable[str] = (),
    *,
    resume: bool = False,
    overwrite: bool = False,
    progress: ProgressCallback | None = None,
    stop: StopFlag = None,
) -> TrainResult:
    """Train one model as the config says.

    Args:
        config: path of a JSON / YAML config, or a config dict (see ``docs/engine.md``).
        overrides: ``key.sub=value`` strings applied on top (e.g. ``["epochs=3", "optimizer.lr=1e-3"]``).
        resume: continue from ``output_dir/checkpoints/last.pt`` (which must exist).
        overwrite: replace a run that ``output_dir`` already holds (refused otherwise); the old files are
            replaced only once the new run has completed its first epoch.
        progress: called with event dicts: ``{"event": "start", "epochs", "steps_per_epoch", ...}``,
            ``{"event": "batch", "epoch", "step", "steps", "loss"}``, ``{"event": "epoch", <metrics>}``,
            ``{"event": "end", "model_path", "stopped", "early_stopped", "best_epoch"}``. Without it, a
            tqdm bar on a terminal, else one line per epoch on stderr.
        stop: a ``threading.Event`` / ``multiprocessing.Event`` (or a callable returning bool) checked after
            every batch; when set, training stops, keeping the last completed epoch's checkpoint, and the
            result has ``stopped=True``. ``--resume`` later continues from there.

    Under ``torchrun`` (or an initialised process group) each rank trains on its part of every global batch
    (``batch_size`` samples per rank) with DistributedDataParallel; rank 0 writes the files.

    Raises:
        ConfigError / DatasetError (ValueError): an invalid config or dataset, naming the key or the case.
        RunFolderError (ValueError): ``output_dir`` holds a run (without ``overwrite``), or none to resume.
        TrainingDiverged (ValueError): the loss or the network's outputs diverged.
        FileNotFoundError: the config, manifest or a data file is missing.
    """
    cfg = load_config(config, overrides)
    check_run_folder(cfg["output_dir"], resume=resume, overwrite=overwrite)
    # one writer per run folder: a second run into the same output_dir is refused, not mixed in (rank 0
    # writes the files; under torchrun a refused rank 0 ends the job)
    busy = "another training run is writing this output_dir now"
    writer = int(os.environ.get("RANK", "0")) == 0
    with folder_lock(cfg["output_dir"], busy) if writer else contextlib.nullcontext():
        check_run_folder(cfg["output_dir"], resume=resume, overwrite=overwrite)  # again, now that it is ours
        rank, world, local_rank, created_group = _distributed(cfg["device"])
        try:
            return _train(cfg, rank, world, local_rank, resume, progress, stop)
        finally:
            if created_group:
                dist.destroy_process_group()


@dataclass
class _Run:
    """Everything one run is made of (built by :func:`_build`, advanced by :func:`_train_epoch`)."""

    cfg: dict[str, Any]
    rank: int
    world: int
    device: torch.device
    dtype: torch.dtype | None
    scaler: Any
    out_dir: Path
    manifest: Manifest
    train_ids: list[str]
    val_ids: list[str]
    train_set: VolumeDataset
    val_set: VolumeDataset
    loss_fn: nn.Module
    loss_inputs: dict[str, int]
    patch: list[int]
    info: dict[str, Any]
    model: nn.Module
    optimizer: torch.optim.Optimizer
    scheduler: Any
    memory_format: torch.memory_format
    net: nn.Module | None = None
    history: list[dict[str, Any]] = field(default_factory=list)
    start_epoch: int = 0
    best: dict[str, Any] = field(default_factory=lambda: {"epoch": None, "value": None, "since": 0})
    first_loss: float | None = None  # the run's first batch loss: the divergence reference
    replacing: bool = True  # no file of this run written yet (a previous run's files stay until then)

    @property
    def main(self) -> bool:
        return self.rank == 0

    @property
    def ckpt_dir(self) -> Path:
        return self.out_dir / "checkpoints"


def _build(cfg: dict[str, Any], rank: int, world: int, local_rank: int) -> _Run:
    """Device, data, loss, network, optimizer and scheduler of a run; writes nothing."""
    device = select_device(cfg["device"], local_rank)
    dtype = amp_dtype(device, cfg["amp"])
    scaler = grad_scaler() if dtype == torch.float16 else None
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
        keep_in_train=cfg["data"]["keep_in_train"],
    )
    spec = resolve_network(cfg, manifest)
    train_set = VolumeDataset(manifest, train_ids, cfg["data"]["normalize"], cfg["data"]["cache"])
    val_set = VolumeDataset(manifest, val_ids, cfg["data"]["normalize"], cfg["data"]["cache"])
    check_cases(train_set, val_set)
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
    return _Run(
        cfg,
        rank,
        world,
        device,
        dtype,
        scaler,
        Path(cfg["output_dir"]),
        manifest,
        train_ids,
        val_ids,
        train_set,
        val_set,
        loss_fn,
        loss_inputs,
        list(patch),
        info,
        model,
        optimizer,
        scheduler,
        memory_format,
    )


def _restore(run: _Run) -> None:
    """Continue from ``checkpoints/last.pt``: weights, optimizer, scheduler, scaler, history, best epoch."""
    last_path = run.ckpt_dir / "last.pt"
    state = load_checkpoint(last_path)
    check_resumable(state, last_path)
    if state["model_info"]["network"] != run.info["network"]:
        raise ConfigError(
            f"cannot resume from {str(last_path)!r}: it holds network {state['model_info']['network']}, "
            f"the config asks for {run.info['network']}"
        )
    saved_opt = (state.get("config") or {}).get("optimizer", {}).get("name")
    if saved_opt is not None and saved_opt != run.cfg["optimizer"]["name"]:
        raise ConfigError(
            f"cannot resume from {str(last_path)!r}: it was trained with optimizer.name={saved_opt!r}, "
            f"the config asks for {run.cfg['optimizer']['name']!r}"
        )
    check_resume_settings(state.get("config"), run.cfg, last_path, defaults=DEFAULTS)
    run.model.load_state_dict(state["model"])
    try:
        run.optimizer.load_state_dict(state["optimizer"])
    except (ValueError, KeyError) as exc:
        raise ValueError(
            f"cannot resume from {str(last_path)!r}: its optimizer state does not fit ({exc})"
        ) from None
    if run.scheduler is not None and state.get("scheduler"):
        run.scheduler.load_state_dict(state["scheduler"])
    if run.scaler is not None and state.get("scaler"):
        run.scaler.load_state_dict(state["scaler"])
    run.history = list(state["history"])
    run.best = dict(state["best"])
    run.start_epoch = int(state["epoch"])
    run.first_loss = state.get("first_loss")
    run.replacing = False
    if run.main:  # the checkpoint's history is the truth: drop lines of an epoch the kill interrupted
        _write_metrics(run)


def _write_metrics(run: _Run) -> None:
    text = "".join(json.dumps(json_ready(h), allow_nan=False) + "\n" for h in run.history)
    path = run.out_dir / "metrics.jsonl"
    if not path.is_file() or path.read_text(encoding="utf-8") != text:
        _atomic_text(path, text)


def _train_epoch(run: _Run, epoch: int, steps: int, report: Reporter, stop: StopFlag) -> dict[str, Any]:
    """One epoch of training (the record's ``epoch``, ``train_loss`` and ``lr``). Raises
    :class:`TrainingStopped` after the batch during which ``stop`` was set."""
    cfg, device = run.cfg, run.device
    batch, global_batch = cfg["batch_size"], cfg["batch_size"] * run.world
    aug = cfg["augmentation"] if cfg["augmentation"]["enabled"] else None
    seed_everything(cfg["seed"] * 100_003 + epoch)
    run.net.train()
    order = epoch_order(len(run.train_set), cfg["seed"], epoch, global_batch if run.world > 1 else 1)
    total, count = torch.zeros((), device=device), 0
    for step in range(steps):
        lo = step * global_batch + run.rank * batch
        positions = [p for p in range(lo, lo + batch) if p < len(order)]
        images, labels = training_batch(
            run.train_set, positions, order, run.patch, aug, cfg["seed"], epoch, device=device
        )
        images = images.to(device, non_blocking=True).contiguous(memory_format=run.memory_format)
        labels = labels.to(device, non_blocking=True)
        run.optimizer.zero_grad(set_to_none=True)
        with autocast(device, run.dtype):
            logits = run.net(images)
        extra = {kw: images[:, c] for kw, c in run.loss_inputs.items()}
        loss = run.loss_fn(logits.float(), labels, **extra)
        value = guarded_step(run, loss, logits, f"epoch {epoch + 1}, step {step + 1}")
        total += loss.detach()
        count += 1
        report({"event": "batch", "epoch": epoch + 1, "step": step + 1, "steps": steps, "loss": value})
        if _is_set(stop):
            raise TrainingStopped
    if run.world > 1:
        dist.all_reduce(total)
        total /= run.world
    return {
        "epoch": epoch + 1,
        "train_loss": float(total) / max(count, 1),
        "lr": float(run.optimizer.param_groups[0]["lr"]),
    }


def _write_epoch(run: _Run, record: dict[str, Any], improved: bool) -> None:
    """Rank 0: ``last.pt`` (and ``best.pt``), ``metrics.jsonl``, the curves when due. The first epoch of a
    new run then removes what a previous run left in ``output_dir`` (after, not before, the new files)."""
    if not run.main:
        return
    cfg, epoch = run.cfg, record["epoch"]
    payload = {
        "model": run.model.state_dict(),
        "optimizer": run.optimizer.state_dict(),
        "scheduler": run.scheduler.state_dict() if run.scheduler is not None else None,
        "scaler": run.scaler.state_dict() if run.scaler is not None else None,
        "config": cfg,
        "model_info": run.info,
        "epoch": epoch,
        "history": run.history,
        "best": run.best,
        "metrics": record,
        "rng": rng_state(),
        "first_loss": run.first_loss,
    }
    written = {"checkpoints/last.pt", "metrics.jsonl"} | ({"checkpoints/best.pt"} if improved else set())
    save_checkpoint(run.ckpt_dir / "last.pt", payload)
    if improved:
        save_checkpoint(run.ckpt_dir / "best.pt", payload)
    _write_metrics(run)
    if run.replacing:  # the old run's files the new run has not replaced: model.pt, summary.json, ...
        for path in run_files(run.out_dir):
            if path.relative_to(run.out_dir).as_posix() not in written:
                path.unlink()
        run.replacing = False
    every = cfg["plot_every"]
    if (every and epoch % every == 0) or epoch == cfg["epochs"]:
        plot_curves(run.history, run.out_dir / "curves.png", run.manifest.labels)


def _finish(run: _Run, result: TrainResult) -> None:
    """Rank 0, at the end of a run that was not stopped: ``model.pt`` (best or last weights) and
    ``summary.json``."""
    source = run.ckpt_dir / ("best.pt" if run.best["epoch"] is not None else "last.pt")
    state = load_checkpoint(source)
    final = {k: state[k] for k in ("model", "config", "model_info", "epoch", "history", "metrics")}
    final["history"] = run.history
    result.model_path = save_checkpoint(run.out_dir / "model.pt", final)
    _atomic_text(
        run.out_dir / "summary.json",
        json.dumps(
            {
                "model": "model.pt",
                "weights_epoch": int(state["epoch"]),
                "best_epoch": run.best["epoch"],
                "epochs_done": result.epochs_done,
                "early_stopped": result.early_stopped,
                "final_metrics": run.history[-1] if run.history else None,
            },
            indent=2,
        ),
    )


def _train(cfg, rank, world, local_rank, resume, progress, stop) -> TrainResult:
    run = _build(cfg, rank, world, local_rank)
    if resume:
        _restore(run)
    run.net = run.model
    if world > 1:
        run.net = nn.parallel.DistributedDataParallel(
            run.model,
            device_ids=[run.device.index] if run.device.type == "cuda" else None,
            gradient_as_bucket_view=True,  # no gradient copies (and no stride warnings with channels-last)
        )

    steps = math.ceil(len(run.train_set) / (cfg["batch_size"] * world))
    report = Reporter(progress, run.main, steps * cfg["epochs"], steps * run.start_epoch)
    report(
        {
            "event": "start",
            "epochs": cfg["epochs"],
            "start_epoch": run.start_epoch,
            "steps_per_epoch": steps,
            "train_cases": len(run.train_ids),
            "val_cases": len(run.val_ids),
            "device": str(run.device),
            "world_size": world,
            "output_dir": str(run.out_dir),
        }
    )
    es = cfg["early_stopping"]
    result = TrainResult(
        run.out_dir, None, run.history, run.best["epoch"], epochs_done=run.start_epoch, model=run.model
    )
    try:
        for epoch in range(run.start_epoch, cfg["epochs"]):
            if es["patience"] and run.best["since"] >= es["patience"]:
                result.early_stopped = True
                break
            t0 = time.perf_counter()
            record = _train_epoch(run, epoch, steps, report, stop)
            if run.val_ids and (epoch + 1) % cfg["val_every"] == 0:
                record.update(
                    _validate(
                        run.model,
                        run.val_set,
                        run.loss_fn,
                        run.loss_inputs,
                        run.manifest,
                        cfg,
                        run.device,
                        run.dtype,
                    )
                )
            record["time_s"] = time.perf_counter() - t0
            improved = _update_best(run.best, record, es["monitor"], es["min_delta"])
            if run.scheduler is not None:
                monitor = cfg["scheduler"]["monitor"]
                monitored = record.get(monitor if monitor != "val_dice" else "val_dice_mean")
                if monitored is not None:
                    run.scheduler.step(monitored)
            run.history.append(record)
            result.epochs_done = epoch + 1
            _write_epoch(run, record, improved)
            report({"event": "epoch", "epochs": cfg["epochs"], "improved": improved, **record})
    except TrainingStopped:
        result.stopped = True
    finally:
        report.close()
    result.best_epoch = run.best["epoch"]
    if run.main and not run.replacing and (result.stopped or result.early_stopped) and cfg["plot_every"] != 1:
        plot_curves(run.history, run.out_dir / "curves.png", run.manifest.labels)
    if not result.stopped and run.main:
        _finish(run, result)
    if run.main and progress is not None:
        progress(
            {
                "event": "end",
                "model_path": str(result.model_path) if result.model_path else None,
                "stopped": result.stopped,
                "early_stopped": result.early_stopped,
                "best_epoch": result.best_epoch,
                "epochs_done": result.epochs_done,
            }
        )
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


__all__ = [
    "LOGIT_LIMIT",
    "LOSS_GROWTH",
    "DatasetError",
    "TrainResult",
    "TrainingDiverged",
    "build_loss",
    "build_optimizer",
    "build_scheduler",
    "check_divergence",
    "dice_per_class",
    "guarded_step",
    "model_info",
    "plot_curves",
    "train",
]
