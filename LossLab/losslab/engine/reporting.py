"""Progress of a run: a callback, a tqdm bar on a terminal, or one line per epoch; the curves figure."""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ..io import save_figure

ProgressCallback = Callable[[dict[str, Any]], None]


def epoch_line(event: dict[str, Any]) -> str:
    """One line for an ``epoch`` event: epoch, training loss, validation loss and Dice, time."""
    epochs = f"/{event['epochs']}" if event.get("epochs") else ""
    dice = event.get("val_dice_mean")
    return (
        f"epoch {event['epoch']}{epochs}: train loss {event['train_loss']:.4f}"
        + (f", val loss {event['val_loss']:.4f}" if event.get("val_loss") is not None else "")
        + (f", val dice {dice:.3f}" if dice is not None else "")
        + f", {event['time_s']:.1f} s"
    )


def resume_line(event: dict[str, Any]) -> str:
    """The line for a ``start`` event of a resumed run."""
    return f"resumed from epoch {event['start_epoch']} of {event['epochs']} in {event['output_dir']}"


class Reporter:
    """Progress of one run (rank 0 only: ``enabled``).

    With a ``callback``, every event goes to it and nothing is printed. Otherwise, on an interactive
    terminal (stderr a TTY), a tqdm bar counts batches and each epoch adds a line above it; when stderr is
    not a terminal (a log file, a pipe, a job scheduler), one line per epoch is printed to stderr
    (:func:`epoch_line`), plus ``resumed from epoch N`` at the start of a resumed run.
    """

    def __init__(
        self,
        callback: ProgressCallback | None,
        enabled: bool,
        total_steps: int,
        initial: int,
        stream=None,
    ):
        self.callback = callback
        self.enabled = enabled
        self.stream = stream if stream is not None else sys.stderr
        self.bar = None
        self.lines = enabled and callback is None
        if self.lines and self.stream.isatty():
            from tqdm.auto import tqdm

            self.bar = tqdm(
                total=total_steps, initial=initial, unit="batch", dynamic_ncols=True, file=self.stream
            )

    def _write(self, line: str) -> None:
        if self.bar is not None:
            self.bar.write(line, file=self.stream)
        else:
            print(line, file=self.stream, flush=True)

    def __call__(self, event: dict[str, Any]) -> None:
        if not self.enabled:
            return
        if self.lines:
            kind = event["event"]
            if kind == "batch" and self.bar is not None:
                self.bar.update(1)
                self.bar.set_postfix(epoch=event["epoch"], loss=f"{event['loss']:.4f}")
            elif kind == "epoch":
                self._write(epoch_line(event))
            elif kind == "start" and event.get("start_epoch"):
                self._write(resume_line(event))
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


__all__ = ["ProgressCallback", "Reporter", "epoch_line", "plot_curves", "resume_line"]
