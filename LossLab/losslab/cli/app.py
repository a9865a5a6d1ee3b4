"""``losslab app``: the web app, a plug-in of the command line.

The core never imports the web app (DESIGN.md: the app is launched from outside the core). The app registers
its command through the entry point group :data:`ENTRY_POINT_GROUP` (declared in the checkout's
``pyproject.toml``; the command's module is in the web app's folder); this module only looks the group up and
calls each plug-in's ``register_commands(subparsers)``. Where no plug-in provides ``app``, ``losslab app`` is
still a command: it prints one line, how to install the app.
"""

from __future__ import annotations

import argparse

from . import CommandError

#: the entry point group of command-line plug-ins: ``name = "module:register_commands"``
ENTRY_POINT_GROUP = "losslab.commands"
INSTALL_HINT = 'install the web extra: pip install -e ".[web]" (from the LossLab checkout)'


def plugins() -> list:
    """The installed entry points of :data:`ENTRY_POINT_GROUP`, by name."""
    from importlib.metadata import entry_points

    return sorted(entry_points(group=ENTRY_POINT_GROUP), key=lambda ep: ep.name)


def _not_installed(args: argparse.Namespace) -> int:
    raise CommandError(f"the web app is not installed; {INSTALL_HINT}")


def register_commands(subparsers) -> None:
    registered = set()
    for entry in plugins():
        if entry.name in registered or entry.name in subparsers.choices:
            continue
        entry.load()(subparsers)
        registered.add(entry.name)
    if "app" not in subparsers.choices:
        # whatever options follow, the answer is the install hint (no option is parsed: none is known here)
        p = subparsers.add_parser(
            "app", help="the web app in a browser (needs the [web] extra)", prefix_chars="\0", add_help=False
        )
        p.add_argument("options", nargs=argparse.REMAINDER)
        p.set_defaults(func=_not_installed)
