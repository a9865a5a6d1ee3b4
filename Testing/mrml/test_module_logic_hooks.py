"""Each module file's ``<Module>Logic`` is its Lib's module logic plus Slicer's hooks, and nothing else: the
scene (slicer.mrmlScene unless given), the first-use install through LossLabLib.dependencies (no prompt
while Slicer's tests run), Slicer's temporary folder. The work itself is tested on the Lib classes
(test_ice_module_logic.py, test_fetal_module_glue.py, test_losslab_module_glue.py).
"""

from __future__ import annotations

import importlib
import types
from pathlib import Path

import pytest

pytest.importorskip("slicer", reason="slicer-core is not installed (pip install slicer-core)")

import slicer  # noqa: E402
import slicer.util  # noqa: E402
from module_stand_ins import load_module  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]
#: (module = folder, Lib module, Lib class, whether it starts runs in the temporary folder)
MODULES = [
    ("LossLab", "LossLabLib.module_logic", "LossLabModuleLogic", True),
    ("ICEEditing", "ICEEditingLib.module_logic", "ICEEditingModuleLogic", False),
    ("FetalParcellation", "FetalParcellationLib.module_logic", "FetalParcellationModuleLogic", True),
]


@pytest.mark.parametrize("name, lib, base, runs", MODULES, ids=[m[0] for m in MODULES])
def test_module_logic_is_the_lib_logic_with_slicers_hooks(name, lib, base, runs, mrml, monkeypatch):
    module_file = load_module(monkeypatch, name, ROOT / name)
    cls = getattr(module_file, f"{name}Logic")
    lib_class = getattr(importlib.import_module(lib), base)
    assert issubclass(cls, lib_class)
    # the module file adds hooks only: every method it defines overrides one of the Lib class (or is Slicer's)
    own = {k for k, v in vars(cls).items() if callable(v) and not k.startswith("__")}
    assert own - {"getParameterNode"} <= set(dir(lib_class)), own - set(dir(lib_class))
    logic = cls(mrml.scene)
    assert logic.mrmlScene() is mrml.scene
    monkeypatch.setattr(slicer, "mrmlScene", mrml.scene, raising=False)
    assert cls().mrmlScene() is mrml.scene  # no scene given: Slicer's
    installs = []
    app = types.SimpleNamespace(testingEnabled=lambda: True, temporaryPath="/slicer/temporary")
    monkeypatch.setattr(slicer, "app", app, raising=False)
    monkeypatch.setattr(slicer.util, "pip_install", installs.append, raising=False)
    logic.ensureDependencies()  # everything is installed here: nothing to install, no prompt
    assert installs == []
    if runs:  # new runs go to Slicer's temporary folder
        assert logic.temporaryFolder() == "/slicer/temporary"
