"""The ICE simulator's geometry (issue 8, "Proof"): frames on their planes, the data mask, poses in RAS,
CAS contours against y, the sweep's coverage, open contours, and the phantom.

Most tests run on the scaled grid (64^3 x 2.2048 mm, the same 141 mm field as the paper's); one runs the
paper's default 128^3 x 1.1024 mm case. The file-level tests re-derive everything from the written files
(NIfTI geometry in LPS, poses in RAS) without the package's helpers.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import SimpleITK as sitk
from scipy import ndimage

from losslab import io
from losslab.ice import Grid, SimulationConfig, make_phantom, read_case, simulate_case, write_case
from losslab.ice.geometry import Sector
from losslab.ice.simulate import DEFAULT_SEPTAL_DIRECTION
from losslab.metrics import boundary, nearest_distances

GRID64 = Grid.cube(64, 2.2048)


@pytest.fixture(scope="module")
def phantom64():
    return make_phantom(GRID64, seed=1)


@pytest.fixture(scope="module")
def case64(phantom64):
    return simulate_case(phantom64, GRID64, SimulationConfig(frames=14), seed=1)


@pytest.fixture(scope="module")
def exact64(phantom64):
    return simulate_case(phantom64, GRID64, SimulationConfig(frames=14).without_realism(), seed=1)


@pytest.fixture(scope="module")
def written64(case64, tmp_path_factory):
    folder = tmp_path_factory.mktemp("case")
    write_case(case64, folder)
    return folder


def _cas_to_y(case):
    return nearest_distances(case.cas > 0, boundary(case.label.astype(bool)), case.spacing)


# ---------------------------------------------------------------- grid and phantom


def test_grid_index_to_ras_matches_itk_with_lps_flip():
    direction = sitk.VersorRigid3DTransform((0.3, -0.2, 0.5), 0.4).GetMatrix()
    geometry = io.Geometry(spacing=(0.8, 1.3, 2.1), origin=(12.0, -7.0, 30.0), direction=direction)
    grid = Grid.from_geometry((10, 11, 12), geometry)
    assert grid.spacing == (2.1, 1.3, 0.8)  # array order (k, j, i)
    img = sitk.Image([12, 11, 10], sitk.sitkUInt8)
    img.SetSpacing(geometry.spacing)
    img.SetOrigin(geometry.origin)
    img.SetDirection(geometry.direction)
    for kji in [(0, 0, 0), (3, 7, 2), (9.5, 0.25, 11)]:
        lps = np.array(img.TransformContinuousIndexToPhysicalPoint([float(v) for v in kji[::-1]]))
        ras = grid.index_to_ras() @ np.array([*kji, 1.0])
        np.testing.assert_allclose(ras[:3], lps * [-1, -1, 1], atol=1e-9)
        np.testing.assert_allclose((grid.ras_to_index() @ ras)[:3], kji, atol=1e-9)


def test_cube_grid_is_centred_and_ras_directions_are_anatomical():
    grid = Grid.cube(128, 1.1024)
    centre = grid.index_to_ras() @ np.array([63.5, 63.5, 63.5, 1.0])
    np.testing.assert_allclose(centre[:3], 0, atol=1e-5)  # float32 origin, as NIfTI stores it
    # Identity LPS direction: +i is Left, so Right is -i, i.e. the last grid-mm axis reversed.
    np.testing.assert_allclose(grid.ras_direction((1, 0, 0)), [0, 0, -1], atol=1e-12)
    np.testing.assert_allclose(grid.ras_direction((0, 0, 1)), [1, 0, 0], atol=1e-12)


@pytest.mark.parametrize("seed", [0, 1, 2, 3, 4])
def test_phantom_is_one_realistic_seeded_blob_at_both_grids(seed):
    fine = make_phantom(Grid.cube(128, 1.1024), seed)
    coarse = make_phantom(GRID64, seed)
    assert np.array_equal(fine, make_phantom(Grid.cube(128, 1.1024), seed))
    assert ndimage.label(fine, np.ones((3, 3, 3)))[1] == 1
    volume_ml = fine.sum() * 1.1024**3 / 1000
    assert 20 < volume_ml < 90
    assert abs(coarse.sum() * 2.2048**3 / 1000 - volume_ml) < 0.1 * volume_ml
    idx = np.argwhere(fine)
    extent = (idx.max(0) - idx.min(0) + 1) * 1.1024
    assert np.all(extent > 35) and np.all(extent < 130), extent
    # Centred: the bounding box is symmetric about the grid centre to a voxel.
    assert np.all(np.abs(idx.min(0) + idx.max(0) - 127) <= 1)
    # Body across (the width at the centroid along each axis, veins excluded by taking the central run).
    c = np.rint(ndimage.center_of_mass(fine)).astype(int)
    row = fine[c[0], c[1], :]
    lo, hi = c[2], c[2]
    while lo > 0 and row[lo - 1]:
        lo -= 1
    while hi < 127 and row[hi + 1]:
        hi += 1
    assert 30 <= (hi - lo + 1) * 1.1024 <= 60
    assert not np.array_equal(coarse, make_phantom(GRID64, seed + 1))


# ---------------------------------------------------------------- frames, data mask, poses


def test_every_frame_lies_on_its_plane(case64):
    grid = case64.grid
    sp = np.asarray(grid.spacing)
    for frame in case64.frames:
        kji = np.stack(np.unravel_index(frame.voxels, grid.shape), axis=1).astype(float)
        ras = (grid.index_to_ras() @ np.c_[kji, np.ones(len(kji))].T).T[:, :3]
        normal = frame.pose[:3, 2]
        assert abs(np.linalg.norm(normal) - 1) < 1e-9
        off_plane = (ras - frame.pose[:3, 3]) @ normal
        # A voxel's centre is within half its diagonal of the pixel that hit it, which is on the plane.
        assert np.abs(off_plane).max() <= 0.5 * np.linalg.norm(sp) + 1e-6


def test_written_files_datamask_is_exactly_what_the_frames_hit(written64, case64):
    meta = json.loads((written64 / "frames.json").read_text())
    image = io.read_image(written64 / "image.nii.gz")
    datamask = io.read_image(written64 / "datamask.nii.gz").array.astype(bool)
    stack = io.read_image(written64 / "frames.nii.gz").array
    lps_to_ijk = np.linalg.inv(image.geometry.ijk_to_lps())
    sector = meta["sector"]
    v, u = np.mgrid[0 : sector["rows"], 0 : sector["cols"]]
    x = (u - sector["apex_pixel_uv"][0]) * sector["pixel_mm"]
    z = v * sector["pixel_mm"]
    fan = (np.hypot(x, z) <= sector["depth_mm"] + 1e-9) & (
        np.degrees(np.arctan2(np.abs(x), z)) <= sector["opening_deg"] / 2 + 1e-9
    )
    hits = np.zeros(datamask.shape, bool)
    sums = np.zeros(datamask.shape)
    counts = np.zeros(datamask.shape)
    shape = np.array(datamask.shape)
    for f, entry in enumerate(meta["frames"]):
        pose = np.array(entry["pose"])
        pix = np.stack([u[fan], v[fan], np.zeros(fan.sum()), np.ones(fan.sum())])
        lps = np.diag([-1, -1, 1, 1]) @ pose @ pix
        kji = np.rint((lps_to_ijk @ lps)[:3][::-1].T).astype(int)
        ok = np.all((kji >= 0) & (kji < shape), axis=1)
        hits[tuple(kji[ok].T)] = True
        np.add.at(sums, tuple(kji[ok].T), stack[f][fan][ok] / 255.0)
        np.add.at(counts, tuple(kji[ok].T), 1)
    assert np.array_equal(hits, datamask)
    # x is the mean of the pixels in each voxel (frames.nii.gz is quantised to 8 bits).
    mean = np.where(counts > 0, sums / np.maximum(counts, 1), 0)
    assert np.abs(mean - image.array).max() <= 0.5 / 255 + 1e-6
    assert np.all(image.array[~datamask] == 0)


def test_written_pose_maps_each_contour_pixel_to_its_cas_voxel(written64):
    meta = json.loads((written64 / "frames.json").read_text())
    cas = io.read_image(written64 / "cas.nii.gz")
    lps_to_ijk = np.linalg.inv(cas.geometry.ijk_to_lps())
    checked = 0
    for f, entry in enumerate(meta["frames"]):
        for line in entry["contours"]:
            pts = np.asarray(line, float)
            pix = np.c_[pts, np.zeros(len(pts)), np.ones(len(pts))].T
            ras = np.array(entry["pose"]) @ pix
            lps = np.diag([-1, -1, 1, 1]) @ ras
            kji = np.rint((lps_to_ijk @ lps)[:3][::-1].T).astype(int)
            labels = cas.array[tuple(kji.T)]
            # Labelled by this frame, or overwritten by a later frame where frames cross.
            assert np.all(labels >= f + 1), (f, np.unique(labels))
            checked += len(pts)
    assert checked > 100


def test_case_round_trips_through_its_files(written64, case64):
    back = read_case(written64)
    assert back.grid.shape == case64.grid.shape
    np.testing.assert_allclose(back.grid.spacing, case64.grid.spacing)
    assert np.array_equal(back.datamask, case64.datamask)
    assert np.array_equal(back.cas, case64.cas)
    for a, b in zip(back.frames, case64.frames):
        np.testing.assert_allclose(a.pose, b.pose)
        assert np.array_equal(a.voxels, b.voxels)
        assert np.array_equal(a.cas_voxels, b.cas_voxels)
        assert np.abs(a.image - b.image).max() <= 0.5 / 255 + 1e-6


# ---------------------------------------------------------------- CAS contours against y


def test_realism_off_puts_every_cas_voxel_within_one_voxel_of_y(exact64):
    d = _cas_to_y(exact64)
    assert len(d) > 200
    assert d.max() <= 2.2048 + 1e-6


def test_default_realism_gives_cas_y_disagreement_of_a_millimetre_or_two(case64, exact64):
    d = _cas_to_y(case64)
    assert 0.5 <= d.mean() <= 3.0, d.mean()
    assert d.mean() > _cas_to_y(exact64).mean() + 0.3


def test_each_knob_alone_moves_the_contours():
    grid = GRID64
    anatomy = make_phantom(grid, 2)
    base = SimulationConfig(frames=10).without_realism()
    ref = _cas_to_y(simulate_case(anatomy, grid, base, seed=5)).mean()
    for knob in ({"misalignment_deg": 4.0}, {"misalignment_mm": 3.0}, {"motion_mm": 4.0}):
        cfg = SimulationConfig(**{**base.__dict__, **knob})
        assert _cas_to_y(simulate_case(anatomy, grid, cfg, seed=5)).mean() > ref + 0.3, knob


def _signed_cas_to_y(case):
    """Mean signed distance (mm) from the CAS voxels to y's surface: > 0 outside y."""
    y = case.label != 0
    signed = ndimage.distance_transform_edt(~y, sampling=case.spacing) - ndimage.distance_transform_edt(
        y, sampling=case.spacing
    )
    return float(signed[case.cas > 0].mean())


def test_cardiac_motion_puts_contours_on_both_sides_of_y():
    # y is the cycle's mean shape (the paper's y is fitted to all the CAS contours): over an ungated sweep
    # the contours lie on both sides of y. Were y the smallest shape (the wall moving out only), 4 mm of
    # motion would put them 2 mm outside on average; 28 random phases leave a few tenths either way.
    grid = GRID64
    shifts = []
    for seed in (2, 3, 4):
        anatomy = make_phantom(grid, seed)
        base = SimulationConfig(frames=28).without_realism()
        moving = SimulationConfig(**{**base.__dict__, "motion_mm": 4.0})
        still = _signed_cas_to_y(simulate_case(anatomy, grid, base, seed=seed))
        shifts.append(_signed_cas_to_y(simulate_case(anatomy, grid, moving, seed=seed)) - still)
    assert abs(np.mean(shifts)) < 1.0, shifts


@pytest.mark.parametrize("seed", [2, 3])
def test_cardiac_phase_zero_is_the_smallest_shape_and_half_the_largest(seed):
    # What the phase means (Frame.phase): with the motion alone (no pose error), a frame imaged near phase 0
    # (the LA at its smallest) has its CAS contour mostly inside y, near phase 0.5 (largest) mostly outside.
    grid = GRID64
    config = SimulationConfig(frames=28, misalignment_deg=0.0, misalignment_mm=0.0, motion_mm=4.0)
    case = simulate_case(make_phantom(grid, seed), grid, config, seed=seed)
    inside = case.label != 0
    smallest, largest = [], []
    for frame in case.frames:
        phase_distance = min(frame.phase, 1.0 - frame.phase)  # cyclic distance to phase 0
        if phase_distance < 0.15:
            smallest.append(inside.ravel()[frame.cas_voxels])
        elif abs(frame.phase - 0.5) < 0.15:
            largest.append(inside.ravel()[frame.cas_voxels])
    assert smallest and largest
    assert np.concatenate(smallest).mean() > 0.7
    assert np.concatenate(largest).mean() < 0.2


def test_simulation_is_deterministic_by_seed(phantom64, case64):
    again = simulate_case(phantom64, GRID64, SimulationConfig(frames=14), seed=1)
    assert np.array_equal(again.image, case64.image) and np.array_equal(again.cas, case64.cas)
    other = simulate_case(phantom64, GRID64, SimulationConfig(frames=14), seed=2)
    assert not np.array_equal(other.image, case64.image)


def test_default_128_case_fills_a_realistic_fraction():
    grid = Grid.cube()
    anatomy = make_phantom(grid, 0)
    case = simulate_case(anatomy, grid, seed=0)
    assert len(case.frames) == 28
    assert 0.03 <= case.datamask.mean() <= 0.30
    assert 0.5 <= _cas_to_y(case).mean() <= 3.0
    # Frames are finer than the grid; values in [0, 1] float32 with dark blood and a brighter wall.
    assert case.sector.pixel_mm < min(grid.spacing)
    assert case.image.dtype == np.float32 and 0 <= case.image.min() and case.image.max() <= 1
    inside = ndimage.binary_erosion(anatomy, iterations=3) & case.datamask
    shell = ndimage.binary_dilation(anatomy, iterations=2) & ~anatomy & case.datamask
    assert case.image[inside].mean() < 0.5 * case.image[shell].mean()


def test_catheter_sits_in_the_right_atrium_across_the_septum(case64, phantom64):
    grid = case64.grid
    kji = (grid.ras_to_index() @ np.append(case64.transducer, 1))[:3]
    outside = ndimage.distance_transform_edt(~phantom64, sampling=grid.spacing)
    d = ndimage.map_coordinates(outside, kji[:, None], order=1)[0]
    assert 12 <= d <= 28, d  # 15-25 mm from the wall along the septal ray, a little less to the nearest wall
    centroid = grid.index_to_ras() @ np.append(ndimage.center_of_mass(phantom64), 1)
    towards = case64.transducer - centroid[:3]
    assert towards[0] > 0  # on the patient's right
    # Axis tangent to the septum: orthogonal to the direction towards the LA, and in every frame's plane.
    assert abs(towards @ case64.catheter_axis) / np.linalg.norm(towards) < np.sin(np.radians(12))
    for frame in case64.frames:
        assert abs(frame.pose[:3, 2] @ case64.catheter_axis) < 1e-9


def test_contours_are_open_exactly_where_the_sector_cuts_the_wall(phantom64):
    sector = Sector(depth_mm=40.0, opening_deg=90.0, pixel_mm=1.1024)
    cfg = SimulationConfig(frames=8, depth_mm=40.0, pixel_mm=1.1024).without_realism()
    case = simulate_case(phantom64, GRID64, cfg, seed=1)
    apex_u = sector.apex_pixel[0]
    n_open = 0
    for frame in case.frames:
        for line in frame.contours:
            # Inside the fan, a contour never runs along its edge: it ends there.
            x = (line[1:-1, 0] - apex_u) * sector.pixel_mm
            z = line[1:-1, 1] * sector.pixel_mm
            r = np.hypot(x, z)
            to_edge = np.minimum(40.0 - r, r * np.sin(np.radians(45.0) - np.arctan2(np.abs(x), z)))
            assert np.count_nonzero(to_edge < 0.5 * sector.pixel_mm) <= 2
            closed = np.linalg.norm(line[0] - line[-1]) < 1e-6
            if closed:
                continue
            n_open += 1
            for end in (line[0], line[-1]):
                x = (end[0] - apex_u) * sector.pixel_mm
                z = end[1] * sector.pixel_mm
                at_depth = abs(np.hypot(x, z) - 40.0) <= 1.5 * sector.pixel_mm
                at_side = abs(np.degrees(np.arctan2(abs(x), z)) - 45.0) <= np.degrees(
                    1.5 * sector.pixel_mm / max(np.hypot(x, z), 1e-9)
                )
                assert at_depth or at_side, end
    assert n_open > 0  # a 40 mm fan cuts the LA: its contours end on the fan's edge


def test_invalid_inputs_raise_clear_errors(phantom64):
    with pytest.raises(ValueError, match="empty"):
        simulate_case(np.zeros(GRID64.shape, bool), GRID64)
    with pytest.raises(ValueError, match="shape"):
        simulate_case(phantom64[:-1], GRID64)
    with pytest.raises(ValueError, match="frames"):
        SimulationConfig(frames=0)
    with pytest.raises(ValueError, match="misalignment_deg"):
        SimulationConfig(misalignment_deg=-1)


def test_dropout_shadows_a_wedge_of_the_frames(phantom64):
    base = SimulationConfig(frames=6)
    plain = simulate_case(phantom64, GRID64, base, seed=3)
    shadowed = simulate_case(phantom64, GRID64, SimulationConfig(**{**base.__dict__, "dropout": 1.0}), seed=3)
    sector = plain.sector
    v, u = np.nonzero(sector.mask())
    x, z = (u - sector.apex_pixel[0]) * sector.pixel_mm, v * sector.pixel_mm
    angle = np.degrees(np.arctan2(x, z))
    deep = np.hypot(x, z) > 45.0  # beyond any shadow's start (10-40 mm)
    bins = np.digitize(angle, np.arange(-45, 46, 3))
    for a, b in zip(plain.frames, shadowed.frames):
        pa, pb = a.image[v, u], b.image[v, u]
        ratios = [
            pb[deep & (bins == k)].mean() / pa[deep & (bins == k)].mean() for k in np.unique(bins[deep])
        ]
        assert min(ratios) < 0.3 and max(ratios) > 0.99  # one wedge darkened, the rest untouched


def test_catheter_is_placed_beyond_a_c_shaped_anatomy_whose_centroid_ray_misses_it():
    grid = GRID64
    kk, jj, ii = np.ogrid[:64, :64, :64]
    d = grid.ras_direction(DEFAULT_SEPTAL_DIRECTION)  # grid mm (k, j, i); in the (j, i) plane here
    rel_j, rel_i = (jj - 31.5) * 2.2048, (ii - 31.5) * 2.2048
    r = np.hypot(rel_j, rel_i)
    cos_to_d = (rel_j * d[1] + rel_i * d[2]) / np.maximum(r, 1e-9)
    c_shape = (r > 14) & (r < 24) & (np.abs(kk - 31.5) * 2.2048 < 12) & (cos_to_d < 0.5)  # open towards d
    case = simulate_case(c_shape, grid, SimulationConfig(frames=6).without_realism(), seed=0)
    g = np.linalg.solve(grid.grid_mm_to_ras(), np.append(case.transducer, 1))[:3]
    centroid = np.asarray(ndimage.center_of_mass(c_shape)) * 2.2048
    extent = ((np.argwhere(c_shape) * 2.2048 - centroid) @ d).max()
    assert (g - centroid) @ d >= extent + 15.0 - 2.2048  # outside the LA along the septal direction
