"""Tiny datasets and models for the LossLab module tests (16^3 blobs, a 2-level U-Net, 1 epoch in-process)."""

from __future__ import annotations

from pathlib import Path

from losslab.engine import train
from losslab.engine.synthetic import make_blobs_dataset

SHAPE = (16, 16, 16)


def tiny_config(manifest: Path, output_dir: Path, epochs: int = 1) -> dict:
    return {
        "data": {"manifest": str(manifest)},
        "network": {"preset": "ice_segmentation", "features": [4, 8], "out_channels": 3},
        "loss": {"name": "cross_entropy"},
        "optimizer": {"lr": 0.01},
        "epochs": epochs,
        "batch_size": 2,
        "device": "cpu",
        "output_dir": str(output_dir),
    }


def blobs(folder: Path, n_cases: int = 4, seed: int = 1) -> Path:
    """A 3-class blobs dataset (labels background, class1, class2); returns the manifest path."""
    return make_blobs_dataset(folder, n_cases=n_cases, shape=SHAPE, n_classes=3, seed=seed, n_val=1)


def trained_model(folder: Path) -> Path:
    """Train the tiny network for one epoch in this process; returns its model.pt."""
    manifest = blobs(folder / "data")
    result = train(tiny_config(manifest, folder / "run"))
    return result.model_path
