"""Interaction synthesis on constructed cases (issue 8, "Proof"): the training frame is the one with the
largest error and its scribble lies on y's boundary in that frame's region of maximum error; the test-time
choice is the furthest CAS contour and never repeats; perturbations move the scribble by what they say;
u / A are the one attention map with the paper's sigma scaled to the grid.

Oracles are computed here from the poses (frame pixel -> RAS -> voxel) and :mod:`losslab.metrics`, not
with the module's own helpers.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from losslab.ice import (
    CASEditSequence,
    Grid,
    SimulationConfig,
    editing_batch,
    encode,
    furthest_cas_interaction,
    make_phantom,
    read_case,
    simulate_case,
    training_interaction,
    write_case,
)
from losslab.metrics import attention_map, boundary, nearest_distances

GRID = Grid.cube(64, 2.2048)
SP = GRID.spacing[0]


@pytest.fixture(scope="module")
def case():
    return simulate_case(make_phantom(GRID, 4), GRID, SimulationConfig(frames=12).without_realism(), seed=4)


def _fan_uv(case):
    return np.argwhere(case.sector.mask())[:, ::-1].astype(float)


def _frame_voxels(case, f, uv):
    """Nearest voxel (k, j, i) of frame pixels, from the RAS pose."""
    pix = np.c_[uv, np.zeros(len(uv)), np.ones(len(uv))].T
    return np.rint((case.grid.ras_to_index() @ case.frames[f].pose @ pix)[:3].T).astype(int)


def _in_grid(kji):
    return np.all((kji >= 0) & (kji < np.asarray(GRID.shape)), axis=1)


def _oracle_errors(case, y, y_init):
    uv = _fan_uv(case)
    out = []
    for f in range(len(case.frames)):
        kji = _frame_voxels(case, f, uv)
        kji = kji[_in_grid(kji)]
        out.append(int(np.count_nonzero(y[tuple(kji.T)] != y_init[tuple(kji.T)])))
    return np.array(out)


def _ball(centre_kji, radius_mm):
    grids = np.meshgrid(*[np.arange(n) for n in GRID.shape], indexing="ij")
    return sum((g - c) ** 2 for g, c in zip(grids, centre_kji)) * SP**2 <= radius_mm**2


def _contour_point(case, f, which):
    """(k, j, i) of a CAS contour vertex of frame f (on y's boundary: realism is off)."""
    line = max(case.frames[f].contours, key=len)
    uv = line[int(which * (len(line) - 1))][None]
    return _frame_voxels(case, f, uv)[0]


def test_training_scribble_is_on_y_in_the_largest_error_region_of_the_worst_frame(case):
    y = case.label.astype(bool)
    f0 = len(case.frames) // 2
    line = max(case.frames[f0].contours, key=len)
    vertices = _frame_voxels(case, f0, line)
    # The big error on the body (the contour point nearest y's centroid: not on a thin vein), the small one
    # as far from it as the contour goes.
    centroid = np.argwhere(y).mean(axis=0)
    big = vertices[np.argmin(np.linalg.norm(vertices - centroid, axis=1))]
    small = vertices[np.argmax(np.linalg.norm(vertices - big, axis=1))]
    assert np.linalg.norm((big - small) * SP) > 30  # two separate errors in one frame
    ball_big, ball_small = _ball(big, 9.0), _ball(small, 5.0)
    y_init = y & ~ball_big & ~ball_small
    edit = training_interaction(case, y_init)
    errors = _oracle_errors(case, y, y_init)
    assert edit.frame == int(np.argmax(errors))
    assert edit.kind == "training" and edit.voxels.any()
    # The region of maximum error: the scribble is where the big ball was cut, not the small one.
    grown = _ball(big, 9.0 + 1.5 * SP)
    assert np.all(grown[edit.voxels]), "scribble voxels outside the region of maximum error"
    assert not np.any(_ball(small, 5.0 + SP)[edit.voxels])
    # On y's boundary: every scribble voxel within one voxel (26-neighbourhood) of it.
    d = nearest_distances(edit.voxels, boundary(y), GRID.spacing, "chessboard")
    assert d.max() <= SP + 1e-6
    # ... where y_init's boundary is not (y's surface inside the bite), following it, not a single point.
    d_init = nearest_distances(edit.voxels, boundary(y_init), GRID.spacing, "chessboard")
    assert np.median(d_init) >= SP - 1e-6
    assert edit.voxels.sum() >= 5
    # scribble="contour": the same frame, y's whole contour on it (through both errors), still on y
    whole = training_interaction(case, y_init, scribble="contour")
    assert whole.frame == edit.frame and np.all(whole.voxels[edit.voxels])
    assert np.any(_ball(small, 5.0 + SP)[whole.voxels]) and whole.voxels.sum() > 2 * edit.voxels.sum()
    assert nearest_distances(whole.voxels, boundary(y), GRID.spacing, "chessboard").max() <= SP + 1e-6
    with pytest.raises(ValueError, match="scribble must be one of"):
        training_interaction(case, y_init, scribble="all")


def test_training_frame_follows_the_error(case):
    y = case.label.astype(bool)
    picks = set()
    for f in (2, len(case.frames) - 3):
        y_init = y & ~_ball(_contour_point(case, f, 0.5), 8.0)
        edit = training_interaction(case, y_init)
        assert edit.frame == int(np.argmax(_oracle_errors(case, y, y_init)))
        picks.add(edit.frame)
    assert len(picks) == 2
    assert training_interaction(case, y) is None  # no error: nothing to draw


def test_test_time_choice_is_the_furthest_cas_contour_and_never_repeats(case):
    y = case.label.astype(bool)
    f1 = 3
    prediction = y & ~_ball(_contour_point(case, f1, 0.5), 12.0)
    oracle = []
    for f in range(len(case.frames)):
        cas_f = np.zeros(GRID.shape, bool)
        cas_f.ravel()[case.frames[f].cas_voxels] = True
        d = nearest_distances(cas_f, boundary(prediction), GRID.spacing, "manhattan")
        oracle.append(d.mean() if d.size else np.nan)
    oracle = np.array(oracle)
    edit = furthest_cas_interaction(case, prediction)
    assert edit.frame == int(np.nanargmax(oracle))
    expected = np.zeros(GRID.shape, bool)
    expected.ravel()[case.frames[edit.frame].cas_voxels] = True
    assert np.array_equal(edit.voxels, expected)
    seq = CASEditSequence(case)
    chosen = []
    for _ in range(len(case.frames) + 2):
        e = seq.next(prediction)
        if e is None:
            break
        chosen.append(e.frame)
    n_with_contours = int(np.sum(~np.isnan(oracle)))
    assert len(chosen) == len(set(chosen)) == n_with_contours
    assert chosen[0] == edit.frame
    np.testing.assert_allclose(oracle[chosen], np.sort(oracle[chosen])[::-1])  # furthest unused first


def _arc(line):
    return float(np.linalg.norm(np.diff(line, axis=0), axis=1).sum())


def _dense_distance(points, line):
    from losslab.ice.simulate import densify

    dense = densify(line, 0.05)
    return np.min(np.linalg.norm(points[:, None, :] - dense[None, :, :], axis=2), axis=1)


def test_perturbations_move_the_scribble_by_what_they_say(case):
    y = case.label.astype(bool)
    f = len(case.frames) // 2
    y_init = y & ~_ball(_contour_point(case, f, 0.5), 12.0)
    px = case.sector.pixel_mm
    base = training_interaction(case, y_init, seed=3)
    line = base.polylines[0]
    for offset in (3.0, -3.0):
        moved = training_interaction(case, y_init, seed=3, offset_mm=offset)
        pts = moved.polylines[0]
        d = _dense_distance(pts, line) * px
        assert abs(np.median(d) - abs(offset)) < 0.25 * abs(offset), (offset, np.median(d))
        # Positive offsets go out of the LA, negative ones in: y sampled under the moved points.
        kji = _frame_voxels(case, moved.frame, pts)
        ok = _in_grid(kji)
        inside = y[tuple(kji[ok].T)].mean()
        assert (inside < 0.2) if offset > 0 else (inside > 0.8), (offset, inside)
        # In the grid: the moved voxels are about |offset| from the original scribble voxels.
        dv = nearest_distances(moved.voxels, base.voxels, GRID.spacing)
        assert abs(np.median(dv) - abs(offset)) <= SP
    jittered = training_interaction(case, y_init, seed=3, jitter_mm=1.5)
    d = _dense_distance(jittered.polylines[0], line) * px
    assert 1.0 < np.sqrt(np.mean(d**2)) < 2.0
    part = training_interaction(case, y_init, seed=3, fraction=0.4)
    assert abs(_arc(part.polylines[0]) / _arc(line) - 0.4) < 0.05
    assert np.all(_dense_distance(part.polylines[0], line) < 0.05 + 1e-6)  # a piece of the same line
    other = training_interaction(case, y_init, seed=4, fraction=0.4)
    assert not np.allclose(other.polylines[0][0], part.polylines[0][0])  # the piece's start is seeded
    with pytest.raises(ValueError, match="fraction"):
        training_interaction(case, y_init, fraction=0)


def test_encoding_uses_the_paper_sigma_scaled_to_the_grid(case):
    y_init = case.label.astype(bool) & ~_ball(_contour_point(case, 6, 0.5), 10.0)
    edit = training_interaction(case, y_init)
    # 20 voxels of 1.1024 mm = 10 voxels of 2.2048 mm.
    np.testing.assert_allclose(edit.encode(case.spacing), attention_map(edit.voxels, sigma=10.0), atol=1e-6)
    small = np.zeros((24, 24, 24), bool)
    small[12, 12, 12] = True
    np.testing.assert_allclose(encode(small, (1.1024,) * 3), attention_map(small, sigma=20.0), atol=1e-6)


def test_editing_batch_is_torch_ready_and_deterministic(case):
    y = case.label.astype(bool)
    inits = [y & ~_ball(_contour_point(case, f, 0.5), 9.0) for f in (3, 7)]
    batch = editing_batch([(case, inits[0]), (case, inits[1]), (case, y)], seed=1, jitter_mm=1.0)
    for key in ("x", "y", "initial", "u", "attention"):
        assert batch[key].shape == (3, 1, *GRID.shape) and batch[key].dtype == torch.float32
    assert batch["interactions"][2] is None and float(batch["u"][2].max()) == 0.0
    assert float(batch["u"][0].max()) == 1.0
    again = editing_batch([(case, inits[0]), (case, inits[1]), (case, y)], seed=1, jitter_mm=1.0)
    assert torch.equal(batch["u"], again["u"])


def test_interactions_on_a_case_read_from_disk_match(case, tmp_path):
    write_case(case, tmp_path / "c")
    back = read_case(tmp_path / "c")
    y_init = case.label.astype(bool) & ~_ball(_contour_point(case, 5, 0.5), 10.0)
    a, b = training_interaction(case, y_init), training_interaction(back, y_init)
    assert a.frame == b.frame and np.array_equal(a.voxels, b.voxels)
    a, b = furthest_cas_interaction(case, y_init), furthest_cas_interaction(back, y_init)
    assert a.frame == b.frame and np.array_equal(a.voxels, b.voxels)
