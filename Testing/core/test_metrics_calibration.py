import numpy as np
import pytest
import torch

from losslab.metrics import classwise_ece, reliability_bins


def test_hand_derived_classwise_ece():
    # Two classes, four voxels. Class 1 probabilities 0.9, 0.9, 0.2, 0.2 with labels 1, 0, 0, 0:
    # bin [0.9, 1.0): conf 0.9, acc 0.5; bin [0.2, 0.3): conf 0.2, acc 0 -> ECE_1 = 0.5*0.4 + 0.5*0.2 = 0.3.
    # Class 0 is the mirror image (p0 = 1 - p1, label 0 = not 1): ECE_0 = 0.3 as well.
    p1 = np.array([0.9, 0.9, 0.2, 0.2])
    probs = np.stack([1 - p1, p1])
    labels = np.array([1, 0, 0, 0])
    ece, per_class = classwise_ece(probs, labels, n_bins=10)
    np.testing.assert_allclose(per_class, [0.3, 0.3])
    assert ece == pytest.approx(0.3)
    ece_t, _ = classwise_ece(torch.from_numpy(probs)[None], torch.from_numpy(labels)[None], n_bins=10)
    assert ece_t == pytest.approx(0.3)


def test_perfectly_calibrated_one_hot_is_zero():
    labels = np.random.default_rng(0).integers(0, 3, (4, 5, 6))
    probs = np.moveaxis(np.eye(3)[labels], -1, 0)
    assert classwise_ece(probs, labels)[0] == 0.0
    rel = reliability_bins(probs, labels, n_bins=5)
    assert rel["count"].shape == (3, 5) and rel["count"].sum() == 3 * labels.size


def test_calibration_input_errors():
    with pytest.raises(ValueError, match="softmax"):
        classwise_ece(np.full((2, 3), 3.0), np.zeros(3, int))
    with pytest.raises(ValueError, match=r"\(C, \*spatial\)"):
        classwise_ece(np.full((2, 3), 0.5), np.zeros(4, int))
    with pytest.raises(ValueError, match="n_bins"):
        reliability_bins(np.full((2, 3), 0.5), np.zeros(3, int), n_bins=0)
