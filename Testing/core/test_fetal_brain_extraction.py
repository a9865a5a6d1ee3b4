"""The classical brain extraction (``losslab.labelsets.brain``, ``losslab fetal brain-mask``; issue 19 item 3).

Synthetic reconstructions whose truth is known by construction: an ellipsoidal brain on an anisotropic grid,
T2-like (a bright CSF shell outside, darker grey matter under it, bright ventricles; every tissue above Otsu's
threshold, as in the real reconstructions, where it lies far below the tissues), a dark pocket inside the
brain that thresholding leaves out (a hole to fill), a dim
rim one voxel thick outside the brain (as the reconstructions have), a bright blob outside the brain that is
not connected to it, and noise. Then the refusals (no plausible brain), the command line, and one volume of
the training atlas against its own mask."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from scipy import ndimage

from losslab import io
from losslab.cli import main
from losslab.labelsets.brain import (
    BrainExtractionError,
    check_brain_mask,
    extract_brain,
    extract_brain_file,
    otsu_threshold,
)
from losslab.metrics import dice_score

ATLAS = Path(__file__).resolve().parents[3] / "shared" / "data" / "fetal-sb-atlas"
SPACING = (1.2, 0.8, 0.9)  # (k, j, i), mm: anisotropic on purpose
SHAPE = (60, 100, 90)


def _ellipsoid(shape, centre_mm, radii_mm, spacing=SPACING):
    grids = np.meshgrid(*[np.arange(n) * s for n, s in zip(shape, spacing)], indexing="ij")
    return sum(((g - c) / r) ** 2 for g, c, r in zip(grids, centre_mm, radii_mm)) <= 1.0


def _phantom(seed=0):
    """``(volume, brain)``: a T2-like fetal brain reconstruction and its true brain mask."""
    rng = np.random.default_rng(seed)
    c = (36.0, 40.0, 40.0)
    brain = _ellipsoid(SHAPE, c, (24.0, 30.0, 26.0))
    inner = _ellipsoid(SHAPE, c, (21.0, 27.0, 23.0))  # under the extra-axial CSF shell
    tissue = _ellipsoid(SHAPE, c, (18.5, 24.5, 20.5))  # under the cortex
    vol = np.zeros(SHAPE, np.float32)
    vol[brain] = 1900.0  # extra-axial CSF, bright
    vol[inner] = 1300.0  # cortical grey matter
    vol[tissue] = 1500.0  # white matter
    vol[_ellipsoid(SHAPE, c, (6.0, 6.0, 6.0))] = 300.0  # a dark pocket: a hole after thresholding
    vol[_ellipsoid(SHAPE, (36.0, 40.0, 28.0), (4.0, 8.0, 3.0))] = 2000.0  # a ventricle
    rim = _ellipsoid(SHAPE, c, (24.9, 30.9, 26.9)) & ~brain
    vol[rim] = 1100.0  # the reconstruction's dimmer rim just outside the brain (0.9 mm), above the threshold
    vol[_ellipsoid(SHAPE, (36.0, 40.0, 74.0), (5.0, 5.0, 4.0))] = 1800.0  # bright, outside, not connected
    vol += rng.normal(0.0, 40.0, SHAPE).astype(np.float32)
    vol[vol < 0] = 0
    return vol, brain


def test_the_phantom_is_what_the_test_needs():
    vol, brain = _phantom()
    t = otsu_threshold(vol)
    assert 300 < t < 1100  # above the dark pocket (300), below the rim and every tissue
    pocket = _ellipsoid(SHAPE, (36.0, 40.0, 40.0), (6.0, 6.0, 6.0))
    assert (vol[pocket] <= t).mean() > 0.95 and (vol[brain & ~pocket] > t).mean() > 0.99
    blob = _ellipsoid(SHAPE, (36.0, 40.0, 74.0), (5.0, 5.0, 4.0))
    assert not (ndimage.binary_dilation(blob, iterations=3) & brain).any()  # the blob is not connected


def test_extracts_the_brain_on_an_anisotropic_grid():
    vol, brain = _phantom()
    mask = extract_brain(vol, SPACING)
    assert mask.dtype == bool and mask.shape == vol.shape
    assert dice_score(mask, brain) > 0.98
    blob = _ellipsoid(SHAPE, (36.0, 40.0, 74.0), (5.0, 5.0, 4.0))
    assert not (mask & blob).any()  # the largest component only
    assert mask[_ellipsoid(SHAPE, (36.0, 40.0, 40.0), (6.0, 6.0, 6.0))].all()  # the dark pocket filled
    assert mask[_ellipsoid(SHAPE, (36.0, 40.0, 40.0), (20.0, 26.0, 22.0))].all()  # the brain's inside whole
    rim = _ellipsoid(SHAPE, (36.0, 40.0, 40.0), (24.9, 30.9, 26.9)) & ~brain
    assert not (mask & ~brain & ~rim).any()  # nothing beyond the rim
    assert (mask & rim).sum() < 0.5 * rim.sum()  # and the rim eroded (not along k: 1.2 mm > the 1 mm ball)
    info = check_brain_mask(mask, SPACING)
    assert info["volume_ml"] == pytest.approx(mask.sum() * np.prod(SPACING) / 1000)


def test_nan_and_inf_are_background():
    vol, brain = _phantom(seed=1)
    vol[:3] = np.nan
    vol[-2:, :5] = np.inf
    assert dice_score(extract_brain(vol, SPACING), brain) > 0.98


def test_refuses_what_is_no_fetal_brain():
    vol, brain = _phantom()
    with pytest.raises(BrainExtractionError, match="constant"):
        extract_brain(np.full(SHAPE, 5.0, np.float32), SPACING)
    with pytest.raises(BrainExtractionError, match="no finite value"):
        extract_brain(np.full(SHAPE, np.nan, np.float32), SPACING)
    # not brain-extracted: bright amniotic fluid fills the field of view around the brain
    body = np.where(brain, vol, 2500.0).astype(np.float32)
    with pytest.raises(BrainExtractionError, match="touches the border"):
        check_brain_mask(extract_brain(body, SPACING), SPACING)
    # a brain far too small (a 4 mm ball) and one far too large for a fetus (the volume's spacing x 10)
    tiny = _ellipsoid(SHAPE, (36.0, 40.0, 40.0), (4.0, 4.0, 4.0))
    with pytest.raises(BrainExtractionError, match="outside a fetal brain's 30-1000 mL"):
        check_brain_mask(tiny, SPACING)
    with pytest.raises(BrainExtractionError, match="mL"):
        check_brain_mask(brain, [s * 10 for s in SPACING])


def test_invalid_arguments_raise_naming_them():
    vol, _ = _phantom()
    with pytest.raises(ValueError, match="3D"):
        extract_brain(vol[0], SPACING[1:])
    with pytest.raises(ValueError, match="spacing"):
        extract_brain(vol, (1.0, 1.0))
    with pytest.raises(ValueError, match="spacing"):
        extract_brain(vol, (1.0, 0.0, 1.0))
    with pytest.raises(ValueError, match="erode_mm"):
        extract_brain(vol, SPACING, erode_mm=-1)


def test_command_line_writes_the_mask_on_the_image_grid(tmp_path, capsys):
    vol, brain = _phantom()
    geometry = io.Geometry(
        spacing=tuple(reversed(SPACING)), origin=(10.0, -5.0, 3.0), direction=(-1, 0, 0, 0, -1, 0, 0, 0, 1)
    )
    image = io.write_image(tmp_path / "t2.nii.gz", vol, geometry)
    out = tmp_path / "mask.nii.gz"
    assert main(["fetal", "brain-mask", str(image), "-o", str(out)]) == 0
    assert "classical brain extraction" in capsys.readouterr().out
    written = io.read_image(out)
    assert not written.geometry.differences(io.read_image(image).geometry)
    assert dice_score(written.array > 0, brain) > 0.98
    # the file's spacing reaches the extraction in array order (k, j, i): the 1 mm erosion acts along j and i
    # (0.8, 0.9 mm) but not k (1.2 mm), so the axis order shows in the mask
    assert np.array_equal(written.array > 0, extract_brain(vol, SPACING))
    assert set(np.unique(written.array).tolist()) == {0, 1}
    # the I/O rules: no overwrite without --overwrite, never the input
    assert main(["fetal", "brain-mask", str(image), "-o", str(out)]) == 2
    assert "exists" in capsys.readouterr().err
    assert main(["fetal", "brain-mask", str(image), "-o", str(image), "--overwrite"]) == 2
    assert "destroy the input" in capsys.readouterr().err
    assert dice_score(io.read_image(image).array > 1000, vol > 1000) == 1.0  # the input is untouched
    # no plausible brain: one line, exit code 2, nothing written
    flat = io.write_image(tmp_path / "flat.nii.gz", np.full(SHAPE, 3.0, np.float32), geometry)
    assert main(["fetal", "brain-mask", str(flat), "-o", str(tmp_path / "none.nii.gz")]) == 2
    err = capsys.readouterr().err
    assert "constant" in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "none.nii.gz").exists()


@pytest.mark.skipif(not ATLAS.is_dir(), reason=f"the shared fetal atlas is not at {ATLAS}")
def test_training_atlas_volume_against_its_own_mask():
    case = ATLAS / "GA23_notoperated"
    info = extract_brain_file(case / "srr.nii.gz")
    truth = io.read_image(case / "mask.nii.gz").array > 0
    assert dice_score(info["mask"], truth) > 0.99  # 0.993 when the parameters were set


def test_brain_box_locates_the_brain_for_a_model_without_a_mask():
    """segment() without a mask lays the model grid on this box (the image is not masked): the phantom's
    brain with its rim, not the bright blob outside it; None (the whole field of view) when no brain."""
    from losslab.labelsets.grid import mask_box
    from losslab.labelsets.segment import brain_box

    vol, brain = _phantom()
    lo, hi = brain_box(vol, SPACING)
    true_lo, true_hi = mask_box(brain)
    assert np.all(np.abs(np.subtract(lo, true_lo)) <= 2) and np.all(np.abs(np.subtract(hi, true_hi)) <= 2)
    assert brain_box(np.zeros(SHAPE, np.float32), SPACING) is None
    noise = (
        np.random.default_rng(0).uniform(0, 1000, SHAPE).astype(np.float32)
    )  # no brain: touches the border
    assert brain_box(noise, SPACING) is None


def test_largest_component_keeps_the_biggest_piece_only():
    from losslab.labelsets.segment import largest_component

    fg = np.zeros((20, 20, 20), bool)
    fg[2:10, 2:10, 2:10] = True  # 512 voxels
    fg[12:15, 12:15, 12:15] = True  # 27, apart
    fg[10, 10, 10] = True  # touches the big one at a corner: 26-connected to it
    kept = largest_component(fg)
    assert kept.sum() == 513 and not kept[12:15, 12:15, 12:15].any()
    assert not largest_component(np.zeros((4, 4, 4), bool)).any()
