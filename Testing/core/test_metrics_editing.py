import numpy as np
import pytest
import torch

from losslab.metrics import attention_map, boundary, contour_distance, editing_metric


def square(shape, rows, cols):
    m = np.zeros(shape, bool)
    m[rows[0] : rows[1], cols[0] : cols[1]] = True
    return m


# ---- attention map -------------------------------------------------------------------------------------


def test_attention_is_one_on_scribble_and_gaussian_of_distance():
    s = np.zeros((9, 40), bool)
    s[4, 5] = True
    a = attention_map(s, sigma=4.0)
    assert a[4, 5] == 1.0
    assert a[4, 9] == pytest.approx(np.exp(-0.5), rel=1e-6)  # d = sigma
    assert a[4, 13] == pytest.approx(np.exp(-2.0), rel=1e-6)  # d = 2 sigma
    assert a.dtype == np.float32


def test_attention_sigma_in_mm_with_spacing():
    s = np.zeros((5, 30), bool)
    s[2, 0] = True
    a = attention_map(s, sigma=6.0, spacing=(1.0, 2.0))  # 3 voxels along the last axis = 6 mm
    assert a[2, 3] == pytest.approx(np.exp(-0.5), rel=1e-6)
    a_vox = attention_map(s, sigma=3.0)  # same thing in voxels when spacing is isotropic 1
    assert a_vox[2, 3] == pytest.approx(np.exp(-0.5), rel=1e-6)


def test_attention_torch_matches_numpy_3d():
    rng = np.random.default_rng(0)
    s = np.zeros((12, 14, 10), bool)
    s[tuple(rng.integers(0, 10, (3, 5)))] = True
    spacing = (1.1, 0.7, 2.0)
    np.testing.assert_allclose(
        attention_map(torch.from_numpy(s), 5.0, spacing).numpy(), attention_map(s, 5.0, spacing), atol=1e-6
    )


def test_attention_empty_scribble_and_bad_sigma():
    with pytest.warns(UserWarning, match="empty"):
        assert attention_map(np.zeros((4, 4), bool), 2.0).max() == 0
    with pytest.raises(ValueError, match="sigma"):
        attention_map(np.ones((4, 4), bool), 0.0)


# ---- editing metric ------------------------------------------------------------------------------------


def test_hand_derived_edit_distance():
    # y_init = y_hat: D_preserve is 0 on the contours; the one CAS voxel lies 3 columns right of the
    # square's contour, columns are 2 mm wide: Manhattan distance 6 mm, A = 1 there (the scribble).
    shape = (10, 12)
    init = square(shape, (2, 6), (2, 6))
    cas = np.zeros(shape, bool)
    cas[3, 8] = True
    att = attention_map(cas, sigma=2.0, spacing=(1.0, 2.0))
    res = editing_metric(cas, init, init, att, spacing=(1.0, 2.0))
    assert res.d_edit[3, 8] == pytest.approx(6.0)
    assert np.nanmax(res.d_preserve) == 0.0
    assert res.d_map[3, 8] == pytest.approx(6.0)
    assert np.isnan(res.d_map[0, 0]) and np.isnan(res.d_map[4, 4])  # off-contour, interior
    assert res.stats["no_editing"]["p95"] == pytest.approx(6.0)
    assert res.stats["near"]["count"] == 1 and res.stats["near"]["mean"] == pytest.approx(6.0)
    assert res.stats["far"]["mean"] == 0.0


def brute_force_d(cas, init, pred, att, spacing):
    """Eqs. (4)-(6) with explicit loops over contour points (independent of the library's distances)."""
    sp = np.asarray(spacing)
    c_init, c_hat = boundary(init), boundary(pred)

    def dmin(p, target):
        pts = np.argwhere(target)
        return np.min(np.abs((pts - p) * sp).sum(axis=1))

    d = np.full(cas.shape, np.nan)
    for p in np.argwhere(cas):
        d[tuple(p)] = att[tuple(p)] * dmin(p, c_hat)
    for p in np.argwhere(c_init):
        v = (1 - att[tuple(p)]) / 2 * dmin(p, c_hat)
        d[tuple(p)] = v if np.isnan(d[tuple(p)]) else d[tuple(p)] + v
    for p in np.argwhere(c_hat):
        v = (1 - att[tuple(p)]) / 2 * dmin(p, c_init)
        d[tuple(p)] = v if np.isnan(d[tuple(p)]) else d[tuple(p)] + v
    return d


@pytest.mark.parametrize("spacing", [(1.0, 1.0, 1.0), (1.7, 1.7, 1.7), (1.5, 0.5, 2.0)])
def test_matches_brute_force_equations(spacing):
    shape = (14, 16, 12)
    init = np.zeros(shape, bool)
    init[3:10, 4:12, 3:9] = True
    pred = np.zeros(shape, bool)
    pred[4:11, 4:13, 3:8] = True
    cas = boundary(np.pad(np.ones((6, 9, 5), bool), ((4, 4), (4, 3), (3, 4))))
    scribble = np.zeros(shape, bool)
    scribble[10, 5:12, 4] = True
    att = attention_map(scribble, 3.0, spacing)
    res = editing_metric(cas, init, pred, att, spacing)
    expected = brute_force_d(cas, init, pred, att, spacing)
    np.testing.assert_allclose(res.d_map, expected, rtol=1e-5, atol=1e-5, equal_nan=True)
    defined = ~np.isnan(expected)
    assert res.stats["overall"]["p95"] == pytest.approx(np.percentile(expected[defined], 95), rel=1e-5)
    far = defined & (att < 0.5)
    assert res.stats["far"]["mean"] == pytest.approx(expected[far].mean(), rel=1e-5)
    # GPU-capable torch path gives the same map
    res_t = editing_metric(*(torch.from_numpy(x) for x in (cas, init, pred, att)), spacing=spacing)
    np.testing.assert_allclose(res_t.d_map, res.d_map, atol=1e-5, equal_nan=True)
    assert [name for name, _ in res.rows()][0] == "D overall p95 (mm)"


def test_contour_distance_and_empty_prediction():
    shape = (10, 10)
    init = square(shape, (2, 6), (2, 6))
    cas = boundary(square(shape, (2, 7), (2, 6)))
    stats = contour_distance(cas, init)
    assert stats["count"] == int(cas.sum()) and stats["p95"] == pytest.approx(1.0)
    with pytest.warns(UserWarning, match="prediction mask is empty"):
        res = editing_metric(cas, init, np.zeros(shape, bool), attention_map(cas, 2.0))
    assert np.isinf(res.stats["overall"]["p95"])


def test_editing_invalid_inputs():
    a = np.zeros((5, 5), bool)
    with pytest.raises(ValueError, match="same shape"):
        editing_metric(a, a, a, np.zeros((5, 6)))
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        editing_metric(a, a, a, np.full((5, 5), 2.0))


@pytest.mark.parametrize("shape, spacing", [((17, 23, 11), (1.1, 0.7, 2.0)), ((31, 19), (0.5, 1.3))])
def test_squared_distance_edt_and_scipy_paths_agree_with_brute_force(shape, spacing, monkeypatch):
    """The multi-threaded ``edt`` path and the SciPy fallback give the same squared distances (mm^2), both
    equal to a brute-force minimum over the scribble voxels."""
    import sys

    from losslab.metrics.attention import squared_distance_to

    rng = np.random.default_rng(4)
    mask = rng.random(shape) > 0.98
    grid = np.stack(np.meshgrid(*[np.arange(n) * s for n, s in zip(shape, spacing)], indexing="ij"), -1)
    points = grid[mask]
    brute = ((grid[..., None, :] - points) ** 2).sum(-1).min(-1)
    fast = squared_distance_to(mask, spacing)
    monkeypatch.setitem(sys.modules, "edt", None)  # import edt -> ImportError: the SciPy path
    fallback = squared_distance_to(mask, spacing)
    assert fast.dtype == fallback.dtype == np.float32
    np.testing.assert_allclose(fast, brute, rtol=1e-5, atol=1e-4)
    np.testing.assert_allclose(fallback, brute, rtol=1e-5, atol=1e-4)
