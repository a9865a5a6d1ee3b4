"""Long jobs in a background Python process that streams JSON-lines events: :class:`SubprocessJob`.

Qt-free and MRML-free: it starts a subprocess (``PythonSlicer`` in Slicer, ``sys.executable`` in tests),
reads its stdout and stderr on two reader threads into a queue, so that the caller never blocks
(:meth:`SubprocessJob.poll` returns what arrived; in Slicer a ``qt.QTimer`` calls it), and stops it
gracefully (a stop file that the child watches, plus SIGTERM on POSIX; then a kill after a timeout).
Training (:class:`LossLabLib.training.TrainingJob`) is one user; ensemble inference and any other long torch
job reuse it the same way.

The child's protocol (what the parent understands):

- each stdout line that is a JSON object with an ``"event"`` key is an event, recorded as is;
- ``{"event": "progress", "fraction": f, "message": m}`` moves :attr:`SubprocessJob.progress` to ``f``
  (in [0, 1]) and logs ``m``;
- ``{"event": "error", "type": t, "message": m}`` is the job's error; ``{"event": "result", ...}`` its result;
- any other stdout line, and every stderr line, becomes ``{"event": "log", "stream": ..., "message": line}``;
- the child stops cleanly when the stop file appears (or on SIGTERM) and exits 0.

A child that dies with a non-zero exit code without an error event (an uncaught exception, a crash) still
reports one: :attr:`SubprocessJob.error` is then ``{"event": "error", "type": "exit", "code": ...,
"message": <its last stderr line>}`` -- for a Python traceback, the exception line.

Example::

    from LossLabLib.jobs import SubprocessJob, python_command, wait_for
    job = SubprocessJob(python_command("my_long_job", "--in", path), stop_path="/tmp/run/STOP").start()
    ...  # later, repeatedly (a QTimer in Slicer):
    for event in job.poll():
        print(event)
    job.progress, job.status(), job.finished
"""

from __future__ import annotations

import collections
import contextlib
import json
import os
import queue
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

__all__ = ["JobUpdate", "SubprocessJob", "core_folder", "python_command", "slicer_python", "wait_for"]

#: stderr lines kept for error messages (the whole output also goes to :attr:`SubprocessJob.log`)
STDERR_TAIL = 200


def core_folder() -> str:
    """The folder that holds the ``losslab`` package (put on the child's ``PYTHONPATH``)."""
    import losslab

    return str(Path(losslab.__file__).resolve().parents[1])


def python_command(
    module: str, *args: str | os.PathLike, python_executable: str | os.PathLike | None = None
) -> list[str]:
    """``[python, "-m", module, *args]`` with ``python_executable`` (default ``sys.executable``; pass
    ``PythonSlicer`` in Slicer)."""
    return [str(python_executable or sys.executable), "-m", module, *(str(a) for a in args)]


def slicer_python(task: str = "run in the background") -> str:
    """``PythonSlicer`` (Slicer's Python without the GUI, which runs the background jobs), found on ``PATH``.

    Raises:
        RuntimeError: not found, naming what cannot be done without it (``task``).
    """
    executable = shutil.which("PythonSlicer")
    if executable is None:
        raise RuntimeError(f"PythonSlicer was not found next to Slicer: cannot {task}.")
    return executable


@dataclass
class JobUpdate:
    """What changed since the previous :meth:`SubprocessJob.update` (one tick of a GUI timer).

    Attributes:
        events: the new events; log: the new log lines; progress: fraction done; status: one line;
        finished: the job has ended and all its output is in; error: the error message once it failed.
        new_epochs: epoch events among ``events`` (:class:`~LossLabLib.training.TrainingJob`; 0 otherwise).
    """

    events: list[dict[str, Any]] = field(default_factory=list)
    log: list[str] = field(default_factory=list)
    progress: float = 0.0
    status: str = ""
    finished: bool = False
    error: str | None = None
    new_epochs: int = 0


class SubprocessJob:
    """A command run in a background process, whose JSON-lines events are streamed to the caller.

    Args:
        command: the argument list (see :func:`python_command`). Subclasses may instead override the
            :attr:`command` property.
        cwd: working folder of the child (default: the caller's).
        env: environment variables added to (or replacing those of) the caller's environment.
        pythonpath: folders put first on the child's ``PYTHONPATH``; default: the folder holding
            ``losslab`` (:func:`core_folder`), so ``-m losslab...`` works from a source checkout.
        stop_path: a file that :meth:`request_stop` creates and the child watches (a stale one is removed
            at :meth:`start`); ``None``: stop by signal only.

    Attributes:
        events: every event so far (dicts, in order); log: one line per event worth showing;
        error: the error event, if any; result: the ``result`` event, if any;
        stderr_tail: the last :data:`STDERR_TAIL` stderr lines.
    """

    def __init__(
        self,
        command: Sequence[str | os.PathLike] | None = None,
        *,
        cwd: str | os.PathLike | None = None,
        env: Mapping[str, str] | None = None,
        pythonpath: Sequence[str | os.PathLike] | None = None,
        stop_path: str | os.PathLike | None = None,
    ):
        self._command = None if command is None else [str(c) for c in command]
        self.cwd = None if cwd is None else Path(cwd)
        self.env = dict(env or {})
        self.pythonpath = None if pythonpath is None else [str(p) for p in pythonpath]
        self.stop_path = None if stop_path is None else Path(stop_path)
        self.events: list[dict[str, Any]] = []
        self.log: list[str] = []
        self.error: dict[str, Any] | None = None
        self.result: dict[str, Any] | None = None
        self.stderr_tail: collections.deque[str] = collections.deque(maxlen=STDERR_TAIL)
        self._process: subprocess.Popen | None = None
        self._queue: queue.Queue = queue.Queue()
        self._readers: list[threading.Thread] = []
        self._progress = 0.0
        self._stop_requested = False
        self._finalized = False
        self._log_reported = 0

    # Process --------------------------------------------------------------------------------------------

    @property
    def command(self) -> list[str]:
        """The argument list of the child."""
        if not self._command:
            raise ValueError("this job has no command: give SubprocessJob(command=[...])")
        return list(self._command)

    def _prepare(self) -> None:
        """Called by :meth:`start` before the child starts (subclasses write their inputs here)."""

    def _environment(self) -> dict[str, str]:
        env = dict(os.environ)
        env.update(self.env)
        folders = [core_folder()] if self.pythonpath is None else list(self.pythonpath)
        if env.get("PYTHONPATH"):
            folders.append(env["PYTHONPATH"])
        if folders:
            env["PYTHONPATH"] = os.pathsep.join(folders)
        env["PYTHONUNBUFFERED"] = "1"  # events arrive as they are printed
        return env

    def start(self):
        """Start the child (after :meth:`_prepare`). Returns ``self``.

        Raises:
            RuntimeError: the job was already started.
            FileNotFoundError: the executable (or the working folder) does not exist.
        """
        if self._process is not None:
            raise RuntimeError(f"this {type(self).__name__} was already started; create a new one")
        command = self.command
        self._prepare()
        if self.stop_path is not None and self.stop_path.exists():
            self.stop_path.unlink()  # a stale stop file of an earlier run would stop this one at once
        kwargs: dict[str, Any] = {}
        if sys.platform == "win32":  # no console window for the child
            kwargs["creationflags"] = getattr(subprocess, "CREATE_NO_WINDOW", 0)
        self._process = subprocess.Popen(
            command,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            stdin=subprocess.DEVNULL,
            text=True,
            encoding="utf-8",
            errors="replace",
            bufsize=1,
            env=self._environment(),
            cwd=None if self.cwd is None else str(self.cwd),
            **kwargs,
        )
        for stream, name in ((self._process.stdout, "stdout"), (self._process.stderr, "stderr")):
            thread = threading.Thread(target=self._read, args=(stream, name), daemon=True)
            thread.start()
            self._readers.append(thread)
        return self

    def _read(self, stream, name: str) -> None:
        for line in iter(stream.readline, ""):
            self._queue.put((name, line.rstrip("\r\n")))
        stream.close()

    @property
    def started(self) -> bool:
        return self._process is not None

    @property
    def is_running(self) -> bool:
        return self._process is not None and self._process.poll() is None

    @property
    def returncode(self) -> int | None:
        """The child's exit code (negative: killed by that signal), ``None`` while it runs."""
        return None if self._process is None else self._process.poll()

    @property
    def pid(self) -> int | None:
        return None if self._process is None else self._process.pid

    @property
    def finished(self) -> bool:
        """The child has ended and all its output has been polled (and :attr:`error` set if it failed)."""
        return self._finalized

    @property
    def stopped(self) -> bool:
        """The job was stopped on request (Stop) and did not fail."""
        return self._stop_requested and not self.error

    @property
    def last_stderr_line(self) -> str | None:
        """The last non-blank stderr line so far (for a Python crash: the exception)."""
        return next((line.strip() for line in reversed(self.stderr_tail) if line.strip()), None)

    # Events ---------------------------------------------------------------------------------------------

    def poll(self) -> list[dict[str, Any]]:
        """The events that arrived since the last call (never blocks)."""
        # Read "ended" before draining: once the child has exited and both readers are done, everything it
        # wrote is in the queue, so after this drain the job is complete.
        ended = (
            self._process is not None
            and self._process.poll() is not None
            and not any(t.is_alive() for t in self._readers)
        )
        new = []
        while True:
            try:
                name, line = self._queue.get_nowait()
            except queue.Empty:
                break
            if name == "stderr":
                self.stderr_tail.append(line)
            event = None
            if name == "stdout":
                try:
                    event = json.loads(line)
                except json.JSONDecodeError:
                    event = None
                if not isinstance(event, dict) or "event" not in event:
                    event = None
            if event is None:
                if not line.strip():
                    continue
                event = {"event": "log", "stream": name, "message": line}
            self._record(event)
            new.append(event)
        if ended and not self._finalized:
            new.extend(self._finalize())
        return new

    def update(self) -> JobUpdate:
        """:meth:`poll`, then what a GUI shows: the log lines added since the last update, progress,
        status, whether the job has finished, and its error message (never blocks)."""
        events = self.poll()
        lines = self.log[self._log_reported :]
        self._log_reported = len(self.log)
        return JobUpdate(
            events=events,
            log=lines,
            progress=self.progress,
            status=self.status(),
            finished=self.finished,
            error=None if self.error is None else str(self.error.get("message", "")),
            new_epochs=sum(1 for e in events if e.get("event") == "epoch"),
        )

    def _finalize(self) -> list[dict[str, Any]]:
        """Once the child has ended: a failure without an error event gets one (its last stderr line)."""
        self._finalized = True
        code = self._process.returncode
        if code == 0 or self.error is not None or self._stop_requested:
            return []
        if code < 0:
            message = f"the process was killed by signal {-code}"
        else:
            message = self.last_stderr_line or f"the process exited with code {code}"
        event = {"event": "error", "type": "exit", "code": code, "message": message}
        self._record(event)
        return [event]

    def _record(self, event: dict[str, Any]) -> None:
        """Keep an event: in :attr:`events`, the log (:meth:`format_event`), progress, error and result."""
        self.events.append(event)
        kind = event.get("event")
        if kind == "error":
            self.error = event
        elif kind == "result":
            self.result = event
        line = self.format_event(event)
        if line:
            self.log.append(line)
        fraction = self.event_progress(event)
        if fraction is not None:
            self._progress = min(1.0, max(0.0, float(fraction)))

    def format_event(self, event: Mapping[str, Any]) -> str | None:
        """The log line of an event (``None``: not logged). Subclasses describe their own events."""
        kind = event.get("event")
        if kind == "error":
            return f"error ({event.get('type')}): {event.get('message')}"
        if "message" in event:
            return str(event["message"])
        return None

    def event_progress(self, event: Mapping[str, Any]) -> float | None:
        """The fraction done after an event, or ``None`` if it says nothing about progress."""
        if event.get("event") == "progress" and event.get("fraction") is not None:
            return float(event["fraction"])
        return None

    @property
    def progress(self) -> float:
        """Fraction done, in [0, 1] (from the last progress event)."""
        return self._progress

    # Waiting and stopping -------------------------------------------------------------------------------

    def wait(self, timeout: float | None = None) -> int | None:
        """Wait for the child to end (or ``timeout`` s), poll its output; the return code or ``None``."""
        if self._process is None:
            raise RuntimeError(f"the {type(self).__name__} was not started")
        try:
            self._process.wait(timeout)
        except subprocess.TimeoutExpired:
            return None
        for thread in self._readers:
            thread.join(5.0)
        self.poll()
        return self._process.returncode

    def request_stop(self) -> None:
        """Ask the child to stop (never blocks): creates the stop file and, on POSIX, sends SIGTERM."""
        if not self.is_running:
            return
        self._stop_requested = True
        # Two routes to the same clean stop; either one failing (an unwritable folder, a child that has
        # just exited) leaves the other.
        if self.stop_path is not None:
            with contextlib.suppress(OSError):
                self.stop_path.touch()
        if sys.platform != "win32":  # on Windows terminate() is a hard kill: the stop file does it
            with contextlib.suppress(ProcessLookupError):
                self._process.send_signal(signal.SIGTERM)

    def stop(self, timeout: float = 60.0) -> int | None:
        """Stop gracefully (:meth:`request_stop`), wait up to ``timeout`` s, then kill. The return code."""
        if self._process is None:
            return None
        self.request_stop()
        code = self.wait(timeout)
        if code is None:
            self.kill()
            code = self.wait(10.0)
        return code

    def stop_or_kill(self) -> str:
        """A Stop button: the first press asks for a clean stop (:meth:`request_stop`, never blocks); a press
        while a requested stop is still under way kills the child. Returns :meth:`status`."""
        if self._stop_requested and self.is_running:
            self.kill()
        else:
            self.request_stop()
        return self.status()

    def kill(self) -> None:
        """End the child at once (no clean stop)."""
        if self.is_running:
            self._stop_requested = True
            self._process.kill()

    def __del__(self):  # never leave a child running behind a dropped job
        # At interpreter shutdown anything may already be torn down: a failure here must not raise.
        with contextlib.suppress(Exception):
            if self._process is not None and self._process.poll() is None:
                self._process.kill()

    # Text -----------------------------------------------------------------------------------------------

    def status(self) -> str:
        """One line for a status label."""
        if self._process is None:
            return "not started"
        if self.error:
            return f"failed: {self.error.get('message', '')}"
        if self.is_running:
            return "stopping..." if self._stop_requested else (self.log[-1] if self.log else "starting...")
        if self.stopped:
            return "stopped"
        return "done" if self.returncode == 0 else f"ended with code {self.returncode}"


def wait_for(
    job: SubprocessJob, predicate: Callable[[Any], bool], timeout: float = 60.0, interval: float = 0.05
) -> bool:
    """Poll ``job`` until ``predicate(job)`` is true or ``timeout`` s pass (scripts and tests)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        job.poll()
        if predicate(job):
            return True
        if job.finished:
            job.poll()
            return bool(predicate(job))
        time.sleep(interval)
    return False
