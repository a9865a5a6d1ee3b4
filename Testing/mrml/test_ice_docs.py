"""The console snippets of docs/ice-slicer.md and of the README's ICE editing section run as written, in a
real MRML scene (as Slicer's console would), with the models by name from a registry."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

pytest.importorskip("slicer", reason="slicer-core is not installed (pip install slicer-core)")
pytest.importorskip("torch")

import slicer  # noqa: E402
from ice_helpers import tiny_registry  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]


def _blocks(text: str) -> list[str]:
    return re.findall(r"```python\n(.*?)```", text, re.S)


def test_the_ice_slicer_page_runs_a_whole_session(mrml, capsys, tmp_path_factory, monkeypatch):
    monkeypatch.setenv("LOSSLAB_MODELS_DIR", str(tiny_registry(tmp_path_factory)))
    blocks = _blocks((ROOT / "docs" / "ice-slicer.md").read_text())
    assert len(blocks) == 1
    namespace = {"slicer": slicer}
    exec(compile(blocks[0], "docs/ice-slicer.md", "exec"), namespace)  # noqa: S102 - our own documentation
    out = capsys.readouterr().out
    session = namespace["session"]
    assert len(session.records) == 3 and "voxels changed beyond 2 sigma" in out and "D near p95 (mm):" in out
    assert namespace["undone"] is namespace["redone"] and namespace["redone"].state == "applied"
    assert "Loading editing model ice-editing-64" in out  # the progress callback
    assert "'applied'" in out


def test_the_readme_ice_section_runs(mrml, capsys, tmp_path_factory, monkeypatch):
    monkeypatch.setenv("LOSSLAB_MODELS_DIR", str(tiny_registry(tmp_path_factory)))
    text = (ROOT / "README.md").read_text()
    section = text.split("## ICE editing in 3D Slicer", 1)[1].split("\n## ", 1)[0]
    blocks = _blocks(section)
    assert len(blocks) == 1
    namespace = {"slicer": slicer}
    exec(compile(blocks[0], "README.md", "exec"), namespace)  # noqa: S102
    assert namespace["record"].kind == "model" and namespace["session"].records[0].state == "applied"
