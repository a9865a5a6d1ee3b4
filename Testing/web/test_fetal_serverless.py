"""The fetal page without a server: trame-slicer's DirectViewFactory views, events injected in the interactor,
the page's handlers called as its buttons call them (a trame server object that is never started holds the
state). Needs trame-slicer (``.venv-web``)."""

from __future__ import annotations

import json
import sys
import time

import numpy as np
import pytest

pytest.importorskip("trame_slicer", reason="trame-slicer is not installed: run in .venv-web (docs/web.md)")

from fetal_cases import array, write_small_case  # noqa: E402
from LossLabWeb.fetal_page import FetalPage  # noqa: E402
from web_helpers import direct_app, drag, pixels  # noqa: E402

from losslab import io as _io  # noqa: E402
from losslab.labelsets import TISSUES, make_label_set_map, tissue  # noqa: E402

CASE = "GA26_operated"


@pytest.fixture(scope="module")
def case(tmp_path_factory):
    return write_small_case(CASE, tmp_path_factory.mktemp("case") / CASE, spacing=1.6)


@pytest.fixture
def page(request):
    server, app, views = direct_app(f"test-{request.node.name}")
    p = FetalPage(server, app, sample_loader=None)
    p.views = views
    yield p
    p.controller.stop_job()


def colours(image: np.ndarray) -> int:
    """Distinct RGB colours of a view image (an MRI shows many grey levels; outlines and background few)."""
    return len(np.unique(image[..., :3].reshape(-1, 3), axis=0))


def test_loading_shows_the_mri_in_both_views_and_8_unticked_tissues(page, case):
    axial, threed = page.views
    blank = pixels(axial)
    assert page.load(str(case["srr"]), str(case["mask"])), page.state.fetal_message
    image = pixels(axial)
    assert image.std() > 5 and not np.array_equal(image, blank)
    assert colours(image) > 50 and colours(pixels(threed)) > 50  # the MRI's grey levels, not just outlines
    rows = page.state.fetal_rows
    assert [r["tissue"] for r in rows] == [t.abbreviation for t in TISSUES]
    assert all(r["voxels"] == 0 and not r["annotated"] for r in rows)
    assert page.controller.session.voxel_counts()["mask"] == int(array(case["mask"]).astype(bool).sum())
    assert page.state.fetal_problems == []  # nothing painted, nothing declared: nothing wrong yet
    assert page.state.fetal_message_type == "info"
    assert page.controller.scene.GetNumberOfNodesByClass("vtkMRMLVolumeRenderingDisplayNode") == 0  # VR off
    # the package's registry: the shipped ensemble is listed and chosen, ready to run
    assert "fetal-leafdice-2.4mm" in page.state.fetal_models
    assert page.state.fetal_model == page.state.fetal_models[0]


def test_painting_with_mouse_events_fills_the_checklist_and_undo_restores_it(page, case):
    page.load(str(case["srr"]), str(case["mask"]))
    axial = page.views[0]
    page.state.fetal_tissue = "Vent"
    page._on_tissue("Vent")
    page._on_effect("Paint")
    before = pixels(axial)
    drag(axial, [(110 + 4 * i, 128) for i in range(10)])
    counts = {r["tissue"]: r["voxels"] for r in page.state.fetal_rows}
    assert counts["Vent"] > 0 and sum(v for k, v in counts.items() if k != "Vent") == 0
    painted = page.controller.session.tissue_masks()[tissue("Vent").label]
    k, j, i = np.nonzero(painted)
    assert len(set(k)) == 1  # one axial slice
    assert any("Vent" in p and "declare" in p.lower() for p in page.state.fetal_problems), (
        page.state.fetal_problems
    )
    assert np.abs(pixels(axial).astype(int) - before).sum() > 0  # the stroke is on screen
    page.undo()
    assert {r["tissue"]: r["voxels"] for r in page.state.fetal_rows}["Vent"] == 0
    page.redo()
    assert {r["tissue"]: r["voxels"] for r in page.state.fetal_rows}["Vent"] == counts["Vent"]


def test_checklist_validation_then_export_writes_the_label_set_map(page, case, tmp_path):
    page.load(str(case["srr"]), str(case["mask"]))
    session = page.controller.session
    reference = array(case["parcellation"])
    annotated = ("WM", "Vent", "Cer")
    for name in annotated:  # the tissues an annotator painted completely
        session.write_segment(session.segment_id(name), reference == tissue(name).label)
    page._refresh()
    page.state.fetal_dataset, page.state.fetal_case_id = str(tmp_path / "dataset"), "case01"
    assert page.export() is None  # painted but not declared: refused, nothing written
    assert page.state.fetal_message_type == "error" and "WM" in page.state.fetal_message
    assert not (tmp_path / "dataset" / "labels").exists()
    page.toggle("CC", True)  # declared but empty
    assert any("CC" in p for p in page.state.fetal_problems)
    page.toggle("CC", False)
    for name in annotated:
        page.toggle(name, True)
    assert page.state.fetal_problems == []
    assert [r["tissue"] for r in page.state.fetal_rows if r["annotated"]] == list(annotated)
    result = page.export()
    assert result is not None and page.state.fetal_message_type == "success", page.state.fetal_message
    written = _io.read_image(tmp_path / "dataset" / "labels" / "case01.nii.gz").array
    partial = np.zeros(reference.shape, np.uint8)
    for name in annotated:
        partial[reference == tissue(name).label] = tissue(name).label
    expected, declaration = make_label_set_map(
        partial, array(case["mask"]).astype(bool), [tissue(n).label for n in annotated]
    )
    np.testing.assert_array_equal(written, expected)
    assert declaration.set_label == 9 and "set label 9" in page.state.fetal_message
    manifest = json.loads((tmp_path / "dataset" / "dataset.json").read_text())
    assert manifest["label_sets"]["9"] == [4, 5, 6, 7, 8]


@pytest.mark.parametrize(
    ("content", "name", "expect"),
    [
        (b"not an image at all", "bad.nii.gz", "bad.nii.gz"),
        (b"x", "notes.txt", "not a volume"),
        (None, "missing.nii.gz", "does not exist"),
    ],
)
def test_a_bad_file_is_a_message_not_a_traceback_and_keeps_the_case(
    page, case, tmp_path, content, name, expect
):
    assert page.load(str(case["srr"]), str(case["mask"]))
    session = page.controller.session
    path = tmp_path / name
    if content is not None:
        path.write_bytes(content)
    assert not page.load(str(path), "")
    message = page.state.fetal_message
    assert page.state.fetal_message_type == "error" and expect in message, message
    assert "Traceback" not in message and "\n" not in message
    assert page.controller.session is session and page.state.fetal_loaded  # the case loaded before is intact
    assert page.controller.scene.GetNumberOfNodesByClass("vtkMRMLScalarVolumeNode") == 1
    assert page.controller.scene.GetNumberOfNodesByClass("vtkMRMLSegmentationNode") == 1


def test_a_bad_mask_is_a_message_and_adds_nothing(page, case, tmp_path):
    bad = tmp_path / "mask.nii.gz"
    bad.write_bytes(b"garbage")
    assert not page.load(str(case["srr"]), str(bad))
    assert "mask.nii.gz" in page.state.fetal_message and page.state.fetal_message_type == "error"
    assert page.controller.scene.GetNumberOfNodesByClass("vtkMRMLVolumeNode") == 0
    assert page.controller.scene.GetNumberOfNodesByClass("vtkMRMLSegmentationNode") == 0


def test_a_missing_model_is_a_message(page, case):
    page.load(str(case["srr"]), str(case["mask"]))
    page.state.fetal_model = "no-such-fetal-model"
    job = page.run_model()
    assert job is not None and page.state.fetal_running
    deadline = time.monotonic() + 120
    while page.step_job() and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not page.state.fetal_running
    message = page.state.fetal_message
    assert page.state.fetal_message_type == "error" and "no-such-fetal-model" in message, message
    assert "Traceback" not in message


def test_the_ensemble_runs_with_progress_and_shows_8_segments_and_disagreement(
    page, case, tmp_path, monkeypatch
):
    """A 2-member, 1-epoch ensemble trained on the page's own export (plumbing, not accuracy)."""
    from FetalParcellationLib import register_trained_model, start_training
    from losslab import models

    page.load(str(case["srr"]), str(case["mask"]))
    session = page.controller.session
    reference = array(case["parcellation"])
    for name in ("WM", "Vent", "Cer"):  # a partial annotation: leaf-Dice needs label sets
        session.write_segment(session.segment_id(name), reference == tissue(name).label)
        page.toggle(name, True)
    page.state.fetal_dataset, page.state.fetal_case_id = str(tmp_path / "dataset"), "train01"
    assert page.export() is not None, page.state.fetal_message
    job = start_training(
        tmp_path / "dataset",
        tmp_path / "registry" / "web-fixture",
        epochs=1,
        members=2,
        device="cpu",
        features=[4, 4, 4, 4, 4],
        overrides={"batch_size": 1, "augmentation": {"enabled": False}},
        python_executable=sys.executable,
    )
    assert job.wait(600) == 0, "\n".join(job.log[-20:])
    register_trained_model(job, "web-fixture")
    monkeypatch.setenv(models.ENV_ROOT, str(tmp_path / "registry"))
    assert "web-fixture" in page.controller.models()

    page.state.fetal_model = "web-fixture"
    assert page.run_model() is not None
    progress = []
    deadline = time.monotonic() + 300
    while page.step_job() and time.monotonic() < deadline:
        progress.append(page.state.fetal_progress)
        time.sleep(0.2)
    assert page.state.fetal_message_type == "success", page.state.fetal_message
    assert progress and max(progress) <= 1.0
    result = page.controller.parcellation
    assert result.segmentation_node.GetSegmentation().GetNumberOfSegments() == 8
    assert [r["tissue"] for r in page.state.fetal_results] == [t.abbreviation for t in TISSUES]
    assert sum(r["voxels"] for r in page.state.fetal_results) == int((result.labels > 0).sum()) > 0
    axial = page.views[0]
    assert axial.get_foreground_volume_id() == result.uncertainty_node.GetID()  # disagreement overlay
    assert result.uncertainty.min() >= 0 and result.uncertainty.max() <= 1


def test_stop_ends_a_running_parcellation_with_a_message(page, case, tmp_path, monkeypatch):
    """Stop on a model that is still loading: the job ends, the page says it stopped, nothing is loaded."""
    page.load(str(case["srr"]), str(case["mask"]))
    with pytest.raises(ValueError, match="no parcellation is running"):
        page.controller.request_stop()
    page.state.fetal_model = "no-such-fetal-model"
    assert page.run_model() is not None
    page.stop_model()
    assert page.state.fetal_message_type == "warning"
    deadline = time.monotonic() + 60
    while page.step_job() and time.monotonic() < deadline:
        page.stop_model()  # a second press kills it
        time.sleep(0.2)
    assert not page.state.fetal_running and page.controller.job is None
    assert page.controller.parcellation is None and page.state.fetal_message_type == "error"


def test_uploaded_files_load_the_mri_and_the_file_named_mask(page, case):
    files = [
        {"name": "mask.nii.gz", "size": 1, "content": case["mask"].read_bytes()},
        {"name": "srr.nii.gz", "size": 1, "content": case["srr"].read_bytes()},
    ]
    page.state.fetal_upload = files
    page._on_upload(fetal_upload=files)  # as the state change does when the browser sends the files
    assert page.state.fetal_loaded, page.state.fetal_message
    assert page.controller.volume_node.GetName() == "srr"
    assert page.controller.session.voxel_counts()["mask"] == int(array(case["mask"]).astype(bool).sum())
    assert page.state.fetal_mri == "" and page.state.fetal_upload is None
    two_mris = [dict(files[1]), {**files[1], "name": "other.nii.gz"}]
    page._on_upload(fetal_upload=two_mris)
    assert page.state.fetal_message_type == "error" and "one MRI" in page.state.fetal_message
