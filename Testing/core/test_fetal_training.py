"""The protocol's four methods train on downsampled, partially annotated atlas crops and lower their loss
(skipped when shared/data is absent). The configs are the shipped ones (configs/fetal/*.json) with a shorter
schedule and a narrower network."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from losslab.engine import load_config, train
from losslab.labelsets.atlas import make_partial_atlas

ROOT = Path(__file__).resolve().parents[2]
ATLAS = ROOT.parent / "shared" / "data" / "fetal-sb-atlas"
CASES = ["GA21_notoperated", "GA24_notoperated", "GA27_operated", "GA29_operated", "GA32_operated"]
METHODS = ["fully_supervised", "soft_target_dice", "marginal_dice", "leaf_dice"]

pytestmark = pytest.mark.skipif(
    not all((ATLAS / c / "srr.nii.gz").is_file() for c in CASES),
    reason=f"fetal atlas data not found at {ATLAS} (shared/data/fetal-sb-atlas, see its README)",
)


@pytest.fixture(scope="module")
def manifest(tmp_path_factory):
    out = tmp_path_factory.mktemp("partial")
    path = make_partial_atlas(
        ATLAS, out, seed=0, cases=CASES, exclude=(), spacing=4.8, crop_margin_mm=5, progress=False
    )
    raw = json.loads(path.read_text())
    assert len(raw["splits"]["full"]) == 1 and set(raw["label_sets"]) <= {"9", "10", "11"}
    return path


def test_configs_are_the_papers_settings():
    for method in METHODS:
        cfg = load_config(ROOT / "configs" / "fetal" / f"{method}.json", ["data.manifest=/nonexistent.json"])
        assert cfg["network"]["preset"] == "fetal_parcellation" and len(cfg["network"]["features"]) == 5
        assert cfg["optimizer"] == {**cfg["optimizer"], "name": "adam", "lr": 0.001}
        assert cfg["batch_size"] == 3 and cfg["data"]["val_fraction"] == 0.1
        assert all(
            cfg["augmentation"][k]["prob"] > 0 for k in ("flip", "scale", "gamma", "contrast", "noise")
        )
        assert cfg["loss"]["name"] == ("dice" if method == "fully_supervised" else method)
        assert cfg["data"]["train_split"] in (["full"] if method == "fully_supervised" else ["train"],)


@pytest.mark.parametrize("method", METHODS)
def test_each_method_lowers_its_loss(manifest, method, tmp_path):
    epochs = 30 if method == "fully_supervised" else 15  # one volume: 1 step per epoch, vs 2 for the others
    result = train(
        ROOT / "configs" / "fetal" / f"{method}.json",
        [
            f"data.manifest={manifest}",
            f"epochs={epochs}",
            f"early_stopping.patience={epochs}",
            "network.features=[4,8,8,16,16]",
            "ensemble.members=1",
            f"output_dir={tmp_path / method}",
            "device=cpu",
            "augmentation.enabled=false",  # less noise in a short run; the augmentations run in the engine's tests
        ],
    )
    losses = [h["train_loss"] for h in result.history]
    assert len(losses) == epochs
    first, last = sum(losses[:3]) / 3, sum(losses[-3:]) / 3
    assert last < first - 0.01, f"{method}: train loss {losses}"
