"""LossLabLib.gradient_lab: the gradient volume and dynamic range equal losslab.analysis on the same numpy
arrays; the Dice gradient is two-valued per class (dice-gradient-mime-kervadec eq. 6); clear errors."""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")

pytest.importorskip("slicer", reason="slicer-core is not installed (pip install slicer-core)")
import slicer.util  # noqa: E402
from losslab_models import SHAPE, trained_model  # noqa: E402
from mrml_builders import make_segmentation, make_volume, sphere  # noqa: E402

from losslab import io as _io  # noqa: E402
from losslab.analysis import dynamic_range_db, gradient_maps  # noqa: E402
from losslab.engine import load_predictor  # noqa: E402
from losslab.losses import get_loss  # noqa: E402
from LossLabLib import mrml_io  # noqa: E402
from LossLabLib.gradient_lab import GradientLabLogic  # noqa: E402

SPACING = (1.0, 1.25, 2.0)  # (i, j, k)


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    return trained_model(tmp_path_factory.mktemp("model"))


class Case:
    """A volume, target segments class1 / class2 (nested balls) and a shifted prediction segmentation."""

    def __init__(self, scene, image=None):
        self.volume = make_volume(scene, SHAPE, spacing_ijk=SPACING, origin=(5.0, -3.0, 2.0), values=image)
        outer = sphere(SHAPE, (8, 8, 8), 5.5)
        inner = sphere(SHAPE, (8, 8, 8), 3.0)
        self.target = np.where(inner, 2, np.where(outer, 1, 0))
        self.seg, self.ids = make_segmentation(scene, self.volume, {"class1": outer, "class2": inner})
        shifted_outer, shifted_inner = np.roll(outer, 2, axis=2), np.roll(inner, 1, axis=1)
        self.prediction = np.where(shifted_inner, 2, np.where(shifted_outer, 1, 0))
        self.pred_seg, _ = make_segmentation(
            scene, self.volume, {"class1": shifted_outer, "class2": shifted_inner}, name="prediction"
        )


def softmax_probabilities(shape, seed=0):
    rng = np.random.default_rng(seed)
    z = rng.normal(size=(3, *shape))
    e = np.exp(z - z.max(0))
    return e / e.sum(0)


@pytest.mark.parametrize("loss,wrt", [("dice", "probabilities"), ("cross_entropy", "logits")])
def test_volume_equals_losslab_analysis_on_numpy(scene, loss, wrt):
    case = Case(scene)
    probs = softmax_probabilities(SHAPE)
    result = GradientLabLogic(scene).compute(
        case.seg, [case.ids["class1"], case.ids["class2"]], loss=loss, volume=case.volume,
        probabilities=probs, wrt=wrt, class_index=2,
    )  # fmt: skip
    expected = gradient_maps(
        get_loss(loss), torch.from_numpy(np.log(probs)[None]), torch.from_numpy(case.target[None])
    )
    maps = expected.wrt_probabilities if wrt == "probabilities" else expected.wrt_logits
    np.testing.assert_array_equal(result.target, case.target)
    volume = slicer.util.arrayFromVolume(result.volume_node)
    np.testing.assert_allclose(volume, maps[0, 2], rtol=1e-6, atol=1e-12)
    assert mrml_io.Grid.from_volume(result.volume_node).same_as(mrml_io.Grid.from_volume(case.volume))
    assert result.dynamic_range_db == pytest.approx(dynamic_range_db(maps))
    assert result.per_class_db["class2"] == pytest.approx(dynamic_range_db(maps[:, 2]))
    assert result.loss_value == pytest.approx(expected.loss)
    rows = {name: value for name, value, _ in mrml_io.table_rows(result.table_node)}
    assert rows["Dynamic range class1"] == pytest.approx(dynamic_range_db(maps[:, 1]))
    assert result.volume_node.GetAttribute("LossLab.GradientClass") == "class2"


def test_dice_gradient_is_two_valued_and_narrower_than_cross_entropy(scene):
    case = Case(scene)
    lab = GradientLabLogic(scene)
    dice = lab.compute(case.seg, loss="dice", volume=case.volume, prediction_segmentation=case.pred_seg)
    ce = lab.compute(
        case.seg, loss="cross_entropy", volume=case.volume, probabilities=softmax_probabilities(SHAPE)
    )
    rows = {name: value for name, value, _ in mrml_io.table_rows(dice.table_node)}
    assert rows["Distinct values class1"] == 2 and rows["Distinct values class2"] == 2  # eq. (6)
    assert np.unique(dice.gradient).size == 2
    assert dice.dynamic_range_db < ce.dynamic_range_db
    # the smoothed one-hot prediction is what was differentiated
    smoothed = 0.95 * np.moveaxis(np.eye(3)[case.prediction], -1, 0) + 0.05 / 3
    np.testing.assert_allclose(dice.probabilities, smoothed, rtol=1e-6)
    again = lab.compute(
        case.seg, loss="dice", volume=case.volume, prediction_segmentation=case.pred_seg,
        output_volume=dice.volume_node, output_table=dice.table_node,
    )  # fmt: skip
    assert again.volume_node is dice.volume_node and again.table_node is dice.table_node


def test_model_prediction(scene, model):
    image = _io.read_image(model.parents[1] / "data" / "images" / "case00.nii.gz").array
    case = Case(scene, image)
    result = GradientLabLogic(scene, device="cpu").compute(
        case.seg, loss="dice", loss_options='{"reduction": "sum"}', volume=case.volume, model_path=model
    )
    probs = load_predictor(model, device="cpu").predict(image[None]).probabilities
    expected = gradient_maps(
        get_loss("dice", reduction="sum"),
        torch.from_numpy(np.log(probs)[None]),
        torch.from_numpy(case.target[None]),
    )
    np.testing.assert_allclose(result.gradient, expected.wrt_probabilities[0, 1], rtol=1e-5, atol=1e-9)
    assert result.class_names == ["background", "class1", "class2"]


def test_clear_errors(scene):
    case = Case(scene)
    lab = GradientLabLogic(scene)
    probs = softmax_probabilities(SHAPE)
    ok = dict(volume=case.volume, probabilities=probs)
    with pytest.raises(ValueError, match="unknown loss 'dise'"):
        lab.compute(case.seg, loss="dise", **ok)
    with pytest.raises(ValueError, match="unknown option.*alpah"):
        lab.compute(case.seg, loss="dice", loss_options={"alpah": 1}, **ok)
    with pytest.raises(ValueError, match="exactly one prediction"):
        lab.compute(case.seg, volume=case.volume)
    with pytest.raises(ValueError, match="exactly one prediction"):
        lab.compute(case.seg, prediction_segmentation=case.pred_seg, **ok)
    with pytest.raises(ValueError, match="class_index"):
        lab.compute(case.seg, class_index=3, **ok)
    with pytest.raises(ValueError, match="wrt"):
        lab.compute(case.seg, wrt="labels", **ok)
    with pytest.raises(ValueError, match="shape"):
        lab.compute(case.seg, volume=case.volume, probabilities=probs[:2])
    with pytest.raises(ValueError, match="needs further inputs"):
        lab.compute(case.seg, loss="editing", **ok)
    with pytest.raises(ValueError, match="input volume"):
        lab.compute(case.seg, output_volume=case.volume, **ok)
    # volume / segmentation grid mismatch: segments drawn on another lattice
    other = make_volume(scene, (10, 12, 14), spacing_ijk=(0.7, 0.7, 0.7), name="other")
    seg_other, _ = make_segmentation(scene, other, {"class1": np.ones((10, 12, 14), bool)}, name="elsewhere")
    with pytest.raises(ValueError, match="different voxel grid"):
        lab.compute(seg_other, volume=case.volume, probabilities=probs[:2])
    with pytest.raises(FileNotFoundError, match="model not found"):
        lab.compute(seg_other, volume=case.volume, model_path="x.pt")
