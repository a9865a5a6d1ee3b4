"""The glue of ICEEditing/ICEEditing.py: its Logic is ICEEditingLib's module logic (test_ice_module_logic.py)
with Slicer's hooks (test_module_logic_hooks.py), and its Widget runs against a strict fake Logic (each button calls the Logic method it is
bound to, and shows what it returns)."""

from __future__ import annotations

from pathlib import Path

import pytest

pytest.importorskip("slicer", reason="slicer-core is not installed (pip install slicer-core)")
pytest.importorskip("torch")

from module_stand_ins import FakeParameterNode, StrictFakeLogic, load_module, patch_slicer_gui  # noqa: E402

FOLDER = Path(__file__).resolve().parents[2] / "ICEEditing"
UI = FOLDER / "Resources" / "UI" / "ICEEditing.ui"


@pytest.fixture
def module_file(monkeypatch):
    return load_module(monkeypatch, "ICEEditing", FOLDER)


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

    def buttonStates(self, p):
        self._record("buttonStates")
        names = (
            "segmentButton",
            "previousFrameButton",
            "nextFrameButton",
            "showFrameButton",
            "applyCurveButton",
        )
        return {**dict.fromkeys(names, True), "undoButton": True, "redoButton": False}

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
