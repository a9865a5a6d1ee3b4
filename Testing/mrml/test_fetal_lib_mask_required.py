"""Issue 19, item 3 on real MRML: a fetal ensemble whose card requires a brain mask (``"input": {"mask":
"required"}``: a copy of the shipped one with that card, as the module registers a model trained without the
brain-mask augmentation) is refused without one by FetalParcellationLib (in process and as a background job,
by name and by its folder's path) and by the web page's controller, with one clear line that says how to give
a mask; nothing is written, no process starts, no node is added. With the mask it runs; the shipped ensemble
itself runs without one (``test_fetal_shipped_model.py``)."""

from __future__ import annotations

import sys
import types

import pytest

pytest.importorskip("slicer", reason="slicer-core is not installed (pip install slicer-core)")

from fetal_cases import (  # noqa: E402
    NEEDS_MASK,
    array,
    load_volume,
    mask_required_registry,
    write_small_case,
)

from FetalParcellationLib import AnnotationSession, ParcellationLogic  # noqa: E402
from FetalParcellationLib.inference import check_mask_rule  # noqa: E402
from losslab import models  # noqa: E402

MODEL = NEEDS_MASK
CASE = "GA26_operated"


@pytest.fixture
def volume(mrml, tmp_path, monkeypatch):
    monkeypatch.setenv(models.ENV_ROOT, str(mask_required_registry(tmp_path)))
    f = write_small_case(CASE, tmp_path / "case")
    node = load_volume(mrml.scene, f["srr"], "srr")
    return mrml.scene, node, f


def _nodes(scene) -> int:
    return scene.GetNumberOfNodes()


@pytest.mark.parametrize("by", ["name", "folder"])
def test_the_lib_refuses_the_shipped_model_without_a_mask(volume, tmp_path, by):
    scene, node, _ = volume
    model = MODEL if by == "name" else str(models.get_card(MODEL).folder)
    work = tmp_path / "work"
    logic = ParcellationLogic(scene, device="cpu", work_folder=work)
    before = _nodes(scene)
    with pytest.raises(models.MaskRequiredError) as run:
        logic.run(model, node)
    with pytest.raises(models.MaskRequiredError) as start:
        logic.start(model, node, python_executable=sys.executable)
    for message in (str(run.value), str(start.value)):
        assert message.startswith(f"{MODEL} needs a brain mask (paint the 'brain mask' segment"), message
        assert "\n" not in message
    assert _nodes(scene) == before  # no segmentation, no disagreement volume
    assert not work.exists() or not list(work.iterdir())  # no input written, no job folder


def test_the_lib_check_passes_with_a_mask_and_for_models_without_the_rule(volume, tmp_path):
    scene, node, f = volume
    mask = load_volume(scene, f["mask"], "mask", labelmap=True)
    check_mask_rule(MODEL, mask)  # no exception
    check_mask_rule("no-such-model", None)  # an unknown name is the segmenter's to report
    check_mask_rule(tmp_path / "plain.pt", None)  # a path without a card: nothing to check


def test_the_web_controller_refuses_without_a_painted_mask_and_says_so(volume, tmp_path):
    """The fetal page calls FetalController.start_parcellation (its Run button, through ``_act``, which shows
    the exception's line as the page's error message): without a painted or loaded brain mask it is refused
    before a job starts. (FetalController needs only ``app.scene`` for this.)"""
    from LossLabWeb.fetal import FetalController

    scene, node, f = volume
    controller = FetalController(types.SimpleNamespace(scene=scene), work_folder=tmp_path / "work")
    controller.volume_node = node
    controller.session = AnnotationSession.create(scene, node)
    with pytest.raises(ValueError, match=f"{MODEL} needs a brain mask \\(paint the 'brain mask' segment"):
        controller.start_parcellation(MODEL)
    assert controller.job is None and not (tmp_path / "work").exists()
    # with the mask painted the rule is met (the run itself is test_fetal_shipped_model.py's)
    session = controller.session
    session.write_segment(session.mask_segment_id, array(f["mask"]) > 0)
    assert session.voxel_counts()["mask"] > 0
    check_mask_rule(MODEL, session.segmentation_node)
