"""The Python snippets of docs/slicer.md run as written, in a real MRML scene (as Slicer's console would)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

pytest.importorskip("slicer", reason="slicer-core is not installed (pip install slicer-core)")

import slicer  # noqa: E402

DOC = Path(__file__).resolve().parents[2] / "docs" / "slicer.md"


def test_console_snippets_of_the_slicer_docs_run(mrml, capsys):
    blocks = re.findall(r"```python\n(.*?)```", DOC.read_text(), re.S)
    assert len(blocks) >= 3
    namespace = {"slicer": slicer}
    for block in blocks:
        exec(compile(block, str(DOC), "exec"), namespace)  # noqa: S102 - our own documentation
    out = capsys.readouterr().out
    assert "['truth', 'initial', 'edited']" in out and "100% Done" in out
    assert namespace["result"].editing is not None
    # the LossLab module section: a background training run, inference and the gradient lab
    assert namespace["job"].returncode == 0 and namespace["job"].model_path.is_file()
    assert "['background', 'class1', 'class2']" in out and "dynamic range: Dice" in out
    assert namespace["table"].GetNumberOfRows() == 2
    assert namespace["dice"].dynamic_range_db < namespace["ce"].dynamic_range_db
    # the Lib class behind the LossLab module's Logic, used directly
    assert "['class1', 'class2'] True" in out
