"""LossLabLib.inference: a checkpoint or ensemble folder on a volume node -> a segmentation node with named,
coloured segments on the volume's geometry, equal to losslab.engine on the same numpy array."""

from __future__ import annotations

import shutil

import numpy as np
import pytest

pytest.importorskip("slicer", reason="slicer-core is not installed (pip install slicer-core)")
pytest.importorskip("torch")

import slicer.util  # noqa: E402
from losslab_models import SHAPE, tiny_config, trained_model  # noqa: E402
from mrml_builders import linear_transform, make_volume, oblique_directions  # noqa: E402

from losslab import io as _io  # noqa: E402
from losslab.engine import load_predictor, train  # noqa: E402
from LossLabLib import mrml_io  # noqa: E402
from LossLabLib.inference import InferenceLogic, label_color  # noqa: E402
from LossLabLib.mrml_io import Grid  # noqa: E402


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    return trained_model(tmp_path_factory.mktemp("model"))


def blob_volume(scene, model, name="image"):
    image = _io.read_image(model.parents[1] / "data" / "images" / "case00.nii.gz").array
    return make_volume(
        scene,
        SHAPE,
        spacing_ijk=(0.9, 1.1, 1.7),
        origin=(-41.0, 17.5, 3.25),
        directions=oblique_directions(25),
        values=image,
        name=name,
    )


def test_segmentation_node_has_named_coloured_segments_on_the_volume_grid(scene, model):
    volume = blob_volume(scene, model)
    before = slicer.util.arrayFromVolume(volume).copy()
    steps = []
    result = InferenceLogic(scene, progress=lambda f, m: steps.append(f), device="cpu").run(model, volume)
    seg = result.segmentation_node
    assert seg.IsA("vtkMRMLSegmentationNode") and seg.GetName() == "image segmentation"
    names = [seg.GetSegmentation().GetSegment(s).GetName() for s in mrml_io.segment_ids(seg)]
    assert names == ["class1", "class2"] == result.label_names[1:]
    for index, segment_id in enumerate(result.segment_ids, start=1):
        color = seg.GetSegmentation().GetSegment(segment_id).GetColor()
        assert color == pytest.approx(label_color(index))
    grid = Grid.from_volume(volume)
    assert Grid.from_segmentation(seg).same_as(grid) and result.grid.same_as(grid)
    expected = load_predictor(model, device="cpu").predict(before[None]).labels
    np.testing.assert_array_equal(result.labels, expected)
    for index, segment_id in enumerate(result.segment_ids, start=1):
        np.testing.assert_array_equal(mrml_io.segment_mask(seg, segment_id, grid), expected == index)
    assert result.probabilities.shape == (3, *SHAPE)
    np.testing.assert_array_equal(slicer.util.arrayFromVolume(volume), before)  # input untouched
    assert steps[0] == 0.0 and steps[-1] == 1.0

    # re-run into the same node: segments replaced, not added
    again = InferenceLogic(scene, device="cpu").run(model, volume, output_segmentation=seg)
    assert again.segmentation_node is seg and len(mrml_io.segment_ids(seg)) == 2


def test_volume_under_a_linear_transform(scene, model):
    volume = blob_volume(scene, model)
    angle = np.deg2rad(20)
    matrix = np.eye(4)
    matrix[:2, :2] = [[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]]
    matrix[:3, 3] = (10.0, -5.0, 2.5)
    volume.SetAndObserveTransformNodeID(linear_transform(scene, matrix).GetID())
    result = InferenceLogic(scene, device="cpu").run(model, volume)
    world = Grid.from_volume(volume)
    seg = result.segmentation_node  # on the world grid: where the transformed volume is shown
    assert seg.GetParentTransformNode() is None and Grid.from_segmentation(seg).same_as(world)
    for index, segment_id in enumerate(result.segment_ids, start=1):
        np.testing.assert_array_equal(mrml_io.segment_mask(seg, segment_id, world), result.labels == index)


def test_ensemble_folder_averages_two_different_members(scene, model, tmp_path):
    # member 0: the module's model; member 1: trained from another seed for two epochs, so the two differ
    other = train(
        {**tiny_config(model.parents[1] / "data" / "dataset.json", tmp_path / "other", 2), "seed": 7}
    )
    for k, checkpoint in enumerate([model, other.model_path]):
        (tmp_path / "ensemble" / f"member{k}").mkdir(parents=True)
        shutil.copy(checkpoint, tmp_path / "ensemble" / f"member{k}" / "model.pt")
    volume = blob_volume(scene, model)
    result = InferenceLogic(scene, device="cpu").run(tmp_path / "ensemble", volume)
    singles = [
        InferenceLogic(scene, device="cpu").run(m, volume).probabilities for m in (model, other.model_path)
    ]
    assert len(result.members) == 2
    # the members really differ, so an ensemble that used one of them (or one twice) would show
    assert np.abs(singles[0] - singles[1]).max() > 0.05
    mean = (singles[0] + singles[1]) / 2
    np.testing.assert_allclose(result.probabilities, mean, atol=1e-5)
    for single in singles:
        assert np.abs(result.probabilities - single).max() > 0.02
    np.testing.assert_array_equal(result.labels, mean.argmax(0))


def test_clear_errors(scene, model, tmp_path):
    logic = InferenceLogic(scene, device="cpu")
    volume = blob_volume(scene, model)
    with pytest.raises(FileNotFoundError, match="model not found"):
        logic.run(tmp_path / "nothing.pt", volume)
    with pytest.raises(FileNotFoundError, match="no model chosen"):
        logic.run("", volume)
    (tmp_path / "junk.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(ValueError, match="could not read checkpoint"):
        logic.run(tmp_path / "junk.pt", volume)
    with pytest.raises(ValueError, match="takes 1 input channel"):
        logic.run(model, volume, extra_volumes=[volume])
    with pytest.raises(ValueError, match="scalar volume"):
        logic.run(model, None)
    table = scene.AddNewNodeByClass("vtkMRMLTableNode")
    with pytest.raises(ValueError, match="segmentation node"):
        logic.run(model, volume, output_segmentation=table)
