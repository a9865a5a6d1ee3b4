"""Training in a background process for the LossLab module: config, worker process, progress, curves.

Qt-free: :class:`TrainingJob` is a :class:`LossLabLib.jobs.SubprocessJob` running
``python -m losslab.engine.worker``: its JSON lines are read on reader threads (no blocking in the caller:
:meth:`TrainingJob.poll` returns what arrived) and it stops gracefully (a stop file plus SIGTERM, then a kill
after a timeout). In Slicer the Python executable
is ``PythonSlicer`` and the widget polls with a ``qt.QTimer``; in tests it is ``sys.executable``.

The per-epoch curves go to a MRML table node (:func:`curves_table`) and a plot chart (:func:`curves_chart`).

Example (Slicer's Python console)::

    from LossLabLib.training import TrainingJob, curves_table
    job = TrainingJob.create("/data/blobs", "/tmp/run", preset="ice_segmentation", loss="dice",
                             loss_options={"include_background": False}, epochs=5,
                             python_executable=shutil.which("PythonSlicer"))
    job.start()
    ...  # later, repeatedly:
    events = job.poll(); curves_table(slicer.mrmlScene, job.history, node=table)
"""

from __future__ import annotations

import json
import math
import os
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from . import mrml_io
from .jobs import SubprocessJob, python_command, wait_for

__all__ = [
    "DATASET_MANIFEST",
    "TrainingJob",
    "build_training_config",
    "curves_chart",
    "curves_rows",
    "curves_table",
    "find_manifest",
    "loss_names",
    "loss_options_text",
    "make_example_dataset",
    "network_presets",
    "parse_loss_options",
    "progress_fraction",
    "wait_for",
]

#: the manifest file name looked for in a dataset folder
DATASET_MANIFEST = "dataset.json"
CONFIG_NAME = "losslab-config.json"
STOP_NAME = "STOP"


def network_presets() -> list[str]:
    """Names of the network presets (:data:`losslab.nets.PRESETS`), for the module's preset menu."""
    from losslab.nets import available_presets

    return list(available_presets())


def loss_names() -> list[str]:
    """Names of the registry's losses (:func:`losslab.losses.available_losses`), for the loss menus."""
    from losslab.losses import available_losses

    return list(available_losses())


def loss_options_text(name: str) -> str:
    """One line describing a loss and its options with defaults (a tooltip of the loss menus).

    Raises:
        ValueError: unknown loss name (the message lists the available ones).
    """
    from losslab.losses import available_losses

    infos = available_losses()
    if name not in infos:
        raise ValueError(f"unknown loss {name!r}; available losses: {', '.join(sorted(infos))}")
    info = infos[name]
    options = ", ".join(
        f"{o.name} (required)" if o.required else f"{o.name}={o.default!r}" for o in info.options.values()
    )
    return f"{info.summary} Options: {options or 'none'}."


def make_example_dataset(folder: str | os.PathLike, n_cases: int = 4, size: int = 16) -> Path:
    """Write a small generated dataset (nested balls in noise, labels background / class1 / class2, and
    ``dataset.json``) into ``folder`` to try the module on; returns the folder. See
    :func:`losslab.engine.synthetic.make_blobs_dataset`."""
    from losslab.engine.synthetic import make_blobs_dataset

    make_blobs_dataset(folder, n_cases=n_cases, shape=(size, size, size), n_classes=3, n_val=1)
    return Path(folder)


def find_manifest(dataset: str | os.PathLike) -> Path:
    """The manifest of a dataset: ``dataset`` itself if it is a JSON file, else ``dataset/dataset.json``.

    Raises:
        FileNotFoundError: the folder (or file) does not exist, or the folder has no ``dataset.json``.
    """
    if dataset is None or str(dataset).strip() in ("", "."):
        raise FileNotFoundError("no dataset folder chosen: pick the folder that holds dataset.json")
    path = Path(dataset).expanduser()
    if path.is_file():
        return path.resolve()
    if not path.exists():
        raise FileNotFoundError(f"dataset folder not found: {str(path)!r}")
    manifest = path / DATASET_MANIFEST
    if not manifest.is_file():
        others = sorted(p.name for p in path.glob("*.json"))
        raise FileNotFoundError(
            f"dataset folder {str(path)!r} has no {DATASET_MANIFEST} (the dataset manifest; see "
            f"docs/engine.md)" + (f"; JSON files there: {others}: choose one of them" if others else "")
        )
    return manifest.resolve()


def parse_loss_options(options: str | Mapping[str, Any] | None) -> dict[str, Any]:
    """Loss options as a dict: a mapping, or JSON text (``'{"alpha": 2}'``; empty text means none).

    Raises:
        ValueError: the text is not a JSON object.
    """
    if options is None:
        return {}
    if isinstance(options, Mapping):
        return dict(options)
    text = str(options).strip()
    if not text:
        return {}
    try:
        value = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ValueError(
            f'loss options must be a JSON object such as {{"alpha": 2}}, got {text!r} ({exc.msg})'
        ) from None
    if not isinstance(value, dict):
        raise ValueError(f'loss options must be a JSON object such as {{"alpha": 2}}, got {text!r}')
    return value


def build_training_config(
    dataset: str | os.PathLike,
    output_dir: str | os.PathLike,
    *,
    preset: str = "ice_segmentation",
    loss: str = "cross_entropy",
    loss_options: str | Mapping[str, Any] | None = None,
    epochs: int = 100,
    device: str = "auto",
    network: Mapping[str, Any] | None = None,
    overrides: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """A complete, validated engine config (see ``docs/engine.md``) for the module's Train section.

    Args:
        dataset: dataset folder holding ``dataset.json``, or the manifest file.
        output_dir: the run's folder (checkpoints, ``metrics.jsonl``, ``model.pt``).
        preset: network preset of :mod:`losslab.nets` (``in_channels`` / ``out_channels`` follow the dataset).
        loss: registry name of the loss (:func:`losslab.losses.available_losses`).
        loss_options: its keyword options (dict or JSON text), checked by building the loss once.
        epochs, device: as in the engine config (``auto``, ``cpu``, ``cuda``, ``cuda:N``, ``mps``).
        network: further network keywords (e.g. ``{"features": [8, 16, 32]}``).
        overrides: further top-level config entries merged in (e.g. ``{"batch_size": 1}``).

    Returns:
        The validated config dict.

    Raises:
        FileNotFoundError: missing dataset folder or manifest.
        ValueError: invalid manifest, unknown preset, unknown loss or loss option, bad value (messages name
            the key and what was expected).
    """
    from losslab.engine import build_loss, load_manifest, validate_config
    from losslab.nets import PRESETS

    manifest_path = find_manifest(dataset)
    manifest = load_manifest(manifest_path)
    if preset not in PRESETS:
        raise ValueError(f"unknown network preset {preset!r}; expected one of {sorted(PRESETS)}")
    options = parse_loss_options(loss_options)
    loss_config = {"name": loss, "options": options, "inputs": {}}
    build_loss(loss_config, manifest.label_sets)  # raises a ConfigError (ValueError) naming the option
    # in/out channels come from the dataset: the engine fills them in when the network config leaves them out
    network_config = {"preset": preset, **dict(network or {})}
    network_config.setdefault("in_channels", len(manifest.channel_names))
    network_config.setdefault("out_channels", manifest.num_classes)
    config: dict[str, Any] = {
        "data": {"manifest": str(manifest_path)},
        "network": network_config,
        "loss": loss_config,
        "epochs": int(epochs),
        "device": str(device),
        "output_dir": str(Path(output_dir).expanduser().resolve()),
    }
    for key, value in (overrides or {}).items():
        if isinstance(value, Mapping) and isinstance(config.get(key), dict):
            config[key] = {**config[key], **value}
        else:
            config[key] = value
    return validate_config(config)


class TrainingJob(SubprocessJob):
    """A training run of the engine in a background process, streaming its progress events.

    A :class:`~LossLabLib.jobs.SubprocessJob` running ``python -m losslab.engine.worker``. Build with
    :meth:`create` (from the module's fields) or directly from a config dict, then :meth:`start`. Events are
    the worker's JSON lines (``start``, ``batch``, ``epoch``, ``end``, ``done``, ``error``, ``exit``; see
    :func:`losslab.engine.train`); a line that is not JSON (and every stderr line) becomes
    ``{"event": "log", "stream": ..., "message": line}``.

    Args:
        config: a complete engine config (:func:`build_training_config`); it is written to
            ``output_dir/losslab-config.json`` when the job starts.
        python_executable: the interpreter that runs the worker (``PythonSlicer`` in Slicer).
        resume: continue from ``output_dir/checkpoints/last.pt``.
    """

    def __init__(
        self,
        config: Mapping[str, Any],
        python_executable: str | os.PathLike | None = None,
        resume: bool = False,
    ):
        self.config = dict(config)
        self.python_executable = str(python_executable or sys.executable)
        self.resume = bool(resume)
        self.output_dir = Path(self.config["output_dir"])
        self.config_path = self.output_dir / CONFIG_NAME
        super().__init__(cwd=self.output_dir, stop_path=self.output_dir / STOP_NAME)
        self.history: list[dict[str, Any]] = []

    @classmethod
    def create(
        cls,
        dataset: str | os.PathLike,
        output_dir: str | os.PathLike,
        *,
        python_executable: str | os.PathLike | None = None,
        resume: bool = False,
        **settings: Any,
    ) -> TrainingJob:
        """:func:`build_training_config` (``preset``, ``loss``, ``loss_options``, ``epochs``, ``device``,
        ``network``, ``overrides``) then a job on it."""
        return cls(build_training_config(dataset, output_dir, **settings), python_executable, resume)

    @property
    def command(self) -> list[str]:
        args = [self.config_path, "--stop-file", self.stop_path] + (["--resume"] if self.resume else [])
        return python_command("losslab.engine.worker", *args, python_executable=self.python_executable)

    def _prepare(self) -> None:
        """Write the config (atomically) into the output folder, which the worker runs in."""
        from losslab.io import write_text

        self.output_dir.mkdir(parents=True, exist_ok=True)
        write_text(self.config_path, json.dumps(self.config, indent=2))

    @property
    def returncode(self) -> int | None:
        """The worker's exit code (0 done or stopped, 2 invalid config or data, 1 other errors; negative:
        killed by that signal), ``None`` while it runs."""
        return super().returncode

    @property
    def stopped(self) -> bool:
        """The run ended early on request (Stop)."""
        return bool(self.result and self.result.get("stopped")) or super().stopped

    @property
    def model_path(self) -> Path | None:
        """``model.pt`` (or the ensemble folder) once training completed, else ``None``."""
        ends = [e for e in self.events if e.get("event") == "end"]
        if not ends or not ends[-1].get("model_path"):
            return None
        members = int(self.config.get("ensemble", {}).get("members", 1))
        if members > 1:  # the ensemble folder, once its last member is done
            return self.output_dir if ends[-1].get("member", members - 1) == members - 1 else None
        return Path(ends[-1]["model_path"])

    def _record(self, event: dict[str, Any]) -> None:
        super()._record(event)
        kind = event.get("event")
        if kind == "epoch":
            record = {k: v for k, v in event.items() if k not in ("event", "epochs", "improved", "members")}
            self.history.append(record)
        elif kind == "end":
            self.result = event

    def format_event(self, event: Mapping[str, Any]) -> str | None:
        return format_event(event)

    def event_progress(self, event: Mapping[str, Any]) -> float | None:
        return progress_fraction(event, self.config.get("epochs"))

    @property
    def progress(self) -> float:
        """Fraction of the run done, in [0, 1] (from the last batch / epoch event)."""
        return 1.0 if self.model_path is not None else super().progress

    def fill_curves(self, scene, table=None, chart=None):
        """Write the per-epoch curves so far into a table node and a plot chart (created when ``None``):
        :func:`curves_table` then :func:`curves_chart`. Returns ``(table, chart)``."""
        table = curves_table(scene, self.history, node=table)
        return table, curves_chart(scene, table, chart=chart)

    # Text -------------------------------------------------------------------------------------------------

    def status(self) -> str:
        """One line for a status label."""
        if self._process is None:
            return "not started"
        if self.error:
            return f"failed: {self.error.get('message', '')}"
        if self.is_running:
            return "stopping..." if self._stop_requested else (self.log[-1] if self.log else "starting...")
        if self.stopped:
            return f"stopped after {len(self.history)} epoch(s)"
        if self.result:
            return f"done: {self.result.get('model_path')}"
        return f"ended with code {self.returncode}"


def format_event(event: Mapping[str, Any]) -> str | None:
    """A log line for an event (``None`` for batch events, which only move the progress bar)."""
    kind = event.get("event")
    member = f"[member {event['member'] + 1}/{event.get('members', '?')}] " if "member" in event else ""
    if kind == "start":
        return (
            f"{member}training on {event.get('device')}: {event.get('train_cases')} training / "
            f"{event.get('val_cases')} validation cases, {event.get('epochs')} epochs, output "
            f"{event.get('output_dir')}"
        )
    if kind == "epoch":
        text = (
            f"{member}epoch {event['epoch']}/{event.get('epochs', '?')}: train loss {event['train_loss']:.4f}"
        )
        if event.get("val_loss") is not None:
            text += f", val loss {event['val_loss']:.4f}"
        if event.get("val_dice_mean") is not None:
            text += f", val Dice {event['val_dice_mean']:.3f}"
        return text + (f" ({event['time_s']:.1f} s)" if "time_s" in event else "")
    if kind == "end":
        if event.get("stopped"):
            return f"{member}stopped after {event.get('epochs_done')} epoch(s)"
        return f"{member}finished: {event.get('model_path')} (best epoch {event.get('best_epoch')})"
    if kind == "error":
        return f"error ({event.get('type')}): {event.get('message')}"
    if kind == "log":
        return str(event.get("message", ""))
    if kind == "exit":
        return f"worker exited with code {event.get('code')}"
    return None


def progress_fraction(event: Mapping[str, Any], epochs: int | None = None) -> float | None:
    """Fraction of the whole run done after a ``batch`` or ``epoch`` event (ensembles: all members).

    ``epochs`` is the run's epoch count (batch events do not carry it; epoch events do)."""
    kind = event.get("event")
    epochs = event.get("epochs", epochs)
    if kind == "batch" and epochs:
        done = event["epoch"] - 1 + event["step"] / max(event["steps"], 1)
    elif kind == "epoch" and epochs:
        done = event["epoch"]
    else:
        return None
    fraction = min(1.0, done / max(int(epochs), 1))
    if "member" in event:
        fraction = (event["member"] + fraction) / max(event["members"], 1)
    return fraction


# Curves ------------------------------------------------------------------------------------------------


def curves_rows(history: Sequence[Mapping[str, Any]]) -> tuple[list[str], list[tuple]]:
    """(columns, rows) of the per-epoch curves: Epoch, Train loss, Val loss, Val Dice <class>..., Val Dice
    mean, Learning rate (and Member first for ensembles). Missing values are None (NaN in the table)."""
    classes: list[str] = []
    for record in history:
        for name in (record.get("val_dice") or {}).keys():
            if name not in classes:
                classes.append(name)
    ensemble = any("member" in r for r in history)
    columns = (["Member"] if ensemble else []) + ["Epoch", "Train loss", "Val loss"]
    columns += [f"Val Dice {c}" for c in classes] + ["Val Dice mean", "Learning rate"]
    rows = []
    for r in history:
        dice = r.get("val_dice") or {}
        row = ([r.get("member", 0) + 1] if ensemble else []) + [r.get("epoch"), r.get("train_loss")]
        row += [r.get("val_loss")] + [dice.get(c) for c in classes]
        row += [r.get("val_dice_mean"), r.get("lr")]
        rows.append(tuple(None if isinstance(v, float) and math.isnan(v) else v for v in row))
    return columns, rows


def curves_table(scene, history: Sequence[Mapping[str, Any]], *, node=None, name: str = "Training curves"):
    """Write the per-epoch curves (:func:`curves_rows`) into a table node (created if ``node`` is None)."""
    columns, rows = curves_rows(history)
    return mrml_io.table_from_rows(scene, rows, columns=columns, node=node, name=name)


_SERIES_COLORS = (
    (0.12, 0.47, 0.71),
    (1.0, 0.5, 0.05),
    (0.17, 0.63, 0.17),
    (0.84, 0.15, 0.16),
    (0.58, 0.4, 0.74),
    (0.55, 0.34, 0.29),
    (0.89, 0.47, 0.76),
    (0.5, 0.5, 0.5),
    (0.74, 0.74, 0.13),
    (0.09, 0.75, 0.81),
)


def curves_chart(scene, table_node, *, chart=None, name: str = "Training curves"):
    """A plot chart node showing every curve column of ``table_node`` against Epoch (one series each).

    Series are created once per column and reused (their table is re-read by the chart when it changes);
    a chart passed in keeps its other settings. Show it with
    ``slicer.modules.plots.logic().ShowChartInLayout(chart)`` in Slicer.
    """
    if chart is None:
        chart = scene.AddNewNodeByClass("vtkMRMLPlotChartNode", scene.GenerateUniqueName(name))
    chart.SetTitle(name)
    chart.SetXAxisTitle("epoch")
    chart.SetYAxisTitle("loss / Dice")
    table = table_node.GetTable()
    existing = {}
    for index in range(chart.GetNumberOfPlotSeriesNodes()):
        series = chart.GetNthPlotSeriesNode(index)
        if series is not None:
            existing[series.GetYColumnName()] = series
    wanted = [
        table.GetColumn(c).GetName()
        for c in range(table.GetNumberOfColumns())
        if table.GetColumn(c).GetName() not in ("Epoch", "Member", "Learning rate")
    ]
    for index, column in enumerate(wanted):
        series = existing.get(column)
        if series is None:
            series = scene.AddNewNodeByClass("vtkMRMLPlotSeriesNode", scene.GenerateUniqueName(column))
            series.SetPlotType(series.PlotTypeScatter)
            series.SetMarkerStyle(series.MarkerStyleCircle)
            series.SetLineStyle(series.LineStyleSolid)
            series.SetColor(*_SERIES_COLORS[index % len(_SERIES_COLORS)])
            chart.AddAndObservePlotSeriesNodeID(series.GetID())
        series.SetAndObserveTableNodeID(table_node.GetID())
        series.SetXColumnName("Epoch")
        series.SetYColumnName(column)
    return chart
