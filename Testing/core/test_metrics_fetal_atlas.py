"""Per-tissue metrics on real anatomy: two gestational ages of the shared fetal brain atlas, against MONAI."""

import warnings
from pathlib import Path

import numpy as np
import pytest
import torch

from losslab.io import check_same_grid, read_image
from losslab.metrics import SegmentationMetrics, hd95, overlap_per_class

ATLAS = Path(__file__).resolve().parents[3] / "shared" / "data" / "fetal-sb-atlas"
TISSUES = ["WM", "Vent", "Cer", "ECSF", "CGM", "DGM", "BS", "CC"]

pytestmark = pytest.mark.skipif(
    not (ATLAS / "GA22_notoperated" / "parcellation.nii.gz").is_file(),
    reason=f"the shared fetal atlas is not at {ATLAS} (see shared/data/fetal-sb-atlas/README.md)",
)


def test_fetal_atlas_tissues_match_monai_and_are_plausible():
    monai_metrics = pytest.importorskip("monai.metrics", reason="MONAI is the HD95 reference")
    a = read_image(ATLAS / "GA22_notoperated" / "parcellation.nii.gz")
    b = read_image(ATLAS / "GA23_notoperated" / "parcellation.nii.gz")
    check_same_grid(a, b)
    spacing = a.geometry.array_spacing
    metrics = SegmentationMetrics(labels=range(1, 9), spacing=spacing, label_names=TISSUES)
    rows = {r["name"]: r for r in metrics(b.array, a.array, case="GA23 vs GA22")}
    per = overlap_per_class(b.array, a.array, range(1, 9))
    for label, name in enumerate(TISSUES, start=1):
        assert rows[name]["dice"] == pytest.approx(per[label]["dice"])
        # neighbouring weeks of one atlas: same anatomy, grown a little
        assert 0.3 < rows[name]["dice"] < 1.0 and 0 < rows[name]["hd95"] < 15.0
    for label in (1, 3, 8):  # a large, a compact and a thin structure
        pred, ref = b.array == label, a.array == label
        onehot = [torch.from_numpy(np.stack([~m, m])[None]) for m in (pred, ref)]
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            expected = float(
                monai_metrics.compute_hausdorff_distance(*onehot, percentile=95, spacing=list(spacing))[0, 0]
            )
        assert hd95(pred, ref, spacing) == pytest.approx(expected, abs=1e-4)
