"""The wide left-atrium prior (losslab.ice.anatomy.make_atrium / sample_atrium): seeded and independent of
the grid, one blood pool that fits the grid, body volumes of 40-160 ml, the variant frequencies it
promises, parts where anatomy puts them, and simulated cases on it."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage

from losslab.cli import main
from losslab.ice import (
    Grid,
    SimulationConfig,
    dataset_cases,
    make_atrium,
    read_case,
    sample_atrium,
    simulate_case,
)
from losslab.ice.anatomy import (
    BODY_VOLUME_ML,
    LAA_TYPES,
    MAX_ROTATION_DEG,
    P_LEFT_COMMON_TRUNK,
    P_RIGHT_MIDDLE_VEIN,
    _add_appendage,
    _add_vein,
    _atrium_frame,
    _body,
)

GRID64 = Grid.cube(64, 2.2048)


@pytest.mark.parametrize("seed", [0, 7, 19])
def test_atrium_is_seeded_one_pool_centred_and_the_same_at_both_grids(seed):
    fine = make_atrium(Grid.cube(128, 1.1024), seed)
    coarse = make_atrium(GRID64, seed)
    assert np.array_equal(coarse, make_atrium(GRID64, seed))
    assert not np.array_equal(coarse, make_atrium(GRID64, seed + 1))
    assert ndimage.label(fine, np.ones((3, 3, 3)))[1] == 1
    fine_ml, coarse_ml = fine.sum() * 1.1024**3 / 1000, coarse.sum() * 2.2048**3 / 1000
    assert abs(coarse_ml - fine_ml) < 0.1 * fine_ml
    body_ml = sample_atrium(seed)["volume_ml"]
    assert body_ml < fine_ml < body_ml + 60  # the body plus veins and appendage
    idx = np.argwhere(fine)
    assert idx.min() >= 2 and idx.max() <= 125, "a two-voxel margin inside the grid"
    assert np.all(np.abs(idx.min(0) + idx.max(0) - 127) <= 1), "bounding box centred"


def test_prior_draws_the_promised_ranges_and_variant_frequencies():
    draws = [sample_atrium(seed) for seed in range(400)]
    volumes = np.array([d["volume_ml"] for d in draws])
    assert volumes.min() >= BODY_VOLUME_ML[0] and volumes.max() <= BODY_VOLUME_ML[1]
    assert volumes.min() < 50 and volumes.max() > 140, "the whole range is used"
    common = np.mean([d["left_pattern"] == "common trunk" for d in draws])
    middle = np.mean([d["right_middle"] for d in draws])
    assert abs(common - P_LEFT_COMMON_TRUNK) < 0.06 and abs(middle - P_RIGHT_MIDDLE_VEIN) < 0.06
    for kind, p in LAA_TYPES.items():
        share = np.mean([d["laa"]["type"] == kind for d in draws])
        assert abs(share - p) < 0.07, (kind, share)
    rotations = np.array([d["rotation_deg"] for d in draws])
    assert np.abs(rotations).max() <= MAX_ROTATION_DEG and np.abs(rotations).max(0).min() > 15
    lengths = [v["length_mm"] for d in draws for v in d["veins"] if "branches" not in v]
    assert min(lengths) < 10 and max(lengths) > 30, "short and long veins"
    funnels = [v["funnel"] for d in draws for v in d["veins"]]
    assert max(funnels) > 1.4, "funnel-shaped ostia"
    names = {v["name"] for v in draws[0]["veins"]}
    assert {"right superior", "right inferior"} <= names


def _ras_offsets(grid, mask, reference):
    """Mean RAS position (mm) of ``mask`` voxels relative to the centroid of ``reference``."""
    to_ras = grid.index_to_ras()[:3, :3]  # array-order (k, j, i) index -> RAS
    centre = np.array(ndimage.center_of_mass(reference))
    return to_ras @ (np.argwhere(mask).mean(0) - centre)


def test_parts_lie_where_anatomy_puts_them():
    # Veins leave the posterior wall, the appendage is left-anterior-superior, the mitral cut is
    # antero-inferior-left: checked on the unrotated atrium's parts, averaged over seeds.
    grid = GRID64
    veins, laa, right, left = [], [], [], []
    for seed in range(12):
        params = sample_atrium(seed)
        params["rotation_deg"] = [0.0, 0.0, 0.0]
        axes = _atrium_frame(grid, params["rotation_deg"])
        body, wall = _body(grid, params, axes, grid.centre_mm)
        for vein in params["veins"]:
            one = np.zeros_like(body)
            _add_vein(one, grid, vein, axes, grid.centre_mm, wall)
            offset = _ras_offsets(grid, one & ~body, body)
            veins.append(offset)
            (right if vein["name"].startswith("right") else left).append(offset[0])
        one = np.zeros_like(body)
        _add_appendage(one, grid, params["laa"], axes, grid.centre_mm, wall)
        laa.append(_ras_offsets(grid, one & ~body, body))
    assert np.mean(veins, axis=0)[1] < -5, "veins are posterior"
    assert min(right) > 5 and max(left) < -5, "right veins on the right, left veins on the left"
    r, a, s = np.mean(laa, axis=0)
    assert r < -5 and a > 5 and s > 0, "appendage left, anterior, superior"


def test_atrium_too_big_for_the_grid_is_refused():
    with pytest.raises(ValueError, match="does not fit the grid"):
        make_atrium(Grid.cube(32, 1.0), 5)


def test_simulated_atria_have_contours_and_cli_prior(tmp_path):
    case = simulate_case(make_atrium(GRID64, 3), GRID64, SimulationConfig(frames=14), seed=3)
    assert sum(len(f.cas_voxels) > 0 for f in case.frames) >= 10
    assert (case.datamask & (case.label != 0)).sum() > 0.3 * (case.label != 0).sum()
    out = tmp_path / "atria"
    args = ["--cases", "2", "--size", "48", "--spacing", "2.94", "--frames", "6"]
    assert main(["ice", "simulate", str(out), *args]) == 0
    label = read_case(next(iter(dataset_cases(out).values()))).label != 0
    assert np.array_equal(label, make_atrium(Grid.cube(48, 2.94), 0)), "the default prior is the atrium"
    assert main(["ice", "simulate", str(tmp_path / "ph"), *args, "--prior", "phantom"]) == 0
    phantom = read_case(next(iter(dataset_cases(tmp_path / "ph").values()))).label != 0
    assert not np.array_equal(phantom, label)
