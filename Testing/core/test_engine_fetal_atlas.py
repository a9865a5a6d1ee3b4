"""The engine on real anatomy: the fetal brain atlas of shared/data (skipped when it is absent).

Three atlases, shrunk 4x, one of them partially annotated (two tissues merged into a set label), train the
fetal_parcellation architecture (5 levels, leaky ReLU, instance norm; narrower) with the leaf-Dice loss for
two epochs; the model then segments a full-resolution volume with its geometry kept.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

from losslab.engine import load_predictor, train

ATLAS = Path(__file__).resolve().parents[3] / "shared" / "data" / "fetal-sb-atlas"
CASES = ("GA21_notoperated", "GA25_operated", "GA30_operated")

pytestmark = pytest.mark.skipif(
    not all((ATLAS / c / "srr.nii.gz").is_file() for c in CASES),
    reason=f"fetal atlas data not found at {ATLAS} (shared/data/fetal-sb-atlas, see its README)",
)


def _shrink(src: Path, dst: Path) -> None:
    image = sitk.ReadImage(str(src))
    sitk.WriteImage(sitk.Shrink(image, [4, 4, 4]), str(dst))  # keeps every 4th voxel: labels stay labels


def test_partial_annotation_training_on_the_atlas(tmp_path):
    labels = ["background", "WM", "Vent", "Cer", "ECSF", "CGM", "DGM", "BS", "CC"]
    cases = []
    for i, name in enumerate(CASES):
        folder = tmp_path / name
        folder.mkdir()
        _shrink(ATLAS / name / "srr.nii.gz", folder / "srr.nii.gz")
        _shrink(ATLAS / name / "parcellation.nii.gz", folder / "parcellation.nii.gz")
        if i == 1:  # ventricles and extra-axial CSF not annotated in this case: set label 9
            seg = sitk.ReadImage(str(folder / "parcellation.nii.gz"))
            array = sitk.GetArrayFromImage(seg)
            array[np.isin(array, [2, 4])] = 9
            out = sitk.GetImageFromArray(array)
            out.CopyInformation(seg)
            sitk.WriteImage(out, str(folder / "parcellation.nii.gz"))
        cases.append({"id": name, "image": f"{name}/srr.nii.gz", "label": f"{name}/parcellation.nii.gz"})
    manifest = tmp_path / "dataset.json"
    manifest.write_text(
        json.dumps(
            {
                "labels": labels,
                "label_sets": {"9": [2, 4]},
                "cases": cases,
                "splits": {"train": list(CASES[:2]), "val": [CASES[2]]},
            }
        )
    )
    config = {
        "data": {"manifest": str(manifest)},
        "network": {"preset": "fetal_parcellation", "features": [4, 8, 16, 32, 64]},
        "loss": {"name": "leaf_dice"},
        "epochs": 2,
        "batch_size": 2,
        "output_dir": str(tmp_path / "run"),
        "augmentation": {"gamma": {"prob": 0.5}, "contrast": {"prob": 0.5}, "noise": {"prob": 0.5}},
        "plot_every": 0,
    }
    result = train(config)
    assert len(result.history) == 2 and set(result.history[-1]["val_dice"]) == set(labels[1:])
    predictor = load_predictor(result.model_path, device="cpu")
    image = sitk.Shrink(sitk.ReadImage(str(ATLAS / CASES[2] / "srr.nii.gz")), [2, 2, 2])
    sitk.WriteImage(image, str(tmp_path / "half.nii.gz"))
    out = sitk.ReadImage(str(predictor.predict_files(tmp_path / "half.nii.gz", tmp_path / "seg.nii.gz")))
    assert out.GetSize() == image.GetSize() and out.GetSpacing() == pytest.approx(image.GetSpacing())
    assert int(sitk.GetArrayFromImage(out).max()) <= 8
