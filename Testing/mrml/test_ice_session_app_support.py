"""ICEEditingLib behaviours the web app relies on (issue 20), on real MRML: models filtered by what their card
says they are, a new initial segmentation that replaces the segment as one undoable change (no edit lost), the
editing model prepared off the scene (arrays only) before the first edit, the per-edit distance from every CAS
contour to the segment (comparable from row to row), clicks that are not scribbles, and the warning for a case
on another voxel size than the models'."""

from __future__ import annotations

import shutil

import numpy as np
import pytest

pytest.importorskip("slicer", reason="slicer-core is not installed (pip install slicer-core)")
pytest.importorskip("torch")

from ice_helpers import bitten, register, rule_model, small_case, tiny_registry  # noqa: E402

from ICEEditingLib import scene as ice_scene  # noqa: E402
from ICEEditingLib.scribble import MIN_STROKE_PIXELS, is_click  # noqa: E402
from ICEEditingLib.session import HISTORY_COLUMNS, ICEEditingSession  # noqa: E402
from losslab import models  # noqa: E402
from losslab.metrics import contour_distance  # noqa: E402
from LossLabLib import mrml_io  # noqa: E402


@pytest.fixture(scope="module")
def registry(tmp_path_factory):
    """The tiny ICE models under the shipped names, plus a fetal model and an ICE model whose card lists
    its inputs (so its kind comes from the card, not its name)."""
    base = tiny_registry(tmp_path_factory)
    root = tmp_path_factory.mktemp("kinds")
    for name in ("ice-segmentation-64", "ice-editing-64"):
        shutil.copytree(base / name, root / name)
    seg = base / "ice-segmentation-64" / "model.pt"
    register(
        root,
        "fetal-like",
        seg,
        task="fetal brain parcellation (8 tissues)",
        labels=["background", "WM", "Vent", "Cer", "ECSF", "CGM", "DGM", "BS", "CC"],
    )
    register(root, "my-atrium", seg, task="LA", inputs=["image"], labels=["background", "left atrium"])
    register(
        root,
        "my-editor",
        base / "ice-editing-64" / "model.pt",
        task="edit",
        inputs=["image", "initial", "heatmap"],
    )
    return root


@pytest.fixture(scope="module")
def case():
    return small_case(seed=1)


def test_models_are_listed_and_accepted_by_kind(mrml, case, registry):
    assert ice_scene.available_models("segmentation", registry) == ["ice-segmentation-64", "my-atrium"]
    assert ice_scene.available_models("editing", registry) == ["ice-editing-64", "my-editor"]
    cards = {c.name: ice_scene.model_kind(c) for c in models.list_models(registry)}
    assert cards["fetal-like"] is None and cards["my-atrium"] == "segmentation"
    sc = ice_scene.load_case(mrml.scene, case, cas_curves=False, frame_volumes=False)
    # issue 20 defect 6: a fetal ensemble drew 8 "tissues" over an echo volume; now it is refused, naming why
    with pytest.raises(ValueError, match=r"fetal-like is not an ICE model .*segmentation models: ice-segm"):
        ice_scene.initial_segmentation(mrml.scene, sc, "fetal-like", root=registry, device="cpu")
    with pytest.raises(ValueError, match="ice-editing-64 is an ICE editing model, not an ICE segmentation"):
        ice_scene.initial_segmentation(mrml.scene, sc, "ice-editing-64", root=registry, device="cpu")
    with pytest.raises(ValueError, match="no ICE segmentation model 'nope'") as info:
        ice_scene.initial_segmentation(mrml.scene, sc, "nope", root=registry, device="cpu")
    assert "ice-segmentation-64, my-atrium" in str(info.value) and "fetal-like" not in str(info.value)
    seg, sid = ice_scene.initial_segmentation(mrml.scene, sc, "my-atrium", root=registry, device="cpu")
    mask = mrml_io.segment_mask(seg, sid, sc.grid)
    np.testing.assert_array_equal(  # the array-only prediction is the same y_init
        ice_scene.predict_initial(case.image, "my-atrium", root=registry, device="cpu"), mask
    )
    session = ICEEditingSession(mrml.scene, seg, sid, sc.volume_node, "ice-segmentation-64", root=registry)
    with pytest.raises(ValueError, match="is an ICE segmentation model, not an ICE editing model"):
        session.edit_from_points(np.array([sc.grid.ijk_to_ras[:3, 3]]))


def test_a_new_initial_segmentation_is_one_undoable_change(mrml, case):
    """Issue 20 defect 2: Segment again replaced the session (edits gone, history empty, Undo disabled)."""
    sc = ice_scene.load_case(mrml.scene, case, frame_volumes=False)
    seg, sid = ice_scene.initial_from_mask(mrml.scene, sc, bitten(case.label, case.spacing))
    session = ICEEditingSession(mrml.scene, seg, sid, sc.volume_node, rule_model("toggle"), cas=sc)
    for frame in sc.frames_with_contours()[:3]:
        session.edit_from_curve(sc.cas_curves[frame][0])
    edited = session.current_mask()
    new = np.zeros_like(edited)
    new[10:20, 10:20, 10:20] = True
    record = session.replace_segment(new, description="Segment with my-atrium")
    np.testing.assert_array_equal(session.current_mask(), new)
    assert record.kind == "replace" and record.index == 4 and "Segment with my-atrium" in record.summary()
    assert record.metric["cas_to_prediction"] == contour_distance(case.cas_mask(), new, case.spacing)
    assert session.can_undo
    undone = session.undo()
    assert undone is record
    np.testing.assert_array_equal(session.current_mask(), edited)  # the three edits are back, bit for bit
    assert [r.state for r in session.records] == ["applied"] * 3 + ["undone"]
    session.undo()
    assert session.records[2].state == "undone"  # and the edits before it can still be undone
    session.redo()
    session.redo()
    np.testing.assert_array_equal(session.current_mask(), new)
    with pytest.raises(ValueError, match="kind"):
        session.apply_manual(new, "set", kind="other")


def test_each_edit_records_the_distance_from_every_contour_to_the_segment(mrml, case):
    """Issue 20 defect 7: D near / far follow each scribble and cannot be compared from row to row; the
    distance from every CAS contour to the segment after the edit can."""
    sc = ice_scene.load_case(mrml.scene, case, frame_volumes=False)
    seg, sid = ice_scene.initial_from_mask(mrml.scene, sc, bitten(case.label, case.spacing))
    session = ICEEditingSession(mrml.scene, seg, sid, sc.volume_node, rule_model("grow"), cas=sc)
    previous = session.current_mask()
    for frame in sc.frames_with_contours()[:2]:
        record = session.edit_from_curve(sc.cas_curves[frame][0])
        after = session.current_mask()
        assert record.metric["cas_to_prediction"] == contour_distance(case.cas_mask(), after, case.spacing)
        assert record.metric["no_editing"] == contour_distance(case.cas_mask(), previous, case.spacing)
        previous = after
    column = HISTORY_COLUMNS.index("CAS to segment p95 (mm)")  # in the history table too
    last = mrml_io.table_rows(session.history_table)[-1]
    assert last[column] == pytest.approx(record.metric["cas_to_prediction"]["p95"], rel=1e-6)


def test_prepare_loads_and_warms_the_editing_model_without_the_scene(mrml, case, monkeypatch):
    sc = ice_scene.load_case(mrml.scene, case, cas_curves=False, frame_volumes=False)
    seg, sid = ice_scene.initial_from_mask(mrml.scene, sc, bitten(case.label, case.spacing))
    messages = []
    model = rule_model("toggle")
    session = ICEEditingSession(
        mrml.scene, seg, sid, sc.volume_node, model, progress=lambda f, m: messages.append(m)
    )
    before = session.current_mask()
    session.prepare(before)
    assert model.predictor.models[0].calls == 1 and "First inference" in messages[0]
    np.testing.assert_array_equal(session.current_mask(), before)  # nothing written
    assert session.records == [] and not session.can_undo
    messages.clear()
    centre = sc.grid.ijk_to_ras @ np.r_[np.array(sc.grid.shape[::-1]) / 2.0, 1.0]
    session.edit_from_points(centre[None, :3])  # the first edit: no set-up any more
    assert model.predictor.models[0].calls == 2 and not any("First inference" in m for m in messages)


def test_a_click_is_not_a_scribble():
    assert is_click([(10, 10)]) and is_click([(10, 10), (11, 10), (11, 11)])
    assert not is_click([(10, 10), (10 + MIN_STROKE_PIXELS, 10)])
    assert not is_click([(10, 10), (13, 10), (13, 13)])  # the length along the path counts


def test_a_case_on_other_voxels_than_the_model_is_named(mrml, registry):
    from ice_helpers import SPACING

    sc = ice_scene.load_case(mrml.scene, small_case(seed=2), cas_curves=False, frame_volumes=False)
    register(
        registry,
        "ice-segmentation-40",
        registry / "my-atrium" / "model.pt",
        task="LA",
        grid={"size": [40, 40, 40], "spacing_mm": [SPACING] * 3},
    )
    assert ice_scene.model_grid_note("ice-segmentation-40", sc.grid, registry) is None
    register(
        registry,
        "ice-segmentation-64x",
        registry / "my-atrium" / "model.pt",
        task="LA",
        grid={"size": [64, 64, 64], "spacing_mm": [2.2048] * 3},
    )
    note = ice_scene.model_grid_note("ice-segmentation-64x", sc.grid, registry)
    assert note.startswith("ice-segmentation-64x was trained on 64x64x64 voxels of 2.20 mm; this case has")
    assert "40x40x40 voxels of 3.53 mm" in note and "--spacing 2.205" in note
    assert ice_scene.model_grid_note("my-atrium", sc.grid, registry) is None  # no grid on its card


def test_save_writes_every_segment_with_its_name_and_colour_atomically(mrml, case, tmp_path):
    import slicerio

    sc = ice_scene.load_case(mrml.scene, case, cas_curves=False, frame_volumes=False)
    seg, sid = ice_scene.initial_from_mask(mrml.scene, sc, bitten(case.label, case.spacing))
    seg.GetSegmentation().GetSegment(sid).SetColor(0.1, 0.2, 0.3)
    session = ICEEditingSession(mrml.scene, seg, sid, sc.volume_node, rule_model("grow"))
    path = session.save(tmp_path / "edited.seg.nrrd")
    back = slicerio.read_segmentation(str(path))
    assert [s["name"] for s in back["segments"]] == [sid]
    assert back["segments"][0]["color"] == pytest.approx([0.1, 0.2, 0.3], abs=1e-3)
    voxels = slicerio.extract_segments(back, [(sid, 1)])["voxels"]
    np.testing.assert_array_equal(voxels.transpose() > 0, session.current_mask())
    with pytest.raises(ValueError, match=r"must end with \.seg\.nrrd"):
        session.save(tmp_path / "edited.nrrd")
    with pytest.raises(FileNotFoundError, match="does not exist"):
        session.save(tmp_path / "no" / "edited.seg.nrrd")
    before = path.read_bytes()
    from unittest import mock

    with mock.patch("slicerio.write_segmentation", side_effect=OSError("disk full")), pytest.raises(OSError):
        session.save(path)
    assert path.read_bytes() == before  # a failed write leaves the previous file whole
