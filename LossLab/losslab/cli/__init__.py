"""The ``losslab`` command line: one sub-command per capability.

Each entry of ``COMMAND_MODULES`` is a module with ``register_commands(subparsers)``, which adds its
sub-commands with ``set_defaults(func=...)``; ``func(args)`` returns the process exit code.

Errors: a user error is ONE line on stderr, ``losslab <command>: error: <message>``, and exit code 2. That
covers :class:`CommandError` (the base class commands raise for their own checks), ``ValueError`` (bad values,
damaged files), ``FileNotFoundError`` and every other ``OSError`` (read-only folder, a folder where a file was
expected, a full disk, permission denied: the message names the path), invalid YAML or JSON, and bad command
line arguments. Ctrl-C (``KeyboardInterrupt``) prints ``losslab <command>: interrupted`` and exits with 130.
Anything else (``TypeError``, ``KeyError``, ...) is a bug and keeps its traceback.
"""

from __future__ import annotations

import argparse
import contextlib
import errno
import importlib
import json
import sys
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


class CommandError(Exception):
    """A user error: printed as one line (no traceback) and exit code 2."""


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
        parser.print_help()
        return 2
    try:
        return int(args.func(args) or 0)
    except KeyboardInterrupt:
        print(f"losslab {args.command}: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except _user_error_types() as exc:
        print(f"losslab {args.command}: error: {one_line(describe_error(exc))}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
