"""Simulated ICE cases on disk: one folder per case, and a dataset folder in the engine's manifest format.

A case folder ``cases/<id>/`` holds (arrays ``(k, j, i)``, the grid's LPS geometry in every file):

- ``image.nii.gz``: x, float32 in [0, 1] (0 where no frame hit);
- ``datamask.nii.gz``: uint8, 1 where a frame hit;
- ``label.nii.gz``: y, uint8 0/1;
- ``cas.nii.gz``: CAS contour voxels, frame index + 1 (uint16; where frames cross, the later frame);
- ``frames.nii.gz``: the frame images as a uint8 stack (0-255 for [0, 1]), array ``(frame, v, u)``,
  spacing ``(pixel_mm, pixel_mm, 1)``;
- ``frames.json``: grid, sector, transducer, catheter axis, settings, and per frame its ``pose`` and
  ``acquired_pose`` (4x4, frame pixel ``(u, v, 0, 1)`` -> RAS mm), ``phase`` and ``contours`` (CAS polylines
  in frame pixels ``(u, v)``).

:func:`read_case` rebuilds an :class:`~losslab.ice.simulate.ICECase` from these files (each frame's voxels
and CAS voxels are recomputed from its pose), so the interaction synthesis runs on cases from disk as on
fresh ones. The dataset's ``dataset.json`` lists the cases with ``image`` and ``label`` (what the engine
trains on) plus ``datamask``, ``cas`` and ``frames`` per case, and ``train`` / ``val`` / ``test`` splits.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np

from .. import io as _io
from .geometry import Grid, Sector
from .simulate import Frame, ICECase, polylines_to_voxels

CASE_FILES = ("image.nii.gz", "datamask.nii.gz", "label.nii.gz", "cas.nii.gz", "frames.nii.gz", "frames.json")
FORMAT_VERSION = 1


def _matrix(m: np.ndarray) -> list[list[float]]:
    return [[float(v) for v in row] for row in np.asarray(m)]


def write_case(case: ICECase, folder: str | os.PathLike) -> dict[str, Path]:
    """Write a case's files into ``folder`` (atomic writes through :mod:`losslab.io`); returns their paths."""
    folder = Path(folder)
    geometry = case.grid.geometry
    paths = {
        "image": _io.write_image(folder / "image.nii.gz", case.image.astype(np.float32), geometry),
        "datamask": _io.write_image(folder / "datamask.nii.gz", case.datamask.astype(np.uint8), geometry),
        "label": _io.write_image(folder / "label.nii.gz", case.label.astype(np.uint8), geometry),
        "cas": _io.write_image(folder / "cas.nii.gz", case.cas.astype(np.uint16), geometry),
    }
    stack = np.stack([np.rint(np.clip(f.image, 0, 1) * 255).astype(np.uint8) for f in case.frames])
    px = case.sector.pixel_mm
    paths["frames_images"] = _io.write_image(
        folder / "frames.nii.gz",
        stack,
        _io.Geometry((px, px, 1.0), (0.0, 0.0, 0.0), tuple(np.eye(3).ravel())),
    )
    meta = {
        "format": "losslab-ice-case",
        "version": FORMAT_VERSION,
        "conventions": (
            "arrays (k, j, i); frame images (frame, v, u) with u the column (along the catheter) and v the row "
            "(depth); pose: 4x4 mapping frame pixel (u, v, 0, 1) to RAS mm (files are LPS: RAS = diag(-1,-1,1) LPS); "
            "the third column is the plane's unit normal; apex (transducer) at pixel (u_c, 0); contours: polylines "
            "of (u, v) pixels, outward normal (t_v, -t_u); cas.nii.gz: frame index + 1, later frames overwrite"
        ),
        "grid": {"shape": list(case.grid.shape), "spacing_kji": list(case.grid.spacing)},
        "sector": case.sector.as_dict(),
        "transducer_ras": [float(v) for v in case.transducer],
        "catheter_axis_ras": [float(v) for v in case.catheter_axis],
        "settings": case.settings,
        "frames": [
            {
                "index": f.index,
                "phase": f.phase,
                "pose": _matrix(f.pose),
                "acquired_pose": _matrix(f.acquired_pose),
                "contours": [np.round(c, 4).tolist() for c in f.contours],
            }
            for f in case.frames
        ],
    }
    paths["frames"] = _io.write_text(folder / "frames.json", json.dumps(meta) + "\n")
    return paths


def read_case(folder: str | os.PathLike) -> ICECase:
    """Read a case folder written by :func:`write_case` (or ``losslab ice simulate``).

    Raises:
        FileNotFoundError: a file of the case is missing (the message names it).
        ValueError: the files disagree (grids, frame count).
    """
    folder = Path(folder)
    for name in CASE_FILES:
        if not (folder / name).is_file():
            raise FileNotFoundError(f"{folder}: not an ICE case folder, {name} is missing")
    meta = _io.read_json(folder / "frames.json", "ICE case description")
    if not isinstance(meta, dict) or meta.get("format") != "losslab-ice-case":
        raise ValueError(f"{folder / 'frames.json'}: not a LossLab ICE case description")
    image = _io.read_image(folder / "image.nii.gz")
    others = {n: _io.read_image(folder / f"{n}.nii.gz") for n in ("datamask", "label", "cas")}
    for name, other in others.items():
        _io.check_same_grid(image, other, ("image.nii.gz", f"{name}.nii.gz"))
    _check_case_arrays(folder, image, others)
    grid = Grid.from_geometry(image.array.shape, image.geometry)
    try:
        s = meta["sector"]
        sector = Sector(depth_mm=s["depth_mm"], opening_deg=s["opening_deg"], pixel_mm=s["pixel_mm"])
        for entry in meta["frames"]:
            for key in ("index", "pose", "acquired_pose", "phase", "contours"):
                entry[key]  # noqa: B018 (present, or the KeyError below names it)
    except (KeyError, TypeError) as exc:
        raise ValueError(
            f"{folder / 'frames.json'}: not a complete ICE case description (missing or malformed {exc}); "
            "write the case again with `losslab ice simulate`"
        ) from None
    stack = _io.read_image(folder / "frames.nii.gz").array
    if stack.shape[0] != len(meta["frames"]):
        raise ValueError(
            f"{folder}: frames.nii.gz has {stack.shape[0]} frames, frames.json {len(meta['frames'])}"
        )
    fan = sector.mask()
    uv = np.argwhere(fan)[:, ::-1].astype(np.float64)
    step = 0.25 * min(grid.spacing) / sector.pixel_mm
    frames = []
    for f, entry in enumerate(meta["frames"]):
        pose = np.asarray(entry["pose"], float)
        to_index = grid.ras_to_index() @ pose
        idx = np.rint(uv @ to_index[:3, :2].T + to_index[:3, 3]).astype(np.int64)
        inside = np.all((idx >= 0) & (idx < np.asarray(grid.shape)), axis=1)
        contours = [np.asarray(c, float).reshape(-1, 2) for c in entry["contours"]]
        frames.append(
            Frame(
                index=int(entry["index"]),
                image=stack[f].astype(np.float32) / 255.0,
                pose=pose,
                acquired_pose=np.asarray(entry["acquired_pose"], float),
                phase=float(entry["phase"]),
                contours=contours,
                voxels=np.unique(np.ravel_multi_index(tuple(idx[inside].T), grid.shape)),
                cas_voxels=polylines_to_voxels(contours, to_index, grid.shape, step),
            )
        )
    return ICECase(
        grid=grid,
        sector=sector,
        image=image.array.astype(np.float32),
        datamask=others["datamask"].array != 0,
        label=(others["label"].array != 0).astype(np.uint8),
        cas=others["cas"].array.astype(np.uint16),
        frames=frames,
        transducer=np.asarray(meta["transducer_ras"], float),
        catheter_axis=np.asarray(meta["catheter_axis_ras"], float),
        settings=meta.get("settings", {}),
    )


def _check_case_arrays(folder: Path, image: _io.Image, others: dict[str, _io.Image]) -> None:
    """Refuse what no simulated case holds and what would train or score silently wrong: NaN / inf in x,
    a label y that is not binary (a label 5 would count as the left atrium); warn for an empty y."""
    x = image.array
    if np.issubdtype(x.dtype, np.floating):
        bad = int(np.count_nonzero(~np.isfinite(x)))
        if bad:
            raise ValueError(
                f"{folder / 'image.nii.gz'}: {bad} NaN or infinite voxel(s) in the ICE image x; a case needs "
                "finite intensities"
            )
    label = others["label"]
    _io.check_label_values(label, "label y")
    values = sorted({int(v) for v in np.unique(label.array)} - {0, 1})
    if values:
        raise ValueError(
            f"{folder / 'label.nii.gz'}: the label y holds value(s) {values[:10]}; an ICE label is 0 "
            "(background) or 1 (left atrium)"
        )
    if not label.array.any():
        warnings.warn(f"{folder / 'label.nii.gz'}: the label y is empty (no left-atrium voxel)", stacklevel=3)


def dataset_cases(manifest: str | os.PathLike, split: str | None = None) -> dict[str, Path]:
    """``{case id: case folder}`` of a dataset written by ``losslab ice simulate`` (all cases, or one split's),
    in the manifest's order; each folder reads with :func:`read_case`.

    Raises:
        FileNotFoundError: no manifest. ValueError: an unknown split (the message lists the splits).
    """
    manifest = Path(manifest)
    if manifest.is_dir():
        manifest = manifest / "dataset.json"
    if not manifest.is_file():
        raise FileNotFoundError(f"no dataset manifest at {manifest}")
    raw = _io.read_json(manifest, "dataset manifest")
    if not isinstance(raw, dict) or not isinstance(raw.get("cases"), list):
        raise ValueError(f"dataset manifest {manifest} must hold an object with a list of 'cases'")
    folders = {
        str(c["id"]): manifest.parent / Path(c["frames"]).parent
        for c in raw["cases"]
        if isinstance(c, dict) and "frames" in c and "id" in c
    }
    if split is None:
        return folders
    splits = raw.get("splits") or {}
    if split not in splits:
        raise ValueError(f"{manifest} has no split {split!r}; its splits are {sorted(splits)}")
    unknown = [cid for cid in splits[split] if str(cid) not in folders]
    if unknown:
        raise ValueError(
            f"{manifest}: split {split!r} names case(s) {unknown[:5]} that 'cases' does not list"
        )
    return {str(cid): folders[str(cid)] for cid in splits[split]}


def split_ids(ids: Sequence[str], fractions: tuple[float, float] = (0.15, 0.15)) -> dict[str, list[str]]:
    """``train`` / ``val`` / ``test`` in order of ``ids``: the last ``round(n * test)`` cases (at least one
    from two cases on, so that ``losslab ice evaluate`` has a test case) are the test split, the
    ``round(n * val)`` before them validation, the rest (at least one) training."""
    n = len(ids)
    n_test = max(1, int(round(n * fractions[1]))) if n >= 2 else 0
    n_val = int(round(n * fractions[0])) if n >= 3 else 0
    n_train = max(1, n - n_val - n_test)
    ids = list(ids)
    return {
        "train": ids[:n_train],
        "val": ids[n_train : n_train + n_val],
        "test": ids[n_train + n_val :],
    }


def write_manifest(
    outdir: str | os.PathLike, case_ids: Sequence[str], settings: dict, name: str = "ice-sim"
) -> Path:
    """Write ``dataset.json`` for case folders ``cases/<id>/`` already in ``outdir``."""
    outdir = Path(outdir)
    cases = []
    for cid in case_ids:
        base = f"cases/{cid}"
        cases.append(
            {
                "id": cid,
                "image": f"{base}/image.nii.gz",
                "label": f"{base}/label.nii.gz",
                "datamask": f"{base}/datamask.nii.gz",
                "cas": f"{base}/cas.nii.gz",
                "frames": f"{base}/frames.json",
                "frame_images": f"{base}/frames.nii.gz",
            }
        )
    manifest = {
        "name": name,
        "description": "Simulated sparse ICE volumes of the left atrium (losslab ice simulate)",
        "labels": ["background", "left atrium"],
        "extra_channels": [],
        "cases": cases,
        "splits": split_ids(list(case_ids)),
        "ice": settings,
    }
    return _io.write_text(outdir / "dataset.json", json.dumps(manifest, indent=1) + "\n")


def case_ids(n: int) -> list[str]:
    width = max(3, len(str(n - 1)))
    return [f"ice{i:0{width}d}" for i in range(n)]


#: hidden entries of a dataset folder while ``losslab ice simulate`` writes it (see :func:`simulate_dataset`)
STAGING_PREFIX = ".simulating-"
REPLACED_PREFIX = ".replaced-"


def dataset_lock(outdir: str | os.PathLike):
    """The exclusive right to write the dataset folder ``outdir`` (:func:`losslab.io.folder_lock`).

    Raises:
        BlockingIOError: another process writes ``outdir`` now (the message says so and names it).
    """
    return _io.folder_lock(outdir, "another `losslab ice simulate` is writing this folder now")


def remove_stale_staging(outdir: str | os.PathLike) -> None:
    """Remove what an interrupted :func:`simulate_dataset` left in ``outdir`` (its hidden staging and
    replaced folders); call it while holding :func:`dataset_lock`."""
    outdir = Path(outdir)
    if outdir.is_dir():
        for entry in outdir.iterdir():
            if entry.is_dir() and entry.name.startswith((STAGING_PREFIX, REPLACED_PREFIX)):
                shutil.rmtree(entry, ignore_errors=True)


def simulate_dataset(
    outdir: str | os.PathLike,
    make_case: Callable[[int], ICECase],
    n_cases: int,
    settings: dict,
    progress: Callable[[int], None] | None = None,
) -> Path:
    """Simulate ``n_cases`` cases with ``make_case(i)``, write them under ``outdir/cases/`` and the manifest.

    The new dataset is written beside the old one, in a hidden staging folder of ``outdir``, and swapped in
    at the end (``cases/`` and ``dataset.json``; other files of ``outdir`` are left alone): an interrupted
    run leaves the previous dataset whole, never a manifest over a mixture of old and new cases. Call it
    while holding :func:`dataset_lock` (``losslab ice simulate`` does), so that two runs never write one
    folder. Returns the manifest's path. ``progress(i)`` is called after each case."""
    ids = case_ids(n_cases)
    outdir = Path(outdir)
    outdir.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=STAGING_PREFIX, dir=outdir))
    try:
        for i, cid in enumerate(ids):
            write_case(make_case(i), staging / "cases" / cid)
            if progress is not None:
                progress(i)
        write_manifest(staging, ids, settings)
        _swap_in(staging, outdir)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return outdir / "dataset.json"


def _swap_in(staging: Path, outdir: Path) -> None:
    """Replace ``outdir``'s ``dataset.json`` and ``cases/`` by the staged ones: renames only (one file
    system). The old manifest goes first and the new one comes last, so a reader never finds a manifest
    over cases that are not its own."""
    replaced = Path(tempfile.mkdtemp(prefix=REPLACED_PREFIX, dir=outdir))
    try:
        for name in ("dataset.json", "cases"):
            if (outdir / name).exists():
                os.replace(outdir / name, replaced / name)
        os.replace(staging / "cases", outdir / "cases")
        os.replace(staging / "dataset.json", outdir / "dataset.json")
    finally:
        shutil.rmtree(replaced, ignore_errors=True)
