"""Read and write images and segmentations keeping their geometry: NIfTI (.nii, .nii.gz), NRRD (.nrrd,
.nhdr) and Slicer segmentations (.seg.nrrd, through slicerio).

Conventions:

- Arrays are in SimpleITK / Slicer ``arrayFromVolume`` order: ``(k, j, i)`` for 3D (slowest axis first).
- :class:`Geometry` holds ITK's physical description in ITK's ``(i, j, k)`` order (fastest axis first, the
  REVERSE of the array's axes): ``spacing`` and ``origin`` in mm, ``direction`` the 3x3 (row-major) direction
  cosines whose columns are the i, j, k axes, all in LPS (ITK's convention; Slicer shows RAS).
  ``Geometry.array_spacing`` is the spacing in array axis order ``(k, j, i)``, what :mod:`losslab.metrics`
  expects. (``LossLabLib``'s grids use the array order; their names say so.)
- A ``.seg.nrrd`` reads as one label map: each segment's voxels get the segment's 1-based index in the file
  (``labels`` gives the names); overlapping segments (several layers) are refused with a clear error.
- Reads check the file before trusting ITK, which reads truncated or corrupted files without a word: the
  data size against the header (NIfTI, NRRD with attached data) and, for gzip, that the stream is whole
  and its CRC right. A damaged file is a ``ValueError`` naming it.
- NaN and inf survive in NRRD. ITK's NIfTI reader (SimpleITK, Slicer) reads them as 0; :func:`read_image`
  restores them from the raw data, so a NaN in a NIfTI file is seen here (Slicer still shows 0: maps that
  use NaN for "undefined", such as the editing D map, are best written as NRRD).
- Masks and label maps (:func:`read_label_map`, :func:`check_label_values`) must hold finite integer values,
  and at most :data:`MAX_LABELS` distinct labels unless the caller names the labels it wants.
- Writes are atomic and verified: the file is written next to its destination under a temporary name,
  read back and compared with what was meant (data and geometry; size and gzip stream first), then
  renamed. A failure (a full disk that ITK does not report, a write error) raises :class:`WriteError` (an
  ``OSError``) and leaves any previous file byte-identical. The temporary name carries the writer's process
  id (``.<name>.<pid>.<random>.tmp<suffix>``): a later write of the same file removes what a killed writer
  (kill -9, power loss) left behind (POSIX; on Windows they stay).
- Outputs of a command (:func:`check_outputs`): no output may be one of its inputs, also through ``..``,
  symbolic links or hard links (:func:`same_file`), nor another output; an existing output needs the
  command's ``--overwrite``; the output's folder must be writable. All checked before any work.
"""

from __future__ import annotations

import contextlib
import errno
import gzip
import os
import struct
import tempfile
import zlib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import SimpleITK as sitk

SEG_SUFFIX = ".seg.nrrd"
IMAGE_SUFFIXES = (".nii", ".nii.gz", ".nrrd", ".nhdr", ".mha", ".mhd")

#: Most distinct non-zero values a mask or label map may hold before it is taken for an intensity image
#: (a CT or MRI volume holds thousands). The largest label maps in use (whole-body atlases, FreeSurfer's
#: aparc+aseg) hold a few hundred. Callers that name the labels they score lift the limit.
MAX_LABELS = 1000


class WriteError(OSError):
    """A file could not be written, or did not read back as written (e.g. a full disk that the writer did
    not report). The previous file at the destination, if any, is unchanged. ``filename`` is the
    destination; ``str()`` is ``"<destination>: <reason>"``."""

    def __str__(self) -> str:
        if self.filename is not None and self.strerror:
            return f"{self.filename}: {self.strerror}"
        return super().__str__()


@dataclass(frozen=True)
class Geometry:
    """Voxel grid in physical space, in ITK's conventions: LPS, and axes in ``(i, j, k)`` order.

    Attributes:
        spacing: voxel size in mm per axis, ``(i, j, k)`` order: ``spacing[0]`` is along the array's LAST
            axis. Use :attr:`array_spacing` for the array's ``(k, j, i)`` order.
        origin: LPS position in mm of the centre of voxel ``(0, 0, 0)``.
        direction: row-major ``ndim x ndim`` direction cosines; column ``n`` is the direction of axis ``n``
            of ``(i, j, k)``.
    """

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


def image_suffix(path: str | os.PathLike) -> str:
    """The file type of ``path`` (".nii.gz", ".seg.nrrd", ...); ``ValueError`` naming the supported ones."""
    return _suffix(Path(path))


def _geometry_of(img: sitk.Image) -> Geometry:
    return Geometry(
        spacing=tuple(float(v) for v in img.GetSpacing()),
        origin=tuple(float(v) for v in img.GetOrigin()),
        direction=tuple(float(v) for v in img.GetDirection()),
    )


# NIfTI datatype codes -> numpy dtypes (the scalar ones ITK writes and reads).
_NIFTI_DTYPES = {
    2: "u1", 4: "i2", 8: "i4", 16: "f4", 64: "f8", 256: "i1", 512: "u2", 768: "u4", 1024: "i8", 1280: "u8",
}  # fmt: skip
_NRRD_TYPES = {
    "signed char": 1, "int8": 1, "int8_t": 1, "uchar": 1, "unsigned char": 1, "uint8": 1, "uint8_t": 1,
    "short": 2, "short int": 2, "signed short": 2, "signed short int": 2, "int16": 2, "int16_t": 2,
    "ushort": 2, "unsigned short": 2, "unsigned short int": 2, "uint16": 2, "uint16_t": 2,
    "int": 4, "signed int": 4, "int32": 4, "int32_t": 4, "uint": 4, "unsigned int": 4, "uint32": 4,
    "uint32_t": 4, "longlong": 8, "long long": 8, "long long int": 8, "signed long long": 8,
    "signed long long int": 8, "int64": 8, "int64_t": 8, "ulonglong": 8, "unsigned long long": 8,
    "unsigned long long int": 8, "uint64": 8, "uint64_t": 8, "float": 4, "double": 8,
}  # fmt: skip


def _gunzip(path: Path, data: bytes) -> bytes:
    """Decompress a whole gzip stream, checking that it ends properly and that its CRC is right."""
    try:
        return gzip.decompress(data)
    except (EOFError, gzip.BadGzipFile, zlib.error, OSError) as exc:
        raise ValueError(
            f"{path}: the file is damaged: its gzip stream is truncated or corrupted ({exc or type(exc).__name__})"
        ) from None


@dataclass
class _NiftiData:
    dtype: np.dtype
    shape: tuple[int, ...]  # C order, slowest axis first (the reverse of the header's dims)
    raw: bytes
    offset: int
    slope: float
    inter: float

    def array(self) -> np.ndarray:
        n = int(np.prod(self.shape))
        return np.frombuffer(self.raw, dtype=self.dtype, count=n, offset=self.offset).reshape(self.shape)


def _check_nifti(path: Path, gzipped: bool) -> _NiftiData:
    data = path.read_bytes()
    if gzipped:
        data = _gunzip(path, data)
    if len(data) < 348:
        raise ValueError(f"{path}: the file is damaged: {len(data)} bytes, shorter than a NIfTI header")
    for endian in "<>":
        size = struct.unpack(endian + "i", data[:4])[0]
        if size in (348, 540):
            break
    else:
        raise ValueError(f"{path}: not a NIfTI file (header size field {data[:4]!r})")
    if size == 348:
        dims = struct.unpack(endian + "8h", data[40:56])
        datatype, bitpix = struct.unpack(endian + "2h", data[70:74])
        offset = int(struct.unpack(endian + "f", data[108:112])[0])
        slope, inter = struct.unpack(endian + "2f", data[112:120])
        pixdim = struct.unpack(endian + "8f", data[76:108])
        offset = max(offset, 348)
    else:
        if len(data) < 540:
            raise ValueError(f"{path}: the file is damaged: {len(data)} bytes, shorter than a NIfTI-2 header")
        datatype, bitpix = struct.unpack(endian + "2h", data[12:16])
        dims = struct.unpack(endian + "8q", data[16:80])
        offset = max(int(struct.unpack(endian + "q", data[168:176])[0]), 540)
        slope, inter = struct.unpack(endian + "2d", data[176:192])
        pixdim = struct.unpack(endian + "8d", data[104:168])
    ndim = int(dims[0])
    if not 1 <= ndim <= 7 or any(d < 1 for d in dims[1 : ndim + 1]):
        raise ValueError(f"{path}: the NIfTI header is damaged (dims {tuple(dims)})")
    spatial = [float(v) for v in pixdim[1 : min(ndim, 3) + 1]]
    if any(not np.isfinite(v) or v == 0 for v in spatial):
        # ITK reads a zero (or NaN) voxel size as 1 mm: every distance would be silently wrong
        raise ValueError(
            f"{path}: the NIfTI header gives the voxel size {tuple(spatial)} (pixdim); a zero or undefined "
            "voxel size cannot be measured in mm: fix the header (e.g. set the spacing in Slicer or nibabel)"
        )
    extent = [int(d) for d in dims[1 : ndim + 1]]
    expected = offset + int(np.prod(extent, dtype=np.int64)) * (int(bitpix) // 8)
    if len(data) < expected:
        what = "gzip stream" if gzipped else "file"
        raise ValueError(
            f"{path}: the file is truncated: its header promises {expected} bytes (dims {tuple(extent)}, "
            f"{bitpix} bits a value) but the {what} holds {len(data)}"
        )
    code = _NIFTI_DTYPES.get(int(datatype))
    if code and np.dtype(code).itemsize * 8 != int(bitpix):
        code = None  # inconsistent header: size checked from bitpix, values left to ITK
    dtype = np.dtype(endian + code) if code else np.dtype("u1")
    shape = tuple(reversed(extent)) if code else (0,)
    return _NiftiData(dtype, shape, data, offset, float(slope), float(inter))


def _check_nrrd(path: Path) -> None:
    """Size (and gzip stream) of an NRRD file's attached data against its header."""
    data = path.read_bytes()
    end = data.find(b"\n\n")
    if not data.startswith(b"NRRD") or end < 0:
        return  # not an NRRD header we can read: ITK's reader will say so
    fields = {}
    for line in data[:end].decode("latin-1").splitlines()[1:]:
        if ":=" in line or line.startswith("#") or ":" not in line:
            continue
        key, value = line.split(":", 1)
        fields[key.strip().lower()] = value.strip()
    if "data file" in fields or "datafile" in fields or "line skip" in fields or "byte skip" in fields:
        return  # detached or skipped data: not checked here
    try:
        count = int(np.prod([int(v) for v in fields["sizes"].split()], dtype=np.int64))
        width = _NRRD_TYPES[fields["type"].lower()]
    except (KeyError, ValueError):
        return
    body = data[end + 2 :]
    encoding = fields.get("encoding", "raw").lower()
    if encoding in ("gzip", "gz"):
        body = _gunzip(path, body)
    elif encoding != "raw":
        return
    if len(body) < count * width:
        raise ValueError(
            f"{path}: the file is truncated: its header promises {count * width} bytes of data "
            f"(sizes {fields['sizes']}, type {fields['type']}) but it holds {len(body)}"
        )


def check_file(path: str | os.PathLike) -> None:
    """Check that an image file is whole: the data size against the header and, for gzip, that the stream
    ends properly with the right CRC (ITK reads truncated files without a word).

    Checked: .nii, .nii.gz, and .nrrd / .seg.nrrd with attached raw or gzip data; other files pass.

    Raises:
        ValueError: the file is truncated or damaged (the message names it and what was found).
    """
    path = Path(path)
    suffix = _suffix(path)
    if suffix in (".nii", ".nii.gz"):
        _check_nifti(path, gzipped=_is_gzip(path))
    elif suffix in (".nrrd", SEG_SUFFIX):
        _check_nrrd(path)


@contextlib.contextmanager
def _native_stderr_silenced():
    """While inside, what C libraries print straight to the process's stderr (ITK's warnings, the NIfTI
    library's ``** ERROR: NWAD: wrote only 0 of ... bytes`` on a full disk) is dropped: the checks around
    each read and write report problems in one line of their own. Python's ``sys.stderr`` is untouched."""
    fd = 2  # the process's stderr, where C code writes, whatever Python's sys.stderr is now
    try:
        saved = os.dup(fd)
    except OSError:  # no stderr at all: nothing to silence
        yield
        return
    try:
        with open(os.devnull, "wb") as devnull:
            os.dup2(devnull.fileno(), fd)
            try:
                yield
            finally:
                os.dup2(saved, fd)
    finally:
        os.close(saved)


def _is_gzip(path: Path) -> bool:
    with open(path, "rb") as handle:
        return handle.read(2) == b"\x1f\x8b"


def read_image(path: str | os.PathLike, allow_vector: bool = False) -> Image:
    """Read a NIfTI / NRRD image or a .seg.nrrd segmentation (as a label map), keeping its geometry.

    The file is checked first (:func:`check_file`). NaN / inf values of a NIfTI float image, which ITK reads
    as 0, are restored from the raw data. A vector (multi-component) image is refused unless
    ``allow_vector``; then its array is ``(k, j, i, components)``.

    Raises:
        FileNotFoundError: the file does not exist.
        ValueError: the type is not supported, or the file is damaged or cannot be parsed (the message says
            which file).
    """
    path = Path(path)
    if path.is_dir():
        raise IsADirectoryError(f"{path} is a folder; expected an image file")
    if not path.is_file():
        raise FileNotFoundError(f"no such file: {path}")
    suffix = _suffix(path)
    nifti = None
    if suffix in (".nii", ".nii.gz"):
        nifti = _check_nifti(path, gzipped=_is_gzip(path))
    else:
        check_file(path)
    if suffix == SEG_SUFFIX:
        return _read_seg_nrrd(path)
    try:
        with _native_stderr_silenced():
            img = sitk.ReadImage(str(path))
    except RuntimeError as exc:
        raise ValueError(f"{path}: cannot read the image ({str(exc).strip().splitlines()[-1]})") from None
    if img.GetNumberOfComponentsPerPixel() != 1 and not allow_vector:
        raise ValueError(
            f"{path}: expected a scalar image, got {img.GetNumberOfComponentsPerPixel()} components"
        )
    array = sitk.GetArrayFromImage(img)
    if nifti is not None and nifti.dtype.kind == "f" and img.GetNumberOfComponentsPerPixel() == 1:
        raw = nifti.array()
        bad = ~np.isfinite(raw)
        if bad.any() and raw.size == array.size:
            array = array.astype(np.result_type(array.dtype, np.float32))
            values = raw[bad].astype(np.float64) * (nifti.slope or 1.0) + nifti.inter
            array.reshape(raw.shape)[bad] = values
    return Image(array=array, geometry=_geometry_of(img), path=path)


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


def check_label_values(
    image: Image, role: str = "label map", max_labels: int | None = MAX_LABELS, hint: str = ""
) -> None:
    """Refuse an image that cannot be a mask or label map: non-finite values (NaN, inf), non-integer values,
    or more than ``max_labels`` distinct non-zero values (an intensity image given as a mask).

    Args:
        image: the image read (its ``path`` names it in the message).
        role: what the image was meant to be ("reference", "--initial mask", ...).
        max_labels: most distinct non-zero values; ``None``: no limit (the caller names its labels).
        hint: appended to the too-many-labels message (e.g. how to lift the limit).

    Raises:
        ValueError: naming the file, the role, and what was found.
    """
    array = image.array
    where = f"{image.path}: the {role}" if image.path else f"the {role}"
    if np.issubdtype(array.dtype, np.floating):
        finite = np.isfinite(array)
        if not finite.all():
            n_nan, n_inf = int(np.isnan(array).sum()), int(np.isinf(array).sum())
            first = tuple(int(v) for v in np.argwhere(~finite)[0][::-1])
            raise ValueError(
                f"{where} holds non-finite values ({n_nan} NaN, {n_inf} inf; the first at voxel (i, j, k) "
                f"{first}); a mask or label map must hold finite integer labels"
            )
        if not np.all(np.equal(np.mod(array, 1), 0)):
            fractional = array[np.mod(array, 1) != 0]
            raise ValueError(
                f"{where} holds non-integer values (e.g. {float(fractional[0]):.6g}; "
                f"{fractional.size} of {array.size} voxels); a mask or label map must hold integer labels. "
                "Is this an intensity image or a probability map? Threshold it into a label map first"
            )
    if max_labels is not None:
        count = _count_nonzero_values(array)
        if count > max_labels:
            raise ValueError(
                f"{where} holds {count} distinct labels (more than {max_labels}): is this an intensity "
                f"image rather than a segmentation?{(' ' + hint) if hint else ''}"
            )


def _count_nonzero_values(array: np.ndarray) -> int:
    """How many distinct non-zero values ``array`` holds (a histogram for small integer ranges: no sort)."""
    if array.size and (np.issubdtype(array.dtype, np.integer) or array.dtype == bool):
        low, high = int(array.min()), int(array.max())
        if high - low < 1 << 22:
            flat = array.ravel()
            counts = np.zeros(high - low + 1, np.int64)
            for start in range(0, flat.size, 1 << 20):  # in chunks: no full-size int64 copy
                counts += np.bincount(
                    flat[start : start + (1 << 20)].astype(np.int64) - low, minlength=counts.size
                )
            return int(np.count_nonzero(counts)) - int(low <= 0 <= high and counts[-low] > 0)
    values = np.unique(array)
    return int(np.count_nonzero(values))


def read_label_map(
    path: str | os.PathLike, label_names: Sequence[str] | None = None, max_labels: int | None = None
) -> Image:
    """Read a label map as ``int64``, refusing non-finite or fractional values (and more than
    ``max_labels`` distinct labels when given), see :func:`check_label_values`.

    For a .seg.nrrd, a segment whose name matches one of ``label_names`` (case-insensitive) gets that
    name's index (so a manifest's label order decides the values); the other segments keep their 1-based
    index in the file.
    """
    image = read_image(path)
    array = image.array
    if array.ndim not in (2, 3):
        raise ValueError(f"{path}: a label map must be a 2D or 3D scalar image, got shape {array.shape}")
    check_label_values(image, max_labels=max_labels)
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


def same_file(a: str | os.PathLike, b: str | os.PathLike) -> bool:
    """True when ``a`` and ``b`` name one file: the same resolved path (``..``, symbolic links), or, when
    both exist, the same inode (hard links)."""
    a, b = Path(a), Path(b)
    if a.resolve() == b.resolve():
        return True
    try:
        return os.path.samefile(a, b)
    except OSError:  # one of them does not exist (yet): not the same file
        return False


def writable_folder(path: str | os.PathLike) -> Path:
    """The nearest existing folder above ``path`` (where it would be created), checked to be writable.

    Raises:
        NotADirectoryError: that nearest existing path is a file.
        PermissionError: the folder cannot be written (read-only file system, permissions).
    """
    existing = Path(path).parent
    while not existing.exists() and existing.parent != existing:
        existing = existing.parent
    if not existing.is_dir():
        raise NotADirectoryError(
            errno.ENOTDIR, "is a file, not a folder: nothing can be created in it", str(existing)
        )
    if not os.access(existing, os.W_OK | os.X_OK):
        raise PermissionError(
            errno.EACCES, "the folder cannot be written (read-only or no permission)", str(existing)
        )
    return existing


def check_outputs(
    outputs: Mapping[str, str | os.PathLike | None],
    inputs: Mapping[str, str | os.PathLike | None] | Sequence[str | os.PathLike],
    *,
    overwrite: bool | None = None,
) -> None:
    """Refuse, before any work, outputs that would destroy an input or another output, or that cannot be
    written: the one rule of every command that writes.

    Args:
        outputs: ``{what: path}`` of the files to write (None skipped); ``what`` names the output in messages
            ("label map", "--json").
        inputs: the files read, as a list or ``{role: path}`` (None skipped).
        overwrite: ``False``: an existing output is refused (the command's ``--overwrite`` allows it);
            ``None``: not checked (library calls that replace their outputs by design).

    Raises:
        ValueError: an output that is an input (also through ``..``, symbolic or hard links) or another
            output, or exists without ``overwrite``. IsADirectoryError: an output is a folder.
            NotADirectoryError / PermissionError: its folder cannot be written.
    """
    sources = list(inputs.values()) if isinstance(inputs, Mapping) else list(inputs)
    sources = [Path(s) for s in sources if s is not None]
    named = [(what, Path(p)) for what, p in outputs.items() if p is not None]
    for what, out in named:
        if out.is_dir():
            raise IsADirectoryError(
                errno.EISDIR,
                f"the {what} output is a folder; give a file name (such as seg.nii.gz)",
                str(out),
            )
        for source in sources:
            if same_file(out, source):
                raise ValueError(
                    f"the {what} output {str(out)!r} is the input {str(source)!r}: writing it would destroy "
                    "the input; choose another output path"
                )
    for i, (what_a, a) in enumerate(named):
        for what_b, b in named[i + 1 :]:
            if same_file(a, b):
                raise ValueError(
                    f"the {what_a} output and the {what_b} output are the same file {str(a)!r}; give two paths"
                )
    for what, out in named:
        if overwrite is False and (out.exists() or out.is_symlink()):
            raise ValueError(
                f"the {what} output {str(out)!r} exists already: pass --overwrite to replace it, or choose "
                "another path"
            )
        writable_folder(out)


def check_output_folder(
    folder: str | os.PathLike, *, inputs: Sequence[str | os.PathLike] = (), overwrite: bool = False
) -> None:
    """Refuse, before any work, an output folder that would mix or destroy files: the folder form of
    :func:`check_outputs`. Nothing is written or deleted here.

    Args:
        folder: where the command writes (created later if missing).
        inputs: folders the command reads: the output folder may not be one of them, lie inside one, or hold
            one (its files could be replaced).
        overwrite: the command's ``--overwrite``: write into a folder that already holds files (the command's
            own files are replaced, the others left alone). Without it the folder must be new or empty, so an
            earlier run's report or a file of the user's is never replaced unasked.

    Raises:
        NotADirectoryError: ``folder`` is a file. ValueError: it overlaps an input folder, or holds files
        without ``overwrite`` (the message lists a few and names ``--overwrite``).
        PermissionError: it cannot be written.
    """
    folder = Path(folder)
    if folder.exists() and not folder.is_dir():
        raise NotADirectoryError(errno.ENOTDIR, "exists and is not a folder", str(folder))
    target = folder.resolve()
    for source in inputs:
        src = Path(source).resolve()
        if target == src or src in target.parents or target in src.parents:
            relation = "is" if target == src else ("lies inside" if src in target.parents else "holds")
            raise ValueError(
                f"the output folder {str(folder)!r} {relation} the input folder {str(source)!r}: writing there "
                "could replace what it reads; choose a separate folder"
            )
    if folder.is_dir() and not overwrite:
        present = sorted(p.name for p in folder.iterdir())
        if present:
            shown = ", ".join(present[:5]) + (f" and {len(present) - 5} more" if len(present) > 5 else "")
            raise ValueError(
                f"{folder} already holds files ({shown}): choose a new or empty folder, or pass --overwrite to "
                "write there anyway (its files of the same names are replaced, the others left alone)"
            )
    writable_folder(folder / "x")


def _lock_nonblocking(handle) -> None:
    """An exclusive lock on an open file, or ``OSError`` at once when another process holds it: ``flock``
    on POSIX, ``msvcrt.locking`` on Windows (both released when the process ends)."""
    try:
        import fcntl
    except ImportError:  # Windows
        import msvcrt

        handle.seek(0)
        msvcrt.locking(handle.fileno(), msvcrt.LK_NBLCK, 1)
        return
    fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)


@contextlib.contextmanager
def folder_lock(folder: str | os.PathLike, busy: str = "another process is writing this folder now"):
    """Hold the exclusive right to write ``folder`` while inside: a lock on ``.<name>.lock`` beside it
    (``flock``; the kernel releases it when the process ends, even on kill -9; the file is removed on exit). Two
    commands writing one folder at once (two ``losslab train`` into one output_dir, two ``ice simulate``
    into one dataset) would mix their files; the second is refused at once.

    Raises:
        BlockingIOError: the folder is held by another process (``busy`` says what; the folder is named).
    """
    folder = Path(folder)
    folder.parent.mkdir(parents=True, exist_ok=True)
    lock_path = folder.parent / f".{folder.name}.lock"
    while True:
        handle = open(lock_path, "a+")  # noqa: SIM115 (held for the whole block)
        try:
            _lock_nonblocking(handle)
        except OSError:  # held by another process
            handle.close()
            raise BlockingIOError(
                errno.EWOULDBLOCK, f"{busy}; wait for it to finish, or choose another folder", str(folder)
            ) from None
        # the previous holder may have removed the file between our open and our lock: lock the current one
        try:
            same = os.path.samestat(os.fstat(handle.fileno()), os.stat(lock_path))
        except FileNotFoundError:
            same = False
        if same:
            break
        handle.close()
    try:
        yield lock_path
    finally:
        with contextlib.suppress(OSError):
            os.unlink(lock_path)
        handle.close()


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
    remove_stale_temporaries(path)
    try:
        fd, name = tempfile.mkstemp(
            prefix=f".{path.name}.{os.getpid()}.", suffix=f".tmp{suffix}", dir=path.parent
        )
    except OSError as exc:
        raise _named(exc, path, "cannot create a file in the folder") from exc
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
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        if isinstance(exc, WriteError) or exc.filename in (None, str(tmp), name):
            raise _named(exc, path) from exc
        raise
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return path


def _pid_alive(pid: int) -> bool:
    """Whether a process ``pid`` runs (POSIX: signal 0 probes without sending anything)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # exists, owned by someone else
        return True
    return True


def remove_stale_temporaries(path: str | os.PathLike) -> list[Path]:
    """Remove the temporary files that writers of ``path`` killed before their rename left beside it
    (``.<name>.<pid>.*.tmp*`` of a process that no longer runs); returns what it removed. Files of a live
    writer, and those of other names, are left alone."""
    path = Path(path)
    removed: list[Path] = []
    if os.name == "nt":  # os.kill(pid, 0) would terminate the process there: no probe, no removal
        return removed
    prefix = f".{path.name}."
    with contextlib.suppress(OSError):
        for entry in os.scandir(path.parent):
            name = entry.name
            if not name.startswith(prefix) or ".tmp" not in name:
                continue
            pid = name[len(prefix) :].split(".", 1)[0]
            if pid.isdigit() and int(pid) != os.getpid() and not _pid_alive(int(pid)):
                with contextlib.suppress(OSError):
                    os.unlink(entry.path)
                    removed.append(Path(entry.path))
    return removed


def _named(exc: OSError, path: Path, doing: str = "") -> OSError:
    """The same kind of OSError, naming the destination (not the temporary file) and saying that the
    previous file is unchanged."""
    if isinstance(exc, WriteError) and str(path) in str(exc):
        return exc
    reason = exc.strerror or str(exc) or type(exc).__name__
    if exc.errno == errno.ENOSPC:
        reason += " (disk full)"
    if doing:
        reason = f"{doing}: {reason}"
    kept = "; the previous file is unchanged" if path.exists() else ""
    cls = type(exc) if type(exc) is not OSError else WriteError
    try:
        out = cls(exc.errno, f"{reason}{kept}", str(path))
    except TypeError:
        out = WriteError(exc.errno, f"{reason}{kept}", str(path))
    return out


def write_bytes(path: str | os.PathLike, data: bytes) -> Path:
    """Write bytes atomically (see :func:`atomic_write`); the written size is checked before the rename."""

    def verify(tmp: Path) -> None:
        if tmp.stat().st_size != len(data):
            raise WriteError(
                errno.EIO, f"wrote {tmp.stat().st_size} of {len(data)} bytes (disk full?)", str(path)
            )

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

    if suffix == SEG_SUFFIX:
        _check_seg_array(array)
    expected = np.moveaxis(array, 0, -1) if vector else array

    def write(tmp: Path) -> None:
        if suffix == SEG_SUFFIX:
            _write_seg_nrrd(tmp, array, geometry, labels or {})
            return
        img = sitk.GetImageFromArray(expected, isVector=vector)
        img.SetSpacing(geometry.spacing)
        img.SetOrigin(geometry.origin)
        img.SetDirection(geometry.direction)
        try:
            with _native_stderr_silenced():
                sitk.WriteImage(img, str(tmp), useCompression=compress)
        except RuntimeError as exc:
            lines = [ln.strip() for ln in str(exc).replace(str(tmp), str(path)).splitlines() if ln.strip()]
            reason = lines[-1] if lines else "unknown error"
            raise WriteError(errno.EIO, f"cannot write the image ({reason})", str(path)) from None

    def verify(tmp: Path) -> None:
        _verify_image(tmp, path, expected, geometry, suffix, vector)

    atomic_write(path, write, verify=verify)
    return path


def _verify_image(
    tmp: Path, path: Path, expected: np.ndarray, geometry: Geometry, suffix: str, vector: bool
) -> None:
    """Read a written image back (size and gzip stream, then data and geometry) before it replaces
    ``path``; :class:`WriteError` if it is not what was meant."""

    def fail(what: str) -> WriteError:
        return WriteError(
            errno.EIO, f"the written file does not read back as written ({what}; disk full?)", str(path)
        )

    try:
        back = read_image(tmp, allow_vector=vector)
    except (ValueError, OSError) as exc:
        raise fail(str(exc).replace(f"{tmp}: ", "").replace(str(tmp), "the file")) from None
    if suffix == SEG_SUFFIX:
        values = np.unique(expected[expected != 0])
        want = np.zeros(expected.shape, np.int64)
        nonzero = expected != 0
        want[nonzero] = np.searchsorted(values, expected[nonzero]) + 1
    else:
        want = expected
    if back.array.shape != want.shape:
        raise fail(f"shape {back.array.shape} instead of {want.shape}")
    if not np.array_equal(back.array, want, equal_nan=np.issubdtype(want.dtype, np.floating)):
        raise fail("the values differ")
    # NIfTI keeps spacing and origin as float32: a relative tolerance, on top of the absolute one.
    for name in ("spacing", "origin", "direction"):
        a, b = np.asarray(getattr(back.geometry, name)), np.asarray(getattr(geometry, name))
        if a.shape != b.shape or not np.allclose(a, b, rtol=1e-6, atol=1e-4):
            raise fail(f"{name} {_fmt(a)} instead of {_fmt(b)}")


def _check_seg_array(array: np.ndarray) -> None:
    if array.ndim != 3:
        raise ValueError(f".seg.nrrd needs a 3D label map, got shape {array.shape}")
    if not np.issubdtype(array.dtype, np.integer):
        raise ValueError(f".seg.nrrd needs an integer label map, got dtype {array.dtype}")


def _write_seg_nrrd(tmp: Path, array: np.ndarray, geometry: Geometry, labels: dict[int, str]) -> None:
    import slicerio

    _check_seg_array(array)
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


def read_text(path: str | os.PathLike, what: str = "file") -> str:
    """A UTF-8 text file's content; a binary file (a gzip archive, an image) is a ``ValueError`` that names
    the file and ``what`` it should have been, not a codec error without a name.

    Raises:
        FileNotFoundError: no such file. IsADirectoryError: a folder. ValueError: not UTF-8 text.
    """
    path = Path(path)
    if path.is_dir():
        raise IsADirectoryError(f"{what} {path} is a folder; expected a file")
    if not path.is_file():
        raise FileNotFoundError(f"{what} not found: {path}")
    data = path.read_bytes()
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        kind = "a gzip file" if data[:2] == b"\x1f\x8b" else "binary data"
        raise ValueError(
            f"{what} {path} is not a UTF-8 text file (byte {exc.start} is 0x{data[exc.start]:02x}: {kind}?)"
        ) from None


def read_json(path: str | os.PathLike, what: str = "JSON file") -> Any:
    """Parse a JSON file; every problem (missing, binary, empty, malformed) is one error naming the file
    and ``what`` it is (a dataset manifest, frames.json, ...)."""
    import json

    text = read_text(path, what)
    if not text.strip():
        raise ValueError(f"{what} {path} is empty")
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise ValueError(
            f"{what} {path} is not valid JSON: {exc.msg} at line {exc.lineno} column {exc.colno}"
        ) from None


def json_ready(value: Any) -> Any:
    """``value`` with every NaN / infinite float (numpy's too) replaced by ``None``: standard JSON, which
    has no NaN or Infinity (``json.dumps`` writes them by default, and strict readers refuse the file)."""
    if isinstance(value, (float, np.floating)):
        return float(value) if np.isfinite(value) else None
    if isinstance(value, dict):
        return {k: json_ready(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_ready(v) for v in value]
    return value


def write_text(path: str | os.PathLike, text: str) -> Path:
    """Write a UTF-8 text file atomically (see :func:`atomic_write`)."""
    return write_bytes(path, text.encode("utf-8"))


def save_figure(figure, path: str | os.PathLike, **kwargs) -> Path:
    """Save a matplotlib figure atomically (the format follows the suffix of ``path``)."""
    path = Path(path)
    kwargs.setdefault("format", path.suffix.lstrip(".") or None)
    return atomic_write(path, lambda tmp: figure.savefig(tmp, **kwargs), suffix=path.suffix)
