"""Classical brain extraction for a fetal T2w super-resolution reconstruction (no training, no atlas).

:func:`extract_brain` (steps, every size in mm so that the voxel spacing does not matter):

1. Otsu's threshold (:class:`SimpleITK.OtsuThresholdImageFilter`, 256 bins) over the finite voxels, after
   clipping to the 0.5-99.5 percentiles so that a few hot voxels do not squeeze the histogram: the bright
   foreground (brain tissue and CSF, T2-bright) against the dark background.
2. Opening with a ball of ``open_mm`` (2 mm): cuts thin bridges to bright structures outside the brain.
3. The largest 26-connected component.
4. Closing with a ball of ``close_mm`` (3 mm), then 3D hole filling
   (:func:`scipy.ndimage.binary_fill_holes`): dark tissue inside the brain (grey matter) becomes brain.
5. Erosion with a ball of ``erode_mm`` (1 mm; at 0.8 mm spacing, one layer of face neighbours): the
   reconstructions carry a rim of dimmer, non-zero voxels just outside the brain mask, which Otsu's threshold
   keeps.

The parameters were set on the training atlas (../shared/data/fetal-sb-atlas, its own brain masks; Dice of
the mask 0.953-0.976 without step 5, 0.992-0.998 with it), not on the cross-centre test set that measures it
(docs/fetal.md).

**What it assumes**: a reconstruction whose background around the brain is dark (near zero), as the SRR
pipelines of the field and the public atlases give it (the volume is reconstructed inside a brain mask of its
slices). Then Otsu's threshold separates the brain from that background and lies far below every tissue (about
950 against tissue means of 1500-2700 in the training atlas), so the brain comes out whole; a tissue darker
than the threshold is kept only where it is enclosed (filled as a hole) or within the closing's reach. A volume with maternal tissue, amniotic fluid or the skull around the brain is not brain-extracted
by this: :func:`check_brain_mask` refuses a result that touches the field of view's border or whose volume is
no fetal brain's (:data:`BRAIN_VOLUME_ML`), rather than returning a mask that would make a parcellation
garbage. Give a brain mask made another way then.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import SimpleITK as sitk
from scipy import ndimage

from .. import io as _io

#: Plausible fetal brain volume (mL) of a result: the mask of the atlases' brains (intracranial, with the
#: extra-axial CSF) is about 90 mL at 21 weeks and about 450 mL near term; the bounds leave wide room.
BRAIN_VOLUME_ML = (30.0, 1000.0)


class BrainExtractionError(ValueError):
    """The classical brain extraction gave no plausible fetal brain (see :func:`check_brain_mask`)."""


def _ball(radius_mm: float, spacing: Sequence[float]) -> np.ndarray:
    """A ball of ``radius_mm`` as a boolean structuring element on a grid of ``spacing`` (array order)."""
    half = [max(int(np.floor(radius_mm / s)), 0) for s in spacing]
    axes = np.meshgrid(*[np.arange(-h, h + 1) * s for h, s in zip(half, spacing)], indexing="ij")
    return sum(a**2 for a in axes) <= radius_mm**2 * (1 + 1e-6)  # ties: float32 spacings of files


def otsu_threshold(array: np.ndarray) -> float:
    """Otsu's threshold of the finite values of ``array``, clipped to their 0.5-99.5 percentiles.

    Raises:
        BrainExtractionError: no finite value, or a constant image.
    """
    values = np.asarray(array, dtype=np.float32)
    finite = np.isfinite(values)
    if not finite.any():
        raise BrainExtractionError("the image has no finite value: no brain to extract")
    lo, hi = np.percentile(values[finite], [0.5, 99.5])
    if not hi > lo:
        raise BrainExtractionError(f"the image is constant ({float(lo)}) over 99 % of its voxels: no brain")
    clipped = np.clip(np.where(finite, values, lo), lo, hi)
    f = sitk.OtsuThresholdImageFilter()
    f.SetInsideValue(0)
    f.SetOutsideValue(1)
    f.SetNumberOfHistogramBins(256)
    f.Execute(sitk.GetImageFromArray(clipped))
    return float(f.GetThreshold())


def largest_component(foreground: np.ndarray) -> np.ndarray:
    """The largest 26-connected component of a bool volume (all False when it is empty)."""
    components, count = ndimage.label(foreground, structure=np.ones((3, 3, 3), bool))
    if count <= 1:
        return components > 0
    sizes = np.bincount(components.ravel())
    sizes[0] = 0
    return components == int(np.argmax(sizes))


def extract_brain(
    array: np.ndarray,
    spacing: Sequence[float],
    open_mm: float = 2.0,
    close_mm: float = 3.0,
    erode_mm: float = 1.0,
) -> np.ndarray:
    """A boolean brain mask of a fetal T2w volume; see the module docstring for the steps and assumptions.

    Args:
        array: the volume ``(k, j, i)`` (any real dtype; NaN / inf are background).
        spacing: voxel size per array axis ``(k, j, i)`` in mm.
        open_mm, close_mm, erode_mm: radii of the opening, the closing and the final erosion (mm); 0 skips
            the step.

    Returns:
        ``bool`` array of ``array``'s shape. Not checked for plausibility: :func:`check_brain_mask` does that.

    Raises:
        ValueError: not a 3D array, a spacing of the wrong length or not positive, a negative radius;
        BrainExtractionError: nothing above the threshold.
    """
    array = np.asarray(array)
    if array.ndim != 3:
        raise ValueError(f"brain extraction takes a 3D volume, got shape {array.shape}")
    spacing = [float(s) for s in spacing]
    if len(spacing) != 3 or not all(np.isfinite(s) and s > 0 for s in spacing):
        raise ValueError(f"spacing must be 3 positive sizes in mm (array order), got {spacing}")
    if min(open_mm, close_mm, erode_mm) < 0:
        raise ValueError(
            f"open_mm, close_mm and erode_mm must be >= 0 mm, got {open_mm}, {close_mm} and {erode_mm}"
        )
    values = np.where(np.isfinite(array), array, -np.inf).astype(np.float32)
    fg = values > otsu_threshold(array)
    if open_mm > 0:
        fg = ndimage.binary_opening(fg, structure=_ball(open_mm, spacing))
    if not fg.any():
        raise BrainExtractionError("no voxel above Otsu's threshold survives the opening: no brain found")
    brain = largest_component(fg)
    if close_mm > 0:
        ball = _ball(close_mm, spacing)
        pad = [(b // 2, b // 2) for b in ball.shape]  # closing must not be clipped by the volume's border
        brain = ndimage.binary_closing(np.pad(brain, pad), structure=ball)
        brain = brain[tuple(slice(p[0], p[0] + n) for p, n in zip(pad, array.shape))]
    brain = ndimage.binary_fill_holes(brain)
    if erode_mm > 0:
        brain = ndimage.binary_erosion(brain, structure=_ball(erode_mm, spacing))
    return brain


def check_brain_mask(
    mask: np.ndarray, spacing: Sequence[float], volume_ml: tuple[float, float] = BRAIN_VOLUME_ML
) -> dict[str, Any]:
    """Refuse an extracted mask that is no fetal brain inside a reconstruction's field of view.

    Returns:
        ``{"volume_ml", "voxels"}`` of an accepted mask.

    Raises:
        BrainExtractionError: the mask touches the field of view's border (the brain is cut off, or the
            volume is not brain-extracted: maternal tissue or the skull are in it), or its volume lies outside
            ``volume_ml``; the message says to give a brain mask instead.
    """
    mask = np.asarray(mask, dtype=bool)
    advice = "give a brain mask (--mask) made another way"
    volume = float(mask.sum() * np.prod([float(s) for s in spacing]) / 1000.0)
    border = any(mask.take(i, axis=a).any() for a in range(mask.ndim) for i in (0, -1))
    if border:
        raise BrainExtractionError(
            "the extracted brain touches the border of the field of view: the brain is cut off, or the volume "
            f"is not a brain-extracted reconstruction (maternal tissue, skull or fluid around it); {advice}"
        )
    if not volume_ml[0] <= volume <= volume_ml[1]:
        raise BrainExtractionError(
            f"the extracted brain is {volume:.0f} mL, outside a fetal brain's {volume_ml[0]:.0f}-"
            f"{volume_ml[1]:.0f} mL; {advice}"
        )
    return {"volume_ml": volume, "voxels": int(mask.sum())}


def extract_brain_file(image: str | os.PathLike, output: str | os.PathLike | None = None) -> dict[str, Any]:
    """Extract the brain of the volume in ``image`` (checked by :func:`check_brain_mask`) and, when
    ``output`` is given, write the mask there (uint8, the image's grid, atomic).

    Returns:
        ``{"mask": bool array (k, j, i), "geometry", "volume_ml", "voxels", "output"}``.

    Raises:
        BrainExtractionError: no plausible brain.
    """
    source = _io.read_image(image)
    if source.array.ndim != 3:
        raise ValueError(f"{image}: expected a 3D MRI, got an array of shape {source.array.shape}")
    spacing = source.geometry.array_spacing
    mask = extract_brain(source.array, spacing)
    info = check_brain_mask(mask, spacing)
    written = None
    if output is not None:
        written = str(_io.write_image(Path(output), mask.astype(np.uint8), source.geometry))
    return {"mask": mask, "geometry": source.geometry, "output": written, **info}


__all__ = [
    "BRAIN_VOLUME_ML",
    "BrainExtractionError",
    "check_brain_mask",
    "extract_brain",
    "extract_brain_file",
    "largest_component",
    "otsu_threshold",
]
