"""Partial annotation -> label-set map, in the encoding of the authors' released code.

A partially annotated case is a label map where experts painted only some tissues, a brain mask, and the
declared list of annotated tissues. Following the paper (Sec. 3, "Labelling protocol"), every voxel inside the
brain mask that was not painted gets one *set label* meaning "one of the tissues that were not annotated";
outside the mask stays background (0). Leaves keep their values 0..8; a set label is a number above 8, one per
distinct set of unannotated tissues. The released code numbers the sets of its data as
``9 -> [4, 5, 6, 7, 8]``, ``10 -> [5, 6, 7, 8]``, ``11 -> [5, 6, 7]`` (:data:`PAPER_LABEL_SETS`); a
:class:`LabelSetNumbering` starts from these and gives any other set the next free number (12, 13, ...).

When every tissue is declared annotated there is no set label: unpainted voxels in the mask stay background.

Validation (:func:`check_partial_annotation`) reports every problem at once: unknown tissue names, a tissue
painted but not declared, declared but empty, paint outside the brain mask, values that are not tissues, and
a label map and mask of different shapes (files: different grids).
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .. import io as _io
from .tissues import ABBREVIATIONS, TISSUES, tissue, tissue_labels

#: The set labels of the authors' released code (``LABELSET_MAP``).
PAPER_LABEL_SETS: dict[int, tuple[int, ...]] = {9: (4, 5, 6, 7, 8), 10: (5, 6, 7, 8), 11: (5, 6, 7)}
ALL_TISSUE_LABELS: tuple[int, ...] = tuple(t.label for t in TISSUES)
DECLARATION_FORMAT = "losslab-label-set-map/1"


class PartialAnnotationError(ValueError):
    """A partial annotation that contradicts its declaration; ``problems`` lists every issue found."""

    def __init__(self, problems: Sequence[str], case: str | None = None):
        self.problems = list(problems)
        where = f"case {case!r}: " if case else ""
        super().__init__(where + "; ".join(self.problems))


class LabelSetNumbering:
    """Numbers the distinct sets of unannotated tissues: the released code's 9, 10, 11 first, then 12, 13...

    Args:
        initial: ``{set_label: leaves}`` to start from (default :data:`PAPER_LABEL_SETS`; ``{}`` to start empty,
            then the first set gets 9).
    """

    def __init__(self, initial: Mapping[int | str, Iterable[int]] | None = None):
        self._sets: dict[int, tuple[int, ...]] = {}
        for key, leaves in (PAPER_LABEL_SETS if initial is None else initial).items():
            label, leaves = int(key), tuple(sorted({int(v) for v in leaves}))
            if label <= max(ALL_TISSUE_LABELS):
                raise ValueError(f"set label {label} must be above the tissue labels 0..8")
            if not leaves or not set(leaves) <= set(ALL_TISSUE_LABELS):
                raise ValueError(f"set label {label}: leaves must be tissue labels 1..8, got {list(leaves)}")
            if leaves in self._sets.values():
                raise ValueError(f"set label {label}: the set {list(leaves)} already has a label")
            self._sets[label] = leaves

    def label_for(self, leaves: Iterable[int]) -> int:
        """The set label of these leaves, adding a new one (the next free number above 8) if needed."""
        leaves = tuple(sorted({int(v) for v in leaves}))
        if not leaves:
            raise ValueError("an empty set of tissues has no set label")
        for label, known in self._sets.items():
            if known == leaves:
                return label
        label = max([max(ALL_TISSUE_LABELS), *self._sets]) + 1
        self._sets[label] = leaves
        return label

    def as_dict(self, used: Iterable[int] | None = None) -> dict[int, list[int]]:
        """``{set_label: [leaves]}`` (only the ``used`` labels when given), sorted by label."""
        keep = None if used is None else set(used)
        return {k: list(v) for k, v in sorted(self._sets.items()) if keep is None or k in keep}


@dataclass
class Declaration:
    """What a label-set map's JSON declaration holds (written beside the map)."""

    annotated: list[int]
    set_label: int | None
    label_sets: dict[int, list[int]] = field(default_factory=dict)
    case: str | None = None

    @property
    def unannotated(self) -> list[int]:
        return [t for t in ALL_TISSUE_LABELS if t not in self.annotated]

    def to_json(self) -> dict[str, Any]:
        return {
            "format": DECLARATION_FORMAT,
            "case": self.case,
            "annotated": [tissue(t).abbreviation for t in self.annotated],
            "unannotated": [tissue(t).abbreviation for t in self.unannotated],
            "set_label": self.set_label,
            "label_sets": {str(k): list(v) for k, v in self.label_sets.items()},
            "tissues": {str(t.label): t.abbreviation for t in TISSUES},
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Declaration:
        if "annotated" not in data:
            raise ValueError(f"a declaration needs an 'annotated' list of tissues; got keys {sorted(data)}")
        return cls(
            annotated=tissue_labels(data["annotated"]),
            set_label=None if data.get("set_label") is None else int(data["set_label"]),
            label_sets={int(k): [int(v) for v in vs] for k, vs in (data.get("label_sets") or {}).items()},
            case=data.get("case"),
        )


def read_annotated(path: str | os.PathLike, check_names: bool = True) -> list:
    """Tissue labels declared in an ``annotation.json`` (``{"annotated": ["WM", "Vent", ...]}``) or a
    label-set map's declaration. With ``check_names=False`` the raw list is returned (the names are then
    checked by :func:`check_partial_annotation` with the other problems).

    Raises:
        FileNotFoundError, ValueError: missing file, invalid JSON, no ``annotated`` list, unknown tissue names.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no such declaration file: {path}")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise ValueError(f"{path}: not valid JSON ({exc})") from None
    if not isinstance(data, dict) or not isinstance(data.get("annotated"), list):
        raise ValueError(f'{path}: expected {{"annotated": [tissue names]}}, got {str(data)[:120]}')
    if not check_names:
        return list(data["annotated"])
    try:
        return tissue_labels(data["annotated"])
    except ValueError as exc:
        raise ValueError(f"{path}: {exc}") from None


def _names(labels: Iterable[int]) -> str:
    return ", ".join(f"{tissue(v).abbreviation} ({v})" for v in labels)


def check_partial_annotation(
    partial: np.ndarray, mask: np.ndarray, annotated: Iterable[str | int]
) -> list[str]:
    """Every problem of a partial annotation against its declaration (empty list: valid).

    Args:
        partial: label map, painted tissues 1..8, 0 elsewhere.
        mask: brain mask (non-zero inside), same shape.
        annotated: tissues declared annotated (names, abbreviations or labels).
    """
    problems: list[str] = []
    annotated = list(annotated)
    try:
        declared = set(tissue_labels(annotated))
    except ValueError as exc:
        problems.append(str(exc))
        declared = {tissue(a).label for a in annotated if _known(a)}
    partial = np.asarray(partial)
    mask = np.asarray(mask)
    if partial.shape != mask.shape:
        problems.append(f"the label map has shape {partial.shape} but the brain mask has shape {mask.shape}")
        return problems
    if not np.issubdtype(partial.dtype, np.integer):
        if not np.array_equal(partial, np.round(partial)):
            problems.append(
                f"the label map must hold integer labels, got non-integer values ({partial.dtype})"
            )
            return problems
    present = np.unique(partial).astype(np.int64)
    not_tissues = [int(v) for v in present if v != 0 and v not in ALL_TISSUE_LABELS]
    if not_tissues:
        problems.append(
            f"label value(s) {not_tissues} are not tissues: a partial annotation holds 0 (not painted) and "
            f"tissue labels 1..8 ({', '.join(ABBREVIATIONS)})"
        )
    painted = {int(v) for v in present if v in ALL_TISSUE_LABELS}
    undeclared = sorted(painted - declared)
    if undeclared:
        counts = [int((partial == v).sum()) for v in undeclared]
        problems.append(
            "tissue(s) painted but not declared annotated: "
            + ", ".join(f"{tissue(v).abbreviation} ({v}): {n} voxels" for v, n in zip(undeclared, counts))
            + "; declare them or erase the paint"
        )
    empty = sorted(declared - painted)
    if empty:
        problems.append(f"tissue(s) declared annotated but with no painted voxel: {_names(empty)}")
    inside = mask != 0
    if not inside.any():
        problems.append("the brain mask is empty (no non-zero voxel)")
    outside = (partial != 0) & ~inside
    if outside.any():
        values = sorted(int(v) for v in np.unique(partial[outside]))
        problems.append(
            f"{int(outside.sum())} painted voxel(s) lie outside the brain mask "
            f"({_names(v for v in values if v in ALL_TISSUE_LABELS) or values}); "
            "the label-set map needs all paint inside the mask"
        )
    return problems


def _known(key: Any) -> bool:
    try:
        tissue(key)
    except ValueError:
        return False
    return True


def make_label_set_map(
    partial: np.ndarray,
    mask: np.ndarray,
    annotated: Iterable[str | int],
    numbering: LabelSetNumbering | None = None,
    case: str | None = None,
) -> tuple[np.ndarray, Declaration]:
    """The label-set map of a partial annotation and its declaration.

    Returns:
        ``(label_set_map, declaration)``: ``uint8`` map with the painted tissues, the set label of the
        unannotated tissues on unpainted voxels inside the mask, 0 outside the mask.

    Raises:
        PartialAnnotationError: listing every problem :func:`check_partial_annotation` finds.
    """
    annotated = list(annotated)
    problems = check_partial_annotation(partial, mask, annotated)
    if problems:
        raise PartialAnnotationError(problems, case)
    declared = tissue_labels(annotated)
    numbering = numbering or LabelSetNumbering()
    out = np.asarray(partial).astype(np.uint8)
    unannotated = [t for t in ALL_TISSUE_LABELS if t not in declared]
    set_label = None
    label_sets: dict[int, list[int]] = {}
    if unannotated:
        set_label = numbering.label_for(unannotated)
        out[(np.asarray(mask) != 0) & (out == 0)] = set_label
        label_sets = {set_label: unannotated}
    return out, Declaration(declared, set_label, label_sets, case)


def split_label_set_map(
    label_set_map: np.ndarray, label_sets: Mapping[int | str, Iterable[int]]
) -> tuple[np.ndarray, np.ndarray, list[int]]:
    """The inverse of :func:`make_label_set_map`: ``(partial, mask, annotated)``.

    ``mask`` is the non-zero region of the map (exact when the original mask had no unpainted voxel outside a
    set label, i.e. always unless every tissue was annotated); ``annotated`` is every tissue not in a set
    label present in the map.
    """
    m = np.asarray(label_set_map)
    sets = {int(k): [int(v) for v in vs] for k, vs in label_sets.items()}
    present = {int(v) for v in np.unique(m)}
    unknown = sorted(v for v in present if v > max(ALL_TISSUE_LABELS) and v not in sets)
    if unknown:
        raise ValueError(f"label value(s) {unknown} are neither tissues 0..8 nor set labels {sorted(sets)}")
    missing = sorted({leaf for s in present if s in sets for leaf in sets[s]})
    partial = np.where(m <= max(ALL_TISSUE_LABELS), m, 0).astype(np.uint8)
    return partial, (m != 0).astype(np.uint8), [t for t in ALL_TISSUE_LABELS if t not in missing]


def make_label_set_map_files(
    partial: str | os.PathLike,
    mask: str | os.PathLike,
    annotated: Iterable[str | int] | str | os.PathLike,
    output: str | os.PathLike,
    numbering: LabelSetNumbering | None = None,
    case: str | None = None,
) -> tuple[Path, Path]:
    """File version of :func:`make_label_set_map`: writes the map (partial's geometry) and its declaration,
    ``<output without suffix>.json``. ``annotated`` is a list of tissues or an ``annotation.json`` path.

    Returns:
        ``(map_path, declaration_path)``.
    """
    if isinstance(annotated, (str, os.PathLike)):
        annotated = read_annotated(annotated)
    labels = _io.read_image(partial)
    brain = _io.read_image(mask)
    _io.check_same_grid(labels, brain, ("partial annotation", "brain mask"))
    array, declaration = make_label_set_map(labels.array, brain.array, annotated, numbering, case)
    out = _io.write_image(output, array, labels.geometry)
    decl = declaration_path(out)
    _io.write_text(decl, json.dumps(declaration.to_json(), indent=2) + "\n")
    return out, decl


def declaration_path(map_path: str | os.PathLike) -> Path:
    """``labels/GA21.nii.gz`` -> ``labels/GA21.json``."""
    p = Path(map_path)
    name = p.name
    for suffix in (".seg.nrrd", ".nii.gz", ".nii", ".nrrd", ".mha"):
        if name.lower().endswith(suffix):
            name = name[: -len(suffix)]
            break
    return p.with_name(name + ".json")
