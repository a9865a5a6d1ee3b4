"""The glue of LossLab/LossLab.py (LossLabLogic) against the real LossLabLib on real MRML.

Desktop Slicer's Qt side (qt, slicer.ScriptedLoadableModule, slicer.parameterNodeWrapper, slicer.i18n) is
not in slicer-core: minimal stand-ins are put in ``sys.modules`` for the import only, so that the Logic
methods the Widget calls (startTraining, updateCurves, infer, gradientLab) run for real here, with a
parameter object holding exactly the fields of LossLabParameterNode. Also checks that the .ui's built-in
preset and loss lists (used before torch is installed) match the registries, and that the combo boxes the
Widget fills by hand exist and name parameter fields.
"""

from __future__ import annotations

import ast
import importlib.util
import re
import sys
import types
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

pytest.importorskip("slicer", reason="slicer-core is not installed (pip install slicer-core)")
pytest.importorskip("torch")

from mrml_builders import make_volume  # noqa: E402

from losslab import io as _io  # noqa: E402
from losslab.losses import available_losses  # noqa: E402
from losslab.nets import available_presets  # noqa: E402
from LossLabLib import mrml_io  # noqa: E402
from LossLabLib.training import make_example_dataset  # noqa: E402

MODULE = Path(__file__).resolve().parents[2] / "LossLab" / "LossLab.py"
UI = MODULE.parent / "Resources" / "UI" / "LossLab.ui"


def _stand_ins() -> dict[str, types.ModuleType]:
    def module(name, **attrs):
        mod = types.ModuleType(name)
        mod.__dict__.update(attrs)
        return mod

    class _Base:
        def __init__(self, *args, **kwargs):
            pass

    return {
        "qt": module("qt"),
        "slicer.i18n": module("slicer.i18n", tr=lambda text: text),
        "slicer.parameterNodeWrapper": module(
            "slicer.parameterNodeWrapper",
            parameterNodeWrapper=lambda cls: cls,
            Choice=lambda *a, **k: None,
            WithinRange=lambda *a, **k: None,
        ),
        "slicer.ScriptedLoadableModule": module(
            "slicer.ScriptedLoadableModule",
            ScriptedLoadableModule=_Base,
            ScriptedLoadableModuleLogic=_Base,
            ScriptedLoadableModuleTest=_Base,
            ScriptedLoadableModuleWidget=_Base,
        ),
    }


@pytest.fixture
def module_file(monkeypatch):
    for name, mod in _stand_ins().items():
        monkeypatch.setitem(sys.modules, name, mod)
    spec = importlib.util.spec_from_file_location("LossLabModuleUnderTest", MODULE)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def _parameters(mod, **values):
    fields = set(mod.LossLabParameterNode.__annotations__)
    defaults = {f: getattr(mod.LossLabParameterNode, f, None) for f in fields}
    unknown = set(values) - fields
    assert not unknown, f"not parameter node fields: {unknown}"
    return types.SimpleNamespace(**{**defaults, **values})


def test_logic_glue_trains_infers_and_runs_the_gradient_lab(module_file, scene, tmp_path):
    logic = module_file.LossLabLogic()
    logic.ensureDependencies = lambda: None  # the packages are here; Slicer installs them on first Apply
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
    assert job.wait(120) == 0, job.log
    chart = logic.updateCurves(p, job)
    assert p.trainingChart is chart and p.trainingTable.GetNumberOfRows() == 1
    assert logic.updateCurves(p, job) is chart  # updated in place

    p.modelPath = job.model_path
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
