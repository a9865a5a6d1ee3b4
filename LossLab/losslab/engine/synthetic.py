"""Generated datasets (spheres in noise) in the manifest format: for tests, demos and benchmarks."""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from . import _io


def make_blobs_dataset(
    folder: str | os.PathLike,
    n_cases: int = 8,
    shape: Sequence[int] = (24, 24, 24),
    n_classes: int = 3,
    seed: int = 0,
    n_val: int = 2,
    noise: float = 0.3,
    extra_channels: Sequence[str] = (),
    partial: bool = False,
) -> Path:
    """Write ``n_cases`` volumes of ``n_classes - 1`` nested balls (class c inside c-1) and a manifest.

    Intensities are the class index plus Gaussian noise, so a small network learns them in a few epochs.
    ``extra_channels`` adds input channels with values in [0, 1]: one named ``initial`` is the foreground
    shifted by 2 voxels (an imperfect initial segmentation), any other is a Gaussian heatmap around a
    foreground voxel (a scribble encoding), as the ICE editing model takes. With ``partial``, half of the
    training cases merge classes ``1..K-1`` into one set label ``K`` (a label-set partial annotation).
    Returns the manifest path.
    """
    folder = Path(folder)
    rng = np.random.default_rng(seed)
    shape = tuple(int(s) for s in shape)
    grid = np.stack(np.meshgrid(*[np.arange(s) for s in shape], indexing="ij"))
    cases = []
    for i in range(n_cases):
        centre = np.array([s / 2 for s in shape]) + rng.uniform(-0.15, 0.15, len(shape)) * np.array(shape)
        radius = min(shape) * rng.uniform(0.3, 0.4)
        dist = np.sqrt(((grid - centre.reshape(-1, *[1] * len(shape))) ** 2).sum(0))
        label = np.zeros(shape, dtype=np.uint8)
        for c in range(1, n_classes):
            label[dist < radius * (1 - (c - 1) / n_classes)] = c
        image = label.astype(np.float32) + noise * rng.standard_normal(shape).astype(np.float32)
        cid = f"case{i:02d}"
        entry = {"id": cid, "image": f"images/{cid}.nii.gz", "label": f"labels/{cid}.nii.gz"}
        _io.write_image(folder / entry["image"], image)
        stored = label.copy()
        if partial and i % 2 == 1 and i >= n_val:
            stored[label > 0] = n_classes
        _io.write_image(folder / entry["label"], stored)
        if extra_channels:
            entry["extra"] = {}
            for name in extra_channels:
                if name == "initial":  # an imperfect segmentation: the foreground shifted by 2 voxels
                    extra = np.roll(label > 0, 2, axis=0).astype(np.float32)
                else:  # a scribble heatmap: Gaussian (sigma 3 voxels) around a random foreground voxel
                    points = np.argwhere(label > 0)
                    point = points[rng.integers(len(points))].reshape(-1, *[1] * len(shape))
                    extra = np.exp(-((grid - point) ** 2).sum(0) / (2 * 3.0**2)).astype(np.float32)
                entry["extra"][name] = f"{name}/{cid}.nii.gz"
                _io.write_image(folder / entry["extra"][name], extra)
        cases.append(entry)
    ids = [c["id"] for c in cases]
    manifest = {
        "name": "blobs",
        "labels": ["background"] + [f"class{c}" for c in range(1, n_classes)],
        "cases": cases,
        "splits": {"train": ids[n_val:], "val": ids[:n_val]},
    }
    if extra_channels:
        manifest["extra_channels"] = list(extra_channels)
    if partial:
        manifest["label_sets"] = {str(n_classes): list(range(1, n_classes))}
    path = folder / "dataset.json"
    path.write_text(json.dumps(manifest, indent=2), encoding="utf-8")
    return path
