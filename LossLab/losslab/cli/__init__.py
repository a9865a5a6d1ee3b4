"""The ``losslab`` command line: one sub-command per capability.

Each entry of ``COMMAND_MODULES`` is a module with ``register_commands(subparsers)``, which adds its
sub-commands with ``set_defaults(func=...)``; ``func(args)`` returns the process exit code.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

from .. import __version__

COMMAND_MODULES: tuple[str, ...] = (
    "losslab.cli.metrics",
    "losslab.cli.demo",
    "losslab.cli.engine",
    "losslab.cli.fetal",
    "losslab.cli.models",
)


class CommandError(Exception):
    """A user error: printed as one line (no traceback) and exit code 2."""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="losslab",
        description="LossLab: losses, metrics and training for segmentation editing and partial labels.",
    )
    parser.add_argument("--version", action="version", version=f"losslab {__version__}")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMAND_MODULES:
        importlib.import_module(name).register_commands(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        return int(args.func(args) or 0)
    except (CommandError, FileNotFoundError, ValueError) as exc:
        print(f"losslab {args.command}: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
