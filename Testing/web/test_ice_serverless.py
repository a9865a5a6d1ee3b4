"""The ICE page without a server: trame-slicer's DirectViewFactory views, mouse events injected in the slice
view's interactor, the page's handlers called as its buttons call them. The segmentation model is a tiny one
trained and registered under the shipped name in a temporary registry (``LOSSLAB_MODELS_DIR``), as in
``Testing/mrml/ice_helpers.py``. Needs trame-slicer (``.venv-web``)."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("trame_slicer", reason="trame-slicer is not installed: run in .venv-web (docs/web.md)")

from ice_helpers import bitten, rule_model, small_case, tiny_registry  # noqa: E402
from LossLabWeb.ice_page import ICEEditingLib, ICEPage  # noqa: E402
from web_helpers import direct_app, drag, pixels  # noqa: E402

from losslab import ice, models  # noqa: E402

SIGMA_MM = 8.0


def colours(image: np.ndarray) -> int:
    return len(np.unique(image[..., :3].reshape(-1, 3), axis=0))


@pytest.fixture(scope="module")
def registry(tmp_path_factory):
    return tiny_registry(tmp_path_factory)


@pytest.fixture(scope="module")
def case_folder(tmp_path_factory):
    folder = tmp_path_factory.mktemp("ice") / "case01"
    ice.write_case(small_case(seed=3), folder)
    return folder


@pytest.fixture
def page(request, registry, monkeypatch):
    monkeypatch.setenv(models.ENV_ROOT, str(registry))
    server, app, views = direct_app(f"test-{request.node.name}")
    p = ICEPage(server, app)
    p.views = views
    yield p
    p.controller.close()


def test_a_stroke_edits_near_it_not_far_and_undo_restores_it_bit_for_bit(page, case_folder):
    axial, threed = page.views
    blank, blank_3d = pixels(axial), pixels(threed)
    page.state.ice_folder = str(case_folder)
    assert page.load(), page.state.ice_message
    assert page.state.ice_frames == len(ice.read_case(case_folder).frames)
    image = pixels(axial)
    assert image.std() > 2 and not np.array_equal(image, blank)  # the sparse volume on screen
    # the slice in 3D: the volume's grey levels over the background's gradient (issue 20 defect 10: the
    # page removed the views' own slice models with the previous case's nodes, and the 3D view was empty)
    assert colours(pixels(threed)) > colours(blank_3d) + 50

    assert page.segment(), page.state.ice_message  # "ice-segmentation-64" from the temporary registry
    controller = page.controller
    # a rule model of ice_helpers that also changes voxels far from the scribble (y_init XOR (x > 0.5), OR
    # u > 0.5): the page's Strict local switch must keep everything beyond the near region (A < 0.5)
    controller.session._model = rule_model("everywhere", SIGMA_MM)
    controller.set_strict_local(True)
    # an imperfect y_init (the anatomy with a ball bitten out), so that D is defined and "far" has voxels
    from LossLabLib import mrml_io

    init = bitten(controller.case.case.label, controller.case.case.spacing)
    mrml_io.set_segment_from_mask(
        controller.segmentation_node, controller.segment_id, init, controller.session.grid
    )
    page._refresh()
    before = controller.session.current_mask().copy()
    np.testing.assert_array_equal(before, init)
    assert before.sum() == page.state.ice_voxels

    frame = controller.case.frames_with_contours()[len(controller.case.frames_with_contours()) // 2]
    assert page.show_frame(frame)
    slice_to_ras = ICEEditingLib.frame_slice_to_ras(controller.case.case, frame)
    view_matrix = axial.get_view_node().GetSliceToRAS()
    got = np.array([[view_matrix.GetElement(r, c) for c in range(4)] for r in range(4)])
    np.testing.assert_allclose(got, slice_to_ras, atol=1e-6)  # the axial view shows frame `frame`
    assert axial.get_background_volume_id() == controller.case.frame_volumes[frame].GetID()

    strokes = []
    controller.on_edit = lambda points: (
        strokes.append(np.asarray(points, float).reshape(-1, 3)),
        page._on_stroke(points),
    )
    page.state.ice_scribble = True
    page._on_scribble(ice_scribble=True)  # as the switch's state change does
    path = [(96 + 8 * i, 128) for i in range(9)]
    drag(axial, path)
    assert len(strokes) == 1, page.state.ice_message
    xy_to_ras = axial.get_view_node().GetXYToRAS()
    expected = np.array([xy_to_ras.MultiplyPoint((x, y, 0, 1))[:3] for x, y in path])
    np.testing.assert_allclose(strokes[0][[0, -1]], expected[[0, -1]], atol=1e-6)  # the mouse path, in RAS
    after = controller.session.current_mask()
    changed = np.argwhere(before != after)
    assert len(changed) > 0, page.state.ice_message
    # every changed voxel is near the stroke (u > 0.5 is within 1.18 sigma of it), none far
    grid = controller.session.grid
    ijk = np.c_[changed[:, ::-1], np.ones(len(changed))]
    ras = (grid.ijk_to_ras @ ijk.T).T[:, :3]
    distance = np.linalg.norm(ras[:, None, :] - expected[None, :, :], axis=2).min(1)
    assert distance.max() < 1.18 * SIGMA_MM + np.linalg.norm(grid.spacing_ijk), distance.max()
    rows = page.state.ice_history
    assert len(rows) == 1 and rows[0]["frame"] == frame and rows[0]["state"] == "applied"
    assert rows[0]["far"] == "+0/-0" and rows[0]["near"] != "+0/-0"
    assert rows[0]["d_near"] >= 0 and rows[0]["d_far"] >= 0  # the case has CAS contours: D is shown
    assert page.state.ice_voxels == int(after.sum()) and page.state.ice_can_undo

    assert page.undo()
    np.testing.assert_array_equal(controller.session.current_mask(), before)  # bit for bit
    assert page.state.ice_history[0]["state"] == "undone" and page.state.ice_can_redo
    assert page.redo()
    np.testing.assert_array_equal(controller.session.current_mask(), after)

    page.state.ice_scribble = False
    page._on_scribble(ice_scribble=False)
    drag(axial, [(96, 100), (160, 100)])  # scribbling off: the mouse no longer edits
    assert len(strokes) == 1 and len(page.state.ice_history) == 1


def test_save_writes_the_segment_with_its_name(page, case_folder, tmp_path):
    import slicerio

    assert page.load(str(case_folder)) and page.segment(), page.state.ice_message
    page.state.ice_save_path = str(tmp_path / "out.txt")
    assert page.save() is None and "seg.nrrd" in page.state.ice_message  # refused, one line
    page.state.ice_save_path = str(tmp_path / "edited.seg.nrrd")
    assert page.save() is not None, page.state.ice_message
    seg = slicerio.read_segmentation(str(tmp_path / "edited.seg.nrrd"))
    controller = page.controller
    name = controller.segmentation_node.GetSegmentation().GetSegment(controller.segment_id).GetName()
    assert [s["name"] for s in seg["segments"]] == [name]
    voxels = slicerio.extract_segments(seg, [(name, 1)])["voxels"]
    np.testing.assert_array_equal(voxels.transpose() > 0, controller.session.current_mask())


@pytest.mark.parametrize("kind", ["missing", "not a case", "fails midway", "model"])
def test_a_bad_file_or_model_is_a_one_line_message_and_keeps_the_case(
    page, case_folder, tmp_path, kind, monkeypatch
):
    assert page.load(str(case_folder)), page.state.ice_message
    case = page.controller.case
    scene = page.controller.scene
    nodes_before = {scene.GetNthNode(i).GetID() for i in range(scene.GetNumberOfNodes())}
    if kind == "model":
        page.state.ice_model = "no-such-ice-model"
        assert not page.segment()
        expect = "no-such-ice-model"
    elif kind == "fails midway":  # after the volumes are in the scene: they must be removed again
        from ICEEditingLib import scene as ice_scene

        def broken(*args, **kwargs):
            raise OSError("disk read error in frame 0")

        monkeypatch.setattr(ice_scene, "_add_curve", broken)
        assert not page.load(str(case_folder))
        expect = "disk read error"
    else:
        bad = tmp_path / "missing"
        if kind == "not a case":
            bad.mkdir()
            (bad / "image.nii.gz").write_bytes(b"not an image")
        assert not page.load(str(bad))
        expect = "missing"
    message = page.state.ice_message
    assert page.state.ice_message_type == "error" and expect in message, message
    assert "Traceback" not in message and "\n" not in message
    assert page.controller.case is case and page.state.ice_loaded
    data = ("vtkMRMLVolumeNode", "vtkMRMLSegmentationNode", "vtkMRMLMarkupsNode", "vtkMRMLTableNode")
    data += ("vtkMRMLVolumeDisplayNode", "vtkMRMLMarkupsDisplayNode", "vtkMRMLStorageNode")
    left = [scene.GetNthNode(i) for i in range(scene.GetNumberOfNodes())]
    left = [n for n in left if n.GetID() not in nodes_before and any(n.IsA(c) for c in data)]
    assert [f"{n.GetClassName()} {n.GetName()}" for n in left] == []  # nothing half-loaded is left behind


# Issue 20: no lost work, live progress, strokes drawn, clicks ignored, comparable rows, fitted views ----------


def _segmented(page, case_folder, rule=None):
    """The case loaded and segmented; with ``rule``, the rule editing model and the first contour's frame."""
    assert page.load(str(case_folder)) and page.segment(), page.state.ice_message
    controller = page.controller
    if rule is not None:
        controller.session._model = rule_model(rule, SIGMA_MM)
        assert page.show_frame(controller.case.frames_with_contours()[0])
    return controller


def _edit_once(page, axial, y=128):
    page.state.ice_scribble = True
    page._on_scribble(ice_scribble=True)
    drag(axial, [(96 + 8 * i, y) for i in range(9)])


def test_loading_over_edits_asks_first_and_cancel_keeps_them(page, case_folder):
    """Defect 2: Load and Sample replaced 9 edits with no warning and no undo."""
    assert page.load(str(case_folder)) and page.segment(), page.state.ice_message
    controller = page.controller
    assert page.show_frame(controller.case.frames_with_contours()[0])
    _edit_once(page, page.views[0])
    session, case = controller.session, controller.case
    assert len(session.records) == 1, page.state.ice_message
    for action in (lambda: page.load(str(case_folder)), page.load_sample):
        assert not action()  # nothing loaded yet: the page asks
        confirm = page.state.ice_confirm
        assert confirm["title"].endswith("replace the current case?") and "1 edit of" in confirm["text"]
        page.cancel()
        assert controller.session is session and controller.case is case and len(session.records) == 1
    assert not page.load(str(case_folder))
    page.confirm()
    assert controller.case is not case and controller.session is None and page.state.ice_loaded


def test_segment_again_replaces_the_segment_as_one_undoable_change(page, case_folder):
    """Defect 2: a second Segment (or a double click on it) emptied the history."""
    controller = _segmented(page, case_folder, "toggle")
    _edit_once(page, page.views[0])
    edited = controller.session.current_mask().copy()
    session = controller.session
    assert page.segment(), page.state.ice_message
    assert controller.session is session  # the same session, its history kept
    rows = page.state.ice_history
    assert [r["kind"] for r in rows] == ["model", "replace"] and rows[1]["frame"] == "new"
    assert "Segmented again" in page.state.ice_message and page.state.ice_can_undo
    assert page.undo()
    np.testing.assert_array_equal(controller.session.current_mask(), edited)  # the edit is back


def test_slow_work_runs_off_the_event_loop_with_live_progress_and_runs_once(page, case_folder):
    """Defect 4: Segment's progress arrived all at once at the end, buttons stayed enabled and clicks made
    meanwhile were queued. Now the model runs in a worker thread: the event loop shows each message as it
    comes (the work below waits until the loop has shown its first message), the page is busy (its buttons
    disabled), a second click is ignored and the frames can still be stepped."""
    import asyncio
    import threading

    assert page.load(str(case_folder)), page.state.ice_message
    controller = page.controller
    gate, calls = threading.Event(), []
    real = controller.predict

    def slow(image, model, progress=None):
        calls.append(threading.current_thread().name)
        progress(0.1, "step one")
        assert gate.wait(60), "the event loop never showed the first progress message"
        return real(image, model, progress)

    controller.predict = slow

    async def scenario():
        callback, args = page.button(page.segment, "ice_model")
        assert args == "[ice_epoch, ice_model]"
        epoch = page.state.ice_epoch
        assert callback(epoch, page.state.ice_model) is None and page.state.ice_busy
        callback(epoch, page.state.ice_model)  # a double click's second click: stale, ignored
        callback(page.state.ice_epoch, page.state.ice_model)  # a click while busy: ignored
        for _ in range(600):
            if page.state.ice_status == "step one":
                break
            await asyncio.sleep(0.05)
        assert page.state.ice_status == "step one" and page.state.ice_busy
        assert page.next_frame() and page.state.ice_frame == 1  # frames still step meanwhile
        gate.set()
        await page.wait()

    asyncio.run(scenario())
    assert len(calls) == 1 and calls[0] != threading.main_thread().name
    assert not page.state.ice_busy and controller.session is not None, page.state.ice_message
    assert controller.session._warm  # the editing model was loaded and run once in the same busy period
    assert "Turn on Scribble" in page.state.ice_message


def test_every_stroke_is_answered_so_the_browser_can_stop_drawing_it(page, case_folder):
    """Defect 5: the browser draws the stroke (STROKE_JS) until ``ice_strokes`` moves on: after an edit,
    after a click, and after a stroke the page could not take (busy)."""
    from LossLabWeb.ice_page import STROKE_JS

    assert "ice_strokes" in STROKE_JS and "polyline" in STROKE_JS
    _segmented(page, case_folder, "grow")
    axial = page.views[0]
    _edit_once(page, axial)
    assert page.state.ice_strokes == 1 and len(page.state.ice_history) == 1
    drag(axial, [(120, 120), (121, 120)])  # a click
    assert page.state.ice_strokes == 2
    page.state.ice_busy = True  # a stroke while the page is busy: refused, and answered too
    drag(axial, [(96 + 8 * i, 110) for i in range(9)])
    assert page.state.ice_strokes == 3 and len(page.state.ice_history) == 1
    assert page.state.ice_message.startswith("Edit: wait until")


def test_a_click_without_a_drag_is_not_an_edit(page, case_folder):
    """Defect 7: a click became a "+0/-0, no change" edit with a row of its own."""
    assert page.load(str(case_folder)) and page.segment(), page.state.ice_message
    page.state.ice_scribble = True
    page._on_scribble(ice_scribble=True)
    drag(page.views[0], [(120, 120), (121, 120), (122, 121)])
    assert page.state.ice_history == [] and "A click is not a scribble" in page.state.ice_message


def test_each_row_says_how_far_all_contours_are_from_the_segment(page, case_folder):
    """Defect 7: D near / far follow each stroke, so rows did not compare; the "to CAS" column does."""
    controller = _segmented(page, case_folder, "grow")
    _edit_once(page, page.views[0])
    _edit_once(page, page.views[0], y=100)
    from losslab.metrics import contour_distance

    rows = page.state.ice_history
    assert len(rows) == 2
    now = contour_distance(
        controller.case.cas_mask, controller.session.current_mask(), controller.case.case.spacing
    )
    assert rows[-1]["to_cas"] == round(now["p95"], 2)
    first = controller.session.records[0].metric["no_editing"]["p95"]  # inf when y_init is empty
    assert page.state.ice_initial_to_cas == (round(first, 2) if np.isfinite(first) else None)


def test_only_segmentation_models_are_offered_and_accepted(page, case_folder):
    """Defect 6: any registered model was accepted (a fetal ensemble drew 8 "tissues" over the echo)."""
    assert page.load(str(case_folder)), page.state.ice_message
    assert page.state.ice_models == ["ice-segmentation-64"]  # not ice-editing-64
    page.state.ice_model = "ice-editing-64"
    assert not page.segment()
    message = page.state.ice_message
    assert page.state.ice_message_type == "error" and "not an ICE segmentation model" in message, message
    assert page.controller.session is None


def test_the_views_are_fitted_again_when_the_browser_sizes_them(page, case_folder):
    """Defect 10: the case loaded at start-up was not fitted to the page's views."""
    from web_helpers import fits, resize

    assert page.load(str(case_folder)), page.state.ice_message
    axial = page.views[0]
    resize(axial, 600, 240)
    assert fits(axial, page.controller.case.volume_node)
    assert page.segment() and page.show_frame(2)
    sector = page.controller.case.case.sector
    page._fit_when_sized()
    resize(axial, 240, 600)  # a tall view: the whole fan still in it, on the frame's plane
    fov = axial.get_view_node().GetFieldOfView()
    assert fov[0] >= sector.cols * sector.pixel_mm * 0.99 and fov[1] >= sector.rows * sector.pixel_mm * 0.99
    view_matrix = axial.get_view_node().GetSliceToRAS()
    got = np.array([[view_matrix.GetElement(r, c) for c in range(4)] for r in range(4)])
    np.testing.assert_allclose(got, ICEEditingLib.frame_slice_to_ras(page.controller.case.case, 2), atol=1e-6)


def test_a_case_on_other_voxels_than_the_model_says_so(page, case_folder, registry, tmp_path, monkeypatch):
    """Defect 10: a 128^3 case was run by 64^3 models without a word."""
    import shutil

    from ice_helpers import register

    other = tmp_path / "models"
    shutil.copytree(registry / "ice-editing-64", other / "ice-editing-64")
    register(
        other,
        "ice-segmentation-64",
        registry / "ice-segmentation-64" / "model.pt",
        grid={"size": [64, 64, 64], "spacing_mm": [2.2048] * 3},
    )
    monkeypatch.setenv(models.ENV_ROOT, str(other))
    assert page.load(str(case_folder)) and page.segment(), page.state.ice_message
    message = page.state.ice_message
    assert page.state.ice_message_type == "warning" and "was trained on 64x64x64 voxels of 2.20 mm" in message


def test_buttons_return_nothing_the_browser_cannot_read(page, case_folder, tmp_path):
    """Defect 8: Save returned a Path to the browser ("Method result cannot be serialized")."""
    callback, _ = page.button(page.load, "ice_folder")
    assert callback(page.state.ice_epoch, str(case_folder)) is None and page.controller.case is not None
    callback, _ = page.button(page.segment, "ice_model")
    assert (
        callback(page.state.ice_epoch, page.state.ice_model) is None and page.controller.session is not None
    )
    callback, _ = page.button(page.save, "ice_save_path")
    assert callback(page.state.ice_epoch, str(tmp_path / "s.seg.nrrd")) is None
    assert (tmp_path / "s.seg.nrrd").is_file(), page.state.ice_message
