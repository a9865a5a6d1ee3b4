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

from FetalParcellationLib.session import NOTHING_DECLARED  # noqa: E402
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
    assert page.state.fetal_problems == [NOTHING_DECLARED]  # not ready: an empty case teaches nothing
    assert page.state.fetal_message_type == "info"
    assert page.state.fetal_case_id == CASE and page.state.fetal_case_name == "srr.nii.gz"
    assert page.controller.scene.GetNumberOfNodesByClass("vtkMRMLVolumeRenderingDisplayNode") == 0  # VR off
    # the package's registry: the shipped ensemble is listed and chosen, ready to run
    assert "fetal-leafdice-1.6mm" in page.state.fetal_models
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


def test_without_a_brain_mask_a_model_that_needs_one_is_refused_and_the_shipped_one_runs(
    page, case, tmp_path, monkeypatch
):
    """Issue 19: a model whose card requires a brain mask (a copy of the shipped ensemble with that card):
    the Run button without one (no mask loaded, none painted) says so in one line and starts nothing,
    instead of a parcellation of the whole field of view. The shipped fetal-leafdice-1.6mm finds the brain
    itself: it runs, and its tissues lie inside the brain."""
    from fetal_cases import NEEDS_MASK, SHIPPED, mask_required_registry

    from losslab import models

    monkeypatch.setenv(models.ENV_ROOT, str(mask_required_registry(tmp_path)))
    assert page.load(str(case["srr"])), page.state.fetal_message
    assert page.controller.session.voxel_counts()["mask"] == 0
    page.state.fetal_model = NEEDS_MASK
    assert page.run_model() is None and not page.state.fetal_running
    message = page.state.fetal_message
    assert page.state.fetal_message_type == "error", message
    assert message.startswith(f"Parcellation: {NEEDS_MASK} needs a brain mask"), message
    assert "brain mask' segment" in message and "\n" not in message
    assert page.controller.job is None and page.controller.parcellation is None

    monkeypatch.delenv(models.ENV_ROOT)  # the package's registry
    page.state.fetal_model = SHIPPED
    assert page.run_model() is not None
    deadline = time.monotonic() + 300
    while page.step_job() and time.monotonic() < deadline:
        time.sleep(0.2)
    assert page.state.fetal_message_type == "success", page.state.fetal_message
    labels = page.controller.parcellation.labels
    brain = array(case["mask"]) > 0
    assert labels.shape == brain.shape and (labels > 0).any()
    found = labels > 0  # the brain it found: Dice 0.93-0.99 against the masks on other centres' volumes
    assert 2 * (found & brain).sum() / (found.sum() + brain.sum()) > 0.9


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


# Issue 20: no lost work, actions that run once, the export race, the result shown, read and saved ----------


def _paint_vent(page, case):
    session = page.controller.session
    reference = array(case["parcellation"])
    session.write_segment(session.segment_id("Vent"), reference == tissue("Vent").label)
    page._refresh()


def test_replacing_a_case_with_work_asks_first_and_cancel_keeps_it(page, case, tmp_path):
    """Defect 2: Load / Sample / upload replaced painted tissues with no warning and no undo."""
    assert page.load(str(case["srr"]), str(case["mask"]))
    first = page.controller.session
    assert page.controller.work_summary() is None
    _paint_vent(page, case)
    page.toggle("Vent", True)
    assert not page.load(str(case["srr"]), str(case["mask"]))  # asks, loads nothing yet
    confirm = page.state.fetal_confirm
    assert confirm["title"] == "Load: replace the current case?"
    assert "painted voxels: Vent" in confirm["text"] and "declared: Vent" in confirm["text"]
    page.cancel()
    assert page.controller.session is first and page.state.fetal_confirm is None
    assert page.state.fetal_message == "Kept the current case"
    files = [{"name": "srr.nii.gz", "size": 1, "content": case["srr"].read_bytes()}]
    page._on_upload(fetal_upload=files)  # an upload asks too
    assert page.state.fetal_confirm["title"].startswith("Upload") and page.controller.session is first
    page.confirm()
    assert page.controller.session is not first and page.controller.work_summary() is None
    assert page.state.fetal_confirm is None and page.state.fetal_loaded


def test_a_double_click_loads_once(page, case):
    """Defect 2: the second click of a double click, sent before the page showed the first's end, is
    ignored (it carries the page's old action counter)."""
    callback, args = page.button(page.load, "fetal_mri", "fetal_mask")
    assert args == "[fetal_epoch, fetal_mri, fetal_mask]"
    epoch = page.state.fetal_epoch
    loads = []
    original = page.controller.load_case
    page.controller.load_case = lambda *a: loads.append(a) or original(*a)
    assert callback(epoch, str(case["srr"]), str(case["mask"])) is None  # nothing for the browser
    assert callback(epoch, str(case["srr"]), str(case["mask"])) is None  # the double click's second
    assert len(loads) == 1 and page.state.fetal_epoch == epoch + 1
    assert page.state.fetal_mri == str(case["srr"])  # the field as the browser showed it
    callback(page.state.fetal_epoch, str(case["srr"]), str(case["mask"]))  # a later, deliberate click
    assert len(loads) == 2


def test_export_uses_what_the_browser_showed_and_refuses_a_changed_case(page, case, tmp_path):
    """Defect 9's race: the browser holds a typed case id back while an earlier action runs, and Export
    went out under the previous case's id after Load + Sample + a quick Export. The click now carries the
    fields and the case it was made on."""
    assert page.load(str(case["srr"]), str(case["mask"]))
    _paint_vent(page, case)
    page.toggle("Vent", True)
    token = page.state.fetal_case_token
    page.state.fetal_case_id = "stale"  # what the server had before the browser's edit arrived
    dataset = tmp_path / "dataset"
    page._export_click(page.state.fetal_epoch, str(dataset), "typed_id", token)
    assert (dataset / "labels" / "typed_id.nii.gz").is_file(), page.state.fetal_message
    assert not (dataset / "labels" / "stale.nii.gz").exists()
    # another case loaded between the click and its arrival: nothing written, the page says why
    page._export_click(page.state.fetal_epoch, str(dataset), "other_id", token - 1)
    assert not (dataset / "labels" / "other_id.nii.gz").exists()
    assert page.state.fetal_message_type == "warning" and "the case changed" in page.state.fetal_message


def test_the_case_id_follows_the_case_unless_typed(page, case, tmp_path):
    assert page.load(str(case["srr"]), str(case["mask"]))
    assert page.state.fetal_case_id == CASE
    other = tmp_path / "GA99_test.nii.gz"
    other.write_bytes(case["srr"].read_bytes())
    assert page.load(str(other), "")
    assert page.state.fetal_case_id == "GA99_test"  # the automatic id followed the case
    page.state.fetal_case_id = "mine"
    assert page.load(str(case["srr"]), str(case["mask"]))
    assert page.state.fetal_case_id == "mine"  # a typed id is the user's: kept
    assert page.controller.volume_node.GetName() == "srr"  # never "srr_7" after several loads


def _fake_parcellation(page, case):
    """A parcellation result without a model: the reference labels, a made-up disagreement."""
    from FetalParcellationLib.inference import ParcellationResult
    from LossLabLib.mrml_io import Grid

    controller = page.controller
    labels = array(case["parcellation"]).astype(np.uint8)
    grid = Grid.from_volume(controller.volume_node)
    logic = controller.logic
    node = logic.write_segmentation(labels, grid, controller.volume_node)
    unc = (labels > 0).astype(np.float32) * 0.25
    unc_node = logic.write_uncertainty(unc, grid, controller.volume_node)
    controller.parcellation = ParcellationResult(node, unc_node, labels, unc, {}, grid)
    controller.show_parcellation()

    class Done:
        finished, poll, progress = True, staticmethod(lambda: None), 1.0

        @staticmethod
        def status():
            return "done"

    controller.job = Done()
    controller.poll = lambda: __import__("LossLabWeb.fetal", fromlist=["JobState"]).JobState(
        1.0, "done", True
    )
    page.step_job()
    controller.job = None
    return labels


def test_the_result_is_shown_read_and_saved_and_painting_shows_the_annotation(page, case, tmp_path):
    """Defect 9: after Run, painting was invisible; the table had no headers; no legend; no way to save."""
    import slicerio

    assert page.load(str(case["srr"]), str(case["mask"]))
    labels = _fake_parcellation(page, case)
    controller = page.controller
    axial = page.views[0]
    assert page.state.fetal_view == "parcellation" and controller.showing == "parcellation"
    assert axial.get_foreground_volume_id() == controller.parcellation.uncertainty_node.GetID()
    assert page.state.fetal_legend.startswith("linear-gradient(to right, rgb(")
    rows = page.state.fetal_results
    assert [r["tissue"] for r in rows] == [t.abbreviation for t in TISSUES]
    voxel_ml = float(np.prod(controller.parcellation.grid.spacing_ijk)) / 1000
    wm = int((labels == 1).sum())
    assert rows[0]["voxels"] == wm and rows[0]["ml"] == round(wm * voxel_ml, 2)
    assert controller.work_summary() == "an unsaved parcellation"
    # choosing an effect shows the annotation again: what the brush changes is on screen
    page.state.fetal_effect = "Paint"
    page._on_effect(fetal_effect="Paint")
    assert controller.showing == "annotation" and page.state.fetal_view == "annotation"
    assert controller.session.segmentation_node.GetDisplayNode().GetVisibility()
    assert not controller.parcellation.segmentation_node.GetDisplayNode().GetVisibility()
    assert axial.get_foreground_volume_id() is None
    page._on_view(fetal_view="parcellation")
    assert controller.showing == "parcellation" and page.state.fetal_effect == ""
    page.state.fetal_result_path = str(tmp_path / "out.txt")
    assert page.save_result() is None and page.state.fetal_message_type == "error"
    page.state.fetal_result_path = str(tmp_path / "result.seg.nrrd")
    assert page.save_result() is not None, page.state.fetal_message
    seg = slicerio.read_segmentation(str(tmp_path / "result.seg.nrrd"))
    assert [s["name"] for s in seg["segments"]] == [t.abbreviation for t in TISSUES]
    assert controller.work_summary() is None  # saved: nothing lost by loading another case


def test_wm_shows_in_a_contrast_colour_in_the_views_and_the_checklist(page, case):
    """Defect 11: the WM brush colour was nearly invisible on the MRI."""
    from FetalParcellationLib import segments

    assert page.load(str(case["srr"]), str(case["mask"]))
    r, g, b = segments.CONTRAST_COLORS["WM"]
    assert page.state.fetal_colors["WM"] == f"#{round(255 * r):02x}{round(255 * g):02x}{round(255 * b):02x}"
    page.state.fetal_tissue = "WM"
    page._on_tissue("WM")
    page._on_effect("Paint")
    axial = page.views[0]
    before = pixels(axial).astype(int)
    drag(axial, [(100 + 4 * i, 128) for i in range(12)])
    after = pixels(axial).astype(int)
    changed = np.abs(after - before)[..., :3].sum(-1) > 0
    assert changed.any()
    # the painted pixels lean to the contrast colour (yellow: red and green well above blue)
    painted = after[changed][:, :3]
    assert np.median(painted[:, 0] - painted[:, 2]) > 40 and np.median(painted[:, 1] - painted[:, 2]) > 40


def test_buttons_return_nothing_the_browser_cannot_read(page, case, tmp_path):
    """Defect 8: Export, Run and Save returned an ExportResult, a job, a Path to the browser ("Method result
    cannot be serialized")."""
    assert page.load(str(case["srr"]), str(case["mask"]))
    _paint_vent(page, case)
    page.toggle("Vent", True)
    page.state.fetal_dataset = str(tmp_path / "d")
    for handler, fields in (
        (page.load, ("fetal_mri", "fetal_mask")),
        (page.run_model, ("fetal_model",)),
        (page.save_result, ("fetal_result_path",)),
        (page.undo, ()),
    ):
        callback, _ = page.button(handler, *fields)
        assert callback(page.state.fetal_epoch, *[page.state[f] for f in fields]) is None
    assert (
        page._export_click(page.state.fetal_epoch, str(tmp_path / "d"), "c1", page.state.fetal_case_token)
        is None
    )
    assert (tmp_path / "d" / "labels" / "c1.nii.gz").is_file()
    page.controller.stop_job()


def test_the_views_are_fitted_when_the_browser_sizes_them(page, case):
    """Defect 10 (both pages): a case loaded before the browser had sized the views was fitted to their
    default size; once the browser sizes a view, the page fits it again."""
    from web_helpers import fits, resize

    assert page.load(str(case["srr"]), str(case["mask"]))
    axial = page.views[0]
    resize(axial, 600, 240)  # a wide, low view: the brain's front-back extent must still fit
    assert axial.get_view_node().GetDimensions()[:2] == (600, 240)
    assert fits(axial, page.controller.volume_node)
