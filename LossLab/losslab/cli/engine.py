"""``losslab train`` and ``losslab infer``: sub-commands registered by ``register_commands(subparsers)``."""

from __future__ import annotations

import argparse
import json
import shlex
import sys
from pathlib import Path


class _IntermixedParsing:
    """Lets positionals follow options (``losslab train CONFIG --resume epochs=50``): argparse alone stops
    filling ``nargs="*"`` positionals at the first option; this parses like ``parse_intermixed_args``."""

    _intermixing = False

    def parse_known_args(self, args=None, namespace=None):
        if self._intermixing:  # parse_known_intermixed_args calls back into parse_known_args
            return super().parse_known_args(args, namespace)
        self._intermixing = True
        try:
            return self.parse_known_intermixed_args(args, namespace)
        finally:
            self._intermixing = False


def _intermixed(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """Give a sub-command's parser (whatever its class) intermixed parsing of options and positionals."""
    base = type(parser)
    parser.__class__ = type(f"Intermixed{base.__name__}", (_IntermixedParsing, base), {})
    return parser


def run_training(command: str, train_fn, resume_hint: str) -> int:
    """Run ``train_fn(stop)`` (returning one training result or a list of them) so that SIGINT (Ctrl-C) and
    SIGTERM stop after the current batch, keeping the last completed epoch's checkpoint, with one line and
    no traceback (a second Ctrl-C aborts at once); print one JSON line per finished result.

    Shared by ``losslab train`` and ``losslab ice train``. Returns the exit code: 0, 128 + the signal, or 1 for
    a stop on request.
    """
    import signal
    import threading

    from ..engine.worker import stop_on_signals

    stop = threading.Event()
    with stop_on_signals(stop, abort_on_second_interrupt=True) as received:
        try:
            results = train_fn(stop)
        except KeyboardInterrupt:
            print(
                f"{command}: aborted; the last completed epoch's checkpoint is kept, continue with --resume",
                file=sys.stderr,
            )
            return 130
        except FloatingPointError as exc:  # a diverging loss: a user-fixable setting, not a crash
            raise ValueError(str(exc)) from None
    results = results if isinstance(results, list) else [results]
    for result in results:
        if result.stopped:
            why = signal.Signals(received[0]).name if received else "request"
            if result.epochs_done:
                where = (
                    f"after epoch {result.epochs_done}; checkpoint "
                    f"{result.output_dir / 'checkpoints' / 'last.pt'}; continue with: {resume_hint}"
                )
            else:
                where = "during its first epoch: no epoch completed, nothing was written"
            print(f"{command}: stopped by {why} {where}", file=sys.stderr)
            return 128 + received[0] if received else 1
        print(
            json.dumps(
                {
                    "output_dir": str(result.output_dir),
                    "model": str(result.model_path),
                    "epochs": result.epochs_done,
                    "best_epoch": result.best_epoch,
                    "final": result.history[-1] if result.history else None,
                }
            )
        )
    if received:  # the signal came after the last batch: the run had nothing left but its final files
        print(
            f"{command}: {signal.Signals(received[0]).name} arrived after the last batch; the run finished "
            f"and is complete ({results[-1].model_path})",
            file=sys.stderr,
        )
    return 0


def resume_command(prefix: str, config: str, overrides: list[str]) -> str:
    """The exact command that continues a run: its config and overrides (which may name its output_dir)
    again, then ``--resume``; quoted for a POSIX shell."""
    return " ".join([prefix, shlex.quote(str(config)), *map(shlex.quote, overrides), "--resume"])


def _train(args: argparse.Namespace) -> int:
    """``losslab train`` (see :func:`run_training` for Ctrl-C / SIGTERM)."""
    from ..engine.ensemble import run

    return run_training(
        "losslab train",
        lambda stop: run(
            args.config, args.overrides, resume=args.resume, overwrite=args.overwrite, stop=stop
        ),
        resume_command("losslab train", args.config, args.overrides),
    )


def _registered_card(name: str):
    """The card of a registered model named ``name`` when ``name`` is not a path, else None."""
    from .. import models

    if Path(name).exists():
        return None
    try:
        return models.get_card(name)
    except (KeyError, FileNotFoundError, ValueError):
        return None


#: smallest sliding window a user may ask for (voxels per axis), and most windows a --window may give:
#: a 7^3 window on a 64^3 image means 8000 network calls for context the model never saw in training
MIN_WINDOW = 16
MAX_USER_WINDOWS = 4096


def _image_header(path) -> tuple[list[int], list[float]] | None:
    """``(size, spacing)`` in ITK's ``(i, j, k)`` order from an image file's header alone (no voxel data);
    None when ITK cannot read it (the reading itself then says why, naming the file)."""
    import SimpleITK as sitk

    reader = sitk.ImageFileReader()
    reader.SetFileName(str(path))
    try:
        reader.ReadImageInformation()
    except RuntimeError:
        return None
    return list(reader.GetSize()), list(reader.GetSpacing())


def _check_model_spacing(card, images: list[str]) -> None:
    """A registered model works at its card's voxel size: refuse images of another spacing. (A sparse ICE
    volume resampled to another voxel size is not what the network saw: resampling a 1.1 mm case to the
    2.2 mm grid gave Dice 0.09 where the same case simulated at 2.2 mm gives 0.92.)"""
    import numpy as np

    want = card.spacing
    for image in images:
        header = _image_header(image)
        if header is None or len(header[1]) != len(want):
            continue
        if not np.allclose(header[1], want, rtol=1e-3, atol=0):
            have = " x ".join(f"{s:g}" for s in header[1])
            raise ValueError(
                f"{image} has {have} mm voxels; the model {card.name} works on "
                f"{' x '.join(f'{s:g}' for s in want)} mm voxels (its card's grid) and would silently give "
                f"wrong labels on another spacing: bring the image to {want[0]:g} mm first (an ICE volume: "
                f"simulate or compound it at that spacing, e.g. losslab ice simulate --size 64 --spacing "
                f"{want[0]:g})"
            )


def _check_user_window(window: list[int], predictor, images: list[str], overlap: float | None) -> None:
    """Refuse a ``--window`` too small for the network, or one that would tile the image into thousands of
    windows (a run of hours): before reading the image data (only its header)."""
    from ..engine.inference import count_windows, validate_window

    window = validate_window(window, predictor.spatial_dims)
    patch = predictor.info.patch_size or []
    floor = [min(MIN_WINDOW, p) for p in patch] if len(patch) == len(window) else [MIN_WINDOW] * len(window)
    if any(w < f for w, f in zip(window, floor)):
        raise ValueError(
            f"--window {window} is too small: at least {floor} voxels per axis (the model was trained on "
            f"patches of {patch or 'whole volumes'}); leave --window out to use the model's own"
        )
    header = _image_header(images[0])
    if header is None:
        return  # not readable as an image: the reading itself says so, with the file's name
    size = header[0][::-1][: len(window)]
    ov = predictor.info.overlap if overlap is None else overlap
    n = count_windows(size, window, ov)
    if n > MAX_USER_WINDOWS:
        raise ValueError(
            f"--window {window} with overlap {ov:g} tiles the {'x'.join(map(str, size[::-1]))} image into {n} "
            f"windows (more than {MAX_USER_WINDOWS}): use a larger --window or a smaller --overlap"
        )


def _infer(args: argparse.Namespace) -> int:
    from .. import models
    from ..engine.inference import check_output_paths, load_predictor, validate_overlap
    from . import check_device, check_model

    check_model(args.model)
    card = _registered_card(args.model)
    # a registered model, or a model folder / file with its card beside it
    beside = card or models.card_of_path(args.model)
    # a fetal parcellation model with its grid, by name or by path (its folder, or one member's file)
    parcellation = beside is not None and "tissues" in beside.raw
    if parcellation:
        models.require_mask(beside, args.mask is not None)
    outputs = {"label map": args.output, "probabilities": args.probabilities, "uncertainty": args.uncertainty}
    # user errors that need no model: before loading anything
    check_output_paths(
        [*args.image, args.model, *([args.mask] if args.mask else [])], outputs, overwrite=args.overwrite
    )
    check_device(args.device)
    if not parcellation and (args.mask or args.uncertainty):
        raise ValueError(
            "--mask and --uncertainty need a parcellation model with its card (e.g. fetal-leafdice-1.6mm: "
            "see `losslab models`)"
        )
    if parcellation:
        # resampled to the model's grid (its card), labels back on the input's grid, tissue names and colours
        from ..labelsets.segment import segment

        if len(args.image) != 1 or args.probabilities or args.window or args.overlap is not None:
            raise ValueError(
                f"{beside.name} takes one MRI; --probabilities, --window and --overlap do not apply to it"
            )
        info = segment(
            card.name if card is not None else args.model,
            args.image[0],
            args.output,
            mask=args.mask,
            spacing=beside.spacing,
            direction=beside.direction,
            uncertainty=args.uncertainty,
            device=args.device,
            progress=sys.stderr.isatty(),
        )
        print(info["output"])
        return 0
    if beside is not None and beside.spacing and "tissues" not in beside.raw:
        _check_model_spacing(beside, args.image)
    if card is not None:
        args.model = str(models.model_path(card.name))
    kwargs = {"progress": True}
    if args.overlap is not None:
        kwargs["overlap"] = validate_overlap(args.overlap)
    if args.window is not None:
        if any(v <= 0 for v in args.window):
            raise ValueError(f"--window sizes must be positive numbers of voxels, got {args.window}")
        kwargs["window"] = args.window
    predictor = load_predictor(args.model, device=args.device)
    if args.window is not None:
        _check_user_window(args.window, predictor, args.image, args.overlap)
    out = predictor.predict_files(args.image, args.output, probabilities=args.probabilities, **kwargs)
    print(str(out))
    return 0


def register_commands(subparsers) -> None:
    """Add ``train`` and ``infer`` to the ``losslab`` command line."""
    p = subparsers.add_parser(
        "train",
        help="train a model (or an ensemble) from a config file",
        description=(
            "Train as CONFIG (JSON or YAML) says, with key=value overrides; see docs/engine.md. An output_dir "
            "that holds a run is refused unless --resume or --overwrite. Ctrl-C or SIGTERM stops after the "
            "current batch, keeping the last completed epoch's checkpoint."
        ),
    )
    _intermixed(p)
    p.add_argument("config", help="config file")
    p.add_argument("overrides", nargs="*", help="overrides such as epochs=3 loss.name=dice optimizer.lr=1e-3")
    mode = p.add_mutually_exclusive_group()
    mode.add_argument(
        "--resume",
        action="store_true",
        help="continue the run in output_dir from its last checkpoint (overrides such as epochs=50 may follow)",
    )
    mode.add_argument(
        "--overwrite",
        action="store_true",
        help="replace the run that output_dir holds (its files go once the new run completes an epoch)",
    )
    p.set_defaults(func=_train)

    p = subparsers.add_parser(
        "infer",
        help="segment an image with a trained model or ensemble",
        description="Predict a label map for IMAGE (one file per input channel) and write it to OUTPUT.",
    )
    p.add_argument(
        "model",
        help="checkpoint file (model.pt), ensemble folder, or a registered model's name (`losslab models`)",
    )
    p.add_argument("image", nargs="+", help="input image file(s), one per input channel, in training order")
    p.add_argument("-o", "--output", required=True, help="output label map (.nii.gz, .nrrd, .seg.nrrd)")
    p.add_argument("--probabilities", help="also write the class probabilities (a vector image) here")
    p.add_argument(
        "--mask",
        help="brain mask on the image's grid (parcellation models by name: crop to it, background outside)",
    )
    p.add_argument(
        "--uncertainty", help="the ensemble members' disagreement map (parcellation models by name)"
    )
    p.add_argument("--device", default="auto", help="auto (default), cpu, cuda, cuda:N or mps")
    p.add_argument(
        "--window",
        type=int,
        nargs="+",
        help="sliding-window size in voxels, one per axis (or one for a cube); default: the model's",
    )
    p.add_argument(
        "--overlap", type=float, help="sliding-window overlap in [0, 1) (default: the model's, usually 0.5)"
    )
    p.add_argument("--overwrite", action="store_true", help="replace existing output files (never an input)")
    p.set_defaults(func=_infer)
