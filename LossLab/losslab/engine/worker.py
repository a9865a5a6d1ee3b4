"""Background training process for a GUI.

Usage: ``python -m losslab.engine.worker CONFIG [key=value ...] [--resume | --overwrite] [--stop-file PATH]``.


Every line on stdout is one JSON object (a progress event of :func:`losslab.engine.train`, plus
``{"event": "error", "type", "message"}`` on failure and ``{"event": "exit", "code"}`` at the end); nothing
else is printed to stdout. SIGTERM or SIGINT (the GUI's Stop button), or the creation of the ``--stop-file``,
stops training after the current batch; the last completed epoch's checkpoint stays, so ``--resume``
continues from it. An ``output_dir`` that already holds a run is refused unless ``--resume`` or
``--overwrite``. Exit codes: 0 done (or stopped on request), 2 invalid config or data (and a run folder
refused, a diverging loss), 1 other errors.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import signal
import sys
import threading
import traceback
from collections.abc import Sequence
from pathlib import Path
from typing import Any


def _emit(stream, event: dict[str, Any]) -> None:
    if os.environ.get("RANK", "0") != "0" and event.get("event") != "error":
        return  # under torchrun only rank 0 reports (every rank reports its errors)
    stream.write(json.dumps(event, default=str) + "\n")
    stream.flush()


@contextlib.contextmanager
def stop_on_signals(stop: threading.Event, *, abort_on_second_interrupt: bool = False):
    """While inside, SIGINT (Ctrl-C) and SIGTERM set ``stop`` (training then stops after the current batch)
    instead of killing the process; the previous handlers come back on exit. Yields the list of the
    signal numbers received. With ``abort_on_second_interrupt``, a second SIGINT raises
    ``KeyboardInterrupt`` (the user insists). Outside the main thread nothing is installed."""
    received: list[int] = []

    def on_signal(signum, frame):
        received.append(signum)
        if abort_on_second_interrupt and stop.is_set() and received.count(signal.SIGINT) > 1:
            raise KeyboardInterrupt
        stop.set()

    previous = {}
    if threading.current_thread() is threading.main_thread():
        for sig in (signal.SIGINT, signal.SIGTERM):
            previous[sig] = signal.signal(sig, on_signal)
    try:
        yield received
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def main(argv: Sequence[str] | None = None, stream=None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m losslab.engine.worker", description=__doc__.split("\n")[0]
    )
    parser.add_argument("config", help="config file (JSON or YAML)")
    parser.add_argument("overrides", nargs="*", help="key=value overrides, e.g. epochs=3 optimizer.lr=1e-3")
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument("--resume", action="store_true", help="continue from output_dir/checkpoints/last.pt")
    mode.add_argument("--overwrite", action="store_true", help="replace a run that output_dir already holds")
    parser.add_argument("--stop-file", help="stop cleanly when this file appears")
    args = parser.parse_intermixed_args(argv)  # overrides may follow --resume
    stream = stream or sys.stdout
    stop = threading.Event()
    with stop_on_signals(stop):
        return _work(args, stream, stop)


def _work(args: argparse.Namespace, stream, stop: threading.Event) -> int:
    stop_file = Path(args.stop_file) if args.stop_file else None

    def should_stop() -> bool:
        if stop_file is not None and stop_file.exists():
            stop.set()
        return stop.is_set()

    from .config import ConfigError
    from .data import DatasetError
    from .ensemble import run

    code = 0
    try:
        results = run(
            args.config,
            args.overrides,
            resume=args.resume,
            overwrite=args.overwrite,
            progress=lambda e: _emit(stream, e),
            stop=should_stop,
        )
        _emit(stream, {"event": "done", "stopped": any(r.stopped for r in results)})
    except (ConfigError, DatasetError, FileNotFoundError, ValueError) as exc:
        _emit(stream, {"event": "error", "type": type(exc).__name__, "message": str(exc)})
        code = 2
    except Exception as exc:  # report anything to the GUI rather than die silently
        _emit(
            stream,
            {
                "event": "error",
                "type": type(exc).__name__,
                "message": str(exc),
                "traceback": traceback.format_exc(),
            },
        )
        code = 1
    _emit(stream, {"event": "exit", "code": code})
    return code


if __name__ == "__main__":
    sys.exit(main())
