"""configs/fetal/cross_centre-1.6mm.json (issue 19, item 1's recipe; the shipped fetal-leafdice-1.6mm, trained by
configs/fetal/ship_model.sh): a valid config whose augmentation is the cross-centre one, with the brain-mask
augmentation that lets the model run without a mask, and runs on a fetal partial annotation (set labels 9-11 of
the released code kept, the background outside the brain left at 0, the brain z-scored). Nothing is trained
here."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from losslab import models
from losslab.engine import load_config
from losslab.engine.data import augment, normalize_intensity, sample_generator

ROOT = Path(__file__).resolve().parents[2]
CONFIG = ROOT / "configs" / "fetal" / "cross_centre-1.6mm.json"
SHIPPED_RECIPE = ROOT / "configs" / "fetal" / "leaf_dice.json"


def test_the_config_is_valid_and_sets_the_cross_centre_recipe():
    cfg = load_config(CONFIG, ["data.manifest=/nonexistent.json"])
    shipped = load_config(SHIPPED_RECIPE, ["data.manifest=/nonexistent.json"])
    aug = cfg["augmentation"]
    assert aug["enabled"] and aug["standardize"] == {"enabled": True, "over": "nonzero"}
    for name in (
        "flip",
        "affine",
        "elastic",
        "bias_field",
        "gamma",
        "contrast",
        "blur",
        "resolution",
        "noise",
    ):
        assert aug[name]["prob"] > 0, name
    assert aug["scale"]["prob"] == 0  # the affine scales
    assert 0 < aug["foreground_mask"]["prob"] < 1  # masked and unmasked inputs: runs with and without a mask
    assert models.trained_mask_policy(cfg) == "optional"
    assert cfg["data"]["normalize"] == "zscore_nonzero" and cfg["data"]["keep_in_train"] == ["full"]
    raw = load_config(CONFIG)["data"]["manifest"]
    assert raw.endswith("losslab-output/fetal/data-1.6mm-full/dataset.json")  # 1.6 mm, every tissue annotated
    assert cfg["output_dir"].endswith("losslab-output/fetal/cross_centre-1.6mm")
    assert cfg["loss"]["name"] == "leaf_dice" and cfg["ensemble"]["members"] == 3 and cfg["amp"] is True
    for key in ("network", "optimizer", "batch_size"):  # the shipped recipe's network and optimiser
        assert cfg[key] == shipped[key], key


def test_its_augmentation_runs_on_a_fetal_partial_annotation():
    cfg = load_config(CONFIG, ["data.manifest=/nonexistent.json"])
    shape = (28, 32, 30)
    grid = torch.stack(torch.meshgrid(*[torch.arange(n, dtype=torch.float32) for n in shape], indexing="ij"))
    r = ((grid - torch.tensor([13.5, 15.5, 14.5]).view(-1, 1, 1, 1)) ** 2).sum(0).sqrt()
    label = torch.zeros(shape, dtype=torch.long)
    label[r <= 11] = 9  # "one of ECSF, CGM, DGM, BS, CC" (set label 9)
    label[r <= 8] = 1  # WM
    label[r <= 4] = 2  # Vent
    mri = torch.where(label > 0, 100 + 20 * label.float() + torch.rand(shape, generator=torch.Generator()), 0)
    image = normalize_intensity(mri, "zscore_nonzero")[None]
    for position in range(4):
        x, y = augment(
            image, label, cfg["augmentation"], sample_generator(0, 1, position), intensity_channels=1
        )
        again = augment(
            image, label, cfg["augmentation"], sample_generator(0, 1, position), intensity_channels=1
        )
        assert torch.equal(x, again[0]) and torch.equal(y, again[1])
        assert set(y.unique().tolist()) <= {0, 1, 2, 9} and torch.isfinite(x).all()
        inside = x[0] != 0
        assert float(x[0][inside].mean()) == pytest.approx(0, abs=1e-4)  # the brain z-scored
        assert (y[~inside] == 0).float().mean() > 0.95  # outside the brain: background, as at inference
