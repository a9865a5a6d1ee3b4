"""Folder of partially annotated cases <-> engine dataset (``dataset.json`` with ``label_sets``).

Case folder layout (one sub-folder per case, the folder name is the case id)::

    CASES/GA21/srr.nii.gz           the MRI (also accepted: t2.nii.gz, image.nii.gz, or .nrrd of those)
    CASES/GA21/partial.nii.gz       the painted tissues (or parcellation.nii.gz for a full annotation)
    CASES/GA21/mask.nii.gz          the brain mask
    CASES/GA21/annotation.json      {"annotated": ["WM", "Vent", "Cer"]}  (optional with parcellation.*:
                                    then every tissue present is declared)

:func:`build_dataset` validates each case, writes its label-set map and declaration to ``OUT/labels/`` and
``OUT/dataset.json`` (``labels``: background + the 8 tissue abbreviations; ``label_sets``: the set labels
used; per case ``image``, ``label``, plus ``mask`` and ``annotated``, which the engine ignores and
:func:`export_cases` uses; ``splits``: ``train`` = every case, ``full`` = the fully annotated ones, for the
fully supervised baseline). :func:`export_cases` writes the case folders back from a manifest.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from pathlib import Path

from tqdm import tqdm

from .. import io as _io
from .partial import (
    ALL_TISSUE_LABELS,
    LabelSetNumbering,
    PartialAnnotationError,
    declaration_path,
    make_label_set_map,
    read_annotated,
    split_label_set_map,
)
from .tissues import LABEL_NAMES, tissue

IMAGE_NAMES = ("srr", "t2", "image")
LABEL_NAMES_IN_CASE = ("partial", "parcellation")
SUFFIXES = (".nii.gz", ".nii", ".nrrd", ".mha")


def _find(folder: Path, stems: Sequence[str]) -> Path | None:
    for stem in stems:
        for suffix in SUFFIXES:
            if (folder / f"{stem}{suffix}").is_file():
                return folder / f"{stem}{suffix}"
    return None


def _rel(path: Path, base: Path) -> str:
    return Path(os.path.relpath(path.resolve(), base.resolve())).as_posix()


def case_folders(cases_dir: str | os.PathLike) -> list[Path]:
    """Sub-folders of ``cases_dir`` that hold an image (sorted by name)."""
    cases_dir = Path(cases_dir)
    if not cases_dir.is_dir():
        raise FileNotFoundError(f"no such folder of cases: {cases_dir}")
    found = [p for p in sorted(cases_dir.iterdir()) if p.is_dir() and _find(p, IMAGE_NAMES)]
    if not found:
        raise ValueError(
            f"{cases_dir}: no case folders found (expected sub-folders with {IMAGE_NAMES[0]}.nii.gz, "
            f"{LABEL_NAMES_IN_CASE[0]}.nii.gz, mask.nii.gz and annotation.json)"
        )
    return found


def build_dataset(
    cases_dir: str | os.PathLike,
    out_dir: str | os.PathLike,
    name: str = "fetal-partial",
    numbering: LabelSetNumbering | None = None,
    progress: bool = True,
) -> Path:
    """Validate every case of ``cases_dir`` and write an engine dataset to ``out_dir``; returns the manifest.

    Raises:
        PartialAnnotationError: naming the case and each of its problems (every case is checked first, so
            all bad cases are reported together).
        FileNotFoundError: a case lacks its label map or mask.
    """
    out_dir = Path(out_dir)
    numbering = numbering or LabelSetNumbering()
    entries, problems, used = [], [], set()
    for folder in tqdm(case_folders(cases_dir), desc="label-set maps", disable=not progress):
        cid = folder.name
        image = _find(folder, IMAGE_NAMES)
        label_file = _find(folder, LABEL_NAMES_IN_CASE)
        mask_file = _find(folder, ("mask",))
        if label_file is None or mask_file is None:
            raise FileNotFoundError(
                f"case {cid!r} ({folder}): needs {'a label map (partial.nii.gz or parcellation.nii.gz)' if label_file is None else 'a brain mask (mask.nii.gz)'}"
            )
        labels = _io.read_image(label_file)
        mask = _io.read_image(mask_file)
        _io.check_same_grid(labels, mask, (f"case {cid!r} label map", "brain mask"))
        if (folder / "annotation.json").is_file():
            annotated = read_annotated(folder / "annotation.json", check_names=False)
        elif label_file.name.startswith("parcellation"):
            annotated = [int(v) for v in set(labels.array.ravel().tolist()) if v in ALL_TISSUE_LABELS]
        else:
            raise FileNotFoundError(f"case {cid!r}: {folder / 'annotation.json'} is missing")
        try:
            array, declaration = make_label_set_map(labels.array, mask.array, annotated, numbering, cid)
        except PartialAnnotationError as exc:
            problems.append(str(exc))
            continue
        map_path = _io.write_image(out_dir / "labels" / f"{cid}.nii.gz", array, labels.geometry)
        _io.write_text(declaration_path(map_path), json.dumps(declaration.to_json(), indent=2) + "\n")
        if declaration.set_label is not None:
            used.add(declaration.set_label)
        entries.append(
            {
                "id": cid,
                "image": _rel(image, out_dir),
                "label": f"labels/{cid}.nii.gz",
                "mask": _rel(mask_file, out_dir),
                "annotated": [tissue(t).abbreviation for t in declaration.annotated],
            }
        )
    if problems:
        raise PartialAnnotationError(problems)
    manifest = {
        "name": name,
        "labels": LABEL_NAMES,
        "label_sets": {str(k): v for k, v in numbering.as_dict(used).items()},
        "cases": entries,
        "splits": {
            "train": [e["id"] for e in entries],
            "full": [e["id"] for e in entries if len(e["annotated"]) == len(ALL_TISSUE_LABELS)],
        },
    }
    return _io.write_text(out_dir / "dataset.json", json.dumps(manifest, indent=2) + "\n")


def export_cases(
    manifest: str | os.PathLike, out_dir: str | os.PathLike, progress: bool = True
) -> list[Path]:
    """Write the case folders of a dataset back (for inspection): ``image`` (a copy), ``partial.nii.gz``,
    ``mask.nii.gz`` (the case's ``mask`` when the manifest names it, else the map's non-zero region) and
    ``annotation.json`` (the case's ``annotated``, else derived from the set labels present).

    Returns:
        The case folders written.
    """
    manifest = Path(manifest)
    if not manifest.is_file():
        raise FileNotFoundError(f"no such dataset manifest: {manifest}")
    raw = json.loads(manifest.read_text(encoding="utf-8"))
    label_sets = {int(k): v for k, v in (raw.get("label_sets") or {}).items()}
    base, out_dir, written = manifest.parent, Path(out_dir), []
    for entry in tqdm(raw.get("cases") or [], desc="cases", disable=not progress):
        cid = str(entry["id"])
        if not entry.get("label"):
            continue
        image_file = base / (entry["image"][0] if isinstance(entry["image"], list) else entry["image"])
        folder = out_dir / cid
        suffix = next((s for s in SUFFIXES if image_file.name.lower().endswith(s)), image_file.suffix)
        _io.write_bytes(folder / f"srr{suffix}", image_file.read_bytes())
        label = _io.read_image(base / entry["label"])
        partial, mask, annotated = split_label_set_map(label.array, label_sets)
        if entry.get("mask"):
            mask = (_io.read_image(base / entry["mask"]).array != 0).astype("uint8")
        if entry.get("annotated") is not None:
            annotated = [tissue(t).label for t in entry["annotated"]]
        _io.write_image(folder / "partial.nii.gz", partial, label.geometry)
        _io.write_image(folder / "mask.nii.gz", mask, label.geometry)
        body = {"annotated": [tissue(t).abbreviation for t in annotated]}
        _io.write_text(folder / "annotation.json", json.dumps(body, indent=2) + "\n")
        written.append(folder)
    return written
