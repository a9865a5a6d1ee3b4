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
    from . import group_help, seed

    group.set_defaults(func=lambda args: group_help(group))
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
        "default: a procedural anatomy from --prior, one shape per case",
    )
    p.add_argument(
        "--prior",
        choices=("atrium", "phantom"),
        default="atrium",
        help="procedural anatomy when no --anatomy is given: 'atrium', the wide prior (40-160 ml bodies, "
        "pulmonary-vein and appendage variants, free orientation; the default) or 'phantom', the earlier "
        "narrow family (an ellipsoid body with four veins), kept as a held-out shape family (docs/ice.md)",
    )
    p.add_argument("--seed", type=seed, default=0, help="case i uses seed S + i (default 0)")
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
    p.add_argument(
        "--overwrite",
        action="store_true",
        help="replace the dataset an OUTDIR holds (swapped in when the new one is complete; other files stay)",
    )
    p.set_defaults(func=run_simulate)

    from .engine import _intermixed

    p = commands.add_parser(
        "train",
        help="train an ICE editing model (editing loss, CE, Dice or InterCNN) with samples made on the fly",
        description=(
            "Train an editing model f(x, y_init, u) as CONFIG (JSON or YAML; see docs/ice.md and configs/ice/) "
            "says, with key=value overrides: per sample, y_init from the segmentation model (cached per case) "
            "or perturbed from y, a training scribble where y_init is worst, u and A. An output_dir that "
            "holds a run is refused unless --resume or --overwrite. Ctrl-C or SIGTERM stops after the current "
            "batch, keeping the last completed epoch's checkpoint."
        ),
    )
    p.add_argument("config", help="config file")
    p.add_argument("overrides", nargs="*", help="overrides such as epochs=3 method=ce optimizer.lr=1e-3")
    mode = p.add_mutually_exclusive_group()
    mode.add_argument("--resume", action="store_true", help="continue the run in output_dir")
    mode.add_argument("--overwrite", action="store_true", help="replace the run that output_dir holds")
    p.set_defaults(func=run_train)
    _intermixed(p)

    p = commands.add_parser(
        "evaluate",
        help="the paper's protocol: Table 1 (one edit), Fig. 3 (sequential edits), first-edit drift",
        description=(
            "Evaluate editing models on the cases of a `losslab ice simulate` DATASET as ice-editing-shahin2023 "
            "does: y_init from the segmentation model; Table 1: one edit (the furthest CAS contour), p95 of the "
            "editing metric D overall / near / far, No Editing, Wilcoxon against InterCNN when a method is named "
            "intercnn; Fig. 3: up to --edits sequential edits (InterCNN gets its accumulated edits), p95 "
            "distance from all CAS contours to the prediction after each; the first edit's drift after edits "
            "2..K. Writes OUTDIR/table1.md, OUTDIR/fig3.png and the JSON (OUTDIR/evaluation.json or --json)."
        ),
    )
    p.add_argument("dataset", type=Path, help="dataset.json of `losslab ice simulate` (or its folder)")
    p.add_argument(
        "--segmentation-model", required=True, help="segmentation model: checkpoint path or registered name"
    )
    p.add_argument(
        "--editing-model",
        required=True,
        nargs="+",
        metavar="NAME=PATH",
        help="editing models to compare: NAME=checkpoint path or registered name (a NAME starting with "
        "'intercnn' gets accumulated edits and is the Wilcoxon reference)",
    )
    p.add_argument("--edits", type=int, default=10, help="sequential edits per case (default 10)")
    p.add_argument(
        "--split",
        default="test",
        help="the dataset's split to use (train, val, test), or 'all' (default test)",
    )
    p.add_argument(
        "--sigma-mm", type=float, default=None, help="sigma of A for the metric (default 22.048 mm)"
    )
    p.add_argument(
        "--metric-contours",
        choices=("all", "edited"),
        default="all",
        help="y_cas of the metric D: all the case's CAS contours (default; eq. 5 weighs each by A) or the "
        "edited frame's contour alone (then the far column is preservation alone: 0 for a model that edits "
        "nothing)",
    )
    p.add_argument(
        "--protocol",
        choices=("paper", "ideal"),
        default="paper",
        help="paper: Table 1, Fig. 3 and the drift (default); ideal: the ideal-user protocol (--edits corrections "
        "with y's own contour on the worst frame, from the segmentation model's output and from y damaged by "
        "a bite and a bump; Dice and HD95 to y per edit, clean, noisy and strict-local; docs/ice.md); writes "
        "OUTDIR/ideal.md, ideal.png and ideal.json",
    )
    p.add_argument(
        "--noise",
        type=float,
        nargs=3,
        metavar=("OFFSET_MM", "JITTER_MM", "FRACTION"),
        default=(1.0, 1.0, 0.6),
        help="ideal protocol: the noisy scribbles' offset along the normal (sign drawn per edit), RMS jitter "
        "and partial fraction (default 1 1 0.6)",
    )
    p.add_argument(
        "--strict-threshold",
        type=float,
        default=0.1,
        help="ideal protocol: 'strict local' threshold of the strict condition (voxels with A below it keep "
        "the mask; default 0.1)",
    )
    p.add_argument(
        "--conditions",
        nargs="+",
        choices=("clean", "noisy", "strict"),
        default=["clean", "noisy", "strict"],
        help="ideal protocol: the conditions to run (default all three)",
    )
    p.add_argument("--seed", type=seed, default=0, help="ideal protocol: case i uses seed S + i (default 0)")
    p.add_argument(
        "--json", type=Path, help="write the JSON here (default OUTDIR/evaluation.json, or ideal.json)"
    )
    p.add_argument(
        "-o", "--outdir", type=Path, default=Path("losslab-output/ice-evaluation"), help="output folder"
    )
    p.add_argument("--device", default="cpu", help="cpu | cuda | auto (default cpu)")
    p.add_argument(
        "--overwrite",
        action="store_true",
        help="replace the outputs of an earlier evaluation (never an input)",
    )
    p.set_defaults(func=run_evaluate)


#: bytes of memory a voxel of the grid needs while one case is simulated (measured: about 40 at 128^3 and 192^3)
SIMULATION_BYTES_PER_VOXEL = 48


def _available_memory() -> int | None:
    """Bytes of memory available to a new computation (Linux: MemAvailable), None where unknown."""
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        return None  # no /proc/meminfo (not Linux) or an unreadable one: unknown, the check is skipped
    return None


def _check_memory(size: int) -> None:
    """Refuse a grid whose simulation cannot fit in memory, before any work (numpy would fail later with
    an out-of-memory error, or the machine would swap for hours)."""
    from . import CommandError

    need = SIMULATION_BYTES_PER_VOXEL * size**3
    have = _available_memory()
    if have is not None and need > have:
        raise CommandError(
            f"--size {size} needs about {need / 2**30:.1f} GiB of memory to simulate a case ({size}^3 voxels); "
            f"{have / 2**30:.1f} GiB are available: use a smaller --size (the paper's is 128)"
        )


def _check_phantom_fits(anatomy, grid, seed: int) -> None:
    """The procedural phantom must lie inside the grid with a one-voxel margin, as --anatomy masks must: a
    phantom cut by the grid's border gives a label that is mostly (or all) foreground."""
    import numpy as np

    from . import CommandError

    faces = (anatomy[0], anatomy[-1], anatomy[:, 0], anatomy[:, -1], anatomy[:, :, 0], anatomy[:, :, -1])
    if any(np.any(f) for f in faces):
        extent = max(grid.shape) * max(grid.spacing)
        raise CommandError(
            f"the phantom (seed {seed}) does not fit in the grid ({grid.shape[0]}^3 x {grid.spacing[0]:g} mm = "
            f"{extent:.1f} mm across; a phantom needs about 141 mm, the paper's 128 x 1.1024 mm): use "
            f"--spacing {141.1 / grid.shape[0]:.4f} or more with --size {grid.shape[0]}"
        )


def _check_anatomy_outside(anatomy: list[Path], outdir: Path) -> None:
    """``--overwrite`` replaces OUTDIR's cases: a mask read from there would be destroyed with them."""
    from . import CommandError

    replaced = [outdir / "cases", outdir / "dataset.json"]
    for path in anatomy:
        target = path.resolve()
        for old in replaced:
            if target == old.resolve() or old.resolve() in target.parents:
                raise CommandError(
                    f"--anatomy {path} lies in {old}, which --overwrite replaces: copy the mask out of OUTDIR "
                    "first, or write the dataset to another folder"
                )


def run_simulate(args: argparse.Namespace) -> int:
    from tqdm.auto import tqdm

    from .. import io as _io
    from ..ice import Grid, SimulationConfig, make_atrium, make_phantom, prepare_anatomy, simulate_case
    from ..ice.dataset import dataset_lock, remove_stale_staging, simulate_dataset
    from . import CommandError

    if args.cases < 1:
        raise CommandError(f"--cases must be at least 1, got {args.cases}")
    grid = Grid.cube(args.size, args.spacing)
    _check_memory(args.size)
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
    if args.outdir.exists() and not args.outdir.is_dir():
        raise CommandError(f"{args.outdir} is a file; OUTDIR must be a folder")
    _check_anatomy_outside(args.anatomy or [], args.outdir)
    created = not args.outdir.exists()
    with dataset_lock(args.outdir):  # one writer per folder: a second run is refused, not mixed in
        try:
            remove_stale_staging(args.outdir)  # what a killed run left
            _io.check_output_folder(args.outdir, overwrite=args.overwrite)
            anatomies = []
            for path in args.anatomy or []:
                image = _io.read_image(path)
                with warnings.catch_warnings(record=True) as caught:
                    warnings.simplefilter("always")
                    anatomies.append(prepare_anatomy(image, grid, name=str(path)))
                for w in caught:
                    print(f"losslab ice simulate: warning: {w.message}", file=sys.stderr)

            prior = make_atrium if args.prior == "atrium" else make_phantom

            def make_case(i: int):
                seed = args.seed + i
                if anatomies:
                    return simulate_case(anatomies[i % len(anatomies)], grid, config, seed=seed)
                anatomy = prior(grid, seed)  # the atrium prior refuses a body that does not fit the grid
                if prior is make_phantom:
                    _check_phantom_fits(anatomy, grid, seed)
                return simulate_case(anatomy, grid, config, seed=seed)

            if not anatomies and prior is make_phantom:  # a grid too small for it fails before the first case
                _check_phantom_fits(make_phantom(grid, args.seed), grid, args.seed)
            settings = {
                "generator": f"losslab {__version__} ice simulate",
                "grid": {"size": args.size, "spacing_mm": args.spacing},
                "seed": args.seed,
                "anatomy": [str(p) for p in args.anatomy] if args.anatomy else args.prior,
                "config": {k: (list(v) if isinstance(v, tuple) else v) for k, v in config.__dict__.items()},
            }
            with tqdm(total=args.cases, unit="case", file=sys.stderr, disable=None, desc="simulating") as bar:
                manifest = simulate_dataset(
                    args.outdir, make_case, args.cases, settings, progress=lambda i: bar.update()
                )
        except BaseException:
            if created and args.outdir.is_dir() and not any(args.outdir.iterdir()):
                args.outdir.rmdir()  # a refused or interrupted run into a new folder leaves nothing behind
            raise
    print(f"wrote {args.cases} case(s) of {args.size}^3 x {args.spacing:g} mm: {manifest}")
    return 0


def run_train(args: argparse.Namespace) -> int:
    """``losslab ice train``: Ctrl-C / SIGTERM stop after the current batch (a second Ctrl-C aborts)."""
    from ..ice.training import load_training_config, train_editing
    from . import check_device
    from .engine import resume_command, run_training

    cfg = load_training_config(args.config, args.overrides)
    check_device(cfg["device"])
    # a resumed run's settings are checked by train_editing before any work
    from ..engine.checkpoint import check_run_folder
    from ..io import folder_lock

    check_run_folder(cfg["output_dir"], resume=args.resume, overwrite=args.overwrite)
    with folder_lock(cfg["output_dir"], "another training run is writing this output_dir now"):
        return run_training(
            "losslab ice train",
            lambda stop: train_editing(
                args.config, args.overrides, resume=args.resume, overwrite=args.overwrite, stop=stop
            ),
            resume_command("losslab ice train", args.config, args.overrides),
        )


def _model_files(spec: str) -> list[Path]:
    """The files a model argument reads: a checkpoint, an ensemble folder's files, or a registered model's."""
    path = Path(spec)
    if path.is_file():
        return [path]
    if path.is_dir():
        return [f for f in path.rglob("*") if f.is_file()]
    from .. import models

    try:
        card = models.get_card(spec)
    except ValueError:
        return []
    return [card.folder / rel for rel in card.files] + [card.folder / models.CARD]


#: what the paper's protocol writes into OUTDIR (ice.evaluate.write_outputs): the table, Fig. 3, the JSON
_PAPER_OUTPUTS = ("table1.md", "fig3.png", "evaluation.json")


def run_evaluate(args: argparse.Namespace) -> int:
    """``losslab ice evaluate``."""
    from ..ice.dataset import dataset_cases
    from ..ice.evaluate import evaluate, write_outputs
    from ..ice.interactions import PAPER_SIGMA_MM
    from ..io import check_outputs
    from . import CommandError, check_device, check_model

    models = {}
    for item in args.editing_model:
        name, sep, path = item.partition("=")
        if not sep or not name or not path:
            raise CommandError(f"--editing-model takes NAME=PATH (e.g. editing=run/model.pt), got {item!r}")
        if name in models:
            raise CommandError(f"--editing-model: the name {name!r} is given twice")
        models[name] = check_model(path, f"--editing-model {name}")
    check_model(args.segmentation_model, "--segmentation-model")
    if args.edits < 1:
        raise CommandError(f"--edits must be at least 1, got {args.edits}")
    dataset = args.dataset / "dataset.json" if args.dataset.is_dir() else args.dataset
    sigma = PAPER_SIGMA_MM if args.sigma_mm is None else args.sigma_mm
    if not sigma > 0:
        raise CommandError(f"--sigma-mm must be > 0, got {args.sigma_mm}")
    cases = dataset_cases(dataset, None if args.split == "all" else args.split)
    if not cases:
        raise CommandError(
            f"the dataset {str(dataset)!r} has no case in split {args.split!r}: use --split all to evaluate "
            "every case (or another split)"
        )
    # every output checked against every input (manifest, case files, models) before any work
    inputs = [dataset, *(f for folder in dataset_cases(dataset).values() for f in folder.glob("*"))]
    for spec in [args.segmentation_model, *models.values()]:
        inputs += _model_files(spec)
    names = ("ideal.md", "ideal.png", "ideal.json") if args.protocol == "ideal" else _PAPER_OUTPUTS
    json_path = args.json or args.outdir / names[2]
    check_outputs(
        {
            names[0]: args.outdir / names[0],
            names[1]: args.outdir / names[1],
            "--json" if args.json else names[2]: json_path,
        },
        inputs,
        overwrite=args.overwrite,
    )
    check_device(args.device)
    if args.protocol == "ideal":
        return _run_ideal(args, dataset, models)
    result = evaluate(
        dataset,
        args.segmentation_model,
        models,
        edits=args.edits,
        split=args.split,
        sigma_mm=sigma,
        device=args.device,
        contours=args.metric_contours,
        progress=sys.stderr.isatty(),  # a bar on a terminal; none in logs
    )
    paths = write_outputs(result, args.outdir, json_path)
    print(paths["table1"].read_text(encoding="utf-8"), end="")
    for name, curve in result["sequential"].items():
        print(
            f"{name}: p95 CAS -> prediction after edits 1..{len(curve)}: "
            + ", ".join(f"{v:.2f}" for v in curve)
        )
    print(f"wrote {paths['table1']}, {paths['fig3']}, {paths['json']}")
    return 0


def _run_ideal(args: argparse.Namespace, dataset: Path, models: dict) -> int:
    """``losslab ice evaluate --protocol ideal``."""
    import math

    from ..ice.ideal import evaluate_ideal, write_ideal_outputs
    from . import CommandError

    offset, jitter, fraction = args.noise
    if not all(math.isfinite(v) for v in args.noise) or jitter < 0 or not 0 < fraction <= 1:
        raise CommandError(
            f"--noise takes OFFSET_MM JITTER_MM FRACTION with JITTER_MM >= 0 and FRACTION in (0, 1], got "
            f"{' '.join(f'{v:g}' for v in args.noise)}"
        )
    if not 0 < args.strict_threshold <= 1:
        raise CommandError(f"--strict-threshold must be in (0, 1], got {args.strict_threshold:g}")
    result = evaluate_ideal(
        dataset,
        args.segmentation_model,
        models,
        edits=args.edits,
        split=args.split,
        seed=args.seed,
        noise={"offset_mm": offset, "jitter_mm": jitter, "fraction": fraction},
        strict_threshold=args.strict_threshold,
        conditions=args.conditions,
        device=args.device,
    )
    paths = write_ideal_outputs(result, args.outdir, args.json)
    print(paths["markdown"].read_text(encoding="utf-8"), end="")
    print(f"wrote {paths['markdown']}, {paths['figure']}, {paths['json']}")
    return 0
