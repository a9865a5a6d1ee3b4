"""The ``losslab`` command line: one sub-command per capability.

Each entry of ``COMMAND_MODULES`` is a module with ``register_commands(subparsers)``, which adds its
sub-commands with ``set_defaults(func=...)``; ``func(args)`` returns the process exit code.

Errors: a user error is ONE line on stderr, ``losslab <command>: error: <message>``, and exit code 2. That
covers :class:`CommandError` (the base class commands raise for their own checks), ``ValueError`` (bad values,
damaged files), ``FileNotFoundError`` and every other ``OSError`` (read-only folder, a folder where a file was
expected, a full disk, permission denied: the message names the path), invalid YAML or JSON, and bad command
line arguments. Ctrl-C (``KeyboardInterrupt``) prints ``losslab <command>: interrupted`` and exits with 130;
SIGTERM prints ``losslab <command>: terminated (SIGTERM)`` and exits with 143 (atomic writes leave no partial
file either way). Too little memory for a computation is one line too. A closed pipe (``losslab fetal tissues
| head -1``) is not an error: the command stops quietly with exit code 0. Anything else (``TypeError``,
``KeyError``, ...) is a bug and keeps its traceback.

Start-up: building the parser imports nothing heavy (no torch, numpy, SimpleITK): command modules import
what they use inside their functions, so ``--help`` and argument errors answer at once
(``Testing/core/test_cli_commandline.py`` checks which modules the parser loads).
"""

from __future__ import annotations

import argparse
import contextlib
import errno
import importlib
import json
import os
import signal
import sys
import threading
from collections.abc import Sequence

from .. import __version__

COMMAND_MODULES: tuple[str, ...] = (
    "losslab.cli.metrics",
    "losslab.cli.demo",
    "losslab.cli.engine",
    "losslab.cli.ice",
    "losslab.cli.fetal",
    "losslab.cli.models",
    "losslab.cli.app",
)

#: Exit code of a command stopped by Ctrl-C (128 + SIGINT, the shell's convention).
EXIT_INTERRUPTED = 130
#: Exit code of a command stopped by SIGTERM (128 + SIGTERM).
EXIT_TERMINATED = 128 + signal.SIGTERM


class CommandError(Exception):
    """A user error: printed as one line (no traceback) and exit code 2."""


class Terminated(BaseException):
    """Raised in the main thread when SIGTERM arrives while a command runs (like ``KeyboardInterrupt`` for
    SIGINT), so that ``finally`` blocks and atomic writes clean up before the one-line message."""


def _raise_terminated(signum, frame) -> None:
    raise Terminated(signum)


@contextlib.contextmanager
def _sigterm_raises():
    """While inside (main thread only), SIGTERM raises :class:`Terminated`; the previous handler returns."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.signal(signal.SIGTERM, _raise_terminated)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def seed(text: str) -> int:
    """argparse type of a ``--seed``: a non-negative integer (what numpy's generators take); argparse names
    the option in its one-line error."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a non-negative integer, got {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"expected a non-negative integer, got {value}")
    return value


def check_device(name: str) -> None:
    """Refuse a ``--device`` that does not exist here (``cuda`` without a GPU, ``banana``) before any work:
    the same check as the engine's when it later picks the device."""
    from ..engine.device import select_device

    try:
        select_device(name)
    except ValueError as exc:
        raise CommandError(f"--device: {exc}") from None


def check_model(text: str, option: str = "model") -> str:
    """Check a model named on the command line before any work and return it unchanged: a path that exists
    (the sha256 of its card checked when a card lies beside it, as for a registered name), or a registered
    name (checked where it is loaded). A path that does not exist is said to be missing, not an unknown
    registered model."""
    from pathlib import Path

    path = Path(text)
    if path.exists():
        from .. import models

        card = models.card_of_path(path)
        if card is not None:
            models.verify_model(card)
        return text
    if "/" in text or os.sep in text or text.lower().endswith((".pt", ".pth", ".ckpt", ".json")):
        raise FileNotFoundError(
            f"{option} {text!r}: no such file or folder (a checkpoint, an ensemble folder, or a registered "
            "model's name: losslab models)"
        )
    return text


@contextlib.contextmanager
def _one_line_warnings(prefix: str):
    """While inside, a warning prints as ``<prefix>: warning: <message>`` on one line (not Python's two
    lines with a file name and source line)."""
    import warnings

    def show(message, category, filename, lineno, file=None, line=None):
        print(f"{prefix}: warning: {one_line(message)}", file=file or sys.stderr)

    with warnings.catch_warnings():
        warnings.showwarning = show
        yield


def group_help(parser: argparse.ArgumentParser) -> int:
    """What a command group (``losslab``, ``losslab ice``, ``losslab fetal``) does without a sub-command:
    its help on stderr and exit code 2 (a sub-command is missing)."""
    parser.print_help(sys.stderr)
    return 2


def _quiet_stdout_after_broken_pipe() -> None:
    """The reader of stdout went away: point stdout at /dev/null so that the final flush at exit does not
    raise again (Python's documented recipe)."""
    with contextlib.suppress(OSError, ValueError):
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())


def _user_error_types() -> tuple[type[BaseException], ...]:
    types: list[type[BaseException]] = [CommandError, ValueError, OSError, json.JSONDecodeError]
    with contextlib.suppress(ImportError):  # pyyaml is optional: without it there is no YAML error to map
        import yaml

        types.append(yaml.YAMLError)
    return tuple(types)


def one_line(text: str) -> str:
    """``text`` with its newlines and runs of white space collapsed into single spaces."""
    return " ".join(str(text).split())


def describe_error(exc: BaseException) -> str:
    """The one-line message of a user error (an OSError names its path and the reason)."""
    if isinstance(exc, json.JSONDecodeError):
        return f"invalid JSON: {exc.msg} at line {exc.lineno} column {exc.colno}"
    if type(exc).__module__.startswith("yaml"):
        mark = getattr(exc, "problem_mark", None)
        where = f"{mark.name}, line {mark.line + 1} column {mark.column + 1}: " if mark is not None else ""
        problem = getattr(exc, "problem", None) or str(exc)
        return f"invalid YAML: {where}{problem}"
    if isinstance(exc, OSError) and exc.filename is not None and exc.strerror:
        where = str(exc.filename)
        if exc.filename2 is not None:
            where += f" -> {exc.filename2}"
        reason = exc.strerror
        if exc.errno == errno.ENOSPC and "disk full" not in reason:
            reason += " (disk full)"
        return f"{where}: {reason}"
    return str(exc) or type(exc).__name__


class ArgumentParser(argparse.ArgumentParser):
    """argparse with its usage errors as one line (``losslab <command>: error: ...``) and exit code 2."""

    def error(self, message: str) -> None:  # type: ignore[override]
        self.exit(2, f"{self.prog}: error: {one_line(message)} (see '{self.prog} --help')\n")


def build_parser() -> argparse.ArgumentParser:
    parser = ArgumentParser(
        prog="losslab",
        description="LossLab: losses, metrics and training for segmentation editing and partial labels.",
    )
    parser.add_argument("--version", action="version", version=f"losslab {__version__}")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=ArgumentParser)
    for name in COMMAND_MODULES:
        importlib.import_module(name).register_commands(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    if extra:
        # Unknown arguments: the sub-command's parser says so, with its own name.
        commands = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
        (commands.choices.get(args.command) or parser).error(f"unrecognized arguments: {' '.join(extra)}")
    if not getattr(args, "func", None):
        return group_help(parser)
    sub = getattr(args, f"{args.command}_command", None)  # `losslab ice simulate`: name the sub-command too
    name = f"{args.command} {sub}" if sub else args.command
    try:
        with _sigterm_raises(), _one_line_warnings(f"losslab {name}"):
            code = int(args.func(args) or 0)
            sys.stdout.flush()  # a closed pipe shows here, not at exit
            return code
    except BrokenPipeError:
        _quiet_stdout_after_broken_pipe()
        return 0
    except KeyboardInterrupt:
        print(f"losslab {name}: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except Terminated:
        print(f"losslab {name}: terminated (SIGTERM)", file=sys.stderr)
        return EXIT_TERMINATED
    except MemoryError:
        print(
            f"losslab {name}: error: not enough memory for this computation (a smaller grid, "
            "window or batch needs less)",
            file=sys.stderr,
        )
        return 2
    except _user_error_types() as exc:
        print(f"losslab {name}: error: {one_line(describe_error(exc))}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
