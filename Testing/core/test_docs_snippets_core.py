"""The Python snippets of docs/losses.md, docs/engine.md and docs/ice.md run as written, in order, in one namespace per page
(as a reader pastes them into one console), in a folder holding the files the text names (``config.json``, a
small training config, and ``t2.nii.gz``, an image). The README's are tested in test_readme.py; the Slicer
pages' in Testing/mrml."""

from __future__ import annotations

import json
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def blocks(page: str) -> list[str]:
    return re.findall(r"```python\n(.*?)```", (ROOT / "docs" / page).read_text(), re.S)


def run_page(page: str) -> dict:
    namespace: dict = {}
    for k, block in enumerate(blocks(page)):
        exec(compile(block, f"docs/{page} (snippet {k + 1})", "exec"), namespace)  # noqa: S102 - our docs
    return namespace


def test_the_losses_page_runs(capsys):
    ns = run_page("losses.md")
    out = capsys.readouterr().out
    assert "unknown loss 'dyce'" in out and "unknown option(s) alpah" in out
    assert float(ns["value"].detach()) >= 0 and ns["maps"].wrt_logits.shape == tuple(ns["logits"].shape)


def test_the_engine_page_runs(tmp_path, monkeypatch, capsys):
    from losslab import io
    from losslab.engine.synthetic import make_blobs_dataset

    monkeypatch.chdir(tmp_path)
    manifest = make_blobs_dataset(tmp_path / "blobs", n_cases=3, shape=(16, 16, 16), n_classes=2, seed=0)
    config = {
        "data": {"manifest": str(manifest)},
        "network": {"preset": "ice_segmentation", "features": [4, 8], "out_channels": 2},
        "batch_size": 1,
        "device": "cpu",
        "output_dir": "runs/blobs",
    }
    (tmp_path / "config.json").write_text(json.dumps(config))
    case = json.loads(Path(manifest).read_text())["cases"][0]
    image = case["image"][0] if isinstance(case["image"], list) else case["image"]
    io.write_bytes(tmp_path / "t2.nii.gz", (Path(manifest).parent / image).read_bytes())
    ns = run_page("engine.md")
    out = capsys.readouterr().out
    assert "epoch 2: train loss" in out
    assert "[0, 1, 3] 1.0" in out  # the cross-centre augmentation: labels kept, brain z-scored
    assert ns["cfg"]["augmentation"]["standardize"] == {"enabled": True, "over": "nonzero"}
    assert ns["out"].labels.shape == ns["volume"].shape and (tmp_path / "seg.nii.gz").is_file()
    assert len(ns["results"]) == 1 and not ns["result"].stopped


def test_the_ice_page_runs(capsys):
    ns = run_page("ice.md")
    assert tuple(ns["batch"]["u"].shape) == (1, 1, 64, 64, 64)
    assert ns["edit"].kind == "cas" and 0 <= ns["edit"].frame < len(ns["case"].frames)
