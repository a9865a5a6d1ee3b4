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


def test_the_readme_scripting_snippet_runs(mrml, capsys):
    """Issue 20: README's LossLabLib snippet used nodes it never named (refSeg, predSeg). Now it takes two
    segmentation nodes of the scene by name, as a console user would."""
    import numpy as np

    from LossLabLib import mrml_io
    from LossLabLib.mrml_io import Grid

    text = (DOC.parents[1] / "README.md").read_text()
    section = text.split("## Installing in 3D Slicer", 1)[1].split("\n## ", 1)[0]
    blocks = re.findall(r"```python\n(.*?)```", section, re.S)
    assert len(blocks) == 1
    grid = Grid((20, 30, 30), np.diag([1.0, 1.0, 2.0, 1.0]))
    box = np.zeros(grid.shape, bool)
    box[5:15, 8:22, 8:22] = True
    volume = mrml_io.array_to_volume(mrml.scene, box.astype(np.float32), grid, name="image")
    for name, mask in (("reference", box), ("compared", np.roll(box, 2, axis=2))):
        node = mrml.scene.AddNewNodeByClass("vtkMRMLSegmentationNode", name)
        node.SetReferenceImageGeometryParameterFromVolumeNode(volume)
        mrml_io.set_segment_from_mask(node, "Segment_1", mask, grid)
    namespace = {"slicer": slicer}
    exec(compile(blocks[0], "README.md", "exec"), namespace)  # noqa: S102 - our own README
    dice, hd95 = (float(v) for v in capsys.readouterr().out.split()[:2])
    assert dice == pytest.approx(12 / 14) and hd95 == pytest.approx(2.0)
