"""Helpers of the ICE editing tests: small simulated cases, rule editing models with known outputs, and tiny
trained models registered under the shipped names in a temporary registry."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import torch
from torch import nn

from losslab import ice, models
from losslab.engine.inference import ModelInfo, Predictor

SIZE = 40  # 40^3 voxels over the shipped models' 141 mm field
SPACING = 141.1072 / SIZE


class RuleNet(nn.Module):
    """Logits of a fixed rule of the inputs ``(x, y_init, u)``: an exact oracle for a test.

    - ``"grow"``: y_init OR (u > 0.5): adds a tube around the scribble;
    - ``"toggle"``: y_init XOR (u > 0.5): adds outside y_init and removes inside it, near the scribble;
    - ``"everywhere"``: y_init XOR (x > 0.5) OR (u > 0.5): also changes voxels far from the scribble (a
      model that does not stay local), for the strict-local option.
    """

    def __init__(self, rule: str):
        super().__init__()
        self.rule = rule
        self.calls = 0

    def forward(self, x):
        self.calls += 1
        init, near = x[:, 1:2] > 0.5, x[:, 2:3] > 0.5
        if self.rule == "grow":
            fg = init | near
        elif self.rule == "toggle":
            fg = init ^ near
        elif self.rule == "everywhere":
            fg = (init ^ (x[:, 0:1] > 0.5)) | near
        else:
            raise ValueError(self.rule)
        return torch.where(fg, 10.0, -10.0).to(x.dtype)


def rule_model(rule: str, sigma_mm: float = 8.0) -> ice.EditingModel:
    info = ModelInfo(
        network={"in_channels": 3, "out_channels": 1, "spatial_dims": 3},
        labels=["background", "left atrium"],
        channel_names=["image", "initial", "heatmap"],
        n_image_channels=1,
        normalize="none",
        window=None,
        overlap=0.5,
    )
    return ice.EditingModel(Predictor([RuleNet(rule)], info, torch.device("cpu"), amp=False), sigma_mm, rule)


def small_case(seed: int = 1, size: int = SIZE) -> ice.ICECase:
    grid = ice.Grid.cube(size, 141.1072 / size)
    return ice.simulate_case(ice.make_phantom(grid, seed=seed), grid, seed=seed)


def bitten(label: np.ndarray, spacing, radius_mm: float = 9.0) -> np.ndarray:
    """y with a ball bitten out at its boundary (an imperfect y_init, as the paper's Fig. 1)."""
    label = np.asarray(label, bool)
    idx = np.argwhere(label)
    centre = idx.mean(0)
    far = idx[np.argmax(np.linalg.norm((idx - centre) * spacing, axis=1))]
    grids = np.meshgrid(*[np.arange(n) for n in label.shape], indexing="ij")
    d2 = sum(((g - c) * s) ** 2 for g, c, s in zip(grids, far, spacing))
    return label & (d2 > radius_mm**2)


def train_tiny(folder: Path, kind: str, epochs: int = 10) -> Path:
    """A 2-level U-Net trained ``epochs`` epochs on 16^3 blobs (it learns about x > 0.5): ``kind`` "editing" (3 channels) or "segmentation"."""
    from losslab.engine import train
    from losslab.engine.synthetic import make_blobs_dataset

    extra = ["initial", "heatmap"] if kind == "editing" else []
    manifest = make_blobs_dataset(
        folder / "data", n_cases=3, shape=(16, 16, 16), n_classes=2, seed=0, extra_channels=extra
    )
    preset = "ice_editing" if kind == "editing" else "ice_segmentation"
    result = train(
        {
            "data": {"manifest": str(manifest)},
            "network": {"preset": preset, "features": [4, 8], "out_channels": 2},
            "epochs": epochs,
            "optimizer": {"lr": 0.01},
            "batch_size": 1,
            "device": "cpu",
            "output_dir": str(folder / "run"),
        }
    )
    return Path(result.model_path)


_REGISTRY: dict[str, Path] = {}


def tiny_registry(tmp_path_factory) -> Path:
    """Tiny trained models registered under the shipped names (editing: sigma 9 mm on its card), trained once
    per test run (the real ones come from the models issue)."""
    from ICEEditingLib import scene as ice_scene

    if "root" not in _REGISTRY:
        root = tmp_path_factory.mktemp("models")
        register(root, ice_scene.DEFAULT_EDITING_MODEL, train_tiny(root / "_edit", "editing"), sigma_mm=9.0)
        register(root, ice_scene.DEFAULT_SEGMENTATION_MODEL, train_tiny(root / "_seg", "segmentation"))
        _REGISTRY["root"] = root
    return _REGISTRY["root"]


def register(registry: Path, name: str, model_path: Path, **card) -> Path:
    folder = registry / name
    folder.mkdir(parents=True, exist_ok=True)
    shutil.copy(model_path, folder / "model.pt")
    models.register_model(
        folder, {"name": name, "task": card.pop("task", "test"), "entry": "model.pt", **card}
    )
    return folder
