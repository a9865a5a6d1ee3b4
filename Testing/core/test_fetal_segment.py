"""`losslab fetal segment`: an atlas volume given at another spacing and direction comes back labelled on its
own grid (skipped when shared/data is absent). The model is a tiny random-weight ensemble registered in a tmp
registry: the checks are geometric (equivariance, grids, files), not about accuracy."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk
import torch

from losslab import io, models
from losslab.cli import main
from losslab.engine import save_checkpoint
from losslab.labelsets import LABEL_NAMES, TISSUES
from losslab.labelsets.segment import ATLAS_DIRECTION, segment
from losslab.nets import build_network, network_spec

ATLAS = Path(__file__).resolve().parents[3] / "shared" / "data" / "fetal-sb-atlas"
CASE = ATLAS / "GA25_operated"
pytestmark = pytest.mark.skipif(
    not (CASE / "srr.nii.gz").is_file(),
    reason=f"fetal atlas data not found at {ATLAS} (shared/data/fetal-sb-atlas, see its README)",
)


@pytest.fixture(scope="module")
def registry(tmp_path_factory):
    root = tmp_path_factory.mktemp("registry")
    folder = root / "fetal-random"
    network = {"preset": "fetal_parcellation", "features": [4, 4, 4, 4, 4]}
    members = []
    for k in range(2):
        torch.manual_seed(k)
        net = build_network(network)
        info = {"network": network_spec(network), "labels": LABEL_NAMES, "channel_names": ["image"],
                "n_image_channels": 1, "normalize": "zscore", "window": None, "overlap": 0.5}  # fmt: skip
        save_checkpoint(folder / f"member{k}" / "model.pt", {"model": net.state_dict(), "model_info": info})
        members.append(f"member{k}/model.pt")
    (folder / "ensemble.json").write_text(json.dumps({"members": members}))
    models.register_model(folder, {"name": "fetal-random", "task": "test", "grid": {"spacing_mm": [3.2] * 3}})
    return root


def _write(img: sitk.Image, path: Path) -> Path:
    sitk.WriteImage(img, str(path))
    return path


def test_without_a_mask_the_grid_lies_on_the_brain(registry, tmp_path, monkeypatch):
    """No mask: the model grid covers the classical extraction's box plus the margin, not the whole field
    of view, and the brain mask's box lies inside it; the labels are one connected piece."""
    from scipy import ndimage

    from losslab.labelsets.grid import mask_box

    monkeypatch.setenv(models.ENV_ROOT, str(registry))
    info = segment("fetal-random", CASE / "srr.nii.gz", tmp_path / "seg.nii.gz", progress=False, device="cpu")
    image, brain = io.read_image(CASE / "srr.nii.gz"), io.read_image(CASE / "mask.nii.gz").array > 0
    field = np.asarray(image.geometry.spacing) * np.asarray(image.array.shape[::-1]) / 3.2
    grid = np.asarray(info["model_grid_size"])
    assert np.all(grid < field - 4)  # the brain's box, not the field of view
    lo, hi = mask_box(brain)
    extent = (np.subtract(hi, lo) + 1) * np.asarray(image.geometry.array_spacing) / 3.2
    assert np.all(grid >= extent[::-1])  # (i, j, k): the atlas is in the model grid's direction
    labels = io.read_image(tmp_path / "seg.nii.gz").array
    assert labels.any() and ndimage.label(labels > 0, structure=np.ones((3, 3, 3)))[1] == 1


def test_any_spacing_and_direction(registry, tmp_path, monkeypatch):
    """Geometry over the whole field of view (no mask, no brain found: brain_box gives None)."""
    import losslab.labelsets.segment as segment_module

    monkeypatch.setenv(models.ENV_ROOT, str(registry))
    monkeypatch.setattr(segment_module, "brain_box", lambda array, spacing: None)
    srr = sitk.ReadImage(str(CASE / "srr.nii.gz"), sitk.sitkFloat32)
    mask = sitk.ReadImage(str(CASE / "mask.nii.gz"), sitk.sitkUInt8)
    info = segment("fetal-random", CASE / "srr.nii.gz", tmp_path / "seg.nii.gz", progress=False, device="cpu")
    assert info["members"] == 2 and info["spacing"] == [3.2, 3.2, 3.2]
    assert info["direction"] == list(ATLAS_DIRECTION)  # the training volumes' orientation, not the identity
    seg = sitk.ReadImage(str(tmp_path / "seg.nii.gz"))
    base = sitk.GetArrayFromImage(seg)
    assert seg.GetSize() == srr.GetSize() and seg.GetDirection() == pytest.approx(srr.GetDirection())
    assert len(np.unique(base)) >= 3  # the random network does give a varied labelling

    # the same voxels with axes permuted and flipped (another direction, same physical space)
    moved = sitk.Flip(sitk.PermuteAxes(srr, [2, 0, 1]), [True, False, True])
    assert moved.GetDirection() != pytest.approx(srr.GetDirection())
    segment("fetal-random", _write(moved, tmp_path / "moved.nii.gz"), tmp_path / "moved_seg.nii.gz",
            progress=False, device="cpu")  # fmt: skip
    out = sitk.ReadImage(str(tmp_path / "moved_seg.nii.gz"))
    assert out.GetSize() == moved.GetSize() and out.GetOrigin() == pytest.approx(moved.GetOrigin())
    expected = sitk.GetArrayFromImage(sitk.Flip(sitk.PermuteAxes(seg, [2, 0, 1]), [True, False, True]))
    assert np.mean(sitk.GetArrayFromImage(out) == expected) > 0.999

    # another (anisotropic) spacing over the same field of view: labels on the input's grid, agreeing with
    # the 0.8 mm result (the model grid is the same; only the input's sampling differs)
    ref = sitk.Image([100, 140, 100], sitk.sitkFloat32)
    spacing = np.asarray([1.08, 1.08, 1.24])
    ref.SetSpacing(tuple(spacing))
    ref.SetDirection(srr.GetDirection())
    d = np.asarray(srr.GetDirection()).reshape(3, 3)
    corner = np.asarray(srr.GetOrigin()) - d @ (np.asarray(srr.GetSpacing()) / 2)
    ref.SetOrigin(tuple(corner + d @ (spacing / 2)))
    coarse = sitk.Resample(srr, ref, sitk.Transform(), sitk.sitkLinear, 0.0)
    coarse_mask = sitk.Resample(mask, ref, sitk.Transform(), sitk.sitkNearestNeighbor, 0)
    segment("fetal-random", _write(coarse, tmp_path / "c.nii.gz"), tmp_path / "c.nii.gz.seg.nii.gz",
            progress=False, device="cpu")  # fmt: skip
    plain = sitk.GetArrayFromImage(sitk.ReadImage(str(tmp_path / "c.nii.gz.seg.nii.gz")))
    inside = sitk.GetArrayFromImage(coarse_mask) > 0
    base_on_coarse = sitk.GetArrayFromImage(
        sitk.Resample(seg, ref, sitk.Transform(), sitk.sitkNearestNeighbor, 0)
    )
    assert plain.shape == (100, 140, 100) and np.mean(plain[inside] == base_on_coarse[inside]) > 0.8
    # with the brain mask (crop), a .seg.nrrd and the members' disagreement
    segment("fetal-random", tmp_path / "c.nii.gz", tmp_path / "c_seg.seg.nrrd",
            mask=_write(coarse_mask, tmp_path / "cm.nii.gz"), uncertainty=tmp_path / "u.nrrd",
            progress=False, device="cpu")  # fmt: skip
    labelled = io.read_image(tmp_path / "c_seg.seg.nrrd")
    assert labelled.array.shape == (100, 140, 100)
    assert labelled.geometry.spacing == pytest.approx(tuple(spacing))
    assert labelled.geometry.origin == pytest.approx(ref.GetOrigin())
    assert not labelled.array[~inside].any() and labelled.array[inside].any()
    # tissue names and colours kept in the .seg.nrrd; segment label values are tissue labels
    import slicerio

    segmentation = slicerio.read_segmentation(str(tmp_path / "c_seg.seg.nrrd"), skip_voxels=True)
    by_name = {s["name"]: s for s in segmentation["segments"]}
    for t in TISSUES:
        assert by_name[t.abbreviation]["labelValue"] == t.label
        assert by_name[t.abbreviation]["color"] == pytest.approx(t.color_float, abs=1e-4)
    unc = io.read_image(tmp_path / "u.nrrd").array
    assert unc.shape == labelled.array.shape and 0 <= unc.min() and unc.max() <= 1 and unc[inside].max() > 0


def test_cli_and_errors(registry, tmp_path, capsys):
    small = sitk.Shrink(sitk.ReadImage(str(CASE / "srr.nii.gz"), sitk.sitkFloat32), [2, 2, 2])
    image = _write(small, tmp_path / "s.nii.gz")
    member = registry / "fetal-random" / "member0" / "model.pt"
    # a plain checkpoint needs --spacing
    assert main(["fetal", "segment", str(member), str(image), "-o", str(tmp_path / "x.nii.gz")]) == 2
    assert "pass the spacing it was trained at" in capsys.readouterr().err
    rc = main(["fetal", "segment", str(member), str(image), "-o", str(tmp_path / "x.nii.gz"), "--spacing", "3.2",
               "--device", "cpu"])  # fmt: skip
    assert rc == 0 and sitk.ReadImage(str(tmp_path / "x.nii.gz")).GetSize() == small.GetSize()
    # a model folder with a card works as a path; a bad mask grid is refused
    bad_mask = _write(
        sitk.Shrink(sitk.ReadImage(str(CASE / "mask.nii.gz")), [3, 3, 3]), tmp_path / "m.nii.gz"
    )
    rc = main(["fetal", "segment", str(registry / "fetal-random"), str(image), "-o", str(tmp_path / "y.nii.gz"),
               "--mask", str(bad_mask)])  # fmt: skip
    assert rc == 2 and "not on the same voxel grid" in capsys.readouterr().err


def test_package_ensemble_card(registry, tmp_path):
    from losslab.labelsets.evaluate import case_metrics
    from losslab.labelsets.shipping import package_ensemble

    card_path = package_ensemble(
        registry / "fetal-random", tmp_path / "reg" / "fetal-pkg", "fetal-pkg", [3.2] * 3, ATLAS,
        ["GA21_notoperated"], {"command": "test"},
    )  # fmt: skip
    card = json.loads(card_path.read_text())
    assert sorted(card["files"]) == ["ensemble.json", "member0/model.pt", "member1/model.pt"]
    state = torch.load(tmp_path / "reg" / "fetal-pkg" / "member0" / "model.pt", weights_only=True)["model"]
    assert all(v.dtype == torch.float16 for v in state.values() if v.is_floating_point())
    models.verify_model(models.get_card("fetal-pkg", tmp_path / "reg"))
    # the card's figures are those of the packaged files on the held-out case
    case = ATLAS / "GA21_notoperated"
    segment(tmp_path / "reg" / "fetal-pkg", case / "srr.nii.gz", tmp_path / "s.nii.gz",
            mask=case / "mask.nii.gz", progress=False)  # fmt: skip
    ref = io.read_image(case / "parcellation.nii.gz")
    direct = case_metrics(io.read_image(tmp_path / "s.nii.gz").array, ref.array, ref.geometry.array_spacing)
    for t in TISSUES:
        got = card["metrics"]["per_tissue"][t.abbreviation]
        assert got["dice"]["mean"] == pytest.approx(direct[t.abbreviation]["dice"])
        assert got["hd95"]["mean"] == pytest.approx(direct[t.abbreviation]["hd95"])
    assert card["metrics"]["cases"] == ["GA21_notoperated"] and card["training"] == {"command": "test"}
    assert card["input"] == {"mask": "required"}  # the packaged ensemble has no brain extraction (issue 19)
    # members trained with the brain-mask augmentation (masked and unmasked inputs) may run without a mask
    trained = tmp_path / "trained"
    for k in range(2):
        ckpt = torch.load(registry / "fetal-random" / f"member{k}" / "model.pt", weights_only=False)
        ckpt["config"] = {
            "augmentation": {"enabled": True, "foreground_mask": {"prob": 0.5, "dilate": [0, 3]}}
        }
        save_checkpoint(trained / f"member{k}" / "model.pt", ckpt)
    (trained / "ensemble.json").write_text((registry / "fetal-random" / "ensemble.json").read_text())
    card_path = package_ensemble(
        trained, tmp_path / "reg" / "fetal-free", "fetal-free", [3.2] * 3, ATLAS, ["GA21_notoperated"], {}
    )
    assert json.loads(card_path.read_text())["input"] == {"mask": "optional"}


def test_losslab_infer_takes_the_shipped_ensemble_by_name(tmp_path, capsys, monkeypatch):
    """``losslab infer fetal-leafdice-1.6mm T2 -o SEG`` (the package's registry): an atlas volume given with
    its axes permuted and at 1.6 mm comes back labelled on its own grid, tissue names in the .seg.nrrd, the
    same labels as ``segment`` gives; --mask is for parcellation models only."""
    import slicerio

    monkeypatch.delenv(models.ENV_ROOT, raising=False)
    srr = sitk.ReadImage(str(CASE / "srr.nii.gz"), sitk.sitkFloat32)
    mask = sitk.ReadImage(str(CASE / "mask.nii.gz"), sitk.sitkUInt8)
    small = [max(8, round(n * s / 1.6)) for n, s in zip(srr.GetSize(), srr.GetSpacing())]

    def resample(img, interp):
        return sitk.PermuteAxes(
            sitk.Resample(
                img, small, sitk.Transform(), interp, img.GetOrigin(), [1.6] * 3, img.GetDirection()
            ),
            [2, 0, 1],
        )

    t2 = _write(resample(srr, sitk.sitkLinear), tmp_path / "t2.nii.gz")
    brain = _write(resample(mask, sitk.sitkNearestNeighbor), tmp_path / "mask.nii.gz")
    out = tmp_path / "seg.seg.nrrd"
    args = ["infer", "fetal-leafdice-1.6mm", str(t2), "--mask", str(brain), "-o", str(out), "--device", "cpu"]
    assert main([*args, "--uncertainty", str(tmp_path / "u.nii.gz")]) == 0
    assert capsys.readouterr().out.strip().endswith("seg.seg.nrrd")
    labels = io.read_image(out).array
    assert labels.shape == sitk.GetArrayFromImage(sitk.ReadImage(str(t2))).shape
    names = [s["name"] for s in slicerio.read_segmentation(str(out), skip_voxels=True)["segments"]]
    assert names == [t.abbreviation for t in TISSUES]
    segment("fetal-leafdice-1.6mm", t2, tmp_path / "core.nii.gz", mask=brain, device="cpu", progress=False)
    np.testing.assert_array_equal(labels, io.read_image(tmp_path / "core.nii.gz").array)
    assert len(np.unique(labels)) == 9  # background and the 8 tissues
    two = ["infer", "fetal-leafdice-1.6mm", str(t2), str(t2), "--mask", str(brain)]
    assert main([*two, "-o", str(tmp_path / "x.nii.gz")]) == 2
    assert "takes one MRI" in capsys.readouterr().err
    assert (
        main(
            ["infer", "ice-segmentation-64", str(t2), "--mask", str(brain), "-o", str(tmp_path / "y.nii.gz")]
        )
        == 2
    )
    assert "--mask and --uncertainty need a parcellation model with its card" in capsys.readouterr().err
