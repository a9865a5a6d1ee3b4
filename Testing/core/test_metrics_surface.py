import warnings

import numpy as np
import pytest
import torch
from _shapes import ball

from losslab.metrics import (
    SegmentationMetrics,
    _distance,
    average_symmetric_surface_distance,
    boundary,
    compare_masks,
    hausdorff_distance,
    hd95,
    nearest_distances,
    surface_distances,
)

monai_metrics = pytest.importorskip(
    "monai.metrics", reason="MONAI is the reference for HD95 (pip install monai)"
)


def monai_hd(pred, ref, spacing, percentile=95):
    def onehot(m):
        return torch.from_numpy(np.stack([~m, m])[None].astype(np.float32))

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return float(
            monai_metrics.compute_hausdorff_distance(
                onehot(pred), onehot(ref), percentile=percentile, spacing=list(spacing)
            )[0, 0]
        )


def random_blob(rng, shape, spacing):
    """A ball with random holes and specks: irregular surfaces, many boundary voxels."""
    centre = [rng.uniform(0.3, 0.7) * n for n in shape]
    radius = rng.uniform(0.2, 0.35) * min(n * s for n, s in zip(shape, spacing))
    m = ball(shape, centre, radius, spacing)
    m ^= rng.random(shape) > 0.97
    return m


SPACINGS = [(1.0, 1.0, 1.0), (1.5, 0.7, 2.0), (0.8, 0.8, 3.0)]


@pytest.mark.parametrize("spacing", SPACINGS)
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_hd95_matches_monai_on_random_shapes(seed, spacing):
    rng = np.random.default_rng(seed)
    shape = (40, 48, 36)
    a, b = random_blob(rng, shape, spacing), random_blob(rng, shape, spacing)
    assert hd95(a, b, spacing) == pytest.approx(monai_hd(a, b, spacing), abs=1e-4)
    assert hausdorff_distance(a, b, spacing) == pytest.approx(monai_hd(a, b, spacing, None), abs=1e-4)


@pytest.mark.parametrize("spacing", SPACINGS)
def test_hd95_matches_monai_on_spheres(spacing):
    shape = (48, 40, 44)
    a = ball(shape, (24, 20, 22), 18.0, spacing)
    b = ball(shape, (26, 19, 22), 14.0, spacing)
    assert hd95(a, b, spacing) == pytest.approx(monai_hd(a, b, spacing), abs=1e-4)


def test_concentric_spheres_analytic_distance():
    # Two concentric balls of radii 20 and 12 mm: every surface distance is close to 8 mm.
    spacing = (1.0, 0.5, 2.0)
    shape = (60, 120, 30)
    centre = (30, 60, 15)
    outer, inner = ball(shape, centre, 20.0, spacing), ball(shape, centre, 12.0, spacing)
    d1, d2 = surface_distances(outer, inner, spacing)
    assert np.all(np.abs(d1 - 8.0) < 2.1) and np.all(np.abs(d2 - 8.0) < 2.1)
    assert hausdorff_distance(outer, inner, spacing) == pytest.approx(8.0, abs=2.1)
    assert average_symmetric_surface_distance(outer, inner, spacing) == pytest.approx(8.0, abs=1.0)


def test_identical_masks_are_zero_and_shift_is_exact():
    a = np.zeros((20, 20, 20), bool)
    a[5:10, 5:10, 5:10] = True
    assert hd95(a, a, (2, 2, 2)) == 0.0
    b = np.roll(a, 3, axis=2)  # shift 3 voxels of 1.5 mm along the last axis
    assert hausdorff_distance(a, b, (1, 1, 1.5)) == pytest.approx(4.5)
    # Manhattan distances are spacing-weighted L1
    d, _ = surface_distances(a, b, (1, 1, 1.5), metric="manhattan")
    assert d.max() == pytest.approx(4.5)


def test_empty_masks_nan_and_inf_with_warnings():
    z = np.zeros((8, 8, 8), bool)
    a = z.copy()
    a[2:5, 2:5, 2:5] = True
    with pytest.warns(UserWarning, match="both empty"):
        assert np.isnan(hd95(z, z))
    with pytest.warns(UserWarning, match="prediction is empty"):
        assert np.isinf(hd95(z, a))
    with pytest.warns(UserWarning, match="reference is empty"):
        assert np.isinf(average_symmetric_surface_distance(a, z))


def test_boundary_convention_border_and_face_connectivity():
    m = np.ones((3, 3, 3), bool)
    b = boundary(m)
    assert b.sum() == 26 and not b[1, 1, 1]  # image border counts as background
    m = np.zeros((5, 5, 5), bool)
    m[1:4, 1:4, 1:4] = True
    assert boundary(m).sum() == 26
    assert torch.equal(boundary(torch.from_numpy(m)), torch.from_numpy(boundary(m)))


def test_edt_and_kdtree_paths_agree():
    rng = np.random.default_rng(3)
    src = rng.random((30, 30, 30)) > 0.7
    dst = rng.random((30, 30, 30)) > 0.9
    spacing = np.array([1.2, 0.5, 2.0])
    edt = _distance._nearest_edt(src, dst, spacing)
    tree = _distance.cKDTree(_distance._coords(dst, spacing)).query(_distance._coords(src, spacing))[0]
    np.testing.assert_allclose(edt, tree, atol=1e-9)


@pytest.mark.parametrize("metric", ["euclidean", "manhattan", "chessboard"])
def test_torch_path_equals_numpy_path(metric):
    rng = np.random.default_rng(4)
    spacing = (1.1, 0.6, 2.3)
    a, b = random_blob(rng, (24, 30, 20), spacing), random_blob(rng, (24, 30, 20), spacing)
    ea, eb = boundary(a), boundary(b)
    ref = nearest_distances(ea, eb, spacing, metric)
    got = nearest_distances(torch.from_numpy(ea), torch.from_numpy(eb), spacing, metric)
    np.testing.assert_allclose(got.numpy(), ref, atol=1e-9)
    assert hd95(torch.from_numpy(a), torch.from_numpy(b), spacing) == pytest.approx(
        hd95(a, b, spacing), abs=1e-9
    )


def test_compare_masks_row_and_segmentation_metrics_aggregation():
    shape = (30, 30, 30)
    ref = np.zeros(shape, np.uint8)
    ref[ball(shape, (15, 15, 15), 8)] = 1
    ref[2:6, 2:6, 2:6] = 2
    pred = np.zeros(shape, np.uint8)
    pred[ball(shape, (16, 15, 15), 8)] = 1  # class 2 missing from the prediction -> inf distances
    row = compare_masks(pred == 1, ref == 1, (1, 1, 1))
    assert row["hd"] == pytest.approx(1.0) and 0.8 < row["dice"] < 1.0
    assert row["reference_voxels"] == float((ref == 1).sum())
    metrics = SegmentationMetrics(labels=[1, 2, 3], spacing=(1, 1, 1), label_names=["a", "b", "c"])
    metrics(pred, ref)
    metrics(ref, ref)
    summary = metrics.aggregate()
    assert summary["a"]["dice"].count == 2
    assert summary["b"]["hd95"].skipped_inf == 1 and summary["b"]["hd95"].mean == 0.0
    assert summary["c"]["dice"].skipped_nan == 2 and np.isnan(summary["c"]["dice"].mean)


def test_invalid_options_raise():
    a = np.ones((4, 4), bool)
    with pytest.raises(ValueError, match="percentile"):
        hausdorff_distance(a, a, percentile=120)
    with pytest.raises(ValueError, match="spacing"):
        hd95(a, a, spacing=(1, 0))
    with pytest.raises(ValueError, match="spacing must have 2"):
        hd95(a, a, spacing=(1, 1, 1))
    with pytest.raises(ValueError, match="metric"):
        surface_distances(a, a, metric="cosine")
    with pytest.raises(ValueError, match="same shape"):
        hd95(a, np.ones((4, 5), bool))
    with pytest.raises(ValueError, match="unknown metrics"):
        SegmentationMetrics(labels=[1], metrics=["dice", "volume"])
