"""Segment a fetal brain MRI of any size, spacing and orientation with a trained model or ensemble.

Steps (:func:`segment`): read the T2w volume; with a brain mask, zero the voxels outside it (the paper masks the
background) and restrict the model grid to the mask's bounding box plus a margin; lay the model's grid
(spacing and direction from the model card, or given) over the input (:func:`.grid.model_grid`) and resample
the image onto it (linear); predict with each member; resample the ensemble's mean probabilities back to the
input's grid (linear, channel by channel) and take the argmax there, so the labels come back on exactly the
input's voxels; outside the mask, background. Without a mask (a model trained to find the brain itself, whose
card does not require one) the unmasked image is parcellated on the classical brain extraction's box plus the
margin and the largest connected piece of brain kept. Optionally the members' disagreement (the fraction of
members whose label differs from the ensemble's, resampled linearly) as an uncertainty map.

Outputs: a label map with tissue labels 1..8 (NIfTI / NRRD), or a ``.seg.nrrd`` whose segments carry the
tissue abbreviations and colours (:mod:`.tissues`) with each segment's label value equal to its tissue label.

This duplicates no engine code: the engine's predictor does the network part; the resampling should move into
``losslab.engine.inference`` later (see docs/fetal.md).
"""

from __future__ import annotations

import os
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import SimpleITK as sitk
from tqdm import tqdm

from .. import io as _io
from .brain import largest_component
from .grid import geometry_of, mask_box, model_grid, resample, to_sitk
from .tissues import TISSUES

SEG_SUFFIX = ".seg.nrrd"
#: Direction of the model grid when neither the card nor the caller gives one: the atlas's, hence the training
#: volumes', LPS direction diag(-1, -1, 1). A network sees its input in array order, so the model grid must
#: have the direction of the data it was trained on (flips of the other axes were never seen in training).
ATLAS_DIRECTION: tuple[float, ...] = (-1.0, 0.0, 0.0, 0.0, -1.0, 0.0, 0.0, 0.0, 1.0)


def resolve_model(
    model: str | os.PathLike, spacing: Sequence[float] | None = None, direction: Sequence[float] | None = None
) -> tuple[Path, list[float], list[float] | None, Any]:
    """``(checkpoint or ensemble path, spacing, direction, card or None)`` of a registry name, a folder with a
    ``model.json`` card, or a checkpoint / ensemble path (then ``spacing`` is required).

    Raises:
        ValueError: unknown name, or a plain checkpoint without ``spacing``; ModelChecksumError.
    """
    from .. import models

    path = Path(model)
    card = None
    if path.exists():
        if path.is_dir() and (path / models.CARD).is_file():
            card = models.read_card(path)
            models.verify_model(card)
    else:
        card = models.get_card(str(model))
        models.verify_model(card)
    if card is not None:
        path = card.path
        spacing = spacing or card.spacing
        direction = direction or card.direction
    if not spacing:
        raise ValueError(
            f"{str(model)!r} has no model card giving its grid: pass the spacing it was trained at "
            "(e.g. --spacing 1.6)"
        )
    spacing = [float(s) for s in spacing]
    if len(spacing) == 1:
        spacing = spacing * 3
    direction = [float(v) for v in (direction or ATLAS_DIRECTION)]
    if len(direction) != 9:
        raise ValueError(f"a model grid direction needs 9 numbers (3x3, row-major), got {direction}")
    return path, spacing, direction, card


def write_tissue_segmentation(path: str | os.PathLike, labels: np.ndarray, geometry: _io.Geometry) -> Path:
    """Write a ``(k, j, i)`` tissue label map as a Slicer ``.seg.nrrd`` with the tissues' names and colours
    (atomic). Every tissue gets a segment (empty ones too), so segment label values equal tissue labels."""
    import slicerio

    labels = np.asarray(labels)

    def write(tmp: Path) -> None:
        voxels = np.ascontiguousarray(labels.transpose()).astype(np.uint8)
        seg = slicerio.create_segmentation(voxels.shape, geometry.ijk_to_lps())
        for t in TISSUES:
            slicerio.add_segment(
                seg,
                voxels == t.label,
                {"id": f"Segment_{t.label}", "name": t.abbreviation, "color": list(t.color_float)},
            )
        slicerio.write_segmentation(str(tmp), seg)

    def verify(tmp: Path) -> None:
        back = _io.read_image(tmp)
        if back.array.shape != labels.shape:
            raise OSError(f"{path}: wrote shape {back.array.shape}, expected {labels.shape}")

    return _io.atomic_write(path, write, verify=verify)


def brain_box(
    array: np.ndarray, spacing: Sequence[float]
) -> tuple[tuple[int, int, int], tuple[int, int, int]] | None:
    """Where the brain is in a volume without a mask: the bounding box of the classical extraction
    (:func:`.brain.extract_brain`, checked), or None (the whole field of view) when it finds no plausible
    brain. Only the box is used: the image is not masked, the model draws the brain's boundary itself, on
    a field of view like its training crops' (a brain's box plus the margin)."""
    from .brain import BrainExtractionError, check_brain_mask, extract_brain

    try:
        region = extract_brain(array, spacing)
        check_brain_mask(region, spacing)
    except BrainExtractionError:
        return None
    return mask_box(region)


def check_grid_size(size: Sequence[int], spacing: Sequence[float], networks, image) -> None:
    """Refuse a model grid smaller than the networks' pooling factor along an axis (a few voxels: not a
    fetal brain; the network would fail on it with a message about tensor sizes).

    Raises:
        ValueError: one line with the grid, the least size and what to check.
    """
    divisor = max(int(getattr(net, "divisor", 1)) for net in networks)
    if min(size) >= divisor:
        return
    extent = " x ".join(f"{n * s:.0f}" for n, s in zip(size, spacing))
    raise ValueError(
        f"{image}: the model grid over it is {list(size)} voxels ({extent} mm), smaller than the {divisor} "
        f"voxels ({divisor * min(spacing):.0f} mm) per axis the model needs, and than any fetal brain: is this "
        "the right image (and, with a mask, the right mask)?"
    )


def segment(
    model: str | os.PathLike,
    image: str | os.PathLike,
    output: str | os.PathLike,
    mask: str | os.PathLike | None = None,
    uncertainty: str | os.PathLike | None = None,
    spacing: Sequence[float] | None = None,
    direction: Sequence[float] | None = None,
    margin_mm: float = 8.0,
    device: str = "auto",
    progress: bool = True,
) -> dict[str, Any]:
    """Segment ``image`` into the 8 tissues on its own grid; see the module docstring.

    Args:
        model: registry name, a folder with a model card, or a checkpoint / ensemble path (with ``spacing``).
        image: the T2w MRI (3D).
        output: label map path; ``.seg.nrrd`` keeps tissue names and colours.
        mask: brain mask on the image's grid: crop to it, background outside. Optional, unless the model's
            card requires one (``"input": {"mask": "required"}``, :func:`losslab.models.require_mask`).
            Without one the model finds the brain itself (a model trained with
            ``augmentation.foreground_mask``) in the unmasked image, on the box of the classical extraction
            plus the margin (:func:`brain_box`; the whole field of view when that finds no brain); the
            largest connected piece of its brain is kept, the rest is background.
        uncertainty: path for the members' disagreement map (float32, 0 = all agree).
        spacing, direction: the model grid, when the model has no card (or to override it); the direction
            defaults to :data:`ATLAS_DIRECTION`, the orientation of the training volumes. The input must be
            in a standard anatomical orientation in physical space (as the paper's reconstructions were); its
            file's axis order and direction do not matter.
        margin_mm: margin around the mask's bounding box.

    Returns:
        ``{"output", "uncertainty", "model_grid_size", "spacing", "direction", "members", "seconds"}``.

    Raises:
        losslab.models.MaskRequiredError: no ``mask`` for a model whose card requires one (nothing read or
            written).
    """
    from .. import models
    from ..engine import Predictor, load_predictor

    start = time.perf_counter()
    # a model whose card requires a brain mask (by name, folder or member file) refuses before any work
    models.require_mask(
        models.find_card(model),
        mask is not None,
        how="pass mask=, a brain mask on the image's grid; --mask on the command line",
    )
    path, spacing, direction, _card = resolve_model(model, spacing, direction)
    source = _io.read_image(image)
    if source.array.ndim != 3:
        raise ValueError(f"{image}: expected a 3D MRI, got an array of shape {source.array.shape}")
    array = source.array.astype(np.float32)
    box = None
    inside = None
    if mask is not None:
        brain = _io.read_image(mask)
        _io.check_same_grid(source, brain, ("image", "brain mask"))
        inside = brain.array != 0
        box = mask_box(inside)
        array = np.where(inside, array, 0).astype(np.float32)
    else:
        box = brain_box(array, source.geometry.array_spacing)
    img = to_sitk(array, source.geometry)
    grid = model_grid(img, spacing, direction, box, margin_mm if box is not None else 0.0)
    predictor = load_predictor(path, device=device)
    check_grid_size(list(grid.GetSize()), spacing, predictor.models, image)
    x = sitk.GetArrayFromImage(resample(img, grid))
    probs, member_labels = None, []
    for net in tqdm(predictor.models, desc="members", disable=not progress):
        p = Predictor([net], predictor.info, predictor.device).predict(x).probabilities
        probs = p.copy() if probs is None else probs + p
        member_labels.append(np.argmax(p, axis=0))
    probs /= len(predictor.models)
    grid_geom = geometry_of(grid)
    back = np.stack(
        [sitk.GetArrayFromImage(resample(to_sitk(probs[c], grid_geom), img)) for c in range(probs.shape[0])]
    )
    labels = np.argmax(back, axis=0).astype(np.uint8)
    labels[back.sum(0) == 0] = 0  # outside the model grid
    if inside is not None:
        labels[~inside] = 0
    else:  # no mask: the model found the brain itself; it is one piece, anything apart from it is not brain
        inside = largest_component(labels != 0)
        labels[~inside] = 0
    out = Path(output)
    if out.name.lower().endswith(SEG_SUFFIX):
        write_tissue_segmentation(out, labels, source.geometry)
    else:
        _io.write_image(out, labels, source.geometry)
    unc_path = None
    if uncertainty is not None:
        ensemble = np.argmax(probs, axis=0)
        disagreement = np.mean([lab != ensemble for lab in member_labels], axis=0).astype(np.float32)
        unc = sitk.GetArrayFromImage(resample(to_sitk(disagreement, grid_geom), img)).astype(np.float32)
        if inside is not None:
            unc[~inside] = 0
        unc_path = _io.write_image(uncertainty, unc, source.geometry)
    return {
        "output": str(out),
        "uncertainty": str(unc_path) if unc_path else None,
        "model_grid_size": list(grid.GetSize()),
        "spacing": spacing,
        "direction": list(grid.GetDirection()),
        "members": len(predictor.models),
        "seconds": time.perf_counter() - start,
    }
