"""Dataset manifests, splits, batches and augmentation."""

from __future__ import annotations

import json

import numpy as np
import pytest
import SimpleITK as sitk
import torch

from losslab.engine import DatasetError, VolumeDataset, load_manifest, split_cases
from losslab.engine.config import DEFAULTS
from losslab.engine.data import augment, epoch_order, fit_to_size, sample_generator
from losslab.engine.synthetic import make_blobs_dataset
from losslab.io import read_label_map


@pytest.fixture(scope="module")
def blobs(tmp_path_factory):
    return make_blobs_dataset(
        tmp_path_factory.mktemp("d"), n_cases=5, shape=(10, 12, 14), extra_channels=["u"]
    )


def test_manifest_channels_and_samples(blobs):
    manifest = load_manifest(blobs)
    assert manifest.channel_names == ["image", "u"] and manifest.num_classes == 3
    assert manifest.channel_index("u") == 1 and manifest.channel_index(0) == 0
    data = VolumeDataset(manifest, ["case03"])
    sample = data[0]
    assert sample["image"].shape == (2, 10, 12, 14) and sample["label"].dtype == torch.int64
    assert abs(float(sample["image"][0].mean())) < 1e-5  # z-scored image channel
    assert float(sample["image"][1].min()) >= 0  # extra channels are not normalised
    with pytest.raises(DatasetError, match="unknown input channel 'v'"):
        manifest.channel_index("v")


def test_random_split_depends_on_the_seed(blobs):
    manifest = load_manifest(blobs)
    manifest.splits = {}
    a = split_cases(manifest, ["train"], "val", 0.4, seed=0)
    b = split_cases(manifest, ["train"], "val", 0.4, seed=0)
    assert a == b and len(a[1]) == 2 and not set(a[0]) & set(a[1])
    assert any(split_cases(manifest, ["train"], "val", 0.4, seed=s)[1] != a[1] for s in range(1, 6))


def test_keep_in_train_cases_are_never_drawn_for_validation(blobs):
    """The fetal pitfall: one fully annotated case among partial ones must stay in every member's training."""
    manifest = load_manifest(blobs)
    cases = sorted(manifest.cases)
    full = cases[0]
    manifest.splits = {"train": cases, "full": [full]}
    seeds = range(40)
    plain = [split_cases(manifest, ["train"], "none", 0.2, seed=s) for s in seeds]
    assert any(full in val for _, val in plain)  # without the option some seed holds it out
    for s, before in zip(seeds, plain):
        train, val = split_cases(manifest, ["train"], "none", 0.2, seed=s, keep_in_train=["full"])
        assert full in train and full not in val and len(val) == len(before[1])
    assert split_cases(manifest, ["train"], "none", 0.2, seed=3, keep_in_train=[]) == plain[3]  # unchanged
    only = {"train": [full], "full": [full]}
    manifest.splits = only
    assert split_cases(manifest, ["train"], "none", 0.5, seed=0, keep_in_train=["full"]) == ([full], [])
    with pytest.raises(DatasetError, match=r"keep_in_train names split\(s\) \['nope'\]"):
        split_cases(manifest, ["train"], "none", 0.5, seed=0, keep_in_train=["nope"])


def _write(tmp_path, manifest):
    path = tmp_path / "dataset.json"
    path.write_text(json.dumps(manifest))
    return path


@pytest.mark.parametrize(
    "manifest, words",
    [
        ({"cases": []}, ["labels"]),
        ({"labels": ["bg"], "cases": []}, ["at least 2"]),
        ({"labels": ["bg", "fg"], "cases": []}, ["cases", "non-empty"]),
        ({"labels": ["bg", "fg"], "label_sets": {"1": [0]}, "cases": [{}]}, ["set label 1", "above"]),
        ({"labels": ["bg", "fg"], "label_sets": {"5": [7]}, "cases": [{}]}, ["label_sets", "0..1"]),
        (
            {"labels": ["bg", "a", "b"], "label_sets": {"3": [1, 1]}, "cases": [{}]},
            ["label_sets[3]", "repeats leaf label(s) [1]"],
        ),
        (
            {"labels": ["bg", "a", "b"], "label_sets": {"9": [1, 7]}, "cases": [{}]},
            ["label_sets[9]", "leaf label(s) [7] out of range", "0..2"],
        ),
        ({"labels": ["bg", "fg"], "cases": [{"id": "a"}]}, ["case 'a'", "image"]),
        (
            {"labels": ["bg", "fg"], "cases": [{"id": "a", "image": "x"}, {"id": "a", "image": "y"}]},
            ["'a'", "twice"],
        ),
        (
            {"labels": ["bg", "fg"], "cases": [{"id": "a", "image": "x"}, {"id": "b", "image": ["x", "y"]}]},
            ["case 'b'", "2 image channels"],
        ),
        (
            {"labels": ["bg", "fg"], "extra_channels": ["u"], "cases": [{"id": "a", "image": "x"}]},
            ["case 'a'", "'u'"],
        ),
    ],
)
def test_bad_manifests_are_named(tmp_path, manifest, words):
    with pytest.raises(DatasetError) as info:
        load_manifest(_write(tmp_path, manifest), check_files=False)
    for word in words:
        assert word in str(info.value), (word, str(info.value))


@pytest.mark.parametrize("sets", [{"3": [1, 1]}, {"9": [1, 7]}, {"2": [1]}, {"4": [-1, 1]}])
def test_manifest_and_losses_share_one_label_set_validation(tmp_path, sets):
    """The engine refuses exactly what the loss API refuses, with the same message."""
    from losslab.losses import LeafDiceLoss

    with pytest.raises(ValueError) as from_loss:
        LeafDiceLoss(sets)(torch.zeros(1, 3, 2, 2, 2), torch.zeros(1, 2, 2, 2, dtype=torch.long))
    manifest = {"labels": ["bg", "a", "b"], "label_sets": sets, "cases": [{}]}
    with pytest.raises(DatasetError) as from_manifest:
        load_manifest(_write(tmp_path, manifest), check_files=False)
    assert str(from_loss.value) in str(from_manifest.value)


def _rewrite(path, change):
    image = sitk.ReadImage(str(path))
    change(image)
    sitk.WriteImage(image, str(path))


@pytest.mark.parametrize(
    "file, change, field",
    [
        ("labels", lambda im: im.SetSpacing((1.0, 1.0, 2.0)), "spacing"),
        ("labels", lambda im: im.SetOrigin((0.0, 5.0, 0.0)), "origin"),
        ("labels", lambda im: im.SetDirection((0, 1, 0, 1, 0, 0, 0, 0, 1)), "direction"),
        ("initial", lambda im: im.SetOrigin((3.0, 0.0, 0.0)), "origin"),
    ],
)
def test_grid_mismatch_names_the_case_and_the_field(tmp_path, file, change, field):
    manifest = make_blobs_dataset(tmp_path, n_cases=2, shape=(8, 8, 8), n_val=0, extra_channels=["initial"])
    _rewrite(tmp_path / file / "case01.nii.gz", change)
    data = VolumeDataset(load_manifest(manifest), ["case00", "case01"])
    assert data[0]["label"].shape == (8, 8, 8)  # the untouched case loads
    kind = "label" if file == "labels" else "extra channel"
    with pytest.raises(
        DatasetError, match=rf"case 'case01'.*the {kind}.*not on the same voxel grid: {field}"
    ):
        data[1]


def test_shape_mismatch_is_named(tmp_path):
    manifest = make_blobs_dataset(tmp_path, n_cases=2, shape=(8, 8, 8), n_val=0)
    sitk.WriteImage(sitk.Image(9, 8, 8, sitk.sitkUInt8), str(tmp_path / "labels" / "case01.nii.gz"))
    data = VolumeDataset(load_manifest(manifest), ["case01"])
    with pytest.raises(DatasetError, match=r"case01.*\(8, 8, 9\)"):
        data[0]


def test_seg_nrrd_segments_are_mapped_by_name(tmp_path):
    array = np.zeros((4, 5, 6), dtype=np.uint8)
    array[1, 1, 1] = 1
    array[2, 2, 2] = 2
    image = sitk.GetImageFromArray(array)
    for i, (name, value) in enumerate([("tumour", 1), ("Liver", 2)]):
        image.SetMetaData(f"Segment{i}_ID", f"Segment_{i}")
        image.SetMetaData(f"Segment{i}_Name", name)
        image.SetMetaData(f"Segment{i}_LabelValue", str(value))
        image.SetMetaData(f"Segment{i}_Layer", "0")
    sitk.WriteImage(image, str(tmp_path / "s.seg.nrrd"))
    label = read_label_map(tmp_path / "s.seg.nrrd", ["background", "liver", "tumour"]).array
    assert label[1, 1, 1] == 2 and label[2, 2, 2] == 1  # by name, not by stored value
    label = read_label_map(tmp_path / "s.seg.nrrd").array
    assert label[1, 1, 1] == 1 and label[2, 2, 2] == 2


def test_fit_to_size_crops_and_pads():
    image = torch.arange(2 * 10 * 6 * 4, dtype=torch.float32).reshape(2, 10, 6, 4)
    label = torch.ones(10, 6, 4, dtype=torch.long)
    out_i, out_l = fit_to_size(image, label, (8, 8, 8), torch.Generator().manual_seed(0))
    assert out_i.shape == (2, 8, 8, 8) and out_l.shape == (8, 8, 8)
    assert int(out_l.sum()) == 8 * 6 * 4  # padding is background


def test_augmentation_is_reproducible_and_keeps_image_and_label_aligned():
    options = json.loads(json.dumps(DEFAULTS["augmentation"]))
    for name in ("scale", "gamma", "contrast", "noise"):
        options[name]["prob"] = 1.0
    options["flip"] = {"prob": 1.0, "axes": [0]}
    label = torch.zeros(12, 12, 12, dtype=torch.long)
    label[2:5, 4:8, 4:8] = 1
    image = torch.stack([label.float() * 3, label.float()])
    a = augment(image, label, options, sample_generator(0, 1, 2), intensity_channels=1)
    b = augment(image, label, options, sample_generator(0, 1, 2), intensity_channels=1)
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
    c = augment(image, label, options, sample_generator(0, 1, 3), intensity_channels=1)
    assert not torch.equal(a[0], c[0])
    img, lab = a
    assert lab.dtype == torch.long and set(torch.unique(lab).tolist()) <= {0, 1}
    # the label moved with the image (flip along axis 0): the unaugmented extra channel still matches it
    assert (img[1][lab == 1] > 0.5).float().mean() > 0.9
    assert int(lab[7:, :, :].sum()) > 0 and int(lab[:4].sum()) == 0


def test_epoch_order_is_a_function_of_seed_and_epoch():
    assert epoch_order(10, 0, 3) == epoch_order(10, 0, 3)
    assert epoch_order(10, 0, 3) != epoch_order(10, 0, 4)
    assert len(epoch_order(5, 0, 0, multiple=4)) == 8
