"""The SegmentationMetrics module file (LossLab/SegmentationMetrics.py), headless with the Qt stand-ins of
module_stand_ins.py.

- The Widget is binding only: it takes its Logic from ``logicFactory`` (a strict fake here), and each
  handler calls that Logic (``run`` on Apply, with the widget's progress callback) and shows what it
  returns; a handler that computed by itself, or called another Logic method, fails these tests.
- The module's Logic runs for real on real MRML (the editing example), and its ``ensureDependencies``
  hands Slicer's installers to ``LossLabLib.dependencies`` (no prompt while tests run).
"""

from __future__ import annotations

import types

import pytest

pytest.importorskip("slicer", reason="slicer-core is not installed (pip install slicer-core)")

import slicer  # noqa: E402
from module_stand_ins import (  # noqa: E402
    MODULE_DIR,
    FakeParameterNode,
    StrictFakeLogic,
    load_module,
    patch_slicer_gui,
)

import LossLabLib  # noqa: E402
from LossLabLib import dependencies  # noqa: E402

UI = MODULE_DIR / "Resources" / "UI" / "SegmentationMetrics.ui"


class FakeMetricsLogic(StrictFakeLogic):
    """The Logic methods the Widget may call, and nothing else."""

    def __init__(self, parameter_node, result):
        super().__init__()
        self.parameter_node, self.result = parameter_node, result

    def getParameterNode(self):  # noqa: N802
        self._record("getParameterNode")
        return self.parameter_node

    def run(self, parameterNode, progress=None):  # noqa: N803
        self._record("run", parameterNode, progress=progress)
        progress(0.5, "half way")
        return self.result


@pytest.fixture
def module(monkeypatch, mrml):
    mod = load_module(monkeypatch, "SegmentationMetrics")
    mod.widgets = []
    yield mod
    for widget in mod.widgets:  # before the scene closes: no scene observer may outlive the test
        widget.removeObservers()


def _widget(module, monkeypatch, result):
    gui = patch_slicer_gui(monkeypatch, UI)
    p = FakeParameterNode(module.SegmentationMetricsParameterNode)
    logic = FakeMetricsLogic(p, result)
    monkeypatch.setattr(module.SegmentationMetricsWidget, "logicFactory", lambda: logic)
    widget = module.SegmentationMetricsWidget()
    module.widgets.append(widget)
    widget.setup()
    return widget, logic, p, gui


def test_widget_setup_binds_the_ui_and_the_injected_logic(module, monkeypatch):
    widget, logic, p, gui = _widget(module, monkeypatch, None)
    assert widget.logic is logic and logic.names() == ["getParameterNode"]
    assert gui.called("loadUI") == [((str(UI),), {})]
    assert p.guiConnections == [widget.ui]  # the parameter node is bound to the .ui
    ui = widget.ui
    assert ui.applyButton.enabled is False and "Select" in ui.applyButton.toolTip
    # the segment selectors write their segment IDs into the parameter node
    for role in module.SEGMENT_ROLES:
        getattr(ui, f"{role}SegmentSelector").emit("currentSegmentChanged(QString)", f"{role}-id")
        assert getattr(p, f"{role}SegmentId") == f"{role}-id"
    # Apply becomes possible when the parameter node has both segments
    p.referenceSegmentation = p.comparedSegmentation = slicer.vtkMRMLSegmentationNode()
    p.Modified()
    assert ui.applyButton.enabled is True
    assert logic.names() == ["getParameterNode"]  # binding only: no Logic work yet
    # leaving the module unbinds; the scene closing too
    widget.exit()
    assert p.guiConnections == [None]


@pytest.mark.parametrize("with_map", [True, False])
def test_apply_calls_the_injected_logic_and_shows_its_result(module, monkeypatch, with_map):
    result = types.SimpleNamespace(
        table_node=slicer.vtkMRMLTableNode(),
        distance_map_node=slicer.vtkMRMLScalarVolumeNode() if with_map else None,
    )
    widget, logic, p, gui = _widget(module, monkeypatch, result)
    widget.ui.applyButton.emit("clicked(bool)")
    assert logic.calls[1:] == [("run", (p,), {"progress": widget._onProgress})]
    assert gui.called("tryWithErrorDisplay")[0][1] == {"waitCursor": True}
    assert widget.ui.resultsTableView.called("setMRMLTableNode") == [((result.table_node,), {})]
    expected = [((), {"foreground": result.distance_map_node, "foregroundOpacity": 1.0})] if with_map else []
    assert gui.called("setSliceViewerLayers") == expected
    # the Logic's progress reaches the bar and the status line
    assert widget.ui.progressBar.value == 50 and widget.ui.statusLabel.text == "half way"
    assert gui.called("processEvents")


def test_module_logic_runs_the_lib_on_real_mrml(module, monkeypatch, scene):
    gui = patch_slicer_gui(monkeypatch, UI)
    calls = []
    monkeypatch.setattr(dependencies, "ensure_dependencies", lambda **kw: calls.append(kw))
    example = LossLabLib.create_editing_example(scene)
    logic = module.SegmentationMetricsLogic()
    p = FakeParameterNode(
        module.SegmentationMetricsParameterNode,
        referenceSegmentation=example["segmentation"],
        comparedSegmentation=example["segmentation"],
        initialSegmentation=example["segmentation"],
        referenceSegmentId="truth",
        comparedSegmentId="edited",
        initialSegmentId="initial",
        scribble=example["scribble"],
        sigmaMm=5.0,
    )
    result = logic.run(p)
    assert 0.5 < result.metrics["dice"] < 1.0 and p.outputTable is result.table_node
    assert logic.run(p).distance_map_node is p.outputDistanceMap  # re-run updates in place
    # each run first makes sure the dependencies are there, with Slicer's installers and no prompt in tests
    assert len(calls) == 2
    assert calls[0] == {
        "pip_install": slicer.util.pip_install,
        "install_torch": dependencies.install_torch_with_slicer_pytorch,
        "ask_confirmation": False,
    }
    monkeypatch.setattr(slicer.app, "testingEnabled", lambda: False)
    logic.ensureDependencies()
    assert calls[-1]["ask_confirmation"] is True
    assert not gui.called("pip_install")  # the fake ensure_dependencies installed nothing
