"""Static checks of the Slicer side, no Slicer needed: CMake lists, module files, .ui files, icons.

- Every file under a module folder (LossLab/, ICEEditing/, FetalParcellation/) is installed by one of that
  folder's ``slicerMacroBuildScriptedModule`` calls (a .py file through SCRIPTS, any other through RESOURCES;
  the lists are evaluated as CMake would, ``${VAR}`` included), every listed file exists, and SCRIPTS hold
  .py files only (CTK's real ``ctkMacroCompilePythonScript`` appends ".py" to anything else and the build
  fails). When this fails, the message names the files to add, move or remove.
- Each module file ``<Module>.py`` compiles, holds the classes Slicer looks for (``<Module>``,
  ``<Module>Widget``, ``<Module>Logic``, ``<Module>Test``) and no computation (no numpy / scipy / torch
  maths, no direct use of the core ``losslab``: that goes through the ``*Lib`` package).
- Its ``Resources/UI/<Module>.ui`` is well-formed, every ``SlicerParameterName`` names a field of the
  module's parameter node, and every ``self.ui.<name>`` the module file uses exists in the .ui.
- Its icon ``Resources/Icons/<Module>.png`` is a PNG.
"""

from __future__ import annotations

import ast
import py_compile
import re
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "Utilities"))
from package_extension import scripted_modules  # noqa: E402  (CMake lists read as CMake evaluates them)

MODULE_FOLDERS = [
    ROOT / name for name in ("LossLab", "ICEEditing", "FetalParcellation") if (ROOT / name).is_dir()
]
IGNORED_DIRS = {"__pycache__", ".pytest_cache", ".ruff_cache", ".mypy_cache", ".hypothesis"}


def _present_files(folder: Path) -> set[str]:
    out = set()
    for path in folder.rglob("*"):
        rel = path.relative_to(folder)
        if not path.is_file() or rel.as_posix() == "CMakeLists.txt":
            continue
        if any(
            part in IGNORED_DIRS or part.endswith(".egg-info") or part.startswith(".") for part in rel.parts
        ):
            continue
        if path.suffix in {".pyc", ".pyo"}:
            continue
        out.add(rel.as_posix())
    return out


@pytest.mark.parametrize("folder", MODULE_FOLDERS, ids=lambda p: p.name)
def test_scripts_lists_hold_python_files_only(folder):
    """SCRIPTS takes .py files only: CTK's real ctkMacroCompilePythonScript (the macro Slicer's factory builds
    with) appends ".py" to any other entry, and the build fails with "No rule to make target
    '.../model.json.py'". Models, JSON, images and data go in RESOURCES."""
    calls = scripted_modules(folder / "CMakeLists.txt")
    assert calls, f"{folder.name}/CMakeLists.txt calls no slicerMacroBuildScriptedModule"
    for call in calls:
        assert call["NAME"] and call["SCRIPTS"], (
            f"{folder.name}/CMakeLists.txt: a call without NAME or SCRIPTS"
        )
        not_python = [s for s in call["SCRIPTS"] if not s.endswith(".py")]
        assert not not_python, (
            f"{folder.name}/CMakeLists.txt: the SCRIPTS of {call['NAME']} hold non-Python files; move them to "
            "its RESOURCES: " + " ".join(not_python)
        )


@pytest.mark.parametrize("folder", MODULE_FOLDERS, ids=lambda p: p.name)
def test_cmake_lists_every_file_of_the_module_folder(folder):
    """Every file of the module folder is installed by one of its slicerMacroBuildScriptedModule calls (a .py
    file through SCRIPTS, any other through RESOURCES), and every listed file exists."""
    cmake = folder / "CMakeLists.txt"
    assert cmake.is_file(), f"{folder.name}/ has no CMakeLists.txt"
    calls = scripted_modules(cmake)
    present = _present_files(folder)
    scripts = {s for call in calls for s in call["SCRIPTS"]}
    resources = {r for call in calls for r in call["RESOURCES"]}
    listed = scripts | resources
    missing_scripts = sorted(p for p in present - scripts if p.endswith(".py"))
    missing_resources = sorted(p for p in present - resources if not p.endswith(".py"))
    stale = sorted(listed - present)
    message = []
    if missing_scripts:
        message.append("add to the SCRIPTS lists: " + " ".join(missing_scripts))
    if missing_resources:
        message.append("add to the RESOURCES lists: " + " ".join(missing_resources))
    if stale:
        message.append("remove (no such file): " + " ".join(stale))
    assert not message, f"{folder.name}/CMakeLists.txt is out of date: " + "; ".join(message)


def test_root_cmake_adds_every_module_folder_and_depends_on_pytorch():
    text = (ROOT / "CMakeLists.txt").read_text()
    added = set(re.findall(r"add_subdirectory\((\w+)\)", text))
    assert added == {f.name for f in MODULE_FOLDERS if (f / "CMakeLists.txt").is_file()}
    assert re.search(r'set\(EXTENSION_DEPENDS\s+"?PyTorch"?\)', text)
    for key in (
        "EXTENSION_HOMEPAGE",
        "EXTENSION_CATEGORY",
        "EXTENSION_CONTRIBUTORS",
        "EXTENSION_DESCRIPTION",
        "EXTENSION_ICONURL",
        "EXTENSION_SCREENSHOTURLS",
    ):
        assert f"set({key} " in text, f"CMakeLists.txt does not set {key}"
    for line in (
        "find_package(Slicer REQUIRED)",
        "include(${Slicer_USE_FILE})",
        "include(${Slicer_EXTENSION_GENERATE_CONFIG})",
        "include(${Slicer_EXTENSION_CPACK})",
    ):
        assert line in text


def _module_files():
    out = []
    for folder in MODULE_FOLDERS:
        for path in sorted(folder.glob("*.py")):
            if (
                folder / "Resources" / "UI" / f"{path.stem}.ui"
            ).is_file() or "ScriptedLoadableModule" in path.read_text():
                out.append(path)
    return out


MODULE_FILES = _module_files()
MATH_MODULES = {"numpy", "np", "scipy", "torch", "losslab"}


@pytest.mark.parametrize("path", MODULE_FILES, ids=lambda p: p.stem)
def test_module_file_is_thin_and_complete(path, tmp_path):
    py_compile.compile(str(path), cfile=str(tmp_path / "module.pyc"), doraise=True)
    tree = ast.parse(path.read_text())
    name = path.stem
    classes = {node.name: node for node in tree.body if isinstance(node, ast.ClassDef)}
    for suffix in ("", "Widget", "Logic", "Test"):
        assert f"{name}{suffix}" in classes, f"{path.name} has no class {name}{suffix}"
    assert "slicerMacroBuildScriptedModule" in (path.parent / "CMakeLists.txt").read_text()
    # No maths: the core is reached through the *Lib package; numpy is only for generating test data.
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] == "losslab":
            pytest.fail(
                f"{path.name}:{node.lineno} imports losslab directly; call the {path.parent.name}Lib layer"
            )
    for cls in (classes[name], classes[f"{name}Widget"], classes[f"{name}Logic"]):
        for node in ast.walk(cls):
            if (
                isinstance(node, ast.Attribute)
                and isinstance(node.value, ast.Name)
                and node.value.id in MATH_MODULES
            ):
                pytest.fail(
                    f"{path.name}:{node.lineno}: {node.value.id}.{node.attr} in {cls.name}: computation "
                    "belongs in the Lib layer or losslab"
                )
    top_imports = {
        alias.name.split(".")[0]
        for node in tree.body
        if isinstance(node, (ast.Import, ast.ImportFrom))
        for alias in (node.names if isinstance(node, ast.Import) else [ast.alias(node.module or "")])
    }
    assert not top_imports & MATH_MODULES, f"{path.name} imports {top_imports & MATH_MODULES} at module level"


def _parameter_fields(tree: ast.Module) -> set[str]:
    for node in tree.body:
        if isinstance(node, ast.ClassDef) and any(
            getattr(d, "id", None) == "parameterNodeWrapper" for d in node.decorator_list
        ):
            return {s.target.id for s in node.body if isinstance(s, ast.AnnAssign)}
    return set()


@pytest.mark.parametrize("path", MODULE_FILES, ids=lambda p: p.stem)
def test_ui_file_matches_the_module(path):
    ui_path = path.parent / "Resources" / "UI" / f"{path.stem}.ui"
    root = ET.parse(ui_path).getroot()
    top = root.find("widget")
    assert top.get("class") == "qMRMLWidget" and top.get("name") == path.stem
    widgets = {w.get("name"): w.get("class") for w in root.iter("widget")}
    tree = ast.parse(path.read_text())
    fields = _parameter_fields(tree)
    assert fields, f"{path.name} has no @parameterNodeWrapper class"
    bound = {}
    for widget in root.iter("widget"):
        for prop in widget.findall("property"):
            if prop.get("name") == "SlicerParameterName":
                bound[widget.get("name")] = prop.find("string").text
    unknown = {w: f for w, f in bound.items() if f not in fields}
    assert not unknown, f"{ui_path.name}: SlicerParameterName not in the parameter node: {unknown}"
    used = {
        node.attr
        for node in ast.walk(tree)
        if isinstance(node, ast.Attribute)
        and isinstance(node.value, ast.Attribute)
        and node.value.attr == "ui"
    }
    # f-string names such as f"{role}SegmentSelector" are checked through the roles they are built from
    for role_tuple in re.findall(r"_ROLES = \(([^)]*)\)", path.read_text()):
        roles = re.findall(r'"(\w+)"', role_tuple)
        for suffix in set(re.findall(r'f"\{role\}(\w+Selector)"', path.read_text())):
            used |= {f"{role}{suffix}" for role in roles}
    missing = sorted(u for u in used if u not in widgets)
    assert not missing, f"{path.name} uses self.ui.{missing} but {ui_path.name} has no such widget"
    # every MRML widget gets the scene
    receivers = {
        c.findtext("receiver")
        for c in root.iter("connection")
        if c.findtext("slot") == "setMRMLScene(vtkMRMLScene*)"
    }
    mrml_widgets = {n for n, c in widgets.items() if c.startswith("qMRML") and n != path.stem}
    assert mrml_widgets <= receivers, (
        f"{ui_path.name}: no setMRMLScene connection for {sorted(mrml_widgets - receivers)}"
    )


@pytest.mark.parametrize("path", MODULE_FILES, ids=lambda p: p.stem)
def test_module_icon_is_a_png(path):
    icon = path.parent / "Resources" / "Icons" / f"{path.stem}.png"
    assert icon.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", f"{icon} is missing or not a PNG"


def _methods(cls: ast.ClassDef) -> dict[str, ast.FunctionDef]:
    return {n.name: n for n in cls.body if isinstance(n, ast.FunctionDef)}


def logic_methods(path: Path, tree: ast.Module, logic: ast.ClassDef) -> dict[str, ast.FunctionDef]:
    """The methods of the module's Logic class, with those of the Lib class it extends: a base imported
    ``from <Folder>Lib.<file> import <Base>`` is read from ``<module folder>/<Folder>Lib/<file>.py``."""
    methods = {}
    imported = {
        alias.asname or alias.name: node.module
        for node in tree.body
        if isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0].endswith("Lib")
        for alias in node.names
    }
    for base in logic.bases:
        name = getattr(base, "id", None)
        if name in imported:
            source = path.parent / (imported[name].replace(".", "/") + ".py")
            lib = ast.parse(source.read_text())
            cls = next(n for n in lib.body if isinstance(n, ast.ClassDef) and n.name == name)
            methods |= _methods(cls)
    return methods | _methods(logic)


def _logic_uses(node: ast.AST) -> set[str]:
    """Names ``X`` of every ``self.logic.X`` under ``node``."""
    return {
        n.attr
        for n in ast.walk(node)
        if isinstance(n, ast.Attribute)
        and isinstance(n.value, ast.Attribute)
        and n.value.attr == "logic"
        and isinstance(n.value.value, ast.Name)
        and n.value.value.id == "self"
    }


@pytest.mark.parametrize("path", MODULE_FILES, ids=lambda p: p.stem)
def test_widget_is_binding_only_and_calls_an_injectable_logic(path):
    """The Widget gets its Logic from the ``logicFactory`` class attribute (tests and the web app replace
    it), calls only methods that Logic defines, and does no work of its own: no imports, no *Lib package,
    no Logic constructed elsewhere than in setup's factory line."""
    tree = ast.parse(path.read_text())
    name = path.stem
    classes = {node.name: node for node in tree.body if isinstance(node, ast.ClassDef)}
    widget, logic = classes[f"{name}Widget"], classes[f"{name}Logic"]
    factory = [
        s
        for s in widget.body
        if isinstance(s, ast.Assign) and any(getattr(t, "id", None) == "logicFactory" for t in s.targets)
    ]
    assert factory, f"{name}Widget has no class attribute logicFactory (the injectable Logic)"
    setup = _methods(widget)["setup"]
    made = [
        s
        for s in ast.walk(setup)
        if isinstance(s, ast.Assign)
        and any(isinstance(t, ast.Attribute) and t.attr == "logic" for t in s.targets)
    ]
    assert len(made) == 1 and any(
        isinstance(n, ast.Attribute) and n.attr == "logicFactory" for n in ast.walk(made[0].value)
    ), f"{name}Widget.setup must create self.logic from type(self).logicFactory"
    for node in ast.walk(widget):
        assert not isinstance(node, (ast.Import, ast.ImportFrom)), (
            f"{path.name}:{node.lineno}: {name}Widget imports; the Widget only binds (work goes in the Logic)"
        )
        if isinstance(node, ast.Name) and node.id.endswith("Lib"):
            pytest.fail(f"{path.name}:{node.lineno}: {name}Widget uses {node.id}: call the Logic instead")
        if isinstance(node, ast.Call) and getattr(node.func, "id", None) == f"{name}Logic":
            assert node in ast.walk(made[0].value), f"{path.name}:{node.lineno}: a Logic made outside setup"
    defined = set(logic_methods(path, tree, logic)) | {"getParameterNode"}
    unknown = _logic_uses(widget) - defined
    assert not unknown, f"{name}Widget calls self.logic.{sorted(unknown)}, which {name}Logic does not define"
    # every button handler goes through the Logic
    for method_name, method in _methods(widget).items():
        if method_name.startswith("on") and method_name.endswith("Button"):
            assert _logic_uses(method), f"{name}Widget.{method_name} does not call the Logic"


@pytest.mark.parametrize("path", MODULE_FILES, ids=lambda p: p.stem)
def test_logic_reads_and_writes_only_parameter_node_fields(path):
    """Every ``p.<name>`` of the Logic's methods (its own and its Lib base class's, where ``p`` is the
    parameter node) is a field of the module's parameter node: the Lib logic and the .ui agree on names."""
    tree = ast.parse(path.read_text())
    logic = next(n for n in tree.body if isinstance(n, ast.ClassDef) and n.name == f"{path.stem}Logic")
    fields = _parameter_fields(tree)
    used = {
        node.attr
        for method in logic_methods(path, tree, logic).values()
        if any(a.arg == "p" for a in method.args.args)
        for node in ast.walk(method)
        if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id == "p"
    }
    unknown = sorted(used - fields)
    assert not unknown, f"{path.stem}Logic uses p.{unknown}, not fields of {path.stem}ParameterNode"


@pytest.mark.parametrize("path", MODULE_FILES, ids=lambda p: p.stem)
def test_logic_installs_dependencies_through_the_lib(path):
    """ensureDependencies is a thin wrapper of LossLabLib.dependencies with Slicer's installers injected;
    no module file installs by itself or imports another module file for it."""
    text = path.read_text()
    tree = ast.parse(text)
    logic = next(n for n in tree.body if isinstance(n, ast.ClassDef) and n.name == f"{path.stem}Logic")
    ensure = _methods(logic).get("ensureDependencies")
    assert ensure is not None, f"{path.stem}Logic has no ensureDependencies"
    calls = {
        (n.func.value.id, n.func.attr)
        for n in ast.walk(ensure)
        if isinstance(n, ast.Call)
        and isinstance(n.func, ast.Attribute)
        and isinstance(n.func.value, ast.Name)
    }
    assert ("dependencies", "ensure_dependencies") in calls
    keywords = {k.arg for n in ast.walk(ensure) if isinstance(n, ast.Call) for k in n.keywords}
    assert {"pip_install", "install_torch", "ask_confirmation"} <= keywords
    assert "testingEnabled" in ast.unparse(ensure)  # no prompt while Slicer's tests run
    assert "installTorch(" not in text and "pip_install(" not in text
    siblings = {p.stem for p in MODULE_FILES} - {path.stem}
    for node in ast.walk(tree):
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else [node.module or ""]
            assert not set(names) & siblings, f"{path.name}:{node.lineno} imports the module file {names}"


def _unsafe_writes(path: Path) -> list[str]:
    """Calls in ``path`` that write a file other than through losslab.io's atomic helpers."""
    found = []
    for node in ast.walk(ast.parse(path.read_text())):
        if not isinstance(node, ast.Call):
            continue
        func = node.func
        where = f"{path.relative_to(ROOT)}:{node.lineno}"
        atomic_io = isinstance(func, ast.Attribute) and ast.unparse(func.value) in ("io", "_io", "losslab.io")
        if (
            isinstance(func, ast.Attribute)
            and func.attr in ("write_text", "write_bytes", "savefig")
            and not atomic_io
        ):
            found.append(f"{where} .{func.attr}()")  # Path.write_text & co. (losslab.io's are called by name)
        elif isinstance(func, ast.Attribute) and isinstance(func.value, ast.Name):
            if (func.value.id, func.attr) in {
                ("os", "replace"),
                ("os", "rename"),
                ("shutil", "move"),
                ("shutil", "copy"),
                ("shutil", "copyfile"),
                ("json", "dump"),
                ("np", "save"),
                ("np", "savez"),
                ("torch", "save"),
                ("sitk", "WriteImage"),
            }:
                found.append(f"{where} {func.value.id}.{func.attr}()")
        elif isinstance(func, ast.Name) and func.id == "open":
            modes = [a.value for a in node.args[1:2] if isinstance(a, ast.Constant)]
            modes += [
                k.value.value for k in node.keywords if k.arg == "mode" and isinstance(k.value, ast.Constant)
            ]
            if any(set(str(m)) & set("wax+") for m in modes):
                found.append(f"{where} open(..., {modes[0]!r})")
    return found


def test_lib_and_module_files_write_files_only_atomically():
    """Every file LossLabLib or a module file writes goes through losslab.io (atomic_write, write_text,
    write_image, save_figure): a crash never leaves a half-written file. (A stop file is created with
    Path.touch: empty, its existence is the message.)"""
    files = [p for folder in MODULE_FOLDERS for p in sorted(folder.glob("*Lib/*.py"))] + MODULE_FILES
    assert any(p.parent.name == "LossLabLib" for p in files)
    unsafe = [w for p in files for w in _unsafe_writes(p)]
    assert not unsafe, "write these through losslab.io's atomic helpers: " + "; ".join(unsafe)


# Scripted Segment Editor effects (Slicer's ScriptedSegmentEditorEffect template) --------------------------

EFFECT_FILES = sorted(
    p for folder in MODULE_FOLDERS for p in folder.glob("SegmentEditor*Lib/SegmentEditorEffect.py")
)
EFFECT_METHODS = {
    "clone",
    "icon",
    "helpText",
    "setupOptionsFrame",
    "setMRMLDefaults",
    "updateGUIFromMRML",
    "updateMRMLFromGUI",
    "processInteractionEvents",
}


def test_the_ice_edit_effect_is_there():
    assert any(p.parent.name == "SegmentEditorICEEditLib" for p in EFFECT_FILES), EFFECT_FILES


@pytest.mark.parametrize("path", EFFECT_FILES, ids=lambda p: p.parent.name)
def test_effect_follows_the_template_and_leaves_the_work_to_the_lib(path, tmp_path):
    py_compile.compile(str(path), cfile=str(tmp_path / "effect.pyc"), doraise=True)
    text = path.read_text()
    tree = ast.parse(text)
    classes = {n.name: n for n in tree.body if isinstance(n, ast.ClassDef)}
    assert "SegmentEditorEffect" in classes, f"{path} has no class SegmentEditorEffect"
    effect = classes["SegmentEditorEffect"]
    assert [ast.unparse(b) for b in effect.bases] == ["AbstractScriptedSegmentEditorEffect"]
    methods = _methods(effect)
    assert EFFECT_METHODS <= set(methods), f"{path.name} lacks {sorted(EFFECT_METHODS - set(methods))}"
    init = ast.unparse(methods["__init__"])
    assert "scriptedEffect.name = " in init and "AbstractScriptedSegmentEditorEffect.__init__" in init
    assert "setPythonSource(__file__" in ast.unparse(methods["clone"])
    # strokes: slice views only, press / move / release, positions through xyToRas
    events = ast.unparse(methods["processInteractionEvents"])
    for needle in (
        "qMRMLSliceWidget",
        "LeftButtonPressEvent",
        "MouseMoveEvent",
        "LeftButtonReleaseEvent",
        "self.xyToRas(",
    ):
        assert needle in events, f"{path.name}: processInteractionEvents does not use {needle}"
    # writes through the Segment Editor (undo state first, masking honoured), handed to the Lib
    assert "saveStateForUndo" in text and "modifySelectedSegmentByLabelmap" in text
    lib = f"{path.parents[1].name}Lib"
    assert re.search(rf"\b{lib}\b", text), f"{path.name} does not call {lib}"
    # no maths in the effect
    for node in ast.walk(tree):
        if (
            isinstance(node, ast.Attribute)
            and isinstance(node.value, ast.Name)
            and node.value.id in MATH_MODULES
        ):
            pytest.fail(
                f"{path.name}:{node.lineno}: {node.value.id}.{node.attr}: computation belongs in {lib}"
            )
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else [node.module or ""]
            assert not {n.split(".")[0] for n in names} & MATH_MODULES, (
                f"{path.name}:{node.lineno} imports {names}"
            )
    icon = path.parent / "SegmentEditorEffect.png"
    assert icon.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", f"{icon} is missing or not a PNG"
    assert "SegmentEditorEffect" in (path.parent / "__init__.py").read_text()


@pytest.mark.parametrize("path", EFFECT_FILES, ids=lambda p: p.parent.name)
def test_the_module_registers_its_effect_and_sample_data_at_startup(path):
    module = path.parents[1] / f"{path.parents[1].name}.py"
    text = module.read_text()
    tree = ast.parse(text)
    module_class = next(n for n in tree.body if isinstance(n, ast.ClassDef) and n.name == module.stem)
    init = ast.unparse(_methods(module_class)["__init__"])
    assert init.count("'startupCompleted()'") >= 2, f"{module.name}: register on startupCompleted()"
    functions = {n.name: ast.unparse(n) for n in tree.body if isinstance(n, ast.FunctionDef)}
    connected = set(re.findall(r"connect\('startupCompleted\(\)', (\w+)\)", init))
    registering = [n for n, f in functions.items() if "qSlicerSegmentEditorScriptedEffect(None)" in f]
    assert registering and registering[0] in connected, (
        f"{module.name}: the effect is not registered at startup"
    )
    assert "setPythonSource" in functions[registering[0]] and ".register()" in functions[registering[0]]
    assert path.parent.name in text and "SegmentEditorEffect.py" in text  # the effect's source file
    sample = [n for n, f in functions.items() if "registerCustomSampleDataSource" in f]
    assert sample and sample[0] in connected, f"{module.name} does not register its sample data at startup"
    lib_sample = (path.parents[1] / f"{path.parents[1].name}Lib" / "sample_data.py").read_text()
    assert '"checksums": f"SHA256:' in lib_sample
