"""The console snippet of docs/fetal-slicer.md runs as written, in a real MRML scene holding the sample case's
nodes (GA26_operated, downsampled to 2.4 mm to keep it quick) and with a tiny random-weight ensemble as the
model: only the snippet's first line (its dataset folder and model name) is replaced."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

pytest.importorskip("slicer", reason="slicer-core is not installed (pip install slicer-core)")
torch = pytest.importorskip("torch")

import slicer  # noqa: E402
import slicer.util  # noqa: E402
from fetal_cases import load_volume, write_small_case  # noqa: E402

from losslab import models  # noqa: E402
from losslab.engine import save_checkpoint  # noqa: E402
from losslab.labelsets import LABEL_NAMES  # noqa: E402
from losslab.nets import build_network, network_spec  # noqa: E402

DOC = Path(__file__).resolve().parents[2] / "docs" / "fetal-slicer.md"


def _random_ensemble(folder: Path) -> None:
    network = {"preset": "fetal_parcellation", "features": [4, 4, 4, 4, 4]}
    members = []
    for k in range(2):
        torch.manual_seed(k)
        info = {"network": network_spec(network), "labels": LABEL_NAMES, "channel_names": ["image"],
                "n_image_channels": 1, "normalize": "zscore", "window": None, "overlap": 0.5}  # fmt: skip
        save_checkpoint(
            folder / f"m{k}" / "model.pt", {"model": build_network(network).state_dict(), "model_info": info}
        )
        members.append(f"m{k}/model.pt")
    (folder / "ensemble.json").write_text(json.dumps({"members": members}))
    models.register_model(folder, {"name": "fetal-doc", "task": "test", "grid": {"spacing_mm": [3.2] * 3}})


def test_console_snippet_of_the_fetal_docs_runs(mrml, tmp_path, capsys, monkeypatch):
    scene = mrml.scene
    files = write_small_case("GA26_operated", tmp_path / "case")
    load_volume(scene, files["srr"], "FetalAtlasGA26")
    for key, name in (("parcellation", "FetalAtlasGA26 parcellation"), ("mask", "FetalAtlasGA26 brain mask")):
        node = scene.AddNewNodeByClass("vtkMRMLSegmentationNode", name)
        labelmap = load_volume(scene, files[key], f"{name} labelmap", labelmap=True)
        assert slicer.vtkSlicerSegmentationsModuleLogic.ImportLabelmapToSegmentationNode(labelmap, node, "")
    _random_ensemble(tmp_path / "registry" / "fetal-doc")
    monkeypatch.setenv(models.ENV_ROOT, str(tmp_path / "registry"))

    blocks = re.findall(r"```python\n(.*?)```", DOC.read_text(), re.S)
    assert len(blocks) == 1
    first, rest = blocks[0].split("\n", 1)[0], blocks[0]
    assert first.startswith("from FetalParcellationLib import")  # the whole block runs, imports included
    pattern = r'dataset, model = "[^"]+", "[^"]+"'
    assert re.search(pattern, rest)
    code = re.sub(pattern, f'dataset, model = {str(tmp_path / "dataset")!r}, "fetal-doc"', rest)
    namespace = {"slicer": slicer}
    exec(compile(code, str(DOC), "exec"), namespace)  # noqa: S102 - our own documentation
    out = capsys.readouterr().out.splitlines()
    assert out[0].endswith("[]") and int(out[0].split()[0]) > 0
    assert out[1] == "set label 9"
    assert out[2].startswith("('WM', 'white matter', ")
    assert (tmp_path / "dataset" / "labels" / "GA26_case01.nii.gz").is_file()
    assert namespace["back"].session.annotated() == [1, 2, 3]
    assert len(namespace["metrics"].rows) == 9
