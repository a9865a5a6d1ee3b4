"""Read and write images and segmentations keeping their geometry: NIfTI (.nii, .nii.gz), NRRD (.nrrd,
.nhdr) and Slicer segmentations (.seg.nrrd, through slicerio).

Conventions:

- Arrays are in SimpleITK / Slicer ``arrayFromVolume`` order: ``(k, j, i)`` for 3D (slowest axis first).
- :class:`Geometry` holds ITK's physical description: ``spacing`` and ``origin`` in ``(i, j, k)`` order, in
  mm, ``direction`` the 3x3 (row-major) direction cosines, all in LPS (ITK's convention; Slicer shows RAS).
  ``Geometry.array_spacing`` is the spacing in array axis order, what :mod:`losslab.metrics` expects.
- A ``.seg.nrrd`` reads as one label map: each segment's voxels get the segment's 1-based index in the file
  (``labels`` gives the names); overlapping segments (several layers) are refused with a clear error.
- NaN values survive in NRRD; ITK's NIfTI reader (SimpleITK, Slicer) reads NaN as 0, so maps that use
  NaN for "undefined" (the editing D map) are best written as NRRD.
- Writes are atomic: the file is written next to its destination under a temporary name, then renamed, so
  a failure leaves any previous file whole.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import SimpleITK as sitk

SEG_SUFFIX = ".seg.nrrd"
IMAGE_SUFFIXES = (".nii", ".nii.gz", ".nrrd", ".nhdr", ".mha", ".mhd")


@dataclass(frozen=True)
class Geometry:
    """Voxel grid in physical space (ITK conventions: LPS, ``(i, j, k)`` order)."""

    spacing: tuple[float, ...]
    origin: tuple[float, ...]
    direction: tuple[float, ...]

    @classmethod
    def identity(cls, ndim: int = 3, spacing: Sequence[float] | None = None) -> Geometry:
        sp = tuple(float(s) for s in spacing) if spacing is not None else (1.0,) * ndim
        return cls(spacing=sp, origin=(0.0,) * ndim, direction=tuple(np.eye(ndim).ravel().tolist()))

    @property
    def ndim(self) -> int:
        return len(self.spacing)

    @property
    def array_spacing(self) -> tuple[float, ...]:
        """Spacing in array axis order ``(k, j, i)``: what the metrics take."""
        return tuple(reversed(self.spacing))

    def ijk_to_lps(self) -> np.ndarray:
        """Homogeneous ``(ndim+1, ndim+1)`` matrix from voxel index ``(i, j, k)`` to LPS mm."""
        n = self.ndim
        m = np.eye(n + 1)
        m[:n, :n] = np.asarray(self.direction).reshape(n, n) * np.asarray(self.spacing)[None, :]
        m[:n, n] = self.origin
        return m

    def differences(self, other: Geometry, tolerance: float = 1e-4) -> list[str]:
        """Names and values of the fields that differ beyond ``tolerance`` (mm, or cosine units)."""
        out = []
        for name in ("spacing", "origin", "direction"):
            a, b = np.asarray(getattr(self, name)), np.asarray(getattr(other, name))
            if a.shape != b.shape or not np.allclose(a, b, atol=tolerance, rtol=0):
                out.append(f"{name}: {_fmt(a)} vs {_fmt(b)}")
        return out


def _fmt(values: np.ndarray) -> str:
    return "(" + ", ".join(f"{float(v):.6g}" for v in values.ravel()) + ")"


@dataclass
class Image:
    """An array with its geometry; ``labels`` names segments for label maps read from .seg.nrrd."""

    array: np.ndarray
    geometry: Geometry
    labels: dict[int, str] = field(default_factory=dict)
    path: Path | None = None


def _suffix(path: Path) -> str:
    name = path.name.lower()
    for suffix in (SEG_SUFFIX, ".nii.gz", *IMAGE_SUFFIXES):
        if name.endswith(suffix):
            return suffix
    raise ValueError(
        f"{path}: unsupported file type; expected one of {', '.join((SEG_SUFFIX, *IMAGE_SUFFIXES))}"
    )


def _geometry_of(img: sitk.Image) -> Geometry:
    return Geometry(
        spacing=tuple(float(v) for v in img.GetSpacing()),
        origin=tuple(float(v) for v in img.GetOrigin()),
        direction=tuple(float(v) for v in img.GetDirection()),
    )


def read_image(path: str | os.PathLike, allow_vector: bool = False) -> Image:
    """Read a NIfTI / NRRD image or a .seg.nrrd segmentation (as a label map), keeping its geometry.

    A vector (multi-component) image is refused unless ``allow_vector``; then its array is
    ``(k, j, i, components)``.

    Raises:
        FileNotFoundError: the file does not exist.
        ValueError: the type is not supported, or the file cannot be parsed (the message says which file).
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no such file: {path}")
    suffix = _suffix(path)
    if suffix == SEG_SUFFIX:
        return _read_seg_nrrd(path)
    try:
        img = sitk.ReadImage(str(path))
    except RuntimeError as exc:
        raise ValueError(f"{path}: cannot read the image ({str(exc).strip().splitlines()[-1]})") from None
    if img.GetNumberOfComponentsPerPixel() != 1 and not allow_vector:
        raise ValueError(
            f"{path}: expected a scalar image, got {img.GetNumberOfComponentsPerPixel()} components"
        )
    return Image(array=sitk.GetArrayFromImage(img), geometry=_geometry_of(img), path=path)


def _read_seg_nrrd(path: Path) -> Image:
    import slicerio

    try:
        seg = slicerio.read_segmentation(str(path))
    except Exception as exc:  # slicerio raises plain exceptions for malformed headers
        raise ValueError(f"{path}: cannot read the segmentation ({exc})") from None
    voxels = np.asarray(seg["voxels"])
    if voxels.ndim == 4:
        raise ValueError(
            f"{path}: segments overlap (the file has {voxels.shape[0]} layers); export the segments you need "
            "to separate files or a non-overlapping label map"
        )
    segments = seg.get("segments", [])
    labelmap = np.zeros(voxels.shape, dtype=np.uint16 if len(segments) > 255 else np.uint8)
    names: dict[int, str] = {}
    for index, segment in enumerate(segments, start=1):
        labelmap[voxels == segment["labelValue"]] = index
        names[index] = str(segment.get("name", segment.get("id", index)))
    ijk_to_lps = np.asarray(seg["ijkToLPS"], dtype=np.float64)
    n = voxels.ndim
    axes = ijk_to_lps[:n, :n]
    spacing = np.linalg.norm(axes, axis=0)
    direction = axes / spacing[None, :]
    geometry = Geometry(
        spacing=tuple(float(v) for v in spacing),
        origin=tuple(float(v) for v in ijk_to_lps[:n, n]),
        direction=tuple(float(v) for v in direction.ravel()),
    )
    # slicerio voxels are (i, j, k); our arrays are (k, j, i).
    return Image(array=np.ascontiguousarray(labelmap.transpose()), geometry=geometry, labels=names, path=path)


def read_label_map(path: str | os.PathLike, label_names: Sequence[str] | None = None) -> Image:
    """Read a label map as ``int64``, refusing fractional values.

    For a .seg.nrrd, a segment whose name matches one of ``label_names`` (case-insensitive) gets that
    name's index (so a manifest's label order decides the values); the other segments keep their 1-based
    index in the file.
    """
    image = read_image(path)
    array = image.array
    if array.ndim not in (2, 3):
        raise ValueError(f"{path}: a label map must be a 2D or 3D scalar image, got shape {array.shape}")
    if np.issubdtype(array.dtype, np.floating) and not np.all(np.equal(np.mod(array, 1), 0)):
        raise ValueError(f"{path}: the label map holds non-integer values; expected integer labels")
    array = array.astype(np.int64)
    if image.labels and label_names:
        names = [str(n).lower() for n in label_names]
        remapped = array.copy()
        for index, name in image.labels.items():
            if name.lower() in names:
                remapped[array == index] = names.index(name.lower())
        image.labels = {
            (names.index(n.lower()) if n.lower() in names else i): n for i, n in image.labels.items()
        }
        array = remapped
    image.array = array
    return image


def _new_file_mode() -> int:
    """The mode a new file gets from the process's umask (0666 & ~umask), read without changing it for long."""
    mask = os.umask(0)
    os.umask(mask)
    return 0o666 & ~mask


def atomic_write(
    path: str | os.PathLike,
    write: Callable[[Path], None],
    *,
    verify: Callable[[Path], None] | None = None,
    suffix: str | None = None,
) -> Path:
    """Write ``path`` atomically: ``write(tmp)`` fills a temporary file in the same folder, ``verify(tmp)``
    (optional) checks it, then it is flushed to disk and renamed over ``path``.

    The one implementation of atomic writes in LossLab (images, text, figures, checkpoints, configs).
    On any failure (the writer or the check raises, the disk is full, the rename fails) the temporary file
    is removed and the previous ``path``, if any, is left whole. The file keeps the mode of the file it
    replaces, or gets the umask's default for a new file (``mkstemp`` alone would make it 0600).

    Args:
        path: destination.
        write: called with the temporary path; must create or fill that file.
        verify: called with the temporary path after ``write``; raises if the file is not what was meant.
        suffix: suffix of the temporary file (default: the destination's, so writers that choose the format
            by suffix work).

    Returns:
        ``path`` as a :class:`~pathlib.Path`.
    """
    path = Path(path)
    if path.is_dir():
        raise IsADirectoryError(f"{path} is a folder, not a file name")
    path.parent.mkdir(parents=True, exist_ok=True)
    if suffix is None:
        suffix = SEG_SUFFIX if path.name.lower().endswith(SEG_SUFFIX) else "".join(path.suffixes[-2:])
    fd, name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=f".tmp{suffix}", dir=path.parent)
    os.close(fd)
    tmp = Path(name)
    try:
        mode = path.stat().st_mode & 0o7777 if path.exists() else _new_file_mode()
        write(tmp)
        if verify is not None:
            verify(tmp)
        with open(tmp, "rb+") as handle:
            os.fsync(handle.fileno())
        os.chmod(tmp, mode)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return path


def write_bytes(path: str | os.PathLike, data: bytes) -> Path:
    """Write bytes atomically (see :func:`atomic_write`); the written size is checked before the rename."""

    def verify(tmp: Path) -> None:
        if tmp.stat().st_size != len(data):
            raise OSError(f"{path}: wrote {tmp.stat().st_size} of {len(data)} bytes (disk full?)")

    return atomic_write(path, lambda tmp: tmp.write_bytes(data), verify=verify)


def write_image(
    path: str | os.PathLike,
    array: np.ndarray,
    geometry: Geometry | None = None,
    labels: dict[int, str] | None = None,
    compress: bool = True,
    vector: bool = False,
) -> Path:
    """Write an array with its geometry, atomically. ``.seg.nrrd`` writes a Slicer segmentation with one
    segment per non-zero label (named from ``labels``); other suffixes write a plain image.

    Args:
        path: destination; the suffix picks the format.
        array: ``(k, j, i)`` (or 2D) array; bool arrays are written as uint8.
        geometry: spacing / origin / direction; identity when ``None``.
        labels: ``{label value: segment name}`` for .seg.nrrd.
        compress: gzip / NIfTI compression.
        vector: ``array`` is ``(components, k, j, i)`` and is written as one vector image (e.g. class
            probabilities); not for .seg.nrrd.

    Returns:
        The written path.
    """
    path = Path(path)
    array = np.asarray(array)
    if array.dtype == bool:
        array = array.astype(np.uint8)
    spatial_ndim = array.ndim - 1 if vector else array.ndim
    geometry = geometry or Geometry.identity(spatial_ndim)
    if geometry.ndim != spatial_ndim:
        raise ValueError(f"geometry is {geometry.ndim}D but the array has shape {array.shape}")
    if vector and _suffix(path) == SEG_SUFFIX:
        raise ValueError(f"{path}: a vector image cannot be written as a .seg.nrrd segmentation")
    suffix = _suffix(path)

    def write(tmp: Path) -> None:
        if suffix == SEG_SUFFIX:
            _write_seg_nrrd(tmp, array, geometry, labels or {})
        else:
            img = sitk.GetImageFromArray(np.moveaxis(array, 0, -1) if vector else array, isVector=vector)
            img.SetSpacing(geometry.spacing)
            img.SetOrigin(geometry.origin)
            img.SetDirection(geometry.direction)
            sitk.WriteImage(img, str(tmp), useCompression=compress)

    atomic_write(path, write)
    return path


def _write_seg_nrrd(tmp: Path, array: np.ndarray, geometry: Geometry, labels: dict[int, str]) -> None:
    import slicerio

    if array.ndim != 3:
        raise ValueError(f".seg.nrrd needs a 3D label map, got shape {array.shape}")
    if not np.issubdtype(array.dtype, np.integer):
        raise ValueError(f".seg.nrrd needs an integer label map, got dtype {array.dtype}")
    voxels = np.ascontiguousarray(array.transpose())  # (i, j, k) for slicerio
    seg = slicerio.create_segmentation(voxels.shape, geometry.ijk_to_lps())
    values = [int(v) for v in np.unique(voxels) if v != 0]
    for value in values:
        slicerio.add_segment(
            seg, voxels == value, {"id": f"Segment_{value}", "name": labels.get(value, f"Segment_{value}")}
        )
    slicerio.write_segmentation(str(tmp), seg)


def check_same_grid(a: Image, b: Image, names: tuple[str, str] = ("first", "second")) -> None:
    """Raise ``ValueError`` naming every geometry field (or the shape) that differs between two images."""
    problems = []
    if a.array.shape != b.array.shape:
        problems.append(f"shape: {a.array.shape} vs {b.array.shape}")
    problems += a.geometry.differences(b.geometry)
    if problems:
        where = f"{names[0]} ({a.path})" if a.path else names[0]
        other = f"{names[1]} ({b.path})" if b.path else names[1]
        raise ValueError(
            f"{where} and {other} are not on the same voxel grid: "
            + "; ".join(problems)
            + ". Resample one onto the other first."
        )


def write_text(path: str | os.PathLike, text: str) -> Path:
    """Write a UTF-8 text file atomically (see :func:`atomic_write`)."""
    return write_bytes(path, text.encode("utf-8"))


def save_figure(figure, path: str | os.PathLike, **kwargs) -> Path:
    """Save a matplotlib figure atomically (the format follows the suffix of ``path``)."""
    path = Path(path)
    kwargs.setdefault("format", path.suffix.lstrip(".") or None)
    return atomic_write(path, lambda tmp: figure.savefig(tmp, **kwargs), suffix=path.suffix)
