"""``losslab ice simulate`` and anatomy masks from files: the dataset folder (engine manifest, case files),
OUTDIR safety, clear errors, and an anatomy given with anisotropic spacing and an oblique direction."""

from __future__ import annotations

import json

import numpy as np
import pytest
import SimpleITK as sitk

from losslab import io
from losslab.cli import main
from losslab.engine.data import load_manifest
from losslab.ice import Grid, dataset_cases, make_phantom, prepare_anatomy, read_case
from losslab.metrics import boundary, dice_score, nearest_distances

SMALL = ["--size", "48", "--spacing", "2.94", "--frames", "6"]


def _simulate(outdir, *extra):
    return main(["ice", "simulate", str(outdir), "--cases", "3", *SMALL, *extra])


def test_simulate_writes_an_engine_dataset_with_case_files(tmp_path, capsys):
    out = tmp_path / "ds"
    assert _simulate(out, "--seed", "7") == 0
    manifest = load_manifest(out / "dataset.json")
    assert manifest.labels == ["background", "left atrium"]
    assert sorted(manifest.cases) == ["ice000", "ice001", "ice002"]
    assert manifest.splits["train"] and set(sum(manifest.splits.values(), [])) == set(manifest.cases)
    raw = json.loads((out / "dataset.json").read_text())
    for entry in raw["cases"]:
        for key in ("image", "label", "datamask", "cas", "frames", "frame_images"):
            assert (out / entry[key]).is_file(), (entry["id"], key)
    case = read_case(out / "cases" / "ice001")
    assert len(case.frames) == 6 and case.grid.shape == (48, 48, 48)
    np.testing.assert_allclose(case.grid.spacing, 2.94, rtol=1e-6)
    assert case.settings["seed"] == 8  # case i uses seed S + i
    assert case.datamask.any() and case.cas.max() <= 6
    # Different cases have different phantoms.
    labels = [io.read_image(out / f"cases/ice00{i}/label.nii.gz").array for i in range(3)]
    assert not np.array_equal(labels[0], labels[1])
    assert "wrote 3 case(s)" in capsys.readouterr().out
    folders = dataset_cases(out)
    assert list(folders) == ["ice000", "ice001", "ice002"]
    assert list(dataset_cases(out / "dataset.json", "train")) == manifest.splits["train"]
    with pytest.raises(ValueError, match="no split 'nope'"):
        dataset_cases(out, "nope")


def test_simulate_reads_a_slicer_segmentation(tmp_path):
    grid = Grid.cube(48, 2.94)
    phantom = make_phantom(grid, 2)
    seg = io.write_image(
        tmp_path / "la.seg.nrrd", phantom.astype(np.uint8), grid.geometry, {1: "left atrium"}
    )
    assert (
        main(["ice", "simulate", str(tmp_path / "out"), *SMALL, "--cases", "1", "--anatomy", str(seg)]) == 0
    )
    label = io.read_image(tmp_path / "out/cases/ice000/label.nii.gz").array
    assert dice_score(label, phantom) > 0.95


def test_simulate_refuses_a_folder_with_files_unless_overwrite(tmp_path, capsys):
    out = tmp_path / "busy"
    out.mkdir()
    (out / "notes.txt").write_text("mine")
    assert _simulate(out) == 2
    err = capsys.readouterr().err
    assert "already holds files (notes.txt)" in err and "--overwrite" in err
    assert not (out / "dataset.json").exists()
    assert _simulate(out, "--overwrite") == 0
    assert (out / "notes.txt").read_text() == "mine" and (out / "dataset.json").is_file()


def _oblique_copy(mask: np.ndarray, grid: Grid, path, spacing=(0.9, 1.4, 2.0), shift=(10.0, -6.0, 4.0)):
    """Resample ``mask`` onto an anisotropic, oblique grid translated by ``shift`` mm and write it."""
    src = sitk.GetImageFromArray(mask.astype(np.uint8))
    src.SetSpacing(grid.geometry.spacing)
    src.SetOrigin(grid.geometry.origin)
    src.SetDirection(grid.geometry.direction)
    direction = sitk.VersorRigid3DTransform((0.35, -0.25, 0.3), 0.5).GetMatrix()
    size = [int(np.ceil(150 / s)) for s in spacing]
    dst = sitk.Image(size, sitk.sitkUInt8)
    dst.SetSpacing(spacing)
    dst.SetDirection(direction)
    centre_offset = np.asarray(direction).reshape(3, 3) @ ((np.asarray(size) - 1) / 2 * np.asarray(spacing))
    dst.SetOrigin(tuple(np.asarray(shift) - centre_offset))
    moved = sitk.Resample(
        src, dst, sitk.TranslationTransform(3, [-float(v) for v in shift]), sitk.sitkNearestNeighbor
    )
    sitk.WriteImage(moved, str(path))
    return path


def test_anisotropic_oblique_anatomy_is_resampled_centred_and_simulated(tmp_path):
    grid = Grid.cube(64, 2.2048)
    phantom = make_phantom(grid, 5)
    path = _oblique_copy(phantom, grid, tmp_path / "la.nrrd")
    image = io.read_image(path)
    assert image.geometry.spacing == pytest.approx((0.9, 1.4, 2.0))
    mask = prepare_anatomy(image, grid)
    assert dice_score(mask, phantom) > 0.85
    out = tmp_path / "ds"
    args = ["--size", "64", "--spacing", "2.2048", "--frames", "8", "--anatomy", str(path), "--cases", "2"]
    zero = ["--misalignment-deg", "0", "--misalignment-mm", "0", "--motion", "0"]
    assert main(["ice", "simulate", str(out), *args, *zero]) == 0
    case = read_case(out / "cases" / "ice001")
    assert np.array_equal(case.label.astype(bool), mask)  # cases cycle over the given masks
    d = nearest_distances(case.cas > 0, boundary(mask), case.spacing)
    assert d.size > 100 and d.max() <= max(case.spacing) + 1e-6
    # Frames on their planes (to a voxel) for this anatomy too.
    for frame in case.frames:
        kji = np.stack(np.unravel_index(frame.voxels, case.grid.shape), 1).astype(float)
        ras = (case.grid.index_to_ras() @ np.c_[kji, np.ones(len(kji))].T)[:3].T
        assert np.abs((ras - frame.pose[:3, 3]) @ frame.pose[:3, 2]).max() <= 0.5 * np.sqrt(3) * 2.2048 + 1e-6


def _write(path, array, spacing=(1.0, 1.0, 1.0)):
    io.write_image(path, array, io.Geometry.identity(3, spacing))
    return path


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("empty", "the mask is empty"),
        ("labels", "expected a binary mask"),
        ("huge", "use --spacing"),
    ],
)
def test_bad_anatomy_masks_give_one_line_errors(tmp_path, capsys, content, message):
    array = np.zeros((40, 40, 40), np.uint8)
    spacing = (1.0, 1.0, 1.0)
    if content == "labels":
        array[10:20, 10:20, 10:20] = 1
        array[20:30, 10:20, 10:20] = 2
    if content == "huge":
        array[2:38, 2:38, 2:38] = 1
        spacing = (5.0, 5.0, 5.0)  # 180 mm across: more than 48 x 2.94 mm
    path = _write(tmp_path / "m.nii.gz", array, spacing)
    assert main(["ice", "simulate", str(tmp_path / "out"), *SMALL, "--anatomy", str(path)]) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and len(err.splitlines()) == 1 and str(path) in err
    if content == "huge":
        assert "180.0 x 180.0 x 180.0 mm" in err


def test_several_components_warn_and_keep_the_largest(tmp_path, capsys):
    array = np.zeros((40, 40, 40), np.uint8)
    array[5:25, 5:25, 5:25] = 1
    array[30:34, 30:34, 30:34] = 1
    path = _write(tmp_path / "two.nii.gz", array, (2.0, 2.0, 2.0))
    assert (
        main(["ice", "simulate", str(tmp_path / "out"), *SMALL, "--cases", "1", "--anatomy", str(path)]) == 0
    )
    assert "2 connected components" in capsys.readouterr().err
    label = io.read_image(tmp_path / "out/cases/ice000/label.nii.gz").array
    # 20^3 voxels of 2 mm = 40 mm cube, resampled at 2.94 mm: about (40 / 2.94)^3 voxels, one piece.
    assert abs(label.sum() - (40 / 2.94) ** 3) < 0.35 * (40 / 2.94) ** 3
    with pytest.warns(UserWarning, match="keeping the largest"):
        prepare_anatomy(io.read_image(path), Grid.cube(48, 2.94))


def test_ice_group_without_a_command_prints_help(capsys):
    assert main(["ice"]) == 2
    assert "simulate" in capsys.readouterr().err
