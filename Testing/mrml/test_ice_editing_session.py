"""ICEEditingLib on real MRML: a whole editing session (load, segment by model name, 10 sequential edits
from the CAS contours, undo 3, redo 2, each state bit-identical), masking (other segments, editable area,
intensity range), manual changes between model edits, undo levels, strict local and adapted sigma, the
history table and the editing metric D."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("slicer", reason="slicer-core is not installed (pip install slicer-core)")
pytest.importorskip("torch")

from ice_helpers import bitten, rule_model, small_case, tiny_registry  # noqa: E402

from ICEEditingLib import scene as ice_scene  # noqa: E402
from ICEEditingLib.session import BEYOND_TWO_SIGMA, HISTORY_COLUMNS, ICEEditingSession, adapted_sigma_mm  # noqa: E402
from losslab import ice  # noqa: E402
from losslab.metrics import editing_metric  # noqa: E402
from LossLabLib import mrml_io  # noqa: E402


@pytest.fixture(scope="module")
def registry(tmp_path_factory):
    return tiny_registry(tmp_path_factory)


@pytest.fixture(scope="module")
def case():
    return small_case(seed=1)


def _loaded(scene, case, initial=None):
    sc = ice_scene.load_case(scene, case, frame_volumes=False)
    mask = bitten(case.label, case.spacing) if initial is None else initial
    seg, sid = ice_scene.initial_from_mask(scene, sc, mask)
    return sc, seg, sid


def test_whole_session_by_model_name_with_undo_redo(mrml, case, registry, monkeypatch):
    monkeypatch.setenv("LOSSLAB_MODELS_DIR", str(registry))  # models by name, as shipped
    scene = mrml.scene
    sc = ice_scene.load_case(scene, case, frame_volumes=False)
    seg, sid = ice_scene.initial_segmentation(scene, sc, device="cpu")
    assert sid == "left atrium" or sid in mrml_io.segment_ids(seg)
    messages = []
    session = ICEEditingSession(
        scene,
        seg,
        sid,
        sc.volume_node,
        device="cpu",
        cas=sc,
        strict_threshold=0.5,
        progress=lambda f, m: messages.append(m),
    )
    sequence = ice.CASEditSequence(case)
    states = [session.current_mask()]
    for _ in range(10):
        edit = sequence.next(states[-1])
        assert edit is not None
        curve = sc.cas_curves[edit.frame][0]
        record = session.edit_from_curve(curve)
        after = session.current_mask()
        assert record.frame == edit.frame and record.kind == "model"
        # the far region (A < 0.5) of strict local at 0.5: not one voxel changes
        scribble = mrml_io.markups_to_mask(curve, sc.grid)
        attention = ice.encode(scribble, case.spacing, session.model.sigma_mm)
        assert not np.any((after != states[-1]) & (attention < 0.5))
        assert record.changes["added_far"] == record.changes["removed_far"] == 0
        assert record.beyond_two_sigma == 0
        # the metric D of this edit, as losslab computes it
        expected = editing_metric(case.cas_mask(), states[-1], after, attention, case.spacing)
        np.testing.assert_allclose(
            record.metric["near"]["p95"], expected.stats["near"]["p95"], equal_nan=True
        )
        states.append(after)
    assert session.model.sigma_mm == 9.0  # the card's sigma: loaded by name from the registry
    assert any("Loading editing model" in m for m in messages)
    assert sum("First inference" in m for m in messages) == 1
    # undo 3, redo 2: each state bit-identical to the one it returns to
    applied = [r for r in session.records if r.state == "applied"]
    assert len(applied) >= 6, [r.summary() for r in session.records]  # the model did change the segment
    pushed = [states[0]] + [states[r.index] for r in applied]  # states after each change written
    for n in range(1, 4):
        record = session.undo()
        assert record is applied[-n] and record.state == "undone"
        assert np.array_equal(session.current_mask(), pushed[-1 - n])
    for n in range(2):
        session.redo()
        assert np.array_equal(session.current_mask(), pushed[-3 + n])
    rows = mrml_io.table_rows(session.history_table)
    assert len(rows) == 10
    assert [r[HISTORY_COLUMNS.index("State")] for r in rows].count("undone") == 1
    assert rows[applied[-1].index - 1][HISTORY_COLUMNS.index("State")] == "undone"
    assert all("0 voxels changed beyond 2 sigma" in r[-1] for r in rows)


def test_sequential_edits_follow_the_rule_model_exactly(mrml, case):
    """y_init := y_hat: each edit's input is the segment as written by the previous one."""
    sc, seg, sid = _loaded(mrml.scene, case)
    model = rule_model("toggle", sigma_mm=8.0)
    session = ICEEditingSession(mrml.scene, seg, sid, sc.volume_node, model, cas=sc)
    current = session.current_mask()
    for frame in sc.frames_with_contours()[:4]:
        curve = sc.cas_curves[frame][0]
        u = ice.encode(mrml_io.markups_to_mask(curve, sc.grid), case.spacing, 8.0)
        record = session.edit_from_curve(curve)
        expected = current ^ (u > 0.5)
        assert np.array_equal(session.current_mask(), expected)
        assert record.changes == ice.edit_changes(current, expected, u)
        current = expected


def test_an_edit_never_changes_another_segment_with_overwrite_off(mrml, case):
    sc, seg, sid = _loaded(mrml.scene, case)
    frame = sc.frames_with_contours()[5]
    curve = sc.cas_curves[frame][0]
    u = ice.encode(mrml_io.markups_to_mask(curve, sc.grid), case.spacing, 8.0)
    other = (u > 0.3) & ~session_mask(seg, sid, sc)  # a second segment right where the edit adds
    mrml_io.set_segment_from_mask(seg, "vein", other, sc.grid)
    session = ICEEditingSession(mrml.scene, seg, sid, sc.volume_node, rule_model("grow"))
    session.editor_node.SetOverwriteMode(session.editor_node.OverwriteNone)
    before = session.current_mask()
    session.edit_from_curve(curve)
    assert np.array_equal(mrml_io.segment_mask(seg, "vein", sc.grid), other)
    assert np.array_equal(session.current_mask(), before | (u > 0.5))  # overlap allowed, as Slicer's "none"
    # the user's choice "overwrite all": the other segment loses exactly what the edit added
    session.undo()
    session.editor_node.SetOverwriteMode(session.editor_node.OverwriteAllSegments)
    session.edit_from_curve(curve)
    added = session.current_mask() & ~before
    assert np.array_equal(mrml_io.segment_mask(seg, "vein", sc.grid), other & ~added)
    session.undo()
    assert np.array_equal(mrml_io.segment_mask(seg, "vein", sc.grid), other)


def session_mask(seg, sid, sc):
    return mrml_io.segment_mask(seg, sid, sc.grid)


def test_editable_area_and_intensity_mask_protect_voxels(mrml, case):
    sc, seg, sid = _loaded(mrml.scene, case)
    frame = sc.frames_with_contours()[3]
    curve = sc.cas_curves[frame][0]
    scribble = mrml_io.markups_to_mask(curve, sc.grid)
    u = ice.encode(scribble, case.spacing, 8.0)
    centre = np.argwhere(scribble).mean(0).round().astype(int)
    area = np.zeros(case.grid.shape, bool)
    area[:, : centre[1], :] = True  # half of the edit's reach is editable
    mrml_io.set_segment_from_mask(seg, "area", area, sc.grid)
    session = ICEEditingSession(mrml.scene, seg, sid, sc.volume_node, rule_model("toggle"))
    editor = session.editor_node
    editor.SetMaskMode(seg.EditAllowedInsideSingleSegment)
    editor.SetMaskSegmentID("area")
    editor.SetOverwriteMode(editor.OverwriteNone)
    before = session.current_mask()
    record = session.edit_from_curve(curve)
    after = session.current_mask()
    toggled = before ^ (u > 0.5)
    assert np.array_equal(after[~area], before[~area])  # nothing outside the editable area changes
    assert np.array_equal(after[area], toggled[area])  # inside, the model's edit (adds and removes)
    assert np.count_nonzero(toggled[~area] != before[~area]) > 0  # the mask had something to stop
    assert record.changed < sum(record.proposed.values())  # the history counts what was written
    assert np.array_equal(mrml_io.segment_mask(seg, "area", sc.grid), area)  # the mask segment is untouched
    # a manual erase is held to the editable area as well
    session.undo()
    session.apply_manual(before.copy(), "remove")
    assert np.array_equal(session.current_mask(), before & ~area)
    assert np.array_equal(mrml_io.segment_mask(seg, "area", sc.grid), area)
    # intensity range of the source volume: voxels of x outside [0.3, 1] are protected
    session.undo()
    editor.SetMaskMode(seg.EditAllowedEverywhere)
    editor.SetSourceVolumeIntensityMask(True)
    editor.SetSourceVolumeIntensityMaskRange(0.3, 1.0)
    session.edit_from_curve(curve)
    after = session.current_mask()
    allowed = case.image >= 0.3
    assert np.array_equal(after[~allowed], before[~allowed])
    assert np.array_equal(after[allowed], toggled[allowed])


def test_a_manual_change_between_model_edits_is_kept_and_undoable(mrml, case):
    sc, seg, sid = _loaded(mrml.scene, case)
    session = ICEEditingSession(mrml.scene, seg, sid, sc.volume_node, rule_model("grow"))
    frames = sc.frames_with_contours()
    s0 = session.current_mask()
    session.edit_from_curve(sc.cas_curves[frames[0]][0])
    s1 = session.current_mask()
    paint = np.zeros(case.grid.shape, bool)
    paint[2:5, 2:5, 2:5] = True  # a corner far from every scribble
    manual = session.apply_manual(paint, "add", description="paint")
    s2 = session.current_mask()
    assert manual.kind == "manual" and np.array_equal(s2, s1 | paint)
    session.edit_from_curve(sc.cas_curves[frames[1]][0])
    s3 = session.current_mask()
    assert np.all(s3[paint])  # the next model edit starts from the painted segment and keeps it
    for expected in (s2, s1, s0):
        session.undo()
        assert np.array_equal(session.current_mask(), expected)
    for expected in (s1, s2, s3):
        session.redo()
        assert np.array_equal(session.current_mask(), expected)
    # an erase, then a new edit after an undo discards the redo branch
    session.apply_manual(paint, "remove")
    assert not session.current_mask()[paint].any()
    session.undo()
    session.edit_from_curve(sc.cas_curves[frames[2]][0])
    assert not session.can_redo and session.records[-2].state == "discarded"


def test_as_many_undo_levels_as_set(mrml, case):
    sc, seg, sid = _loaded(mrml.scene, case)
    session = ICEEditingSession(mrml.scene, seg, sid, sc.volume_node, rule_model("toggle"), undo_levels=10)
    states = [session.current_mask()]
    for frame in sc.frames_with_contours()[:12]:
        session.edit_from_curve(sc.cas_curves[frame][0])
        states.append(session.current_mask())
    for n in range(1, 11):
        session.undo()
        assert np.array_equal(session.current_mask(), states[-1 - n])
    assert not session.can_undo and not session.writer.can_undo()
    with pytest.raises(ValueError, match="nothing to undo.*10 undo levels"):
        session.undo()
    session.set_undo_levels(25)
    assert session.writer.levels == 25


def test_default_undo_levels_are_at_least_ten(mrml, case):
    sc, seg, sid = _loaded(mrml.scene, case)
    session = ICEEditingSession(mrml.scene, seg, sid, sc.volume_node, rule_model("grow"))
    assert session.undo_levels >= 10 and session.writer.logic.GetMaximumNumberOfUndoStates() > 10
    with pytest.raises(ValueError, match="nothing to redo"):
        session.redo()


def test_strict_local_and_adapted_sigma(mrml, case):
    sc, seg, sid = _loaded(mrml.scene, case)
    curve = sc.cas_curves[sc.frames_with_contours()[2]][0]
    scribble = mrml_io.markups_to_mask(curve, sc.grid)
    free = ICEEditingSession(mrml.scene, seg, sid, sc.volume_node, rule_model("everywhere", 8.0))
    record = free.edit_from_curve(curve)
    assert record.beyond_two_sigma > 0 and record.changes["added_far"] + record.changes["removed_far"] > 0
    free.undo()
    strict = ICEEditingSession(
        mrml.scene, seg, sid, sc.volume_node, rule_model("everywhere", 8.0), strict_threshold=0.8
    )
    before = strict.current_mask()
    record = strict.edit_from_curve(curve)
    u = ice.encode(scribble, case.spacing, 8.0)
    assert not np.any((strict.current_mask() != before) & (u < 0.8))
    assert record.beyond_two_sigma == 0 and BEYOND_TWO_SIGMA < 0.8
    strict.undo()
    # adapted sigma: a short scribble on y_init's boundary gets a small sigma, within [2 voxels, model's]
    short = np.zeros_like(scribble)
    edge = np.argwhere(before & ~np.roll(before, 1, axis=2))[0]
    short[tuple(edge)] = True
    sigma = adapted_sigma_mm(short, before, case.spacing, 8.0)
    assert sigma == pytest.approx(2 * max(case.spacing))
    long_sigma = adapted_sigma_mm(scribble, before, case.spacing, 30.0)
    assert 2 * max(case.spacing) < long_sigma <= 30.0
    adapted = ICEEditingSession(
        mrml.scene, seg, sid, sc.volume_node, rule_model("grow", 30.0), adapt_sigma=True
    )
    record = adapted.edit_from_curve(curve)
    assert record.sigma_mm == pytest.approx(long_sigma)


def test_errors_name_what_was_wrong(mrml, case):
    sc, seg, sid = _loaded(mrml.scene, case)
    with pytest.raises(ValueError, match="'nope' is not in"):
        ICEEditingSession(mrml.scene, seg, "nope", sc.volume_node, rule_model("grow"))
    with pytest.raises(ValueError, match="strict_threshold"):
        ICEEditingSession(mrml.scene, seg, sid, sc.volume_node, rule_model("grow"), strict_threshold=1.5)
    session = ICEEditingSession(mrml.scene, seg, sid, sc.volume_node, rule_model("grow"))
    with pytest.raises(ValueError, match="outside the ICE volume"):
        session.edit_from_points([[1000.0, 1000.0, 1000.0], [1001.0, 1000.0, 1000.0]])
    with pytest.raises(ValueError, match="no voxel"):
        session.edit_from_mask(np.zeros(case.grid.shape, bool))
    with pytest.raises(ValueError, match="no ICE editing model .no-such-model. is registered"):
        _ = ICEEditingSession(
            mrml.scene, seg, sid, sc.volume_node, "no-such-model", root=mrml_io.__file__
        ).model


def test_the_write_path_adds_no_change_of_its_own(mrml, case, registry):
    """Without masking and without strict local, what reaches the segment is exactly the model's y_hat: the
    far-region change is the model's own (its far error), never more, never less. Models: the tiny one by
    name (it adds voxels far away) and a rule that also removes far voxels."""
    sc, seg, sid = _loaded(mrml.scene, case)
    removed_far = 0
    for model in ("ice-editing-64", rule_model("everywhere", 8.0)):
        session = ICEEditingSession(mrml.scene, seg, sid, sc.volume_node, model, root=registry, device="cpu")
        for frame in sc.frames_with_contours()[:3]:
            before = session.current_mask()
            curve = sc.cas_curves[frame][0]
            record = session.edit_from_curve(curve)
            scribble = mrml_io.markups_to_mask(curve, sc.grid)
            expected = session.model.edit(case.image, before, scribble, case.spacing).mask
            assert np.array_equal(session.current_mask(), expected)
            assert record.changes == record.proposed
            removed_far += record.changes["removed_far"]
    assert removed_far > 0


def test_models_by_name_are_listed_and_checked(mrml, case, registry, tmp_path):
    assert ice_scene.available_models("editing", registry) == ["ice-editing-64"]
    assert ice_scene.available_models("segmentation", tmp_path) == ["ice-segmentation-64"]  # default first
    assert ice_scene.model_installed("ice-editing-64", registry)
    assert not ice_scene.model_installed("ice-editing-64", tmp_path)
    with pytest.raises(ValueError, match="kind"):
        ice_scene.available_models("other")
    # a corrupt model file is refused before loading, naming it
    import shutil

    from losslab.models import ModelChecksumError

    copy = tmp_path / "registry"
    shutil.copytree(registry, copy)
    (copy / "ice-segmentation-64" / "model.pt").write_bytes(b"corrupt")
    sc = ice_scene.load_case(mrml.scene, case, cas_curves=False, frame_volumes=False)
    with pytest.raises(ModelChecksumError, match="model.pt"):
        ice_scene.initial_segmentation(mrml.scene, sc, root=copy, device="cpu")


def test_the_history_follows_an_undo_made_outside_the_session(mrml, case):
    """Ctrl+Z / Ctrl+Y in the Segment Editor (here: the writer's logic called directly, as the widget does)
    moves the history's states; a manual change made elsewhere leaves them; a new edit then discards the
    undone branch, and the session's own undo still restores bit for bit."""
    sc, seg, sid = _loaded(mrml.scene, case)
    session = ICEEditingSession(mrml.scene, seg, sid, sc.volume_node, rule_model("toggle"))
    frames = sc.frames_with_contours()
    states = [session.current_mask()]
    for frame in frames[:3]:
        session.edit_from_curve(sc.cas_curves[frame][0])
        states.append(session.current_mask())
    session.writer.logic.Undo()  # not through the session
    session.writer.logic.Undo()
    assert [r.state for r in session.records] == ["applied", "undone", "undone"]
    rows = mrml_io.table_rows(session.history_table)
    assert [r[HISTORY_COLUMNS.index("State")] for r in rows] == ["applied", "undone", "undone"]
    assert session.can_redo and np.array_equal(session.current_mask(), states[1])
    session.writer.logic.Redo()
    assert [r.state for r in session.records] == ["applied", "applied", "undone"]
    # a paint made elsewhere (its own undo step in the editor): the states stay
    paint = np.zeros(case.grid.shape, bool)
    paint[1:3, 1:3, 1:3] = True
    session.writer.save_state()
    session.writer.modify(sid, paint, sc.grid, "add")
    assert [r.state for r in session.records] == ["applied", "applied", "undone"]
    session.writer.logic.Undo()  # the paint
    session.writer.logic.Undo()  # edit 2
    assert [r.state for r in session.records] == ["applied", "undone", "undone"]
    session.edit_from_curve(sc.cas_curves[frames[3]][0])
    assert [r.state for r in session.records] == ["applied", "discarded", "discarded", "applied"]
    session.undo()
    assert np.array_equal(session.current_mask(), states[1])
    session.close()
    session.writer.logic.Undo()
    assert session.records[0].state == "applied"  # no longer followed


def test_masking_settings_copied_from_the_segment_editor(mrml, case):
    """The module's edits honour the Segment Editor module's masking without taking over its node."""
    sc, seg, sid = _loaded(mrml.scene, case)
    gui = mrml.scene.AddNewNodeByClass("vtkMRMLSegmentEditorNode")
    gui.SetMaskMode(seg.EditAllowedInsideSingleSegment)
    gui.SetMaskSegmentID("area")
    gui.SetOverwriteMode(gui.OverwriteVisibleSegments)
    gui.SetSourceVolumeIntensityMask(True)
    gui.SetSourceVolumeIntensityMaskRange(0.2, 0.9)
    session = ICEEditingSession(mrml.scene, seg, sid, sc.volume_node, rule_model("grow"))
    session.writer.copy_masking_from(gui)
    own = session.editor_node
    assert own is not gui and gui.GetSegmentationNode() is None  # the GUI's node is not taken over
    assert (own.GetMaskMode(), own.GetMaskSegmentID(), own.GetOverwriteMode()) == (
        seg.EditAllowedInsideSingleSegment,
        "area",
        gui.OverwriteVisibleSegments,
    )
    assert own.GetSourceVolumeIntensityMask() and tuple(own.GetSourceVolumeIntensityMaskRange()) == (0.2, 0.9)


def test_an_edit_that_adds_and_removes_notifies_the_views_once(mrml, case):
    """The add and the remove of one edit are one batch of the segmentation node's events (StartModify /
    EndModify): views redraw and 3D surfaces are rebuilt once per edit, not once per write."""
    from collections import Counter

    import vtk
    from slicer import vtkSegmentation

    sc, seg, sid = _loaded(mrml.scene, case)
    session = ICEEditingSession(mrml.scene, seg, sid, sc.volume_node, rule_model("toggle", 8.0), cas=sc)
    events = []
    ids = [
        vtk.vtkCommand.ModifiedEvent,
        vtkSegmentation.SourceRepresentationModified,
        vtkSegmentation.RepresentationModified,
        vtkSegmentation.SegmentModified,
    ]
    tags = [seg.AddObserver(i, lambda obj, ev, i=i: events.append(i)) for i in ids]
    try:
        record = session.edit_from_curve(sc.cas_curves[sc.frames_with_contours()[0]][0])
    finally:
        for t in tags:
            seg.RemoveObserver(t)
    assert record.changes["added_near"] > 0 and record.changes["removed_near"] > 0  # both writes happened
    counts = Counter(int(e) for e in events)
    source = int(vtkSegmentation.SourceRepresentationModified)
    assert counts[source] == 1, f"the segment's labelmap was announced modified {counts[source]} times"
    assert max(counts.values()) == 1, dict(counts)
