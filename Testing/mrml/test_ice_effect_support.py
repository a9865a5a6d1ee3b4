"""What the "ICE Edit" effect calls, on real MRML: a stroke collected from mouse events in a frame-aligned
view, written through a CallbackWriter made of scriptedEffect-like calls (saveStateForUndo,
modifySelectedSegmentByLabelmap, the editor's undo / redo), one session per segment across strokes."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("slicer", reason="slicer-core is not installed (pip install slicer-core)")
pytest.importorskip("torch")

import slicer  # noqa: E402
from ice_helpers import bitten, rule_model, small_case  # noqa: E402

from ICEEditingLib import effect  # noqa: E402
from ICEEditingLib import scene as ice_scene  # noqa: E402
from ICEEditingLib.scribble import slice_xy_to_ras, stroke_to_voxels  # noqa: E402
from losslab import ice  # noqa: E402
from LossLabLib import mrml_io  # noqa: E402


class FakeScriptedEffect:
    """The calls of qSlicerSegmentEditorScriptedEffect an effect uses to write, on a real editor logic (the
    desktop ones do the same on the Segment Editor widget's logic and history)."""

    def __init__(self, scene, segmentation_node, segment_id, volume_node):
        self.logic = slicer.vtkSlicerSegmentEditorLogic()
        self.logic.SetMRMLScene(scene)
        self.history = slicer.vtkSegmentationHistory()
        self.logic.SetSegmentationHistory(self.history)
        self.editor = scene.AddNewNodeByClass("vtkMRMLSegmentEditorNode")
        self.logic.SetSegmentEditorNode(self.editor)
        self.logic.SetSegmentationNode(segmentation_node)
        self.logic.SetSourceVolumeNode(volume_node)
        self.segmentation_node, self.segment_id = segmentation_node, segment_id
        self.calls = []

    def saveStateForUndo(self):  # noqa: N802 (Slicer's name)
        self.calls.append("save")
        self.logic.SaveStateForUndo()

    def modifySelectedSegmentByLabelmap(self, image, mode, extent):  # noqa: N802
        self.calls.append(mode)
        enum = {"add": self.logic.ModificationModeAdd, "remove": self.logic.ModificationModeRemove}[mode]
        self.logic.ModifySegmentByLabelmap(
            self.segmentation_node, self.segment_id, image, enum, extent, False, False
        )

    def writer(self):
        return effect.CallbackWriter(
            save_state=self.saveStateForUndo,
            modify_selected=self.modifySelectedSegmentByLabelmap,
            undo=self.logic.Undo,
            redo=self.logic.Redo,
            can_undo=self.history.IsRestorePreviousStateAvailable,
            can_redo=self.history.IsRestoreNextStateAvailable,
            set_undo_levels=self.logic.SetMaximumNumberOfUndoStates,
            segmentation_node=self.segmentation_node,
            editor_node=self.editor,
            source_volume_node=self.logic.GetSourceVolumeNode(),
        )


def test_a_stroke_in_a_frame_view_edits_through_the_effects_calls(mrml):
    case = small_case(seed=2)
    scene = mrml.scene
    sc = ice_scene.load_case(scene, case)
    seg, sid = ice_scene.initial_from_mask(scene, sc, bitten(case.label, case.spacing))
    mrml_io.set_segment_from_mask(seg, "other", np.zeros(case.grid.shape, bool), sc.grid)
    fake = FakeScriptedEffect(scene, seg, sid, sc.volume_node)
    cache = effect.SessionCache()
    model = rule_model("toggle", 8.0)
    f = sc.frames_with_contours()[4]
    slice_node = scene.AddNewNodeByClass("vtkMRMLSliceNode")
    slice_node.SetDimensions(300, 300, 1)
    ice_scene.align_slice_node(slice_node, sc, f)
    # mouse events along the frame's CAS contour: press, moves, release, each through xyToRas
    line = max(case.frames[f].contours, key=len)
    ras_points = ice_scene.frame_points_ras(case, f, line[:: max(1, len(line) // 30)])
    xy_to_ras = np.array([[slice_node.GetXYToRAS().GetElement(r, c) for c in range(4)] for r in range(4)])
    xys = [np.round((np.linalg.inv(xy_to_ras) @ np.r_[p, 1])[:2]) for p in ras_points]
    stroke = effect.StrokeCollector()
    stroke.move(slice_xy_to_ras(slice_node, xys[0])[0])  # a move before a press is ignored
    assert not stroke.active and stroke.points == []
    stroke.press(slice_xy_to_ras(slice_node, xys[0])[0], view="Red")
    for xy in xys[1:-1]:
        stroke.move(slice_xy_to_ras(slice_node, xy)[0])
    points = stroke.finish(slice_xy_to_ras(slice_node, xys[-1])[0])
    assert len(points) >= len(xys) - 2 and not stroke.active
    before = mrml_io.segment_mask(seg, sid, sc.grid)
    session = cache.get(scene, seg, sid, sc.volume_node, model, writer=fake.writer(), undo_levels=12)
    record = effect.apply_stroke(session, points, strict_threshold=0.9)
    assert record.frame == f  # found from the frame volume whose plane holds the stroke
    assert fake.calls[0] == "save" and set(fake.calls[1:]) <= {"add", "remove"}
    u = ice.encode(stroke_to_voxels(points, sc.grid), case.spacing, 8.0)
    after = mrml_io.segment_mask(seg, sid, sc.grid)
    expected = np.where(u >= 0.9, before ^ (u > 0.5), before)
    assert np.array_equal(after, expected)
    assert session.strict_threshold is None  # the stroke's option did not stick to the session
    assert fake.history.GetMaximumNumberOfStates() == 13
    # the next stroke on the same segment reuses the session: one history, undo through the effect's calls
    assert cache.get(scene, seg, sid, sc.volume_node, model, writer=fake.writer()) is session
    effect.apply_stroke(session, points[: len(points) // 2], frame=f)
    assert len(session.records) == 2
    session.undo()
    session.undo()
    assert np.array_equal(mrml_io.segment_mask(seg, sid, sc.grid), before)
    # masking of the effect's editor node: an editable area inside "other" (empty) protects everything
    fake.editor.SetMaskMode(seg.EditAllowedInsideSingleSegment)
    fake.editor.SetMaskSegmentID("other")
    record = effect.apply_stroke(session, points)
    assert record.changed == 0 and record.state == "no change"
    assert np.array_equal(mrml_io.segment_mask(seg, sid, sc.grid), before)
    assert effect.frame_of_stroke(scene, points + 50.0) is None
    # after the scene is closed, a new segmentation may reuse the old node's ID: it gets a new session
    old_id = seg.GetID()
    scene.Clear(0)
    sc2 = ice_scene.load_case(scene, case)  # as before: the same node IDs
    seg2, _ = ice_scene.initial_from_mask(scene, sc2, case.label)
    assert seg2.GetID() == old_id and cache.has(seg2, sid, sc2.volume_node, model)
    fresh = cache.get(scene, seg2, sid, sc2.volume_node, model, writer=fake.writer())
    assert fresh is not session and fresh.segmentation_node is seg2
    cache.clear()
    assert not cache.has(seg, sid, sc.volume_node, model)
