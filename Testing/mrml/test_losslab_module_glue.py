"""The glue of LossLab/LossLab.py against the real LossLabLib on real MRML, and its Widget.

Desktop Slicer's Qt side (qt, slicer.ScriptedLoadableModule, slicer.parameterNodeWrapper, slicer.i18n) is
not in slicer-core: the stand-ins of module_stand_ins.py are put in ``sys.modules`` for the import only, so
that:

- the Logic methods the Widget calls (startTraining, pollTraining, stopTraining, infer, gradientLab; their
  code is LossLabLib.module_logic.LossLabModuleLogic) run for real here, with a parameter object holding
  exactly the fields of LossLabParameterNode;
- the Widget runs against a strict fake Logic injected through ``LossLabWidget.logicFactory``: each handler
  (Train, Stop, the timer, Infer, Gradient, the loss menus) must call the Logic method it is bound to and
  show what it returns; a handler that does the work itself, or calls another Logic method, fails.

Also checks that the .ui's built-in preset and loss lists (used before torch is installed) match the
registries, and that the combo boxes the Widget fills by hand exist and name parameter fields.
"""

from __future__ import annotations

import ast
import re
import sys
import time
import types
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

pytest.importorskip("slicer", reason="slicer-core is not installed (pip install slicer-core)")
pytest.importorskip("torch")

from module_stand_ins import (  # noqa: E402
    MODULE_DIR,
    FakeParameterNode,
    StrictFakeLogic,
    load_module,
    patch_slicer_gui,
)
from mrml_builders import make_volume  # noqa: E402

from losslab import io as _io  # noqa: E402
from losslab.losses import available_losses  # noqa: E402
from losslab.nets import available_presets  # noqa: E402
from LossLabLib import mrml_io  # noqa: E402
from LossLabLib.jobs import JobUpdate  # noqa: E402
from LossLabLib.module_logic import LossLabModuleLogic  # noqa: E402
from LossLabLib.training import make_example_dataset  # noqa: E402

MODULE = MODULE_DIR / "LossLab.py"
UI = MODULE.parent / "Resources" / "UI" / "LossLab.ui"


@pytest.fixture
def module_file(monkeypatch):
    return load_module(monkeypatch, "LossLab")


def _parameters(mod, **values):
    return FakeParameterNode(mod.LossLabParameterNode, **values)


def test_logic_glue_trains_infers_and_runs_the_gradient_lab(module_file, scene, tmp_path, monkeypatch):
    logic = LossLabModuleLogic(scene)  # the module's Logic without Slicer's hooks
    data = make_example_dataset(tmp_path / "data")
    p = _parameters(
        module_file,
        datasetFolder=data,
        outputFolder=tmp_path / "run",
        modelPath=Path("."),
        epochs=1,
        device="cpu",
        trainLossOptions='{"include_background": false}',
    )
    job = logic.startTraining(p, pythonExecutable=sys.executable)
    # the Widget's timer: pollTraining until the job has finished (curves, log, then the model path)
    updates, charts = [], []
    assert job.started and p.modelPath == Path(".")
    for _ in range(2400):
        update, chart = logic.pollTraining(p, job)
        updates.append(update)
        charts.append(chart)
        if update.finished:
            break
        time.sleep(0.05)
    assert update.finished and job.returncode == 0 and update.error is None, job.log
    assert [line for u in updates for line in u.log] == job.log  # each log line once, in order
    assert sum(u.new_epochs for u in updates) == 1 and update.progress == 1.0
    chart = next(c for c in charts if c is not None)
    assert p.trainingChart is chart and p.trainingTable.GetNumberOfRows() == 1
    assert p.modelPath == job.model_path and job.model_path.is_file()
    assert logic.updateCurves(p, job) is chart  # updated in place
    assert logic.stopTraining(job) == job.status() and logic.stopTraining(job, timeout=1) == job.status()

    image = data / "images" / "case00.nii.gz"
    array = _io.read_image(image).array
    p.inputVolume = make_volume(scene, array.shape, values=array, name="case00")
    result = logic.infer(p)
    assert p.outputSegmentation is result.segmentation_node
    assert logic.infer(p).segmentation_node is result.segmentation_node  # re-run overwrites

    p.targetSegmentation = result.segmentation_node
    lab = logic.gradientLab(p)
    assert p.labOutputVolume is lab.volume_node and p.labOutputTable is lab.table_node
    rows = {name for name, _, _ in mrml_io.table_rows(lab.table_node)}
    assert "Dynamic range class1" in rows
    p.labPredictionSegmentation, p.labWrt = result.segmentation_node, "logits"
    assert logic.gradientLab(p).wrt == "logits"

    # without an output folder, each run gets a new one under the temporary folder (Slicer's, through the
    # module file's hook: test_module_logic_hooks.py), never the data's
    monkeypatch.setattr(logic, "temporaryFolder", lambda: str(tmp_path / "slicer-tmp"))
    p.outputFolder = Path(".")
    first = logic.startTraining(p, pythonExecutable=sys.executable)
    first.kill()
    first.wait(30)
    assert first.output_dir.parent == tmp_path / "slicer-tmp" / "LossLab"
    assert first.output_dir.name.startswith("run-") and first.config_path.is_file()

    p.datasetFolder = Path(".")
    with pytest.raises(FileNotFoundError, match="no dataset folder chosen"):
        logic.startTraining(p, pythonExecutable=sys.executable)


def test_ui_lists_match_the_registries_and_combo_fields_exist(module_file):
    root = ET.parse(UI).getroot()
    combos = {
        w.get("name"): [i.find("property/string").text for i in w.findall("item")]
        for w in root.iter("widget")
        if w.get("class") == "QComboBox"
    }
    assert combos["presetComboBox"] == available_presets()
    assert combos["trainLossComboBox"] == combos["labLossComboBox"] == sorted(available_losses())
    fields = set(module_file.LossLabParameterNode.__annotations__)
    for combo, field in module_file.COMBO_FIELDS.items():
        assert combo in combos and field in fields
        assert getattr(module_file.LossLabParameterNode, field) in combos[combo]
    # Choice-bound combo boxes get their items from the parameter node, so the .ui leaves them empty
    assert combos["deviceComboBox"] == [] and combos["wrtComboBox"] == []
    text = MODULE.read_text()
    assert re.search(r"Choice\(\[\"auto\", \"cpu\", \"cuda\", \"mps\"\]\)", text)
    tree = ast.parse(text)
    assert any(isinstance(n, ast.ClassDef) and n.name == "LossLabTest" for n in tree.body)


# The Widget against an injected, strict fake Logic ----------------------------------------------------


class FakeLossLabLogic(StrictFakeLogic):
    """The Logic methods the Widget may call, and nothing else; each returns what the test set."""

    def __init__(self, parameter_node, **returns):
        super().__init__()
        self.parameter_node, self.returns = parameter_node, returns

    def getParameterNode(self):  # noqa: N802
        self._record("getParameterNode")
        return self.parameter_node

    def choices(self):
        self._record("choices")
        return ["preset_a", "ice_segmentation"], ["dice", "cross_entropy"]

    def lossHelp(self, name):  # noqa: N802
        self._record("lossHelp", name)
        return f"help of {name}"

    def startTraining(self, p):  # noqa: N802
        self._record("startTraining", p)
        return self.returns["job"]

    def stopTraining(self, job, timeout=None):  # noqa: N802
        self._record("stopTraining", job, timeout=timeout)
        return "stopping..."

    def pollTraining(self, p, job):  # noqa: N802
        self._record("pollTraining", p, job)
        return self.returns["polls"].pop(0)

    def infer(self, p, progress=None):
        self._record("infer", p, progress=progress)
        progress(0.25, "segmenting")
        return self.returns["infer"]

    def gradientLab(self, p, progress=None):  # noqa: N802
        self._record("gradientLab", p, progress=progress)
        return self.returns["lab"]


class FakeJob:
    command = ["python", "-m", "losslab.engine.worker", "cfg.json"]

    def __init__(self):
        self.is_running = True


@pytest.fixture
def widget_and_logic(module_file, monkeypatch, mrml):
    gui = patch_slicer_gui(monkeypatch, UI)
    p = _parameters(module_file)
    logic = FakeLossLabLogic(p)
    monkeypatch.setattr(module_file.LossLabWidget, "logicFactory", lambda: logic)
    widget = module_file.LossLabWidget()
    try:
        widget.setup()
        yield widget, logic, p, gui
    finally:  # before the scene closes: no scene observer may outlive the test
        widget.removeObservers()


def test_widget_setup_binds_the_ui_and_fills_the_menus_from_the_logic(widget_and_logic):
    widget, logic, p, gui = widget_and_logic
    assert widget.logic is logic
    assert logic.names() == ["choices", "getParameterNode"]
    assert p.guiConnections == [widget.ui]
    assert widget.ui.presetComboBox.called("addItems") == [((["preset_a", "ice_segmentation"],), {})]
    assert widget.ui.trainLossComboBox.called("addItems") == [((["dice", "cross_entropy"],), {})]
    assert widget.ui.presetComboBox.called("setCurrentText") == [(("ice_segmentation",), {})]
    # a loss menu writes its field and shows the Logic's help as a tooltip
    widget.ui.labLossComboBox.emit("currentTextChanged(QString)", "cross_entropy")
    assert p.labLoss == "cross_entropy" and widget.ui.labLossComboBox.toolTip == "help of cross_entropy"
    assert logic.calls[-1] == ("lossHelp", ("cross_entropy",), {})
    # buttons follow the parameter node
    assert widget.ui.trainButton.enabled and not widget.ui.stopButton.enabled
    assert not widget.ui.inferButton.enabled and not widget.ui.gradientButton.enabled
    p.inputVolume = p.targetSegmentation = object()
    p.Modified()
    assert widget.ui.inferButton.enabled and widget.ui.gradientButton.enabled
    assert widget.timer.interval == 500 and not widget.timer.active


def test_train_timer_and_stop_call_the_logic_and_show_its_updates(widget_and_logic):
    widget, logic, p, gui = widget_and_logic
    job, chart = FakeJob(), object()
    logic.returns["job"] = job
    logic.returns["polls"] = [
        (
            JobUpdate(log=["training on cpu", "epoch 1/2"], progress=0.5, status="epoch 1/2", new_epochs=1),
            chart,
        ),
        (JobUpdate(log=["epoch 2/2"], progress=0.75, status="epoch 2/2", new_epochs=1), chart),
        (
            JobUpdate(
                log=["error (x): boom"], progress=0.75, status="failed: boom", finished=True, error="boom"
            ),
            None,
        ),
    ]
    widget.ui.trainButton.emit("clicked(bool)")
    assert logic.calls[-1] == ("startTraining", (p,), {})
    assert widget.job is job and widget.timer.active
    assert widget.ui.logTextEdit.called("appendPlainText") == [((" ".join(job.command),), {})]
    assert widget.ui.stopButton.enabled and not widget.ui.trainButton.enabled

    widget.timer.slots["timeout()"]()
    assert logic.calls[-1] == ("pollTraining", (p, job), {})
    assert widget.ui.progressBar.value == 50 and widget.ui.statusLabel.text == "epoch 1/2"
    assert gui.called("ShowChartInLayout") == [((chart,), {})]
    widget.timer.slots["timeout()"]()
    assert len(gui.called("ShowChartInLayout")) == 1  # shown once, then updated in place
    lines = [args[0] for args, _ in widget.ui.logTextEdit.called("appendPlainText")]
    assert lines[1:] == ["training on cpu", "epoch 1/2", "epoch 2/2"]

    widget.ui.stopButton.emit("clicked(bool)")
    assert logic.calls[-1] == ("stopTraining", (job,), {"timeout": None})
    assert widget.ui.statusLabel.text == "stopping..."

    job.is_running = False
    widget.timer.slots["timeout()"]()
    assert not widget.timer.active and gui.called("errorDisplay") == [(("Training failed: boom",), {})]
    assert widget.ui.trainButton.enabled and not widget.ui.stopButton.enabled
    assert [n for n in logic.names() if n not in ("getParameterNode", "choices")] == [
        "startTraining", "pollTraining", "pollTraining", "stopTraining", "pollTraining",
    ]  # fmt: skip

    job.is_running = True  # closing the module stops a running job through the Logic
    widget.cleanup()
    assert logic.calls[-1] == ("stopTraining", (job,), {"timeout": 10})


def test_infer_and_gradient_buttons_call_the_logic_and_show_its_results(widget_and_logic):
    widget, logic, p, gui = widget_and_logic
    p.inputVolume = slicer_volume = object()
    logic.returns["infer"] = types.SimpleNamespace(label_names=["background", "class1", "class2"])
    widget.ui.inferButton.emit("clicked(bool)")
    assert logic.calls[-1] == ("infer", (p,), {"progress": widget._onProgress})
    assert gui.called("setSliceViewerLayers") == [((), {"background": slicer_volume})]
    assert widget.ui.statusLabel.text == "Segments: class1, class2"
    assert widget.ui.progressBar.value == 25  # the Logic's progress reached the bar

    lab = types.SimpleNamespace(
        volume_node=object(),
        table_node=object(),
        class_names=["background", "class1"],
        class_index=1,
        per_class_db={"background": 1.0, "class1": 2.5},
    )
    logic.returns["lab"] = lab
    widget.ui.gradientButton.emit("clicked(bool)")
    assert logic.calls[-1] == ("gradientLab", (p,), {"progress": widget._onProgress})
    assert gui.called("setSliceViewerLayers")[-1] == (
        (),
        {"foreground": lab.volume_node, "foregroundOpacity": 0.7},
    )
    assert widget.ui.resultsTableView.called("setMRMLTableNode") == [((lab.table_node,), {})]
    assert widget.ui.statusLabel.text == "Dynamic range of class1: 2.50 dB"
    messages = [args[0] for args, _ in gui.called("tryWithErrorDisplay")]
    assert messages == ["Failed to segment the volume.", "Failed to compute the gradient map."]
