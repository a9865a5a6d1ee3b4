"""``losslab app``: the LossLab web app (trame-slicer) on a loopback port.

The web stack (trame, trame-slicer, slicer-core) is the optional ``[web]`` extra and is imported only when the
command runs; without it the command prints one line with the install command. The app's code lives in the
checkout's ``Web/`` folder beside ``FetalParcellation/`` (the Slicer modules' Lib layers), which the command puts
on ``sys.path`` (with ``ICEEditing/`` for the ICE page).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from . import CommandError

INSTALL_HINT = 'install the web extra: pip install -e ".[web]" (from the LossLab checkout)'
PAGES = ("fetal", "ice")
SAMPLES = ("fetal", "ice")


def checkout_root() -> Path:
    """The repository checkout holding ``Web/`` (this file is ``<root>/LossLab/losslab/cli/app.py``)."""
    return Path(__file__).resolve().parents[3]


def _import_web():
    root = checkout_root()
    if not (root / "Web" / "LossLabWeb").is_dir():
        raise CommandError(f"the web app needs a LossLab checkout (Web/ not found in {root}); {INSTALL_HINT}")
    for folder in ("LossLab", "FetalParcellation", "ICEEditing", "Web"):
        path = str(root / folder)
        if path not in sys.path:
            sys.path.insert(0, path)
    try:
        import trame  # noqa: F401
        import trame_slicer  # noqa: F401
    except ImportError as exc:
        raise CommandError(
            f"the web app needs trame-slicer ({exc.name or exc} is missing); {INSTALL_HINT}"
        ) from None
    from LossLabWeb import server

    return server


def _check_case(args: argparse.Namespace) -> None:
    """``--case`` is an MRI file on the fetal page, a case folder of ``losslab ice simulate`` on the ICE page."""
    if args.mask is not None and (args.case is None or args.page != "fetal"):
        raise CommandError("--mask needs --case on the fetal page (the MRI it belongs to)")
    if args.case is None:
        return
    case = Path(args.case)
    if args.page == "ice":
        from ..ice.dataset import CASE_FILES

        if not case.is_dir():
            raise CommandError(
                f"--case {args.case}: no such folder (the ICE page expects a case folder of `losslab ice "
                "simulate`)"
            )
        missing = [name for name in CASE_FILES if not (case / name).is_file()]
        if missing:
            raise CommandError(f"--case {args.case}: not an ICE case folder, {missing[0]} is missing")
    elif not case.is_file():
        raise CommandError(f"--case {args.case}: no such file (expected an MRI such as a .nii.gz)")


def cmd_app(args: argparse.Namespace) -> int:
    if not 0 < args.port < 65536:
        raise CommandError(f"--port must be in 1..65535, got {args.port}")
    _check_case(args)
    server = _import_web()
    case = None if args.case is None else (args.case, args.mask)
    server.serve(args.page, host=args.host, port=args.port, sample=args.sample is not None, case=case)
    return 0


def register_commands(subparsers) -> None:
    p = subparsers.add_parser(
        "app",
        help="the web app (trame-slicer) in a browser",
        description="Serve LossLab's web app (one user per process) on http://HOST:PORT/. Needs the [web] "
        "extra. Volume rendering is off (slow without a GPU).",
    )
    p.add_argument(
        "--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1: this machine only)"
    )
    p.add_argument("--port", type=int, default=8080, help="port (default 8080)")
    p.add_argument("--page", choices=PAGES, default="fetal", help="the page to show (default fetal)")
    p.add_argument(
        "--sample", choices=SAMPLES, help="load the page's sample case (fetal: the CC0 atlas case)"
    )
    p.add_argument(
        "--case",
        help="fetal page: an MRI to load (.nii.gz, .nrrd, ...); ICE page: a case folder of `losslab ice simulate`",
    )
    p.add_argument("--mask", help="the MRI's brain mask (voxels > 0), with --case on the fetal page")
    p.set_defaults(func=cmd_app)
