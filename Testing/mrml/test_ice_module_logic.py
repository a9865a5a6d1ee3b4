"""ICEEditingLib.module_logic.ICEEditingModuleLogic (what the ICEEditing module's buttons do) on real MRML:
the sample, segment by model name, frames in a slice view, an edit from a curve, undo, redo, scene close.

The parameter object holds exactly the fields of the module's ICEEditingParameterNode (the module file is
loaded with the Qt stand-ins of module_stand_ins.py only to read that class).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("slicer", reason="slicer-core is not installed (pip install slicer-core)")
pytest.importorskip("torch")

from ice_helpers import tiny_registry  # noqa: E402
from module_stand_ins import FakeParameterNode, load_module  # noqa: E402

from ICEEditingLib.module_logic import ICEEditingModuleLogic  # noqa: E402
from LossLabLib import mrml_io  # noqa: E402

FOLDER = Path(__file__).resolve().parents[2] / "ICEEditing"


@pytest.fixture
def module_file(monkeypatch):
    return load_module(monkeypatch, "ICEEditing", FOLDER)


def test_module_logic_runs_a_session_on_the_sample(module_file, mrml, tmp_path_factory, monkeypatch):
    monkeypatch.setenv("LOSSLAB_MODELS_DIR", str(tiny_registry(tmp_path_factory)))
    scene = mrml.scene
    logic = ICEEditingModuleLogic(scene)
    red = scene.AddNewNodeByClass("vtkMRMLSliceNode")
    red.SetDimensions(256, 256, 1)
    composite = scene.AddNewNodeByClass("vtkMRMLSliceCompositeNode")
    logic.redSliceNodes = lambda: (red, composite)  # Slicer: the layout manager's red view
    p = FakeParameterNode(module_file.ICEEditingParameterNode, device="cpu")
    assert logic.modelNames("segmentModel")[0] == "ice-segmentation-64"
    assert logic.modelNames("editModel") == ["ice-editing-64"]
    assert logic.state(p) == {"frames": 0, "canUndo": False, "canRedo": False}
    assert not any(logic.buttonStates(p).values())
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
    states = logic.buttonStates(p)
    assert not states.pop("redoButton") and all(states.values()), states
    assert logic.undo(p) == "Undone: edit 1"
    assert np.array_equal(mrml_io.segment_mask(p.segmentation, p.segmentId, logic.sceneCase.grid), before)
    assert logic.redo(p) == "Redone: edit 1"
    assert np.array_equal(mrml_io.segment_mask(p.segmentation, p.segmentId, logic.sceneCase.grid), after)
    p.caseFolder = Path(".")
    with pytest.raises(ValueError, match="Choose a case folder"):
        logic.loadCase(p)
    logic.sceneClosed()  # the Widget calls it when the scene closes
    assert logic.sceneCase is None and logic.state(p)["frames"] == 0 and not logic.state(p)["canUndo"]
