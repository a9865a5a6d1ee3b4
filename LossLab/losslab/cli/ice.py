"""``losslab ice``: the ICE data side of ice-editing-shahin2023 (``losslab ice simulate``; evaluation and
training commands join this group)."""

from __future__ import annotations

import argparse
import sys
import warnings
from pathlib import Path

from .. import __version__


def register_commands(subparsers: argparse._SubParsersAction) -> None:
    group = subparsers.add_parser(
        "ice",
        help="ICE editing data: simulate sparse ICE volumes with CAS contours",
        description="ICE editing (ice-editing-shahin2023): simulated data. See docs/ice.md.",
    )
    commands = group.add_subparsers(dest="ice_command", metavar="ICE_COMMAND")
    group.set_defaults(func=lambda args: _group_help(group))
    p = commands.add_parser(
        "simulate",
        help="write a dataset of simulated sparse ICE cases (x, data mask, y, CAS contours, frames)",
        description=(
            "Simulate catheter sweeps of ICE frames over left-atrium anatomies (a seeded procedural phantom, or "
            "the binary masks given with --anatomy, cycled over the cases) and write OUTDIR/dataset.json (the "
            "engine's manifest, with train/val/test splits) and OUTDIR/cases/<id>/ with image.nii.gz (x), "
            "datamask.nii.gz, label.nii.gz (y), cas.nii.gz (CAS contour voxels = frame index + 1), "
            "frames.json (poses, phases, sector, 2D contours) and frames.nii.gz (the frame images)."
        ),
    )
    p.add_argument("outdir", type=Path, help="output folder (new or empty, unless --overwrite)")
    p.add_argument("--cases", type=int, default=10, help="number of cases (default 10)")
    p.add_argument("--size", type=int, default=128, help="grid size in voxels per axis (default 128)")
    p.add_argument("--spacing", type=float, default=1.1024, help="voxel size in mm (default 1.1024)")
    p.add_argument("--frames", type=int, default=28, help="frames per sweep (default 28)")
    p.add_argument(
        "--anatomy",
        type=Path,
        nargs="+",
        metavar="MASK",
        help="binary LA masks (NIfTI, NRRD, .seg.nrrd; any spacing and orientation), cycled over the cases; "
        "default: the procedural phantom, one shape per case",
    )
    p.add_argument("--seed", type=int, default=0, help="case i uses seed S + i (default 0)")
    p.add_argument(
        "--misalignment-deg",
        type=float,
        default=2.0,
        help="per-frame pose error: SD of the angle (default 2)",
    )
    p.add_argument(
        "--misalignment-mm", type=float, default=1.0, help="per-frame pose error: RMS translation (default 1)"
    )
    p.add_argument(
        "--motion", type=float, default=2.0, help="cardiac motion: peak wall displacement in mm (default 2)"
    )
    p.add_argument("--arc", type=float, help="sweep arc in degrees (default: the arc that covers the LA)")
    p.add_argument("--depth", type=float, default=120.0, help="sector depth in mm (default 120)")
    p.add_argument("--opening", type=float, default=90.0, help="sector opening in degrees (default 90)")
    p.add_argument("--dropout", type=float, default=0.0, help="probability of a shadow per frame (default 0)")
    p.add_argument("--overwrite", action="store_true", help="write into an OUTDIR that already holds files")
    p.set_defaults(func=run_simulate)


def _group_help(parser: argparse.ArgumentParser) -> int:
    parser.print_help(sys.stderr)
    return 2


def _check_outdir(outdir: Path, overwrite: bool) -> None:
    from . import CommandError

    if outdir.exists() and not outdir.is_dir():
        raise CommandError(f"{outdir} is a file; OUTDIR must be a folder")
    if outdir.is_dir() and not overwrite:
        present = sorted(p.name for p in outdir.iterdir())
        if present:
            shown = ", ".join(present[:5]) + (" ..." if len(present) > 5 else "")
            raise CommandError(
                f"{outdir} already holds files ({shown}); choose a new or empty folder, or pass --overwrite"
            )


def run_simulate(args: argparse.Namespace) -> int:
    from tqdm.auto import tqdm

    from .. import io as _io
    from ..ice import Grid, SimulationConfig, make_phantom, prepare_anatomy, simulate_case
    from ..ice.dataset import simulate_dataset
    from . import CommandError

    if args.cases < 1:
        raise CommandError(f"--cases must be at least 1, got {args.cases}")
    _check_outdir(args.outdir, args.overwrite)
    grid = Grid.cube(args.size, args.spacing)
    config = SimulationConfig(
        frames=args.frames,
        arc_deg=args.arc,
        depth_mm=args.depth,
        opening_deg=args.opening,
        misalignment_deg=args.misalignment_deg,
        misalignment_mm=args.misalignment_mm,
        motion_mm=args.motion,
        dropout=args.dropout,
    )
    anatomies = []
    for path in args.anatomy or []:
        image = _io.read_image(path)
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            anatomies.append(prepare_anatomy(image, grid, name=str(path)))
        for w in caught:
            print(f"losslab ice simulate: warning: {w.message}", file=sys.stderr)

    def make_case(i: int):
        seed = args.seed + i
        anatomy = anatomies[i % len(anatomies)] if anatomies else make_phantom(grid, seed)
        return simulate_case(anatomy, grid, config, seed=seed)

    settings = {
        "generator": f"losslab {__version__} ice simulate",
        "grid": {"size": args.size, "spacing_mm": args.spacing},
        "seed": args.seed,
        "anatomy": [str(p) for p in args.anatomy] if args.anatomy else "phantom",
        "config": {k: (list(v) if isinstance(v, tuple) else v) for k, v in config.__dict__.items()},
    }
    with tqdm(total=args.cases, unit="case", file=sys.stderr, disable=None, desc="simulating") as bar:
        manifest = simulate_dataset(
            args.outdir, make_case, args.cases, settings, progress=lambda i: bar.update()
        )
    print(f"wrote {args.cases} case(s) of {args.size}^3 x {args.spacing:g} mm: {manifest}")
    return 0
