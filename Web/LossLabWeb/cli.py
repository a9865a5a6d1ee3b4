"""``losslab app``: the web app's command, registered with the core command line through the entry point
``losslab.commands: app`` (pyproject.toml), so that the core never imports the web app (DESIGN.md).

Importing this module imports neither trame nor slicer nor torch (``losslab --help`` stays fast); the command
imports them when it runs. Without the ``[web]`` extra it prints one line: the install command.

- ``--sample NAME`` chooses the page (``--sample ice`` serves the ICE page); a ``--page`` that names another
  page is an error. Without either, the fetal page.
- ``--threads N``: torch's CPU threads for the models (default :func:`default_threads`). The server renders
  the views and runs the edits in one process; on a machine whose cores are shared (other jobs, the browser)
  more threads than free cores make every edit slower (docs/web.md has the figures).
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

INSTALL_HINT = 'install the web extra: pip install -e ".[web]" (from the LossLab checkout)'
PAGES = ("fetal", "ice")
SAMPLES = ("fetal", "ice")
#: the checkout's folders that hold what the pages import (the modules' Lib layers, the core, the app)
CHECKOUT_FOLDERS = ("LossLab", "FetalParcellation", "ICEEditing", "Web")


def checkout_root() -> Path:
    """The repository checkout holding ``Web/`` (this file is ``<root>/Web/LossLabWeb/cli.py``)."""
    return Path(__file__).resolve().parents[2]


def default_threads() -> int:
    """Torch threads of ``losslab app`` by default: half the CPU cores this process may use, 1 to 8.

    Half, because the same machine renders the views (Mesa's llvmpipe threads), runs the browser and often
    other jobs; an edit at 64^3 is not faster with more than a few threads, and slower when they outnumber
    the free cores."""
    try:
        cores = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        cores = os.cpu_count() or 1
    return max(1, min(8, cores // 2))


def _error(message: str):
    from losslab.cli import CommandError

    return CommandError(message)


def _import_server():
    root = checkout_root()
    for folder in CHECKOUT_FOLDERS:
        path = str(root / folder)
        if (root / folder).is_dir() and path not in sys.path:
            sys.path.insert(0, path)
    if not (root / "FetalParcellation").is_dir():
        raise _error(f"the web app needs a LossLab checkout (FetalParcellation/ not found in {root})")
    try:
        import trame  # noqa: F401
        import trame_slicer  # noqa: F401
    except ImportError as exc:
        raise _error(
            f"the web app needs trame-slicer ({exc.name or exc} is missing); {INSTALL_HINT}"
        ) from None
    from . import server

    return server


def choose_page(page: str | None, sample: str | None) -> str:
    """The page to serve: ``--sample``'s (it names a page's sample case), else ``--page``, else fetal.

    Raises:
        CommandError: ``--page`` and ``--sample`` name different pages.
    """
    if sample is not None and page is not None and page != sample:
        raise _error(
            f"--page {page} and --sample {sample} disagree: --sample {sample} loads the {sample} page's sample "
            f"case (use --page {sample}, or drop --page)"
        )
    return sample or page or "fetal"


def _check_case(args: argparse.Namespace, page: str) -> None:
    """``--case`` is an MRI file on the fetal page, a case folder of ``losslab ice simulate`` on the ICE page."""
    if args.case is not None and args.sample is not None:
        raise _error("--case and --sample both name a case to load: give one")
    if args.mask is not None and (args.case is None or page != "fetal"):
        raise _error("--mask needs --case on the fetal page (the MRI it belongs to)")
    if args.case is None:
        return
    case = Path(args.case)
    if page == "ice":
        from losslab.ice.dataset import CASE_FILES

        if not case.is_dir():
            raise _error(
                f"--case {args.case}: no such folder (the ICE page expects a case folder of `losslab ice "
                "simulate`)"
            )
        missing = [name for name in CASE_FILES if not (case / name).is_file()]
        if missing:
            raise _error(f"--case {args.case}: not an ICE case folder, {missing[0]} is missing")
    elif not case.is_file():
        raise _error(f"--case {args.case}: no such file (expected an MRI such as a .nii.gz)")


def set_threads(threads: int) -> int:
    """Torch's intra-op threads for this process (and one inter-op thread); returns the number set."""
    import torch

    torch.set_num_threads(int(threads))
    try:
        torch.set_num_interop_threads(1)
    except RuntimeError:  # already set, or parallel work already started: keep it
        pass
    return torch.get_num_threads()


def cmd_app(args: argparse.Namespace) -> int:
    if not 0 < args.port < 65536:
        raise _error(f"--port must be in 1..65535, got {args.port}")
    threads = default_threads() if args.threads is None else args.threads
    if threads < 1:
        raise _error(f"--threads must be at least 1, got {args.threads}")
    page = choose_page(args.page, args.sample)
    _check_case(args, page)
    server = _import_server()
    threads = set_threads(threads)
    case = None if args.case is None else (args.case, args.mask)
    server.serve(
        page, host=args.host, port=args.port, sample=args.sample is not None, case=case, threads=threads
    )
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
    p.add_argument(
        "--page", choices=PAGES, help="the page to show (default: the --sample's page, else fetal)"
    )
    p.add_argument(
        "--sample",
        choices=SAMPLES,
        help="serve that page with its sample case loaded (fetal: the CC0 atlas case; ice: the bundled case)",
    )
    p.add_argument(
        "--case",
        help="fetal page: an MRI to load (.nii.gz, .nrrd, ...); ICE page: a case folder of `losslab ice simulate`",
    )
    p.add_argument("--mask", help="the MRI's brain mask (voxels > 0), with --case on the fetal page")
    p.add_argument(
        "--threads",
        type=int,
        help=f"torch CPU threads for the models (default: half the cores, 1 to 8; here {default_threads()})",
    )
    p.set_defaults(func=cmd_app)
