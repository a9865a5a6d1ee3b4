"""The effect file itself (ICEEditing/SegmentEditorICEEditLib/SegmentEditorEffect.py) driven headless: Qt and
Slicer's effect base are stand-ins, the scriptedEffect's writes go to a real vtkSlicerSegmentEditorLogic.
Mouse press / moves / release in a frame-aligned slice view -> one edit of the selected segment, through
saveStateForUndo and modifySelectedSegmentByLabelmap, undoable through the editor's undo."""

from __future__ import annotations

import contextlib
import importlib.util
import sys
import types
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("slicer", reason="slicer-core is not installed (pip install slicer-core)")
pytest.importorskip("torch")

import slicer  # noqa: E402
import slicer.util  # noqa: E402
import vtk  # noqa: E402
from ice_helpers import bitten, small_case, tiny_registry  # noqa: E402
from module_stand_ins import FakeWidget  # noqa: E402

from ICEEditingLib import scene as ice_scene  # noqa: E402
from ICEEditingLib.scribble import slice_xy_to_ras  # noqa: E402
from LossLabLib import mrml_io  # noqa: E402

EFFECT = (
    Path(__file__).resolve().parents[2] / "ICEEditing" / "SegmentEditorICEEditLib" / "SegmentEditorEffect.py"
)


class _EffectBase:
    """AbstractScriptedSegmentEditorEffect: keeps the scriptedEffect; xyToRas through the view's slice node."""

    def __init__(self, scriptedEffect):  # noqa: N803 (Slicer's name)
        self.scriptedEffect = scriptedEffect

    def xyToRas(self, xy, viewWidget):  # noqa: N802, N803
        return slice_xy_to_ras(viewWidget.sliceNode, xy)[0]


class FakeScriptedEffect:
    """qSlicerSegmentEditorScriptedEffect on a real editor logic: parameters, undo state, modify selected."""

    def __init__(self, scene, segmentation, segment_id, volume, parameters):
        self.logic = slicer.vtkSlicerSegmentEditorLogic()
        self.logic.SetMRMLScene(scene)
        self.history = slicer.vtkSegmentationHistory()
        self.logic.SetSegmentationHistory(self.history)
        self.node = scene.AddNewNodeByClass("vtkMRMLSegmentEditorNode")
        self.logic.SetSegmentEditorNode(self.node)
        self.logic.SetSegmentationNode(segmentation)
        self.logic.SetSourceVolumeNode(volume)
        self.node.SetSelectedSegmentID(segment_id)
        self.segmentation, self.params, self.calls = segmentation, dict(parameters), []

    def parameterSetNode(self):  # noqa: N802
        return self.node

    def parameter(self, name):
        return str(self.params[name])

    def integerParameter(self, name):  # noqa: N802
        return int(self.params[name])

    def doubleParameter(self, name):  # noqa: N802
        return float(self.params[name])

    def saveStateForUndo(self):  # noqa: N802
        self.calls.append("saveStateForUndo")
        self.logic.SaveStateForUndo()

    def modifySelectedSegmentByLabelmap(self, image, mode):  # noqa: N802
        self.calls.append(("modify", mode))
        self.logic.ModifySegmentByLabelmap(
            self.segmentation, self.node.GetSelectedSegmentID(), image, mode, False, False
        )


@pytest.fixture
def effect_module(monkeypatch):
    monkeypatch.setitem(sys.modules, "qt", types.ModuleType("qt"))
    effects = types.ModuleType("SegmentEditorEffects")
    effects.AbstractScriptedSegmentEditorEffect = _EffectBase
    monkeypatch.setitem(sys.modules, "SegmentEditorEffects", effects)
    spec = importlib.util.spec_from_file_location("ICEEditEffectUnderTest", EFFECT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    monkeypatch.setattr(module, "_SESSIONS", None)
    return module


def test_a_mouse_stroke_edits_the_selected_segment(effect_module, mrml, monkeypatch, tmp_path_factory):
    monkeypatch.setenv("LOSSLAB_MODELS_DIR", str(tiny_registry(tmp_path_factory)))
    case = small_case(seed=5)
    scene = mrml.scene
    sc = ice_scene.load_case(scene, case)
    seg, sid = ice_scene.initial_from_mask(scene, sc, bitten(case.label, case.spacing))
    fake = FakeScriptedEffect(scene, seg, sid, sc.volume_node, effect_module.PARAMETERS)
    fake.params["ICEEdit.UndoLevels"] = 7
    logic_calls, status = [], []
    editor = types.SimpleNamespace(undo=fake.logic.Undo, redo=fake.logic.Redo, maximumNumberOfUndoStates=0)
    monkeypatch.setattr(
        slicer,
        "qSlicerSegmentEditorAbstractEffect",
        types.SimpleNamespace(
            ModificationModeAdd=fake.logic.ModificationModeAdd,
            ModificationModeRemove=fake.logic.ModificationModeRemove,
            ModificationModeSet=fake.logic.ModificationModeSet,
        ),
        raising=False,
    )
    slicer.modules.segmenteditor = types.SimpleNamespace(
        widgetRepresentation=lambda: types.SimpleNamespace(self=lambda: types.SimpleNamespace(editor=editor))
    )
    ice_logic = types.SimpleNamespace(ensureDependencies=lambda: logic_calls.append("ensureDependencies"))
    monkeypatch.setattr(
        slicer.util, "getModuleLogic", lambda name: ice_logic if name == "ICEEditing" else None
    )
    monkeypatch.setattr(slicer.util, "showStatusMessage", lambda message, *a: status.append(message))

    @contextlib.contextmanager
    def reraise(message="", waitCursor=False):  # noqa: N803
        yield

    monkeypatch.setattr(slicer.util, "tryWithErrorDisplay", reraise)
    effect = effect_module.SegmentEditorEffect(
        types.SimpleNamespace(name="", perSegment=False, requireSegments=False)
    )
    effect.scriptedEffect = fake
    effect.statusLabel = FakeWidget("statusLabel")
    # the red view shows a frame; the stroke follows its CAS contour
    f = sc.frames_with_contours()[2]
    view = types.SimpleNamespace(
        sliceNode=scene.AddNewNodeByClass("vtkMRMLSliceNode"), className=lambda: "qMRMLSliceWidget"
    )
    view.sliceNode.SetDimensions(300, 300, 1)
    ice_scene.align_slice_node(view.sliceNode, sc, f)
    m = view.sliceNode.GetXYToRAS()
    xy_to_ras = np.array([[m.GetElement(r, c) for c in range(4)] for r in range(4)])
    line = max(case.frames[f].contours, key=len)
    points = ice_scene.frame_points_ras(case, f, line[:: max(1, len(line) // 25)])
    xys = [tuple(np.round((np.linalg.inv(xy_to_ras) @ np.r_[p, 1])[:2]).astype(int)) for p in points]
    interactor = types.SimpleNamespace(position=xys[0])
    interactor.GetEventPosition = lambda: interactor.position
    three_d = types.SimpleNamespace(className=lambda: "qMRMLThreeDWidget")
    assert effect.processInteractionEvents(interactor, vtk.vtkCommand.LeftButtonPressEvent, three_d) is False
    before = mrml_io.segment_mask(seg, sid, sc.grid)
    events = [vtk.vtkCommand.LeftButtonPressEvent] + [vtk.vtkCommand.MouseMoveEvent] * (len(xys) - 2)
    for xy, event in zip(xys, events + [vtk.vtkCommand.LeftButtonReleaseEvent]):
        interactor.position = xy
        assert effect.processInteractionEvents(interactor, event, view) is True
    assert (
        effect.processInteractionEvents(interactor, vtk.vtkCommand.MouseMoveEvent, view) is False
    )  # stroke over
    after = mrml_io.segment_mask(seg, sid, sc.grid)
    assert logic_calls == ["ensureDependencies"] and fake.calls[0] == "saveStateForUndo"
    assert not np.array_equal(before, after)  # the (tiny) model edited the selected segment
    session = next(iter(effect_module._SESSIONS._sessions.values()))
    assert session.records[0].frame == f and effect.statusLabel.text == session.records[0].summary()
    assert editor.maximumNumberOfUndoStates == 8  # the undo-levels option, + 1 state
    assert any("Loading editing model ice-editing-64" in s for s in status)
    session.undo()  # through the editor's undo
    assert np.array_equal(mrml_io.segment_mask(seg, sid, sc.grid), before)
