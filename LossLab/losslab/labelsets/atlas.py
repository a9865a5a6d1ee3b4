"""Partially annotated training sets from the fully parcellated spina bifida atlas (shared/data/fetal-sb-atlas).

:func:`make_partial_atlas` takes atlas case folders (``srr.nii.gz``, ``parcellation.nii.gz``, ``mask.nii.gz``),
optionally resamples them to a coarser grid (image: linear; parcellation and mask: nearest neighbour), gives
each case a Table-1 pattern (:mod:`.patterns`), writes case folders in the layout of :mod:`.dataset`
(``partial.nii.gz``, ``annotation.json``) and builds the engine dataset (``dataset.json``) beside them, with
``patterns.json`` recording which case got which pattern. :data:`PROTOCOL_TEST_CASES` are the atlas volumes the
protocol holds out for testing (both conditions, spread over gestational age); they are excluded by default.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import SimpleITK as sitk
from tqdm import tqdm

from .. import io as _io
from .dataset import build_dataset
from .grid import mask_box, resample_to_spacing
from .patterns import TABLE1_PATTERNS, apply_pattern, assign_patterns, pattern_counts

#: Held-out test volumes of our protocol: 1 not operated, 3 operated, GA 23 to 33 weeks.
PROTOCOL_TEST_CASES: tuple[str, ...] = ("GA23_notoperated", "GA26_operated", "GA30_operated", "GA33_operated")


def atlas_cases(atlas_dir: str | os.PathLike) -> list[str]:
    """Case folder names of an atlas folder (those with srr, parcellation and mask), sorted."""
    atlas_dir = Path(atlas_dir)
    if not atlas_dir.is_dir():
        raise FileNotFoundError(f"no such atlas folder: {atlas_dir}")
    cases = [
        p.name
        for p in sorted(atlas_dir.iterdir())
        if all((p / f"{n}.nii.gz").is_file() for n in ("srr", "parcellation", "mask"))
    ]
    if not cases:
        raise ValueError(
            f"{atlas_dir}: no atlas cases (folders with srr.nii.gz, parcellation.nii.gz, mask.nii.gz)"
        )
    return cases


def load_atlas_case(
    folder: Path, spacing: float | None = None, crop_margin_mm: float | None = None
) -> dict[str, sitk.Image]:
    """An atlas case's ``srr``, ``parcellation`` and ``mask`` images, optionally resampled to ``spacing`` and
    cropped to the brain mask's bounding box plus ``crop_margin_mm`` (fewer voxels to train on)."""
    out = {}
    for name, is_label in (("srr", False), ("parcellation", True), ("mask", True)):
        img = sitk.ReadImage(str(folder / f"{name}.nii.gz"))
        if is_label:
            img = sitk.Cast(img, sitk.sitkUInt8)
        if spacing is not None:
            img = resample_to_spacing(img, spacing, labels=is_label)
        out[name] = img
    if crop_margin_mm is not None:
        lo, hi = mask_box(sitk.GetArrayFromImage(out["mask"]))
        sp = np.asarray(out["mask"].GetSpacing())
        margin = np.ceil(crop_margin_mm / sp).astype(int)
        size = np.asarray(out["mask"].GetSize())
        start = np.maximum(np.asarray(lo) - margin, 0)
        stop = np.minimum(np.asarray(hi) + margin + 1, size)
        out = {
            k: sitk.RegionOfInterest(v, [int(x) for x in stop - start], [int(x) for x in start])
            for k, v in out.items()
        }
    return out


def make_partial_atlas(
    atlas_dir: str | os.PathLike,
    out_dir: str | os.PathLike,
    seed: int = 0,
    cases: Sequence[str] | None = None,
    exclude: Sequence[str] | None = PROTOCOL_TEST_CASES,
    spacing: float | None = None,
    min_full: int = 1,
    crop_margin_mm: float | None = None,
    progress: bool = True,
) -> Path:
    """Write a partially annotated training set in Table 1's proportions; returns ``dataset.json``'s path.

    Args:
        atlas_dir: folder of atlas cases.
        out_dir: destination (case folders, ``dataset.json``, ``patterns.json``, ``labels/``).
        seed: seed of the pattern assignment.
        cases: case names to use (default: all of ``atlas_dir``).
        exclude: case names to leave out (default: the protocol's test volumes; ``()`` for none).
        spacing: resample to this isotropic spacing in mm (e.g. 1.6); ``None`` keeps 0.8 mm.
        min_full: at least this many fully annotated volumes.
        crop_margin_mm: crop each case to its brain mask's bounding box plus this margin (``None``: no crop).
    """
    atlas_dir, out_dir = Path(atlas_dir), Path(out_dir)
    available = atlas_cases(atlas_dir)
    chosen = list(cases) if cases else available
    unknown = [c for c in chosen if c not in available]
    if unknown:
        raise ValueError(f"case(s) {unknown} not found in {atlas_dir}; available: {available}")
    chosen = [c for c in chosen if c not in set(exclude or ())]
    if not chosen:
        raise ValueError("no atlas case left after the exclusions")
    assignment = assign_patterns(chosen, seed, min_full=min_full)
    for cid in tqdm(chosen, desc="partial atlas", disable=not progress):
        images = load_atlas_case(atlas_dir / cid, spacing, crop_margin_mm)
        folder = out_dir / "cases" / cid
        geom = _io.Geometry(
            tuple(images["srr"].GetSpacing()),
            tuple(images["srr"].GetOrigin()),
            tuple(images["srr"].GetDirection()),
        )
        srr = sitk.GetArrayFromImage(images["srr"]).astype(np.float32)
        parc = sitk.GetArrayFromImage(images["parcellation"])
        mask = (sitk.GetArrayFromImage(images["mask"]) != 0).astype(np.uint8)
        pattern = assignment[cid]
        _io.write_image(folder / "srr.nii.gz", srr, geom)
        _io.write_image(folder / "partial.nii.gz", apply_pattern(parc, pattern) * mask, geom)
        _io.write_image(folder / "mask.nii.gz", mask, geom)
        _io.write_text(folder / "annotation.json", json.dumps({"annotated": pattern.abbreviations}) + "\n")
    manifest = build_dataset(out_dir / "cases", out_dir, name="fetal-sb-atlas-partial", progress=progress)
    record = {
        "atlas": str(atlas_dir),
        "seed": seed,
        "spacing_mm": spacing or 0.8,
        "crop_margin_mm": crop_margin_mm,
        "excluded": list(exclude or ()),
        "counts": {
            p.name: c for p, c in zip(TABLE1_PATTERNS, pattern_counts(len(chosen), min_full=min_full))
        },
        "patterns": {
            p.name: {"annotated": p.abbreviations, "paper_count": p.paper_count} for p in TABLE1_PATTERNS
        },
        "cases": {cid: assignment[cid].name for cid in chosen},
    }
    _io.write_text(out_dir / "patterns.json", json.dumps(record, indent=2) + "\n")
    return manifest
