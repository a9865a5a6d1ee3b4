#!/usr/bin/env python3
"""Package this Slicer extension as Slicer's extension factory would, without building Slicer.

Given source checkouts of Slicer and of CTK (at the commit that Slicer's ``SuperBuild/External_CTK.cmake``
pins), this writes the minimal Slicer "build tree" that an extension's CMake needs (``SlicerConfig.cmake``,
``UseSlicer.cmake`` and a few no-op stand-ins for what a Python-only extension never calls), then runs
configure, build and cpack over this repository and lists what the package holds. The idea and the facts
(which variables and macros Slicer's extension CMake reads) come from Slicer PR #9118
(``Utilities/Scripts/package_python_extension.py``); two things differ on purpose:

- the Python scripts are copied and byte-compiled by CTK's real ``ctkMacroCompilePythonScript`` (the one
  the factory uses), not by a stand-in: it appends ``.py`` to any SCRIPTS entry that is not a Python file,
  which is how a model listed in SCRIPTS fails the factory's build;
- the package is checked: every file that the ``slicerMacroBuildScriptedModule`` calls list (and the
  ``.pyc`` of every script) must be in it, and the core and Lib packages must import from the unpacked
  package (the Lib packages when slicer-core is importable in the Python that runs this script).

Usage (a CMake from PyPI is enough: ``pip install cmake``)::

    python Utilities/package_extension.py --slicer-source ~/src/Slicer --ctk-source ~/src/CTK

Exit codes: 0 packaged and checked; 1 a step failed (its output is shown); 2 bad arguments (one line).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import shutil
import subprocess
import sys
import tarfile
import tempfile
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
#: the module folders of the extension (add_subdirectory of the top-level CMakeLists.txt)
_ADD_SUBDIRECTORY = re.compile(r"^\s*add_subdirectory\(\s*(\w+)\s*\)", re.M)
_COMMAND = re.compile(r"(\w+)\s*\(([^()]*)\)", re.S)


class UsageError(ValueError):
    """A bad argument: reported in one line, exit code 2."""


# CMake lists, read as CMake evaluates them (also used by Testing/core/test_slicer_extension_files.py) ---------


def scripted_modules(cmake: Path) -> list[dict]:
    """The ``slicerMacroBuildScriptedModule`` calls of a CMakeLists.txt, as CMake evaluates them.

    A small evaluator for the subset these files use: ``set(VAR item ...)`` (items may be ``${OTHER}``) and the
    macro's keywords NAME / SCRIPTS / RESOURCES, in file order (so a variable set again between two calls has
    its new value). Returns one ``{"NAME": str, "SCRIPTS": [...], "RESOURCES": [...]}`` per call.
    """
    text = re.sub(r"#[^\n]*", "", cmake.read_text())
    variables: dict[str, list[str]] = {}

    def expand(tokens):
        out = []
        for token in tokens:
            whole = re.fullmatch(r"\$\{(\w+)\}", token)
            if whole:
                out += variables.get(whole.group(1), [])
            else:
                out.append(re.sub(r"\$\{(\w+)\}", lambda m: " ".join(variables.get(m.group(1), [])), token))
        return out

    calls = []
    for command, arguments in _COMMAND.findall(text):
        tokens = [t.strip('"') for t in arguments.split()]
        if command.lower() == "set" and tokens:
            variables[tokens[0]] = expand(tokens[1:])
        elif command == "slicerMacroBuildScriptedModule":
            call: dict = {"NAME": "", "SCRIPTS": [], "RESOURCES": []}
            key = None
            for token in expand(tokens):
                if token in ("NAME", "SCRIPTS", "RESOURCES"):
                    key = token
                elif token in ("WITH_GENERIC_TESTS", "WITH_SUBDIR", "VERBOSE"):
                    key = None
                elif key == "NAME":
                    call["NAME"] = token
                elif key is not None:
                    call[key].append(token)
            calls.append(call)
    return calls


def module_folders(source: Path = ROOT) -> list[str]:
    return _ADD_SUBDIRECTORY.findall((source / "CMakeLists.txt").read_text())


def expected_files(source: Path = ROOT) -> set[str]:
    """Paths, relative to the qt-scripted-modules folder, that the package must hold: every listed script with
    its ``.pyc`` (CTK's macro compiles them) and every listed resource."""
    out: set[str] = set()
    for folder in module_folders(source):
        for call in scripted_modules(source / folder / "CMakeLists.txt"):
            for script in call["SCRIPTS"]:
                out |= {script, script + "c"}
            out |= set(call["RESOURCES"])
    return out


# Slicer and CTK facts -------------------------------------------------------------------------------------------


def _cmake_set(text: str, name: str) -> str | None:
    found = re.search(rf'set\(\s*{name}\s+"?([^")\s]+)"?', text)
    return found.group(1) if found else None


@dataclass
class SlicerSource:
    path: Path
    version: tuple[str, str, str]
    ctk_commit: str
    cmake_minimum: str
    revision: str

    @classmethod
    def read(cls, path: Path, revision: str | None = None) -> SlicerSource:
        top = path / "CMakeLists.txt"
        needed = [top, path / "CMake" / "SlicerMacroBuildScriptedModule.cmake", path / "SuperBuild"]
        missing = [str(p) for p in needed if not p.exists()]
        if missing:
            raise UsageError(f"--slicer-source {path}: not a Slicer source checkout (missing {missing[0]})")
        text = top.read_text(encoding="utf-8", errors="replace")
        version = tuple(
            _cmake_set(text, f"Slicer_VERSION_{part}") or "0" for part in ("MAJOR", "MINOR", "PATCH")
        )
        ctk = (path / "SuperBuild" / "External_CTK.cmake").read_text()
        pin = re.search(r"Slicer_\$\{proj\}_GIT_TAG\s+\"([0-9a-f]{40})\"", ctk)
        if not pin:
            raise UsageError(f"{path}/SuperBuild/External_CTK.cmake: no pinned CTK commit found")
        minimum = _cmake_set(text, "OLDEST_VALIDATED_POLICIES_VERSION") or "3.16.3"
        return cls(path, version, pin.group(1), minimum, revision or _slicer_revision(path, text))


def _git(path: Path, *args: str) -> str | None:
    try:
        done = subprocess.run(
            ["git", "-c", "safe.directory=*", "-C", str(path), *args],
            capture_output=True,
            text=True,
            timeout=60,
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    return done.stdout.strip() if done.returncode == 0 else None


def _slicer_revision(path: Path, text: str) -> str:
    """Slicer's revision: the commit count plus the offsets of ``_commit_count_offsets`` (as Slicer computes it);
    "0" when the checkout has no git history."""
    count = _git(path, "rev-list", "--count", "HEAD")
    if not count:
        return "0"
    offsets = re.search(r"set\(_commit_count_offsets(.*?)\)", text, re.S)
    return str(int(count) + sum(int(n) for n in re.findall(r'"(\d+)"', offsets.group(1) if offsets else "")))


def check_ctk(path: Path, pinned: str, allow_other: bool) -> str:
    """The CTK checkout's CMake folder; refuses a commit other than Slicer's pin unless ``allow_other``."""
    macro = path / "CMake" / "ctkMacroCompilePythonScript.cmake"
    if not macro.is_file():
        raise UsageError(
            f"--ctk-source {path}: not a CTK source checkout (no CMake/ctkMacroCompilePythonScript.cmake)"
        )
    head = _git(path, "rev-parse", "HEAD")
    if head is None:
        return f"CTK at {path} (no git history: cannot confirm it is Slicer's pin {pinned[:12]})"
    if head != pinned and not allow_other:
        raise UsageError(
            f"--ctk-source {path} is at {head[:12]}, Slicer pins CTK {pinned[:12]}: check out that commit "
            "(or pass --any-ctk)"
        )
    return f"CTK {head[:12]}" + (" (Slicer's pin)" if head == pinned else f" (Slicer pins {pinned[:12]})")


def find_cmake(hint: str | None, minimum: str) -> tuple[str, str]:
    """(cmake, cpack) executables of at least version ``minimum``."""
    cmake = str(Path(hint).absolute()) if hint else shutil.which("cmake")
    if not cmake or not Path(cmake).exists():
        raise UsageError("no cmake found: pass --cmake PATH or `pip install cmake`")
    out = subprocess.run([cmake, "--version"], capture_output=True, text=True).stdout
    version = re.search(r"cmake version (\d+(?:\.\d+)*)", out)
    have = tuple(int(x) for x in version.group(1).split(".")) if version else (0,)
    if have < tuple(int(x) for x in minimum.split(".")):
        raise UsageError(
            f"{cmake} is CMake {'.'.join(map(str, have))}; Slicer needs >= {minimum} (`pip install cmake`)"
        )
    cpack = Path(cmake).with_name("cpack" + (".exe" if os.name == "nt" else ""))
    if not cpack.exists():
        raise UsageError(f"no cpack beside {cmake}")
    return str(cmake), str(cpack)


# The minimal Slicer build tree -----------------------------------------------------------------------------------


def _platform() -> tuple[str, str]:
    system = {"windows": "win", "darwin": "macosx"}.get(platform.system().lower(), "linux")
    machine = platform.machine().lower()
    return system, "amd64" if machine in ("x86_64", "amd64") else machine


def write_build_tree(tree: Path, slicer: SlicerSource, ctk_source: Path) -> Path:
    """Write ``SlicerConfig.cmake`` and ``UseSlicer.cmake`` (what ``find_package(Slicer)`` and
    ``include(${Slicer_USE_FILE})`` load) into ``tree``; Slicer's and CTK's own CMake folders provide the
    macros. Returns ``tree`` (the ``Slicer_DIR``)."""
    major, minor, patch = slicer.version
    os_name, arch = _platform()
    src = slicer.path.as_posix()
    ctk_cmake = (ctk_source / "CMake").as_posix()
    stubs = tree / "CMake"
    stubs.mkdir(parents=True, exist_ok=True)
    # Needed by UseSlicer's includes, never called by scripted modules: no-op stand-ins (C++ / launcher only).
    (stubs / "ctkFunctionAddExecutableUtf8.cmake").write_text(
        "function(ctkFunctionAddExecutableUtf8)\nendfunction()\n"
    )
    (stubs / "ctkMacroWrapPythonQt.cmake").write_text("macro(ctkMacroWrapPythonQt)\nendmacro()\n")
    launcher = tree / "CTKAppLauncher"
    launcher.mkdir(exist_ok=True)
    (launcher / "CTKAppLauncherConfig.cmake").write_text(
        "macro(ctkAppLauncherConfigureForExecutable)\nendmacro()\nmacro(ctkAppLauncherConfigure)\nendmacro()\n"
    )
    lib = f"lib/Slicer-{major}.{minor}"
    share = f"share/Slicer-{major}.{minor}"
    dirs = {
        "Slicer_QTSCRIPTEDMODULES_SUBDIR": "qt-scripted-modules",
        "Slicer_SHARE_DIR": share,
        "Slicer_LIB_DIR": lib,
        "Slicer_BIN_DIR": "bin",
        "Slicer_THIRDPARTY_BIN_DIR": "bin",
        "Slicer_THIRDPARTY_LIB_DIR": lib,
        "Slicer_THIRDPARTY_SHARE_DIR": share,
    }
    for kind in ("CLIMODULES", "QTLOADABLEMODULES", "QTSCRIPTEDMODULES"):
        sub = {"CLIMODULES": "cli-modules", "QTLOADABLEMODULES": "qt-loadable-modules"}.get(
            kind, "qt-scripted-modules"
        )
        dirs |= {
            f"Slicer_{kind}_BIN_DIR": f"{lib}/{sub}",
            f"Slicer_{kind}_LIB_DIR": f"{lib}/{sub}",
            f"Slicer_{kind}_SHARE_DIR": f"{share}/{sub}",
            f"Slicer_{kind}_INCLUDE_DIR": f"include/Slicer-{major}.{minor}/{sub}",
        }
    dirs["Slicer_QTLOADABLEMODULES_PYTHON_LIB_DIR"] = f"{lib}/qt-loadable-modules/Python"
    config = [
        f"# Minimal SlicerConfig.cmake written by LossLab's Utilities/package_extension.py over {src}",
        f'set(Slicer_CMAKE_DIR "{src}/CMake")',
        f'set(Slicer_EXTENSIONS_CMAKE_DIR "{src}/Extensions/CMake")',
        f'set(CTK_CMAKE_DIR "{ctk_cmake}")',
        f'list(PREPEND CMAKE_MODULE_PATH "{stubs.as_posix()}" "{src}/Extensions/CMake" "{src}/CMake" "{ctk_cmake}")',
        f'set(Slicer_VERSION_MAJOR "{major}")',
        f'set(Slicer_VERSION_MINOR "{minor}")',
        f'set(Slicer_VERSION_PATCH "{patch}")',
        f'set(Slicer_REVISION "{slicer.revision}")',
        f'set(Slicer_WC_REVISION "{slicer.revision}")',
        'set(Slicer_WC_ROOT "https://github.com/Slicer/Slicer")',
        f'set(Slicer_OS "{os_name}")',
        f'set(Slicer_ARCHITECTURE "{arch}")',
        'set(Slicer_MAIN_PROJECT_APPLICATION_NAME "Slicer")',
        'set(Slicer_ORGANIZATION_NAME "NA-MIC")',
        f'set(Slicer_LICENSE_FILE "{src}/License.txt")',
        f'set(Slicer_README_FILE "{src}/README.md")',
        f'set(Slicer_USE_FILE "{tree.as_posix()}/UseSlicer.cmake")',
        f'set(Slicer_EXTENSION_GENERATE_CONFIG "{src}/CMake/SlicerExtensionGenerateConfig.cmake")',
        f'set(Slicer_EXTENSION_CPACK "{src}/CMake/SlicerExtensionCPack.cmake")',
        f'set(Slicer_EXTENSION_CPACK_BUNDLE_FIXUP "{src}/CMake/SlicerExtensionCPackBundleFixup.cmake.in")',
        'set(Slicer_EXTENSIONS_DIRBASENAME "Extensions")',
        'set(Slicer_EXTENSIONS_DIRNAME "${Slicer_EXTENSIONS_DIRBASENAME}-${Slicer_REVISION}")',
        "set(Slicer_USE_PYTHONQT ON)",
        "set(Slicer_BUILD_QTSCRIPTEDMODULES ON)",
        "set(Slicer_BUILD_SHARED ON)",
        'set(Slicer_DEFAULT_BUILD_TYPE "Release")',
        f'set(Slicer_HOME "{tree.as_posix()}")',
        f'set(Slicer_BINARY_DIR "{tree.as_posix()}")',
        'set(Slicer_INSTALL_ROOT "./")',
        f'set(Slicer_PYTHON_MODULE_TEST_TEMPLATES_DIR "{src}/Base/QTCore/Testing/Python")',
        f'set(CTKAppLauncher_DIR "{launcher.as_posix()}")',
        *(f'set({name} "{value}")' for name, value in dirs.items()),
        "find_program(GIT_EXECUTABLE git)",
        "",
    ]
    (tree / "SlicerConfig.cmake").write_text("\n".join(config))
    use = [
        "# Minimal UseSlicer.cmake written by LossLab's Utilities/package_extension.py",
        "if(NOT DEFINED EXTENSION_NAME)",
        "  set(EXTENSION_NAME ${PROJECT_NAME})",
        "endif()",
        "macro(mark_as_superbuild)",
        "endmacro()",
        "include(CMakeParseArguments)",
        "include(UseSlicerMacros)",
        "include(SlicerInitializeBuildType)",
        "include(ctkFunctionExtractOptimizedLibrary)",  # CTKConfig.cmake includes it for the macro below
        "include(ctkMacroCompilePythonScript)",  # CTK's real macro: copies and byte-compiles the scripts
        "include(ctkFunctionAddExecutableUtf8)",
        "include(ctkMacroWrapPythonQt)",
        "include(SlicerMacroBuildScriptedModule)",
        "include(SlicerMacroExtractRepositoryInfo)",
        "include(SlicerMacroSimpleTest)",
        "include(SlicerMacroPythonTesting)",
        "include(SlicerMacroConfigureGenericPythonModuleTests)",
        'set(Slicer_BUNDLE_EXTENSIONS_LOCATION "")',
        *(
            f'set(Slicer_INSTALL_{kind}_{part}_DIR "${{Slicer_INSTALL_ROOT}}${{Slicer_{kind}_{part}_DIR}}")'
            for kind in ("CLIMODULES", "QTLOADABLEMODULES", "QTSCRIPTEDMODULES", "THIRDPARTY")
            for part in ("BIN", "LIB", "SHARE", "INCLUDE")
            if f"Slicer_{kind}_{part}_DIR" in dirs
        ),
        'set(EXTENSION_OPERATING_SYSTEM "${Slicer_OS}")',
        'set(EXTENSION_ARCHITECTURE "${Slicer_ARCHITECTURE}")',
        "foreach(_var IN ITEMS DEPENDS LICENSE_FILE README_FILE SOURCE_DIR SUPERBUILD_BINARY_DIR BUILD_SUBDIRECTORY ENABLED)",
        "  if(NOT DEFINED EXTENSION_${_var})",
        '    set(_default_DEPENDS "NA")',
        '    set(_default_LICENSE_FILE "${Slicer_LICENSE_FILE}")',
        '    set(_default_README_FILE "${Slicer_README_FILE}")',
        '    set(_default_SOURCE_DIR "${CMAKE_SOURCE_DIR}")',
        '    set(_default_SUPERBUILD_BINARY_DIR "${CMAKE_BINARY_DIR}")',
        '    set(_default_BUILD_SUBDIRECTORY ".")',
        '    set(_default_ENABLED "1")',
        '    set(EXTENSION_${_var} "${_default_${_var}}")',
        "  endif()",
        "endforeach()",
        "include(SlicerExtensionDescriptionSpec)",
        "foreach(_var IN LISTS Slicer_EXT_OPTIONAL_METADATA_NAMES)",
        "  if(NOT DEFINED EXTENSION_${_var})",
        '    set(EXTENSION_${_var} "${Slicer_EXT_METADATA_${_var}_DEFAULT}")',
        "  endif()",
        "endforeach()",
        "",
    ]
    (tree / "UseSlicer.cmake").write_text("\n".join(use))
    return tree


# Configure, build, package, check ------------------------------------------------------------------------------


def _run(command: list[str], cwd: Path | None = None, log: Path | None = None) -> str:
    print("$ " + " ".join(command), flush=True)
    done = subprocess.run(command, cwd=cwd, capture_output=True, text=True)
    output = done.stdout + done.stderr
    if log is not None:
        log.write_text(output)
    if done.returncode != 0:
        print(output[-6000:], file=sys.stderr)
        raise RuntimeError(
            f"{command[0]} {command[1] if len(command) > 1 else ''} failed (exit {done.returncode})"
        )
    return output


def python_cache_args(python: str) -> list[str]:
    """PYTHON_EXECUTABLE / PYTHON_LIBRARY / PYTHON_INCLUDE_DIR for CTK's macro (FindPythonInterp/Libs)."""
    query = (
        "import sysconfig, json, sys; v = sysconfig.get_config_var; "
        "print(json.dumps([sys.executable, v('LIBDIR') or '', v('LDLIBRARY') or '', sysconfig.get_paths()['include']]))"
    )
    executable, libdir, library, include = json.loads(
        subprocess.check_output([python, "-c", query], text=True)
    )
    args = [f"-DPYTHON_EXECUTABLE:FILEPATH={executable}", f"-DPYTHON_INCLUDE_DIR:PATH={include}"]
    if libdir and library and (Path(libdir) / library).exists():
        args.append(f"-DPYTHON_LIBRARY:FILEPATH={Path(libdir) / library}")
    return args


@dataclass
class Package:
    path: Path
    files: dict[str, int] = field(default_factory=dict)  # path inside the package -> size in bytes

    @property
    def size(self) -> int:
        return self.path.stat().st_size

    @classmethod
    def read(cls, path: Path) -> Package:
        if path.suffix == ".zip":
            with zipfile.ZipFile(path) as z:
                files = {i.filename: i.file_size for i in z.infolist() if not i.is_dir()}
        else:
            with tarfile.open(path) as t:
                files = {m.name: m.size for m in t.getmembers() if m.isfile()}
        return cls(path, files)

    def scripted_modules_root(self) -> str:
        roots = {
            name.split("/qt-scripted-modules/")[0] for name in self.files if "/qt-scripted-modules/" in name
        }
        if len(roots) != 1:
            raise RuntimeError(
                f"{self.path.name}: expected one qt-scripted-modules folder, found {sorted(roots)}"
            )
        return roots.pop() + "/qt-scripted-modules/"

    def missing(self, expected: set[str]) -> list[str]:
        root = self.scripted_modules_root()
        held = {name[len(root) :] for name in self.files if name.startswith(root)}
        return sorted(expected - held)


def check_imports(package: Package, python: str) -> list[str]:
    """Unpack the package and import the core (and, with slicer-core, the Lib packages) from it alone."""
    lines = []
    with tempfile.TemporaryDirectory() as tmp:
        if package.path.suffix == ".zip":  # cpack's generator on Windows
            with zipfile.ZipFile(package.path) as z:
                z.extractall(tmp)
        else:
            with tarfile.open(package.path) as t:
                # the "data" filter (no links out, no devices) where this Python has it (3.10.12+, 3.11.4+)
                t.extractall(tmp, **({"filter": "data"} if hasattr(tarfile, "data_filter") else {}))
        modules = Path(tmp) / package.scripted_modules_root()
        code = (
            "import importlib, importlib.util, sys; sys.path.insert(0, sys.argv[1]); names = ['losslab', "
            "'losslab.models', 'losslab.engine', 'losslab.ice', 'losslab.labelsets']; "
            "names += ['LossLabLib', 'ICEEditingLib', 'FetalParcellationLib'] if importlib.util.find_spec('slicer') else []; "
            "mods = [importlib.import_module(n) for n in names]; "
            "assert all(m.__file__.startswith(sys.argv[1]) for m in mods), [m.__file__ for m in mods]; "
            "from losslab.models import list_models, model_path; cards = list_models(); "
            "paths = [model_path(c.name) for c in cards]; "  # checks every file's sha256 against its card
            "assert cards and all(str(p).startswith(sys.argv[1]) for p in paths), paths; "
            "print('imported from the package:', ', '.join(names)); "
            "print('models (sha256 checked):', ', '.join(c.name for c in cards))"
        )
        env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "LOSSLAB_MODELS_DIR")}
        done = subprocess.run(
            [python, "-c", code, str(modules)], capture_output=True, text=True, cwd=tmp, env=env
        )
        if done.returncode != 0:
            raise RuntimeError("the unpacked package does not import:\n" + done.stderr[-3000:])
        lines += done.stdout.splitlines()
    return lines


def package(args) -> Package:
    source = Path(args.source).resolve()
    slicer = SlicerSource.read(Path(args.slicer_source).resolve(), args.slicer_revision)
    ctk_source = Path(args.ctk_source).resolve()
    ctk_note = check_ctk(ctk_source, slicer.ctk_commit, args.any_ctk)
    cmake, cpack = find_cmake(args.cmake, slicer.cmake_minimum)
    work = Path(args.work_dir).resolve()
    if work.exists():
        shutil.rmtree(work)
    tree, build = work / "Slicer-build", work / "build"
    build.mkdir(parents=True)
    print(f"Slicer {'.'.join(slicer.version)} (revision {slicer.revision}) at {slicer.path}; {ctk_note}")
    write_build_tree(tree, slicer, ctk_source)
    _run(
        [cmake, "-S", str(source), "-B", str(build), f"-DSlicer_DIR:PATH={tree}", "-DCMAKE_BUILD_TYPE:STRING=Release",
         "-DBUILD_TESTING:BOOL=OFF", *python_cache_args(args.python)],
        log=work / "configure.log",
    )  # fmt: skip
    _run([cmake, "--build", str(build), "--config", "Release"], log=work / "build.log")
    output = _run([cpack, "-C", "Release"], cwd=build, log=work / "cpack.log")
    made = re.findall(r"package: (.+?) generated", output)
    if not made:
        raise RuntimeError("cpack reported no package:\n" + output[-3000:])
    built = Path(made[-1].strip())
    out_dir = Path(args.output_dir).resolve() if args.output_dir else work
    out_dir.mkdir(parents=True, exist_ok=True)
    if built.parent != out_dir:
        shutil.copy2(built, out_dir / built.name)
    return Package.read(out_dir / built.name)


def describe(pkg: Package, expected: set[str]) -> list[str]:
    root = pkg.scripted_modules_root()
    lines = [
        f"{pkg.path.name}: {len(pkg.files)} files, {pkg.size / 1e6:.1f} MB ({sum(pkg.files.values()) / 1e6:.1f} MB unpacked)"
    ]
    top = pkg.path.name.removesuffix(".tar.gz").removesuffix(".zip") + "/"
    for name in sorted(pkg.files):
        shown = name[len(top) :] if name.startswith(top) else name
        lines.append(f"  {pkg.files[name]:>10}  {shown}")
    missing = pkg.missing(expected)
    lines.append(
        f"holds all {len(expected)} files the CMake lists install under {root[len(top) :]} (scripts, their .pyc, resources)"
        if not missing
        else "MISSING from the package: " + " ".join(missing)
    )
    return lines


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--slicer-source", required=True, help="a Slicer source checkout (git clone of Slicer/Slicer)"
    )
    parser.add_argument("--ctk-source", required=True, help="a CTK source checkout at the commit Slicer pins")
    parser.add_argument(
        "--source", default=str(ROOT), help="the extension's source (default: this repository)"
    )
    parser.add_argument(
        "--work-dir", default=str(ROOT / "build" / "package"), help="build folder (emptied first)"
    )
    parser.add_argument("--output-dir", help="where to copy the package (default: the work folder)")
    parser.add_argument(
        "--cmake", help="cmake executable (default: the one on PATH); cpack must be beside it"
    )
    parser.add_argument(
        "--python", default=sys.executable, help="Python for byte-compiling and the import check"
    )
    parser.add_argument("--slicer-revision", help="Slicer revision in the package name (default: from git)")
    parser.add_argument("--any-ctk", action="store_true", help="accept a CTK commit other than Slicer's pin")
    parser.add_argument("--list", action="store_true", help="print every file of the package with its size")
    args = parser.parse_args(argv)
    try:
        pkg = package(args)
        expected = expected_files(Path(args.source).resolve())
        lines = describe(pkg, expected)
        print("\n".join(lines if args.list else [lines[0], lines[-1]]))
        if pkg.missing(expected):
            return 1
        print("\n".join(check_imports(pkg, args.python)))
    except UsageError as exc:
        print(f"package_extension.py: {exc}", file=sys.stderr)
        return 2
    except RuntimeError as exc:
        print(f"package_extension.py: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
