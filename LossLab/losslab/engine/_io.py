"""Minimal private image IO for the engine (SimpleITK), until :mod:`losslab.io` lands on this branch.

Arrays are returned in SimpleITK's axis order ``(k, j, i)`` (z, y, x) and written back with the same geometry.
Only the engine uses this module; it is meant to be replaced by ``losslab.io.read_image / write_image``.
"""

from __future__ import annotations

import os
import re
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import SimpleITK as sitk

SUFFIXES = (".nii", ".nii.gz", ".nrrd", ".seg.nrrd", ".nhdr", ".mha", ".mhd")


@dataclass
class Geometry:
    """Origin, spacing (mm) and direction (row-major 3x3 or 2x2) of an image, in ITK's LPS convention."""

    origin: tuple[float, ...] = (0.0, 0.0, 0.0)
    spacing: tuple[float, ...] = (1.0, 1.0, 1.0)
    direction: tuple[float, ...] = (1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0)
    metadata: dict[str, str] = field(default_factory=dict)


def _check_suffix(path: Path) -> None:
    name = path.name.lower()
    if not any(name.endswith(s) for s in SUFFIXES):
        raise ValueError(f"unsupported image file {str(path)!r}; expected one of {', '.join(SUFFIXES)}")


def read_image(path: str | os.PathLike) -> tuple[np.ndarray, Geometry]:
    """Read a NIfTI / NRRD / MetaImage file: ``(array (k, j, i) [, components], geometry)``."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"image file not found: {str(path)!r}")
    _check_suffix(path)
    try:
        image = sitk.ReadImage(str(path))
    except RuntimeError as exc:
        raise ValueError(f"could not read image {str(path)!r}: {exc}") from None
    meta = {k: image.GetMetaData(k) for k in image.GetMetaDataKeys()}
    geometry = Geometry(image.GetOrigin(), image.GetSpacing(), image.GetDirection(), meta)
    return sitk.GetArrayFromImage(image), geometry


def read_label(path: str | os.PathLike, label_names: list[str] | None = None) -> tuple[np.ndarray, Geometry]:
    """Read a label map; a Slicer ``.seg.nrrd`` is flattened to one integer label per voxel.

    For ``.seg.nrrd`` files whose segments are named like the manifest's labels, voxels get the index of the
    label with that name (case-insensitive); other segments keep their ``LabelValue``. Overlapping segments
    (several layers) are not supported: the error says so.
    """
    array, geometry = read_image(path)
    if str(path).lower().endswith(".seg.nrrd"):
        array = _flatten_segmentation(array, geometry, label_names, str(path))
    if array.ndim not in (2, 3) or not np.issubdtype(array.dtype, np.number):
        raise ValueError(f"label map {str(path)!r} must be a 2D or 3D scalar image, got shape {array.shape}")
    if np.issubdtype(array.dtype, np.floating):
        if not np.all(np.equal(np.mod(array, 1), 0)):
            raise ValueError(f"label map {str(path)!r} holds non-integer values; expected integer labels")
    return array.astype(np.int64), geometry


def _flatten_segmentation(array, geometry: Geometry, label_names, path: str) -> np.ndarray:
    meta = geometry.metadata
    segments = sorted({int(m.group(1)) for k in meta if (m := re.match(r"Segment(\d+)_ID$", k))})
    if array.ndim == 4 or any(meta.get(f"Segment{s}_Layer", "0") != "0" for s in segments):
        raise ValueError(
            f"segmentation {path!r} has overlapping segments (several layers); export it as a label map"
        )
    out = np.zeros(array.shape, dtype=np.int64)
    names = [n.lower() for n in (label_names or [])]
    for s in segments:
        value = int(meta.get(f"Segment{s}_LabelValue", s + 1))
        name = meta.get(f"Segment{s}_Name", "").lower()
        target = names.index(name) if name in names else value
        out[array == value] = target
    return out


def write_image(path: str | os.PathLike, array: np.ndarray, geometry: Geometry | None = None) -> Path:
    """Write ``array`` (axis order ``(k, j, i)``, or ``(C, k, j, i)`` as a vector image) atomically."""
    path = Path(path)
    _check_suffix(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    array = np.asarray(array)
    vector = array.ndim == 4
    image = sitk.GetImageFromArray(np.moveaxis(array, 0, -1) if vector else array, isVector=vector)
    if geometry is not None:
        image.SetOrigin(geometry.origin)
        image.SetSpacing(geometry.spacing)
        image.SetDirection(geometry.direction)
    suffix = "".join(path.suffixes[-2:]) if path.name.lower().endswith(".nii.gz") else path.suffix
    fd, tmp = tempfile.mkstemp(prefix=".tmp-", suffix=suffix, dir=path.parent)
    os.close(fd)
    try:
        sitk.WriteImage(image, tmp, useCompression=True)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return path
