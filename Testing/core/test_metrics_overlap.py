import numpy as np
import pytest
import torch

from losslab.metrics import (
    confusion_matrix,
    dice_score,
    iou_score,
    mean_dice,
    mean_iou,
    overlap_per_class,
    pixel_accuracy,
)


def test_binary_known_values():
    p = np.array([1, 1, 1, 0, 0, 0], bool)
    r = np.array([0, 1, 1, 1, 0, 0], bool)
    # |P&R| = 2, |P| = |R| = 3, |P|R| = 4
    assert dice_score(p, r) == pytest.approx(4 / 6)
    assert iou_score(p, r) == pytest.approx(2 / 4)
    assert dice_score(torch.from_numpy(p), torch.from_numpy(r)) == pytest.approx(4 / 6)


def test_binary_empty_is_nan_with_warning():
    z = np.zeros((3, 3), bool)
    with pytest.warns(UserWarning, match="both empty"):
        assert np.isnan(dice_score(z, z))
    one = z.copy()
    one[1, 1] = True
    assert dice_score(one, z) == 0.0


def test_label_map_per_class_and_means():
    ref = np.array([[0, 1, 1], [2, 2, 0], [3, 3, 3]])
    pred = np.array([[0, 1, 2], [2, 2, 0], [3, 3, 0]])
    per = overlap_per_class(pred, ref, labels=[1, 2, 3])
    assert per[1]["dice"] == pytest.approx(2 * 1 / (2 + 1))
    assert per[2]["dice"] == pytest.approx(2 * 2 / (2 + 3))
    assert per[3]["iou"] == pytest.approx(2 / 3)
    assert mean_iou(pred, ref, [1, 2, 3]) == pytest.approx(np.mean([1 / 2, 2 / 3, 2 / 3]))
    assert mean_dice(pred, ref, [1, 2, 3]) == pytest.approx(np.mean([2 / 3, 4 / 5, 4 / 5]))
    # pixel accuracy over voxels whose reference is listed (0 not listed here): 6 of 7 ... 5 correct of 7
    assert pixel_accuracy(pred, ref, [1, 2, 3]) == pytest.approx(5 / 7)
    assert pixel_accuracy(pred, ref, [0, 1, 2, 3]) == pytest.approx(7 / 9)


def test_absent_class_is_nan_and_skipped_in_means():
    ref = np.array([0, 1, 1, 0])
    with pytest.warns(UserWarning, match=r"\[5\]"):
        per = overlap_per_class(ref, ref, labels=[1, 5])
    assert per[1]["dice"] == 1.0 and np.isnan(per[5]["dice"])
    with pytest.warns(UserWarning):
        assert mean_dice(ref, ref, [1, 5]) == 1.0


def test_confusion_matrix_unlisted_and_negative_values():
    ref = np.array([0, 1, 2, -1, 7])
    pred = np.array([0, 2, 2, 1, 7])
    cm = confusion_matrix(pred, ref, labels=[1, 2])
    # rows = reference (1, 2, other), columns = prediction
    assert cm.tolist() == [[0, 1, 0], [0, 1, 0], [1, 0, 2]]


def test_invalid_inputs_raise():
    with pytest.raises(ValueError, match="same shape"):
        dice_score(np.zeros(3), np.zeros(4))
    with pytest.raises(ValueError, match="distinct"):
        confusion_matrix(np.zeros(3), np.zeros(3), [1, 1])
    with pytest.raises(ValueError, match="at least one"):
        confusion_matrix(np.zeros(3), np.zeros(3), [])
    with pytest.raises(ValueError, match="integer"):
        confusion_matrix(np.full(3, 0.5), np.zeros(3), [1])
