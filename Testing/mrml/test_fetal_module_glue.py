"""The glue of FetalParcellation/FetalParcellation.py: its Logic's work (FetalParcellationLib.module_logic)
against the real FetalParcellationLib on real MRML, the module's self-test, and the .ui's bindings.

Desktop Slicer's Qt side (qt, slicer.ScriptedLoadableModule, slicer.parameterNodeWrapper, slicer.i18n) is not
in slicer-core: minimal stand-ins are put in ``sys.modules`` for the import only, so that the Logic methods the
Widget calls run for real here, with a parameter object holding exactly the fields of
FetalParcellationParameterNode. The model is a tiny random-weight ensemble (the glue, not accuracy, is tested).
"""

from __future__ import annotations

import importlib.util
import json
import sys
import types
import unittest
import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("slicer", reason="slicer-core is not installed (pip install slicer-core)")
torch = pytest.importorskip("torch")

import module_stand_ins  # noqa: E402
import slicer  # noqa: E402
import slicer.util  # noqa: E402
from fetal_cases import array, load_volume, write_small_case  # noqa: E402
from module_stand_ins import StrictFakeLogic  # noqa: E402

from FetalParcellationLib import module_logic  # noqa: E402
from FetalParcellationLib.module_logic import FetalParcellationModuleLogic  # noqa: E402
from losslab import models  # noqa: E402
from losslab.engine import save_checkpoint  # noqa: E402
from losslab.labelsets import ABBREVIATIONS, LABEL_NAMES  # noqa: E402
from losslab.losses import available_losses  # noqa: E402
from losslab.nets import build_network, network_spec  # noqa: E402
from LossLabLib import mrml_io  # noqa: E402

MODULE = Path(__file__).resolve().parents[2] / "FetalParcellation" / "FetalParcellation.py"
UI = MODULE.parent / "Resources" / "UI" / "FetalParcellation.ui"


def _stand_ins() -> dict[str, types.ModuleType]:
    def module(name, **attrs):
        mod = types.ModuleType(name)
        mod.__dict__.update(attrs)
        return mod

    class _Base:
        def __init__(self, *args, **kwargs):
            pass

    class _Test(unittest.TestCase):  # Slicer's ScriptedLoadableModuleTest is a unittest.TestCase
        def delayDisplay(self, message, msec=None):  # noqa: N802 (Slicer's name)
            pass

    class _Choice:
        def __init__(self, choices):
            self.choices = list(choices)

    return {
        "qt": module("qt"),
        "slicer.i18n": module("slicer.i18n", tr=lambda text: text),
        "slicer.parameterNodeWrapper": module(
            "slicer.parameterNodeWrapper",
            parameterNodeWrapper=lambda cls: cls,
            Choice=_Choice,
            WithinRange=lambda *a, **k: None,
        ),
        "slicer.ScriptedLoadableModule": module(
            "slicer.ScriptedLoadableModule",
            ScriptedLoadableModule=_Base,
            ScriptedLoadableModuleLogic=_Base,
            ScriptedLoadableModuleTest=_Test,
            ScriptedLoadableModuleWidget=_Base,
        ),
    }


@pytest.fixture
def module_file(monkeypatch):
    for name, mod in _stand_ins().items():
        monkeypatch.setitem(sys.modules, name, mod)
    spec = importlib.util.spec_from_file_location("FetalParcellationModuleUnderTest", MODULE)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def _parameters(mod, **values):
    cls = mod.FetalParcellationParameterNode
    fields = set(cls.__annotations__)
    unknown = set(values) - fields
    assert not unknown, f"not parameter node fields: {unknown}"
    return types.SimpleNamespace(**{**{f: getattr(cls, f, None) for f in fields}, **values})


@pytest.fixture
def random_ensemble(tmp_path):
    folder = tmp_path / "registry" / "fetal-random"
    network = {"preset": "fetal_parcellation", "features": [4, 4, 4, 4, 4]}
    members = []
    for k in range(2):
        torch.manual_seed(k)
        net = build_network(network)
        info = {"network": network_spec(network), "labels": LABEL_NAMES, "channel_names": ["image"],
                "n_image_channels": 1, "normalize": "zscore", "window": None, "overlap": 0.5}  # fmt: skip
        save_checkpoint(folder / f"member{k}" / "model.pt", {"model": net.state_dict(), "model_info": info})
        members.append(f"member{k}/model.pt")
    (folder / "ensemble.json").write_text(json.dumps({"members": members}))
    models.register_model(folder, {"name": "fetal-random", "task": "test", "grid": {"spacing_mm": [4.8] * 3}})
    return folder


def test_ui_binds_every_tissue_and_the_choices_are_registered_losses(module_file):
    root = ET.parse(UI).getroot()
    bound = {
        w.get("name"): p.find("string").text
        for w in root.iter("widget")
        for p in w.findall("property")
        if p.get("name") == "SlicerParameterName"
    }
    assert module_file.TISSUE_KEYS == ABBREVIATIONS
    for key in ABBREVIATIONS:
        assert bound[f"annotated{key}CheckBox"] == f"annotated{key}"
    cls = module_file.FetalParcellationParameterNode
    assert set(bound.values()) <= set(cls.__annotations__)
    loss_choice = cls.__annotations__["trainingLoss"].__metadata__[0]
    assert set(loss_choice.choices) <= set(available_losses()) and cls.trainingLoss == "leaf_dice"
    combos = {w.get("name"): w.findall("item") for w in root.iter("widget") if w.get("class") == "QComboBox"}
    assert combos["deviceComboBox"] == [] and combos["trainingLossComboBox"] == []  # filled by the node


def test_logic_glue_session_export_import_parcellation_metrics_training(
    module_file, mrml, random_ensemble, tmp_path, monkeypatch
):
    scene = mrml.scene
    monkeypatch.setenv(models.ENV_ROOT, str(random_ensemble.parent))
    logic = FetalParcellationModuleLogic(scene)  # the module's Logic without Slicer's hooks
    assert logic.modelNames() == ["fetal-random"]
    f = write_small_case("GA29_operated", tmp_path / "case", spacing=4.8)
    volume = load_volume(scene, f["srr"], "GA29")
    parcellation = array(f["parcellation"])
    p = _parameters(module_file, inputVolume=volume, datasetFolder=Path("."), trainingOutputFolder=Path("."))

    states = logic.buttonStates(p)
    assert states["createSessionButton"] and not states["exportButton"] and not states["runButton"]
    session = logic.createSession(p)
    assert p.annotationSegmentation is session.segmentation_node and not p.annotatedWM
    editor = scene.GetSingletonNode("SegmentEditor", "vtkMRMLSegmentEditorNode")
    assert editor.GetSegmentationNode() is session.segmentation_node
    assert editor.GetOverwriteMode() == editor.OverwriteNone  # painting tissues keeps the brain mask whole
    for key in ("WM", "Vent"):
        slicer.util.updateSegmentBinaryLabelmapFromArray(
            (parcellation == ABBREVIATIONS.index(key) + 1).astype(np.uint8),
            p.annotationSegmentation,
            session.segment_id(key),
            volume,
        )
    with pytest.raises(ValueError, match="Choose a brain mask"):
        logic.setBrainMask(p)
    p.maskLabelmap = load_volume(scene, f["mask"], "mask", labelmap=True)
    assert logic.setBrainMask(p) == int((array(f["mask"]) != 0).sum())
    p.annotatedWM = True
    logic.writeDeclaration(p)
    problems = logic.refreshSummary(p)
    assert problems and "Vent (2)" in problems[0]  # painted but not declared
    logic.writeDeclaration(p, ["WM", "Vent"])
    logic.readDeclaration(p)
    assert p.annotatedWM and p.annotatedVent and not p.annotatedCer
    assert logic.refreshSummary(p) == []
    rows = mrml_io.table_rows(p.summaryTable)
    assert rows[0] == ("WM", "white matter", float((parcellation == 1).sum()), "yes")

    with pytest.raises(ValueError, match="dataset folder"):
        logic.exportCase(p)
    p.datasetFolder, p.caseId = tmp_path / "dataset", ""
    result = logic.exportCase(p)
    assert result.case_id == "GA29" and result.declaration.annotated == [1, 2]
    p.caseId = "GA29"
    imported = logic.importCase(p)
    assert (
        p.inputVolume is imported.volume_node
        and p.annotationSegmentation is imported.session.segmentation_node
    )
    assert imported.session.annotated() == [1, 2]

    p.model = "fetal-random"
    job = logic.startParcellation(p, pythonExecutable=sys.executable)
    assert logic.parcellationJob is job
    assert job.wait(300) == 0, job.log
    tick = logic.pollJobs()  # the Widget's timer: the finished job is handed over once, then forgotten
    assert tick.parcellated is job and tick.errors == [] and tick.status and not tick.active
    assert logic.parcellationJob is None and logic.pollJobs().status is None
    parc = logic.loadParcellation(p, tick.parcellated)
    assert (
        p.parcellationSegmentation is parc.segmentation_node and p.disagreementVolume is parc.uncertainty_node
    )
    assert not parc.labels[array(f["mask"]) == 0].any()  # the session's brain mask was used
    inproc = logic.runParcellation(p)
    assert p.parcellationSegmentation is inproc.segmentation_node  # overwritten in place
    np.testing.assert_array_equal(inproc.labels, parc.labels)

    p.referenceSegmentation = p.annotationSegmentation
    metrics = logic.computeMetrics(p)
    assert p.metricsTable is metrics.table_node
    assert [r[0] for r in metrics.rows][:2] == ["WM", "Vent"]

    p.trainingOutputFolder, p.epochs = tmp_path / "run", 1
    training = logic.startTraining(p, pythonExecutable=sys.executable)
    assert training.config["loss"]["name"] == "leaf_dice" and training.config["epochs"] == 1
    assert logic.buttonStates(p)["trainStopButton"] == training.is_running
    training.stop(timeout=60)
    assert not training.is_running
    tick = logic.pollJobs()
    assert tick.trainingStatus and tick.trained is None and not tick.active and logic.trainingJob is None


def test_module_self_test_runs_headless(module_file, mrml, tmp_path, monkeypatch):
    """FetalParcellationTest (Slicer's Reload and Test) on real MRML: session, paint, declare, export, import."""
    monkeypatch.setattr(slicer.app, "temporaryPath", str(tmp_path), raising=False)
    monkeypatch.setattr(module_file.FetalParcellationLogic, "ensureDependencies", lambda self: None)
    monkeypatch.setattr(
        module_file.FetalParcellationLogic, "getParameterNode", lambda self: _parameters(module_file)
    )
    test = module_file.FetalParcellationTest("runTest")
    test.runTest()
    manifest = json.loads((tmp_path / "FetalParcellationTest" / "dataset.json").read_text())
    assert manifest["label_sets"] == {"12": [3, 4, 5, 6, 7, 8]} and manifest["cases"][0]["annotated"] == [
        "WM",
        "Vent",
    ]


class FakeFetalLogic(StrictFakeLogic):
    """Strict: only these methods exist; each returns a marker the Widget must show."""

    def __init__(self, parameters):
        super().__init__()
        self.parameters = parameters
        self.tick = None

    def getParameterNode(self):
        self._record("getParameterNode")
        return self.parameters

    def modelNames(self):
        self._record("modelNames")
        return ["fetal-model"]

    def buttonStates(self, p):
        self._record("buttonStates")
        return {"runButton": True, "stopButton": False}

    def readDeclaration(self, p):
        self._record("readDeclaration")

    def writeDeclaration(self, p, annotated=None):
        self._record("writeDeclaration", annotated)

    def refreshSummary(self, p):
        self._record("refreshSummary")
        return ["Vent (2) is painted but not declared"]

    def createSession(self, p):
        self._record("createSession")

    def setBrainMask(self, p):
        self._record("setBrainMask")
        return 1234

    def exportCase(self, p):
        self._record("exportCase")
        return types.SimpleNamespace(case_id="case01", manifest="/data/dataset.json")

    def importCase(self, p):
        self._record("importCase")

    def startParcellation(self, p):
        self._record("startParcellation")

    def stopParcellation(self):
        self._record("stopParcellation")
        return "stopping"

    def pollJobs(self):
        self._record("pollJobs")
        return self.tick

    def loadParcellation(self, p, job):
        self._record("loadParcellation", job)

    def registerModel(self, p, job):
        self._record("registerModel", job)
        return "/runs/fetal-new"

    def computeMetrics(self, p, progress=None):
        self._record("computeMetrics")
        return types.SimpleNamespace(table_node="metrics table")

    def startTraining(self, p):
        self._record("startTraining")
        return types.SimpleNamespace(output_dir="/runs/fetal-new")

    def stopTraining(self):
        self._record("stopTraining")

    def stopJobs(self, timeout=None):
        self._record("stopJobs", timeout)


def test_widget_buttons_and_timer_call_their_logic_methods(mrml, monkeypatch):
    """FetalParcellationWidget against a strict fake Logic (module_stand_ins.py): each button calls the Logic
    method it is bound to and shows what it returns; the timer shows the jobs' tick, loads a finished
    parcellation, registers a trained model, shows failures and stops when no job runs."""
    module_file = module_stand_ins.load_module(monkeypatch, "FetalParcellation", MODULE.parent)
    rec = module_stand_ins.patch_slicer_gui(monkeypatch, UI)
    params = module_stand_ins.FakeParameterNode(
        module_file.FetalParcellationParameterNode,
        annotationSegmentation=mrml.scene.AddNewNodeByClass("vtkMRMLSegmentationNode"),
        model="fetal-model",
    )
    fake = FakeFetalLogic(params)
    monkeypatch.setattr(module_file.FetalParcellationWidget, "logicFactory", lambda: fake)
    widget = module_file.FetalParcellationWidget()
    widget.setup()
    ui = widget.ui
    assert ui.modelComboBox.called("addItems") == [((["fetal-model"],), {})]
    assert (
        "readDeclaration" in fake.names() and ui.runButton.enabled is True and ui.stopButton.enabled is False
    )
    for key in module_file.TISSUE_KEYS:
        getattr(ui, f"annotated{key}CheckBox").checked = key in ("WM", "CC")
    for button, method, label, shown in (
        ("createSessionButton", "createSession", "statusLabel", "Session ready"),
        ("setMaskButton", "setBrainMask", "statusLabel", "Brain mask: 1234 voxels"),
        ("exportButton", "exportCase", "statusLabel", "Exported case01 to /data/dataset.json"),
        ("validateButton", "refreshSummary", "problemsLabel", "Vent (2) is painted but not declared"),
        ("runButton", "startParcellation", "statusLabel", "Parcellation started"),
        ("stopButton", "stopParcellation", "statusLabel", "stopping"),
        ("trainButton", "startTraining", "trainingStatusLabel", "Training started in /runs/fetal-new"),
        ("trainStopButton", "stopTraining", None, None),
        ("importButton", "importCase", None, None),
        ("metricsButton", "computeMetrics", None, None),
    ):
        fake.calls.clear()
        getattr(ui, button).emit("clicked(bool)")
        assert method in fake.names(), f"{button} did not call {method}: {fake.names()}"
        if label:
            assert getattr(ui, label).text.startswith(shown), getattr(ui, label).text
    assert ui.metricsTableView.called("setMRMLTableNode")[-1] == (("metrics table",), {})
    fake.calls.clear()
    ui.annotatedWMCheckBox.emit("toggled(bool)", True)
    assert fake.calls == [("writeDeclaration", (["WM", "CC"],), {})]  # the boxes as they are

    parcellation, trained = object(), object()
    fake.tick = module_logic.JobsTick(
        progress=1.0, status="done", trainingStatus="trained", parcellated=parcellation, trained=trained,
        errors=["Training failed: boom"], active=False,
    )  # fmt: skip
    widget.timer.start()
    fake.calls.clear()
    widget.onTimer()
    assert ("loadParcellation", (parcellation,), {}) in fake.calls
    assert ("registerModel", (trained,), {}) in fake.calls
    assert ui.modelComboBox.called("addItem")[-1] == (("/runs/fetal-new",), {})
    assert (
        ui.progressBar.value == 100
        and ui.statusLabel.text == "done"
        and ui.trainingStatusLabel.text == "trained"
    )
    assert rec.called("errorDisplay") == [(("Training failed: boom",), {})]
    assert not widget.timer.active
    fake.calls.clear()
    widget.cleanup()
    assert fake.calls == [("stopJobs", (10,), {})]  # the running jobs end with the panel
