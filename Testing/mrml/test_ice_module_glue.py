"""The glue of ICEEditing/ICEEditing.py: its Logic against the real ICEEditingLib on real MRML (sample,
segment by model name, frames in the red view, an edit from a curve, undo, redo), and its Widget against a
strict fake Logic (each button calls the Logic method it is bound to, and shows what it returns)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("slicer", reason="slicer-core is not installed (pip install slicer-core)")
pytest.importorskip("torch")

from ice_helpers import tiny_registry  # noqa: E402
from module_stand_ins import FakeParameterNode, StrictFakeLogic, load_module, patch_slicer_gui  # noqa: E402

from LossLabLib import mrml_io  # noqa: E402

FOLDER = Path(__file__).resolve().parents[2] / "ICEEditing"
UI = FOLDER / "Resources" / "UI" / "ICEEditing.ui"


@pytest.fixture
def module_file(monkeypatch):
    return load_module(monkeypatch, "ICEEditing", FOLDER)


def test_logic_glue_runs_a_session_on_the_sample(module_file, mrml, tmp_path_factory, monkeypatch):
    monkeypatch.setenv("LOSSLAB_MODELS_DIR", str(tiny_registry(tmp_path_factory)))
    scene = mrml.scene
    logic = module_file.ICEEditingLogic(scene)
    logic.ensureDependencies = lambda: None  # the packages are here; Slicer installs them on first use
    red = scene.AddNewNodeByClass("vtkMRMLSliceNode")
    red.SetDimensions(256, 256, 1)
    composite = scene.AddNewNodeByClass("vtkMRMLSliceCompositeNode")
    logic.redSliceNodes = lambda: (red, composite)  # Slicer: the layout manager's red view
    p = FakeParameterNode(module_file.ICEEditingParameterNode, device="cpu")
    assert logic.modelNames("segmentModel")[0] == "ice-segmentation-64"
    assert logic.modelNames("editModel") == ["ice-editing-64"]
    assert logic.state(p) == {"frames": 0, "canUndo": False, "canRedo": False}
    with pytest.raises(ValueError, match="Load an ICE case first"):
        logic.stepFrame(p, 1)
    assert logic.loadSample(p) == "Loaded 28 frames"
    assert p.inputVolume is logic.sceneCase.volume_node and p.frame == 0
    assert logic.segment(p).startswith("Segmented with ice-segmentation-64")
    assert p.segmentation is not None and p.segmentId in mrml_io.segment_ids(p.segmentation)
    # y_init: the case's own label, so that the edit has a boundary to move
    mrml_io.set_segment_from_mask(
        p.segmentation, p.segmentId, logic.sceneCase.case.label, logic.sceneCase.grid
    )
    frame = logic.sceneCase.frames_with_contours()[3]
    p.frame = frame - 1
    assert logic.stepFrame(p, 1) == f"Frame {frame} of 28"
    assert composite.GetBackgroundVolumeID() == logic.sceneCase.frame_volumes[frame].GetID()
    p.scribbleCurve = logic.sceneCase.cas_curves[frame][0]
    p.strictLocal, p.strictThreshold, p.undoLevels = True, 0.5, 15
    before = mrml_io.segment_mask(p.segmentation, p.segmentId, logic.sceneCase.grid)
    summary = logic.applyCurve(p)
    assert summary.startswith(f"frame {frame}:") and "0 voxels changed beyond 2 sigma" in summary
    session = logic.session(p)
    assert session.strict_threshold == 0.5 and session.undo_levels == 15 and session.cas is not None
    assert p.historyTable is session.history_table and p.historyTable.GetNumberOfRows() == 1
    after = mrml_io.segment_mask(p.segmentation, p.segmentId, logic.sceneCase.grid)
    assert not np.array_equal(before, after)  # the tiny model changes the segment near the scribble
    assert logic.state(p)["canUndo"]
    assert logic.undo(p) == "Undone: edit 1"
    assert np.array_equal(mrml_io.segment_mask(p.segmentation, p.segmentId, logic.sceneCase.grid), before)
    assert logic.redo(p) == "Redone: edit 1"
    assert np.array_equal(mrml_io.segment_mask(p.segmentation, p.segmentId, logic.sceneCase.grid), after)
    p.caseFolder = Path(".")
    with pytest.raises(ValueError, match="Choose a case folder"):
        logic.loadCase(p)
    logic.sceneClosed()  # the Widget calls it when the scene closes
    assert logic.sceneCase is None and logic.state(p)["frames"] == 0 and not logic.state(p)["canUndo"]


class FakeICEEditingLogic(StrictFakeLogic):
    """Strict: only these methods exist; each returns a marker the Widget must show."""

    def getParameterNode(self):
        self._record("getParameterNode")
        return self.parameters

    def modelNames(self, field):
        self._record("modelNames", field)
        return [f"{field}-model"]

    def sceneClosed(self):
        self._record("sceneClosed")

    def state(self, p):
        self._record("state")
        return {"frames": 3, "canUndo": True, "canRedo": False}

    def loadSample(self, p, progress=None):
        self._record("loadSample")
        return "sample loaded"

    def loadCase(self, p, progress=None):
        self._record("loadCase")
        return "case loaded"

    def segment(self, p, progress=None):
        self._record("segment")
        progress(0.5, "half way")
        return "segmented"

    def stepFrame(self, p, step):
        self._record("stepFrame", step)
        return f"frame step {step}"

    def applyCurve(self, p, progress=None):
        self._record("applyCurve")
        return "edited"

    def undo(self, p):
        self._record("undo")
        return "undone"

    def redo(self, p):
        self._record("redo")
        return "redone"


def test_widget_buttons_call_their_logic_methods(module_file, mrml, monkeypatch):
    patch_slicer_gui(monkeypatch, UI)
    fake = FakeICEEditingLogic()
    fake.parameters = FakeParameterNode(module_file.ICEEditingParameterNode, inputVolume=object())
    monkeypatch.setattr(module_file.ICEEditingWidget, "logicFactory", lambda: fake)
    widget = module_file.ICEEditingWidget()
    widget.setup()
    ui = widget.ui
    assert ui.segmentModelComboBox.called("addItems") == [((["segmentModel-model"],), {})]
    assert ui.editModelComboBox.called("addItems") == [((["editModel-model"],), {})]
    assert ui.undoButton.enabled is True and ui.redoButton.enabled is False and ui.nextFrameButton.enabled
    for button, method, shown in (
        ("loadSampleButton", "loadSample", "sample loaded"),
        ("loadCaseButton", "loadCase", "case loaded"),
        ("segmentButton", "segment", "segmented"),
        ("previousFrameButton", "stepFrame", "frame step -1"),
        ("nextFrameButton", "stepFrame", "frame step 1"),
        ("showFrameButton", "stepFrame", "frame step 0"),
        ("applyCurveButton", "applyCurve", "edited"),
        ("undoButton", "undo", "undone"),
        ("redoButton", "redo", "redone"),
    ):
        fake.calls.clear()
        getattr(ui, button).emit("clicked(bool)")
        assert method in fake.names(), f"{button} did not call {method}: {fake.names()}"
        assert ui.statusLabel.text == shown
    assert ui.progressBar.value == 50  # the segment progress reached the bar
    ui.editModelComboBox.emit("currentTextChanged(QString)", "ice-editing-other")
    assert fake.parameters.editModel == "ice-editing-other"
    assert ui.historyTableView.called("setMRMLTableNode")
    fake.calls.clear()
    widget.onSceneEndClose(None, None)
    assert fake.names()[0] == "sceneClosed"
