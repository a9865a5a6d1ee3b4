"""Training, ensemble parcellation and per-tissue metrics of FetalParcellationLib on real MRML and atlas crops.

No fetal model is shipped in the registry yet, so the "shipped ensemble" is a FIXTURE ensemble: three atlas
cases at 2.4 mm are annotated partially in annotation sessions (the released code's label sets), exported to a
dataset folder with export_case, and a 2-member leaf-Dice ensemble (a 4-channel U-Net, 2 epochs) is trained on
it through FetalParcellationLib.start_training (a LossLabLib.TrainingJob in a background process, label sets
from the dataset), then registered by name with a model card (register_trained_model). The checks are about
the plumbing (names, colours, equality with the core's segment(), the job's progress and stop, the metrics
table against losslab.metrics), not accuracy.
"""

from __future__ import annotations

import sys
import warnings

import numpy as np
import pytest

pytest.importorskip("slicer", reason="slicer-core is not installed (pip install slicer-core)")
pytest.importorskip("torch")

import slicer  # noqa: E402
import slicer.util  # noqa: E402
from fetal_cases import array, load_volume, write_small_case  # noqa: E402

from conftest import build_mrml_context  # noqa: E402
from FetalParcellationLib import (  # noqa: E402
    AnnotationSession,
    ParcellationLogic,
    available_models,
    export_case,
    register_trained_model,
    segments,
    start_training,
    tissue_metrics,
)
from losslab import io as _io  # noqa: E402
from losslab import models  # noqa: E402
from losslab.labelsets import TISSUES  # noqa: E402
from losslab.labelsets.segment import segment  # noqa: E402
from losslab.metrics import compare_masks  # noqa: E402
from LossLabLib import mrml_io  # noqa: E402

TRAIN = {  # case -> annotated tissues (Table 1-like patterns: sets 9 and 10 of the released code, and full)
    "GA21_notoperated": ["WM", "Vent", "Cer"],
    "GA24_notoperated": ["WM", "Vent", "Cer", "ECSF"],
    "GA29_operated": [t.abbreviation for t in TISSUES],
}
TEST_CASE = "GA26_operated"
MODEL = "fetal-fixture"


@pytest.fixture(scope="module")
def registry(tmp_path_factory):
    """A leaf-Dice 2-member ensemble trained through the Lib on 3 partially annotated atlas crops."""
    base = tmp_path_factory.mktemp("fetal-train")
    ctx = build_mrml_context()
    for case, annotated in TRAIN.items():
        f = write_small_case(case, base / "cases" / case)
        volume = load_volume(ctx.scene, f["srr"], case)
        session = AnnotationSession.create(ctx.scene, volume)
        parcellation = array(f["parcellation"])
        for name in annotated:
            mask = parcellation == segments.tissue(name).label
            session.write_segment(session.segment_id(name), mask)
        session.set_brain_mask(load_volume(ctx.scene, f["mask"], f"{case} mask", labelmap=True))
        session.set_declaration(annotated)
        export_case(session, base / "dataset", case)
    ctx.scene.Clear(1)
    job = start_training(
        base / "dataset",
        base / "registry" / MODEL,
        epochs=2,
        members=2,
        device="cpu",
        features=[4, 4, 4, 4, 4],
        overrides={"batch_size": 1, "augmentation": {"enabled": False}},
        python_executable=sys.executable,
    )
    assert job.wait(600) == 0, "\n".join(job.log[-20:])
    assert job.config["loss"]["name"] == "leaf_dice" and "label_sets" not in job.config["loss"]["options"]
    assert len(job.history) == 4  # 2 members x 2 epochs
    card = register_trained_model(job, MODEL)
    assert models.read_card(card.parent).spacing == pytest.approx([2.4, 2.4, 2.4])
    assert models.read_card(card.parent).mask_policy == "required"  # trained on one look: a mask is needed
    return base / "registry"


@pytest.fixture
def case(mrml, registry, tmp_path, monkeypatch):
    monkeypatch.setenv(models.ENV_ROOT, str(registry))
    f = write_small_case(TEST_CASE, tmp_path / TEST_CASE)
    scene = mrml.scene
    volume = load_volume(scene, f["srr"], "srr")
    mask = load_volume(scene, f["mask"], "mask", labelmap=True)
    return scene, f, volume, mask


def test_ensemble_in_process_gives_8_named_coloured_segments_equal_to_the_core(case, tmp_path):
    scene, f, volume, mask = case
    assert MODEL in available_models()
    progress = []
    logic = ParcellationLogic(
        scene, progress=lambda fr, msg: progress.append(fr), device="cpu", work_folder=tmp_path
    )
    result = logic.run(MODEL, volume, mask=mask)
    node = result.segmentation_node
    assert progress[0] == 0.0 and progress[-1] == 1.0
    assert not list(tmp_path.glob("fetal-parcellation-*"))  # the run's files are deleted once loaded
    ids = mrml_io.segment_ids(node)
    assert len(ids) == 8
    for sid, t in zip(ids, TISSUES):
        segment_obj = node.GetSegmentation().GetSegment(sid)
        assert segment_obj.GetName() == t.abbreviation
        assert segment_obj.GetColor() == pytest.approx(t.color_float)
        assert segments.segment_tissue(segment_obj) == t
        assert segment_obj.GetTerminology() == segments.terminology_entry(t.abbreviation)
    # the same labels as the core's segment() on the same files
    info = segment(
        MODEL, f["srr"], tmp_path / "core.nii.gz", mask=f["mask"], uncertainty=tmp_path / "u.nii.gz",
        device="cpu", progress=False,
    )  # fmt: skip
    assert info["members"] == 2 and result.info["members"] == 2
    core = _io.read_image(tmp_path / "core.nii.gz").array
    np.testing.assert_array_equal(result.labels, core)
    grid = mrml_io.Grid.from_volume(volume)
    for sid, t in zip(ids, TISSUES):
        np.testing.assert_array_equal(mrml_io.segment_mask(node, sid, grid), core == t.label)
    assert len(np.unique(core)) >= 3
    # the members' disagreement, as a volume with a colour map
    unc = result.uncertainty_node
    np.testing.assert_allclose(
        slicer.util.arrayFromVolume(unc), _io.read_image(tmp_path / "u.nii.gz").array, atol=1e-6
    )
    values = slicer.util.arrayFromVolume(unc)
    assert values.min() >= 0 and values.max() <= 1
    display = unc.GetDisplayNode()
    assert display.GetColorNode() is not None and display.GetColorNode().GetID() != ""
    assert (display.GetWindow(), display.GetLevel()) == pytest.approx((1.0, 0.5))
    # re-run into the same nodes
    again = logic.run(MODEL, volume, mask=mask, output_segmentation=node, output_uncertainty=unc)
    assert (
        again.segmentation_node is node
        and again.uncertainty_node is unc
        and len(mrml_io.segment_ids(node)) == 8
    )


def test_ensemble_background_job_progress_result_and_stop(case, tmp_path):
    scene, f, volume, mask = case
    logic = ParcellationLogic(scene, device="cpu", work_folder=tmp_path)
    job = logic.start(MODEL, volume, mask=mask, python_executable=sys.executable)
    assert job.wait(300) == 0, job.log
    members = [e["message"] for e in job.events if e.get("event") == "progress" and "member" in e["message"]]
    assert members == ["ensemble member 1/2", "ensemble member 2/2"]
    assert job.progress == 1.0 and job.result["members"] == 2 and job.error is None
    result = logic.load_job(job)
    assert len(mrml_io.segment_ids(result.segmentation_node)) == 8
    np.testing.assert_array_equal(
        result.labels, ParcellationLogic(scene, device="cpu").run(MODEL, volume, mask=mask).labels
    )

    stopped = logic.start(MODEL, volume, mask=mask, python_executable=sys.executable)
    stopped.request_stop()
    assert stopped.wait(120) is not None
    assert stopped.stopped and stopped.error is None
    with pytest.raises(RuntimeError, match="stopped"):
        logic.load_job(stopped)
    assert not list(tmp_path.glob("fetal-parcellation-*"))
    kept = ParcellationLogic(scene, device="cpu", work_folder=tmp_path, keep_files=True)
    kept.run(MODEL, volume, mask=mask)
    assert {p.name for p in next(tmp_path.glob("fetal-parcellation-*")).iterdir()} == {
        "image.nii.gz",
        "mask.nii.gz",
        "labels.nii.gz",
        "disagreement.nii.gz",
    }

    failing = logic.start("no-such-model", volume, python_executable=sys.executable)
    assert failing.wait(120) == 2
    assert "no registered model 'no-such-model'" in failing.error["message"]
    with pytest.raises(RuntimeError, match="no registered model"):
        logic.load_job(failing)


def test_tissue_metrics_table_equals_losslab_metrics(case, tmp_path):
    scene, f, volume, mask = case
    result = ParcellationLogic(scene, device="cpu", work_folder=tmp_path).run(MODEL, volume, mask=mask)
    # the reference: the atlas parcellation loaded as a label map and imported into a segmentation, as Slicer
    # does for parcellation.nii.gz (segments named from a colour table; recognised by their label values)
    reference_map = array(f["parcellation"])
    labelmap = load_volume(scene, f["parcellation"], "parcellation", labelmap=True)
    reference = scene.AddNewNodeByClass("vtkMRMLSegmentationNode", "reference")
    assert slicer.vtkSlicerSegmentationsModuleLogic.ImportLabelmapToSegmentationNode(labelmap, reference, "")
    table = tissue_metrics(scene, reference, result.segmentation_node, reference_volume=volume)
    rows = mrml_io.table_rows(table.table_node)
    assert [r[0] for r in rows] == [t.abbreviation for t in TISSUES] + ["mean"]
    spacing = mrml_io.Grid.from_volume(volume).array_spacing
    dice = []
    for row, t in zip(rows, TISSUES):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # a tissue the tiny model never predicts: empty-mask warnings
            expected = compare_masks(result.labels == t.label, reference_map == t.label, spacing=spacing)
        assert row[2] == pytest.approx(expected["dice"], nan_ok=True)
        hd95 = expected["hd95"] if np.isfinite(expected["hd95"]) else np.nan
        assert row[3] == pytest.approx(hd95, nan_ok=True)
        assert (row[4], row[5]) == (expected["reference_voxels"], expected["compared_voxels"])
        dice.append(expected["dice"])
    assert rows[-1][2] == pytest.approx(np.nanmean(dice))
    assert table.table_node.GetTable().GetColumnName(3) == "HD95 (mm)"
    assert scene.GetNodesByClassByName("vtkMRMLTableNode", "scratch metrics").GetNumberOfItems() == 0
    with pytest.raises(ValueError, match="no tissue segment"):
        empty = scene.AddNewNodeByClass("vtkMRMLSegmentationNode", "empty")
        tissue_metrics(scene, empty, result.segmentation_node)
