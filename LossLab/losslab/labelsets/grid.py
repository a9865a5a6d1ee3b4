"""Resampling between an input's voxel grid and a model's grid (SimpleITK; physical space in LPS mm).

A model grid is a spacing (mm, ``(i, j, k)`` order) and a direction: :func:`model_grid` lays such a grid over
the physical bounding box of an image (or of a region of it, e.g. the brain mask's bounding box), so an MRI of
any size, spacing and orientation maps onto the axes and resolution the model was trained at. Images are
resampled with linear interpolation, label maps with nearest neighbour, probabilities (one channel at a time)
linearly, then the labels are their argmax on the target grid.

This belongs in the engine eventually (``losslab.engine.inference`` has no resampling today).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import SimpleITK as sitk

from ..io import Geometry


def to_sitk(array: np.ndarray, geometry: Geometry) -> sitk.Image:
    img = sitk.GetImageFromArray(np.ascontiguousarray(array))
    img.SetSpacing(geometry.spacing)
    img.SetOrigin(geometry.origin)
    img.SetDirection(geometry.direction)
    return img


def geometry_of(img: sitk.Image) -> Geometry:
    return Geometry(tuple(img.GetSpacing()), tuple(img.GetOrigin()), tuple(img.GetDirection()))


def _corners(img: sitk.Image, lo: Sequence[int], hi: Sequence[int]) -> np.ndarray:
    """Physical positions of the 8 corners of the index box [lo, hi] (voxel centres, then half a voxel out)."""
    pts = []
    for ci in (lo[0] - 0.5, hi[0] + 0.5):
        for cj in (lo[1] - 0.5, hi[1] + 0.5):
            for ck in (lo[2] - 0.5, hi[2] + 0.5):
                pts.append(img.TransformContinuousIndexToPhysicalPoint((ci, cj, ck)))
    return np.asarray(pts)


def model_grid(
    img: sitk.Image,
    spacing: Sequence[float],
    direction: Sequence[float] | None = None,
    box: tuple[Sequence[int], Sequence[int]] | None = None,
    margin_mm: float = 0.0,
) -> sitk.Image:
    """An empty image on the model's grid covering ``img`` (or the index box ``(lo, hi)`` of it, inclusive),
    with ``margin_mm`` added on each side.

    Args:
        img: the input.
        spacing: the model's spacing (mm, ``(i, j, k)``).
        direction: the model's 3x3 direction (row-major); default: identity (:mod:`.segment` passes the
            training volumes' direction).
        box: optional ``(lo, hi)`` voxel indices ``(i, j, k)`` of the region to cover.
    """
    spacing = np.asarray([float(s) for s in spacing])
    if spacing.shape != (3,) or not (spacing > 0).all():
        raise ValueError(f"a model grid needs 3 positive spacings (mm), got {list(spacing)}")
    d = np.eye(3) if direction is None else np.asarray(direction, dtype=float).reshape(3, 3)
    if box is None:
        box = ((0, 0, 0), tuple(s - 1 for s in img.GetSize()))
    corners = _corners(img, box[0], box[1])
    coords = corners @ d  # coordinates along the model's axes (columns of d)
    lo = coords.min(0) - margin_mm
    hi = coords.max(0) + margin_mm
    size = np.maximum(1, np.ceil((hi - lo) / spacing - 1e-6)).astype(int)
    centre = (lo + hi) / 2
    first = centre - (size - 1) / 2 * spacing  # voxel centres symmetric about the box centre
    out = sitk.Image([int(s) for s in size], sitk.sitkFloat32)
    out.SetSpacing(tuple(float(s) for s in spacing))
    out.SetDirection(tuple(d.ravel().tolist()))
    out.SetOrigin(tuple((d @ first).tolist()))
    return out


def resample(
    img: sitk.Image, reference: sitk.Image, labels: bool = False, default: float = 0.0
) -> sitk.Image:
    """``img`` on ``reference``'s grid: nearest neighbour for label maps, linear otherwise."""
    interp = sitk.sitkNearestNeighbor if labels else sitk.sitkLinear
    pixel = img.GetPixelID() if labels else sitk.sitkFloat32
    return sitk.Resample(img, reference, sitk.Transform(), interp, default, pixel)


def resample_to_spacing(
    img: sitk.Image, spacing: float | Sequence[float], labels: bool = False
) -> sitk.Image:
    """``img`` at another spacing, same origin corner and direction (for coarse training grids).

    The new grid covers the same physical extent: ``size = ceil(old_size * old_spacing / new_spacing)``.
    """
    spacing = [float(spacing)] * 3 if np.isscalar(spacing) else [float(s) for s in spacing]
    old_sp = np.asarray(img.GetSpacing())
    size = np.maximum(1, np.ceil(np.asarray(img.GetSize()) * old_sp / spacing - 1e-6)).astype(int)
    ref = sitk.Image([int(s) for s in size], sitk.sitkFloat32)
    ref.SetSpacing(spacing)
    ref.SetDirection(img.GetDirection())
    d = np.asarray(img.GetDirection()).reshape(3, 3)
    corner = np.asarray(img.GetOrigin()) - d @ (old_sp / 2)  # outer corner of voxel 0
    ref.SetOrigin(tuple((corner + d @ (np.asarray(spacing) / 2)).tolist()))
    return resample(img, ref, labels=labels)


def mask_box(mask: np.ndarray) -> tuple[tuple[int, int, int], tuple[int, int, int]]:
    """Inclusive ``(lo, hi)`` voxel indices ``(i, j, k)`` of the non-zero region of a ``(k, j, i)`` array."""
    nz = np.nonzero(mask)
    if not nz[0].size:
        raise ValueError("the brain mask is empty (no non-zero voxel)")
    lo = tuple(int(a.min()) for a in reversed(nz))
    hi = tuple(int(a.max()) for a in reversed(nz))
    return lo, hi  # type: ignore[return-value]
