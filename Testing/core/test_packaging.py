"""Utilities/package_extension.py: the extension packaged as Slicer's factory would (CTK's real macros).

The packaging itself needs source checkouts of Slicer and CTK and a CMake at least as new as Slicer asks
(docs/slicer.md, "Packaging"): it runs when LOSSLAB_SLICER_SOURCE and LOSSLAB_CTK_SOURCE name them
(LOSSLAB_CMAKE: a cmake other than the one on PATH) and skips, saying so, where they are absent (CI).
The script's offline parts (reading Slicer's facts, what the package must hold, bad arguments) always run.
"""

from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "Utilities"))
import package_extension as pe  # noqa: E402


def _fake_slicer(folder: Path) -> Path:
    (folder / "CMake").mkdir(parents=True)
    (folder / "SuperBuild").mkdir()
    (folder / "CMake" / "SlicerMacroBuildScriptedModule.cmake").write_text("")
    (folder / "CMakeLists.txt").write_text(
        'set(OLDEST_VALIDATED_POLICIES_VERSION "3.28.0")\n'
        'set(Slicer_VERSION_MAJOR "5")\nset(Slicer_VERSION_MINOR "13")\nset(Slicer_VERSION_PATCH "0")\n'
    )
    (folder / "SuperBuild" / "External_CTK.cmake").write_text(
        '  set(revision_tag\n    Slicer_${proj}_GIT_TAG\n    "5056664a20a3d0a393bb6d91f040525581e0dcdf"\n'
    )
    return folder


def test_slicer_facts_are_read_from_the_source(tmp_path):
    slicer = pe.SlicerSource.read(_fake_slicer(tmp_path / "Slicer"))
    assert slicer.version == ("5", "13", "0")
    assert slicer.ctk_commit == "5056664a20a3d0a393bb6d91f040525581e0dcdf"
    assert slicer.cmake_minimum == "3.28.0"
    assert slicer.revision == "0"  # no git history


def test_the_package_must_hold_every_listed_file_and_each_script_compiled():
    expected = pe.expected_files(ROOT)
    for path in ("LossLab.py", "LossLabLib/__init__.py", "losslab/engine/trainer.py", "ICEEditing.py"):
        assert {path, path + "c"} <= expected, path
    for resource in (
        "losslab/models/ice-editing-64/model.pt",
        "losslab/models/ice-editing-64/model.json",
        "Resources/UI/FetalParcellation.ui",
        "Resources/requirements.txt",
    ):
        assert resource in expected and resource + "c" not in expected, resource
    # a package missing one of them is reported
    package = pe.Package(
        Path("x.tar.gz"), {f"x/lib/Slicer-5.13/qt-scripted-modules/{p}": 1 for p in expected}
    )
    assert package.missing(expected) == []
    del package.files["x/lib/Slicer-5.13/qt-scripted-modules/losslab/models/ice-editing-64/model.pt"]
    assert package.missing(expected) == ["losslab/models/ice-editing-64/model.pt"]


@pytest.mark.parametrize(
    "which, message",
    [("slicer", "not a Slicer source checkout"), ("ctk", "not a CTK source checkout")],
)
def test_bad_source_folders_are_one_line_and_exit_2(tmp_path, capsys, which, message):
    slicer = _fake_slicer(tmp_path / "Slicer") if which == "ctk" else tmp_path / "nothing"
    code = pe.main(["--slicer-source", str(slicer), "--ctk-source", str(tmp_path / "CTK")])
    err = capsys.readouterr().err.strip()
    assert code == 2 and message in err and len(err.splitlines()) == 1, err


def _cmake_or_skip(minimum: str) -> str:
    cmake = os.environ.get("LOSSLAB_CMAKE") or shutil.which("cmake")
    if not cmake:
        pytest.skip("no cmake: set LOSSLAB_CMAKE or `pip install cmake`")
    try:
        pe.find_cmake(cmake, minimum)
    except pe.UsageError as exc:
        pytest.skip(str(exc))
    return cmake


def test_package_with_slicers_and_ctks_real_macros(tmp_path, capsys):
    slicer, ctk = os.environ.get("LOSSLAB_SLICER_SOURCE"), os.environ.get("LOSSLAB_CTK_SOURCE")
    if not (slicer and ctk):
        pytest.skip(
            "packaging needs Slicer and CTK source checkouts (CI has none): set LOSSLAB_SLICER_SOURCE and "
            "LOSSLAB_CTK_SOURCE (docs/slicer.md, 'Packaging')"
        )
    cmake = _cmake_or_skip(pe.SlicerSource.read(Path(slicer)).cmake_minimum)
    code = pe.main(
        ["--slicer-source", slicer, "--ctk-source", ctk, "--cmake", cmake, "--work-dir", str(tmp_path / "w")]
    )
    out = capsys.readouterr()
    assert code == 0, out.out[-3000:] + out.err[-3000:]
    assert "holds all" in out.out and "MISSING" not in out.out
    assert "imported from the package: losslab" in out.out
    packages = list((tmp_path / "w").glob("*-LossLab-*.tar.gz"))
    assert len(packages) == 1, packages
    names = pe.Package.read(packages[0]).files
    assert any(n.endswith("qt-scripted-modules/losslab/engine/trainer.pyc") for n in names)
    assert not any(n.endswith((".json.py", ".pt.py")) for n in names)
