"""Export an annotation session to a dataset folder (adding a case to it), and import a case back.

A dataset folder is what ``losslab fetal build-dataset`` writes and the engine trains on (``dataset.json`` with
``labels`` = background + the 8 tissue abbreviations and ``label_sets``). Exporting a case writes::

    DATASET/images/<case>.nii.gz     the MRI (its voxels and world geometry)
    DATASET/masks/<case>.nii.gz      the brain mask
    DATASET/labels/<case>.nii.gz     the label-set map (losslab.labelsets.make_label_set_map)
    DATASET/labels/<case>.json       its declaration (annotated tissues, set label, label sets)

and adds the case to ``dataset.json`` (created when the folder has none): ``cases`` gets
``{"id", "image", "label", "mask", "annotated"}`` as in :func:`losslab.labelsets.build_dataset`, the set labels
used are added to ``label_sets``, the case joins the ``train`` split (and ``full`` when every tissue is
annotated). Set labels are numbered by a :class:`losslab.labelsets.LabelSetNumbering` that starts from the
dataset's own ``label_sets`` and the released code's 9, 10, 11 (those that do not clash with the dataset's), so
a new dataset numbers its sets exactly as ``build_dataset`` does and an existing one keeps its numbers.

Every file goes through :mod:`losslab.io`'s atomic, read-back-verified writes; ``dataset.json`` is written last.

Import (:func:`import_case`) reads a case back into a session: the painted tissues as tissue segments, the
declaration as their tags, the brain mask (the case's mask file, else the map's non-zero region), and each set
label present as one segment named ``"unannotated: <tissues>"``.
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from losslab import io as _io
from losslab.labelsets import (
    LABEL_NAMES,
    PAPER_LABEL_SETS,
    TISSUES,
    Declaration,
    LabelSetNumbering,
    split_label_set_map,
    tissue,
)
from losslab.labelsets.partial import declaration_path
from LossLabLib import mrml_io
from LossLabLib.mrml_io import Grid

from . import segments as seg
from .session import AnnotationSession

__all__ = [
    "ExportResult",
    "ImportResult",
    "dataset_numbering",
    "export_case",
    "geometry_to_grid",
    "grid_to_geometry",
    "import_case",
    "read_manifest",
]

MANIFEST = "dataset.json"
UNANNOTATED_COLOR = (0.75, 0.75, 0.75)
_CASE_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
_RAS_LPS = np.diag([-1.0, -1.0, 1.0, 1.0])


def grid_to_geometry(grid: Grid) -> _io.Geometry:
    """A world-RAS :class:`LossLabLib.Grid` as a :class:`losslab.io.Geometry` (LPS, ITK's convention)."""
    lps = _RAS_LPS @ grid.ijk_to_ras
    spacing = np.linalg.norm(lps[:3, :3], axis=0)
    direction = lps[:3, :3] / spacing
    return _io.Geometry(
        tuple(float(s) for s in spacing),
        tuple(float(v) for v in lps[:3, 3]),
        tuple(float(v) for v in direction.ravel()),
    )


def geometry_to_grid(geometry: _io.Geometry, shape) -> Grid:
    """The inverse of :func:`grid_to_geometry` for an array of ``shape`` (k, j, i)."""
    return Grid(tuple(shape), _RAS_LPS @ geometry.ijk_to_lps())


def read_manifest(dataset_folder: str | os.PathLike) -> dict[str, Any] | None:
    """The dataset's ``dataset.json`` as a dict (``None`` when the folder has none).

    Raises:
        ValueError: not valid JSON, or not a fetal dataset (its labels are not background + the 8 tissues).
    """
    path = Path(dataset_folder) / MANIFEST
    if not path.is_file():
        return None
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise ValueError(f"{path}: not valid JSON ({exc})") from None
    if not isinstance(raw, dict) or raw.get("labels") != LABEL_NAMES:
        raise ValueError(
            f"{path} is not a fetal dataset: its labels are {raw.get('labels') if isinstance(raw, dict) else raw!r}, "
            f"expected {LABEL_NAMES}; choose an empty folder or a dataset made by FetalParcellation / "
            "losslab fetal build-dataset"
        )
    return raw


def dataset_numbering(label_sets: dict | None) -> LabelSetNumbering:
    """The set-label numbering of a dataset: its own ``label_sets``, then the released code's sets whose label
    and leaves are both still free (so an empty dataset numbers as :func:`losslab.labelsets.build_dataset`)."""
    own = {int(k): sorted(int(v) for v in vs) for k, vs in (label_sets or {}).items()}
    merged = dict(own)
    for label, leaves in PAPER_LABEL_SETS.items():
        if label not in merged and sorted(leaves) not in merged.values():
            merged[label] = list(leaves)
    return LabelSetNumbering(merged)


@dataclass
class ExportResult:
    """What :func:`export_case` wrote: the case id, the manifest and the case's files, the declaration and
    the label-set map (``uint8`` ``(k, j, i)``)."""

    case_id: str
    manifest: Path
    image: Path
    mask: Path
    label: Path
    declaration_file: Path
    declaration: Declaration
    label_set_map: np.ndarray


def export_case(
    session: AnnotationSession,
    dataset_folder: str | os.PathLike,
    case_id: str,
    *,
    volume_node=None,
    overwrite: bool = False,
    name: str = "fetal-partial",
) -> ExportResult:
    """Add the session's case to the dataset in ``dataset_folder`` (see the module docstring).

    Args:
        session: the annotation session (validated first: nothing is written when it has a problem).
        dataset_folder: an existing dataset, or an empty / new folder.
        case_id: the case's id (letters, digits, ``_ . -``); a case already in the dataset is an error unless
            ``overwrite``.
        volume_node: the MRI (default: the session's).
        name: the dataset's name when a new ``dataset.json`` is created.

    Raises:
        losslab.labelsets.PartialAnnotationError: the session's problems, every one.
        ValueError: bad case id, case already present, not a fetal dataset, no MRI.
    """
    volume_node = volume_node or session.volume_node
    if volume_node is None:
        raise ValueError("choose the MRI of the session: the case's image is written from it")
    case_id = str(case_id).strip()
    if not _CASE_ID.match(case_id):
        raise ValueError(
            f"case id {case_id!r} is not valid: use letters, digits, '_', '.', '-' (e.g. 'GA28_case01')"
        )
    folder = Path(dataset_folder).expanduser()
    if folder.exists() and not folder.is_dir():
        raise ValueError(f"{folder} is a file; choose a dataset folder")
    manifest = read_manifest(folder) or {
        "name": name,
        "labels": list(LABEL_NAMES),
        "label_sets": {},
        "cases": [],
        "splits": {"train": [], "full": []},
    }
    cases = [c for c in manifest.get("cases") or [] if str(c.get("id")) != case_id]
    if len(cases) != len(manifest.get("cases") or []) and not overwrite:
        raise ValueError(
            f"case {case_id!r} is already in {folder / MANIFEST}; choose another case id or overwrite it"
        )
    numbering = dataset_numbering(manifest.get("label_sets"))
    array, declaration = session.label_set_map(numbering, case_id)

    grid = Grid.from_volume(volume_node)
    session_grid = session.grid
    if not grid.same_as(session_grid):
        raise ValueError(
            f"the MRI {volume_node.GetName()!r} ({grid.describe()}) is not on the session's grid "
            f"({session_grid.describe()}); export with the MRI the session was created on"
        )
    geometry = grid_to_geometry(grid)
    image_path = _io.write_image(
        folder / "images" / f"{case_id}.nii.gz", mrml_io.volume_array(volume_node), geometry
    )
    mask_path = _io.write_image(
        folder / "masks" / f"{case_id}.nii.gz", session.brain_mask(grid).astype(np.uint8), geometry
    )
    label_path = _io.write_image(folder / "labels" / f"{case_id}.nii.gz", array, geometry)
    decl_path = _io.write_text(
        declaration_path(label_path), json.dumps(declaration.to_json(), indent=2) + "\n"
    )

    annotated = [tissue(t).abbreviation for t in declaration.annotated]
    cases.append(
        {
            "id": case_id,
            "image": f"images/{case_id}.nii.gz",
            "label": f"labels/{case_id}.nii.gz",
            "mask": f"masks/{case_id}.nii.gz",
            "annotated": annotated,
        }
    )
    label_sets = {str(k): list(v) for k, v in (manifest.get("label_sets") or {}).items()}
    for key, leaves in declaration.label_sets.items():
        label_sets[str(key)] = list(leaves)
    splits = {k: [c for c in v if c != case_id] for k, v in (manifest.get("splits") or {}).items()}
    splits.setdefault("train", []).append(case_id)
    if len(annotated) == len(TISSUES):
        splits.setdefault("full", []).append(case_id)
    manifest.update(
        labels=list(LABEL_NAMES),
        label_sets=dict(sorted(label_sets.items(), key=lambda kv: int(kv[0]))),
        cases=cases,
        splits=splits,
    )
    manifest_path = _io.write_text(folder / MANIFEST, json.dumps(manifest, indent=2) + "\n")
    return ExportResult(
        case_id, manifest_path, image_path, mask_path, label_path, decl_path, declaration, array
    )


@dataclass
class ImportResult:
    """What :func:`import_case` made: the MRI volume node, the session, and the ``{set label: segment ID}``
    of the unannotated-set segments."""

    volume_node: object
    session: AnnotationSession
    set_segments: dict[int, str]


def import_case(scene, dataset_folder: str | os.PathLike, case_id: str, *, volume_node=None) -> ImportResult:
    """Load a case of a dataset into ``scene`` as an annotation session (see the module docstring).

    Args:
        volume_node: reuse this volume as the MRI (it must be on the case's grid); default: a new volume node
            from the case's image.

    Raises:
        FileNotFoundError: no dataset.json / case files. ValueError: unknown case id, grids that differ,
            set labels the dataset does not define.
    """
    folder = Path(dataset_folder).expanduser()
    manifest = read_manifest(folder)
    if manifest is None:
        raise FileNotFoundError(f"no {MANIFEST} in {folder}: choose a dataset folder")
    entries = {str(c.get("id")): c for c in manifest.get("cases") or []}
    if case_id not in entries:
        raise ValueError(f"no case {case_id!r} in {folder / MANIFEST}; cases: {sorted(entries)}")
    entry = entries[case_id]
    label_sets = {int(k): [int(v) for v in vs] for k, vs in (manifest.get("label_sets") or {}).items()}
    label_map = _io.read_image(folder / entry["label"])
    array = label_map.array
    partial, mask, annotated = split_label_set_map(array, label_sets)
    if entry.get("mask"):
        mask_image = _io.read_image(folder / entry["mask"])
        _io.check_same_grid(label_map, mask_image, (f"case {case_id!r} label map", "brain mask"))
        mask = (mask_image.array != 0).astype(np.uint8)
    if entry.get("annotated") is not None:
        annotated = [tissue(t).label for t in entry["annotated"]]
    grid = geometry_to_grid(label_map.geometry, array.shape)

    if volume_node is None:
        image_file = entry["image"][0] if isinstance(entry["image"], list) else entry["image"]
        image = _io.read_image(folder / image_file)
        _io.check_same_grid(image, label_map, (f"case {case_id!r} image", "label map"))
        volume_node = mrml_io.array_to_volume(scene, image.array, grid, name=case_id)
    elif not Grid.from_volume(volume_node).same_as(grid):
        raise ValueError(
            f"volume {volume_node.GetName()!r} is not on case {case_id!r}'s grid ({grid.describe()})"
        )
    session = AnnotationSession.create(scene, volume_node, name=f"{case_id} annotation")
    node = session.segmentation_node
    for t in TISSUES:
        session.write_segment(session.segment_id(t.label), partial == t.label, grid)
    session.write_segment(session.mask_segment_id, mask != 0, grid)
    session.set_declaration(annotated)
    set_segments = {}
    for set_label in sorted(int(v) for v in np.unique(array) if int(v) in label_sets):
        names = ", ".join(tissue(v).abbreviation for v in label_sets[set_label])
        sid = node.GetSegmentation().AddEmptySegment(
            f"unannotated_{set_label}", f"unannotated: {names}", UNANNOTATED_COLOR
        )
        session.write_segment(sid, array == set_label, grid)
        segment = node.GetSegmentation().GetSegment(sid)
        segment.SetTag(seg.UNANNOTATED_TAG, ",".join(tissue(v).abbreviation for v in label_sets[set_label]))
        set_segments[set_label] = sid
    return ImportResult(volume_node, session, set_segments)
