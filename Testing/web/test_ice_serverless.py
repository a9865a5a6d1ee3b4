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
    blank = pixels(axial)
    page.state.ice_folder = str(case_folder)
    assert page.load(), page.state.ice_message
    assert page.state.ice_frames == len(ice.read_case(case_folder).frames)
    image = pixels(axial)
    assert image.std() > 2 and not np.array_equal(image, blank)  # the sparse volume on screen
    assert pixels(threed).std() > 1  # the slice in 3D

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
