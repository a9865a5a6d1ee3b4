"""Left-atrium anatomies for the simulator: a seeded procedural phantom, or any binary mask from a file.

Both give a boolean mask on a :class:`~losslab.ice.geometry.Grid` (array order ``(k, j, i)``) with the
anatomy centred on the grid; sizes are in mm, so one seed gives the same LA on a 128^3 x 1.1024 mm grid and
on a 64^3 x 2.2048 mm grid (141 mm across either way), at the resolution of each.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence

import numpy as np
import SimpleITK as sitk
from scipy import ndimage

from ..io import Image
from ..metrics import boundary
from .geometry import Grid, rotation_matrix

# Anatomical directions in RAS (Right, Anterior, Superior).
_R, _A, _S = np.eye(3)


def _unit(v: np.ndarray) -> np.ndarray:
    return v / np.linalg.norm(v)


def _box(grid: Grid, lo_mm: np.ndarray, hi_mm: np.ndarray) -> tuple[tuple[slice, ...], list[np.ndarray]]:
    """Index slices of the grid voxels within a grid-mm box, and their grid-mm coordinates (broadcastable)."""
    sp = np.asarray(grid.spacing)
    lo = np.clip(np.floor(lo_mm / sp).astype(int), 0, np.asarray(grid.shape))
    hi = np.clip(np.ceil(hi_mm / sp).astype(int) + 1, 0, np.asarray(grid.shape))
    box = tuple(slice(a, b) for a, b in zip(lo, hi))
    axes = [np.arange(a, b, dtype=np.float32) * np.float32(s) for a, b, s in zip(lo, hi, sp)]
    coords = [
        axes[0][:, None, None],
        axes[1][None, :, None],
        axes[2][None, None, :],
    ]
    return box, coords


def _add_tube(mask: np.ndarray, grid: Grid, points: Sequence[np.ndarray], radii: Sequence[float]) -> None:
    """OR into ``mask`` a chain of capsules through ``points`` (grid mm) with linearly varying radius."""
    for a, b, ra, rb in zip(points[:-1], points[1:], radii[:-1], radii[1:]):
        r = max(ra, rb)
        box, (z, y, x) = _box(grid, np.minimum(a, b) - r, np.maximum(a, b) + r)
        if any(s.stop <= s.start for s in box):
            continue
        ab = (b - a).astype(np.float32)
        length2 = float(ab @ ab)
        pz, py, px = z - np.float32(a[0]), y - np.float32(a[1]), x - np.float32(a[2])
        t = np.clip((pz * ab[0] + py * ab[1] + px * ab[2]) / np.float32(length2), 0.0, 1.0)
        d2 = (pz - t * ab[0]) ** 2 + (py - t * ab[1]) ** 2 + (px - t * ab[2]) ** 2
        radius = np.float32(ra) + (np.float32(rb) - np.float32(ra)) * t
        mask[box] |= d2 <= radius * radius


def make_phantom(grid: Grid | None = None, seed: int = 0) -> np.ndarray:
    """A procedural left-atrium blood pool on ``grid`` (default: the paper's 128^3 x 1.1024 mm), seeded.

    Parts, oriented in RAS through the grid's geometry (so that the catheter, placed on the patient's right,
    looks at the septum): an ellipsoid-like body 36-54 mm across left-right (28-40 mm antero-posterior,
    32-46 mm supero-inferior), its surface bent by low-frequency shape noise; a flat cut on its
    antero-inferior-left side (the mitral opening); four pulmonary veins (10-14 mm tubes, 15-25 mm long)
    leaving the posterior wall left and right, superior and inferior; and a curved, tapering left atrial
    appendage (left-anterior-superior, 20-28 mm). All sizes are drawn from ``seed``.

    Returns:
        A boolean mask ``(k, j, i)`` on ``grid``, centred on the grid's centre.
    """
    grid = grid or Grid.cube()
    rng = np.random.default_rng(seed)
    R, A, S = (grid.ras_direction(v) for v in (_R, _A, _S))
    # Body: an ellipsoid in a slightly rotated anatomical frame.
    semi = np.array([rng.uniform(18, 27), rng.uniform(14, 20), rng.uniform(16, 23)])
    rot = np.eye(3)
    for axis in (R, A, S):
        rot = rotation_matrix(axis, np.radians(rng.uniform(-12, 12))) @ rot
    axes = rot @ np.stack([R, A, S], axis=1)  # columns: body axes in grid mm
    centre = grid.centre_mm
    reach = semi.max() * 1.25
    box, (z, y, x) = _box(grid, centre - reach, centre + reach)
    rel = [z - np.float32(centre[0]), y - np.float32(centre[1]), x - np.float32(centre[2])]
    local = [sum(np.float32(axes[d, c]) * rel[d] for d in range(3)) / np.float32(semi[c]) for c in range(3)]
    rho = np.sqrt(local[0] ** 2 + local[1] ** 2 + local[2] ** 2) + np.float32(1e-6)
    shape_noise = np.zeros_like(rho)
    for _ in range(6):
        k = rng.normal(size=3)
        k = _unit(k) * rng.uniform(1.0, 2.2)
        phase = rng.uniform(0, 2 * np.pi)
        amp = rng.uniform(0.02, 0.05)
        shape_noise += np.float32(amp) * np.cos(
            np.float32(np.pi)
            * (np.float32(k[0]) * local[0] + np.float32(k[1]) * local[1] + np.float32(k[2]) * local[2])
            / rho
            + np.float32(phase)
        )
    body = rho <= 1.0 + shape_noise
    # Mitral opening: a flat cut of the antero-inferior-left side.
    m_dir = _unit(-0.4 * R + 0.6 * A - 0.7 * S)
    extent_m = 1.0 / np.sqrt(np.sum(((axes.T @ m_dir) / semi) ** 2))
    cut = rng.uniform(0.72, 0.85) * extent_m
    body &= (
        rel[0] * np.float32(m_dir[0]) + rel[1] * np.float32(m_dir[1]) + rel[2] * np.float32(m_dir[2]) <= cut
    )
    mask = np.zeros(grid.shape, dtype=bool)
    mask[box] = body

    def wall_distance(direction: np.ndarray) -> float:
        return float(1.0 / np.sqrt(np.sum(((axes.T @ direction) / semi) ** 2)))

    # Pulmonary veins: left / right x superior / inferior, leaving the posterior wall.
    for side, vertical in ((-1, 1), (-1, -1), (1, 1), (1, -1)):
        d = _unit(
            side * rng.uniform(0.5, 0.65) * R
            - rng.uniform(0.65, 0.8) * A
            + vertical * rng.uniform(0.35, 0.5) * S
        )
        start = centre + 0.55 * wall_distance(d) * d
        length = rng.uniform(15, 25)
        wall = centre + wall_distance(d) * d
        bend = _unit(d + side * 0.35 * R + vertical * 0.2 * S)
        mid = wall + 0.5 * length * d
        end = mid + 0.5 * length * bend
        radius = rng.uniform(5.0, 7.0)
        _add_tube(mask, grid, [start, wall, mid, end], [radius, radius, radius * 0.95, radius * 0.9])
    # Left atrial appendage: a curved, tapering finger.
    d = _unit(-0.7 * R + rng.uniform(0.4, 0.6) * A + rng.uniform(0.35, 0.55) * S)
    wall = centre + wall_distance(d) * d
    length = rng.uniform(20, 28)
    curl = _unit(np.cross(d, S) * rng.choice([-1, 1]) + 0.5 * A)
    p1 = wall + 0.45 * length * d
    p2 = p1 + 0.35 * length * _unit(d + 0.8 * curl)
    p3 = p2 + 0.25 * length * _unit(0.4 * d + curl)
    r0 = rng.uniform(6.0, 8.0)
    _add_tube(
        mask,
        grid,
        [centre + 0.6 * wall_distance(d) * d, wall, p1, p2, p3],
        [r0, r0, r0 * 0.8, r0 * 0.6, r0 * 0.4],
    )
    return _recentre(mask)


def _recentre(mask: np.ndarray) -> np.ndarray:
    """Shift a mask by whole voxels so that its bounding box is centred on the grid (no voxel is lost)."""
    idx = (
        np.nonzero(mask.any(axis=(1, 2))),
        np.nonzero(mask.any(axis=(0, 2))),
        np.nonzero(mask.any(axis=(0, 1))),
    )
    shift = []
    for axis, (found,) in enumerate(idx):
        lo, hi = int(found[0]), int(found[-1])
        n = mask.shape[axis]
        s = int(np.floor((n - 1 - hi - lo) / 2.0))
        s = max(-lo, min(n - 1 - hi, s))
        shift.append(s)
    if not any(shift):
        return mask
    out = np.zeros_like(mask)
    src = tuple(slice(max(0, -s), n - max(0, s)) for s, n in zip(shift, mask.shape))
    dst = tuple(slice(max(0, s), n - max(0, -s)) for s, n in zip(shift, mask.shape))
    out[dst] = mask[src]
    return out


def _as_foreground(array: np.ndarray, name: str) -> np.ndarray:
    values = np.unique(array)
    if values.size > 2 or (values.size == 2 and values[0] != 0):
        shown = ", ".join(f"{v:g}" for v in values[:8]) + (" ..." if values.size > 8 else "")
        raise ValueError(
            f"{name}: expected a binary mask (0 and one foreground value), got {values.size} values ({shown}); "
            "export the left atrium alone as a binary label map"
        )
    foreground = array != 0
    if not foreground.any():
        raise ValueError(f"{name}: the mask is empty (no non-zero voxel); expected a left-atrium blood pool")
    return foreground


def _largest_component(mask: np.ndarray, name: str) -> np.ndarray:
    labels, n = ndimage.label(mask, structure=np.ones((3, 3, 3), bool))
    if n <= 1:
        return mask
    sizes = np.bincount(labels.ravel())[1:]
    keep = int(np.argmax(sizes)) + 1
    warnings.warn(
        f"{name}: the mask has {n} connected components (voxels: {sorted(sizes.tolist(), reverse=True)[:5]}); "
        f"keeping the largest ({int(sizes[keep - 1])} voxels)",
        UserWarning,
        stacklevel=3,
    )
    return labels == keep


def prepare_anatomy(image: Image, grid: Grid | None = None, name: str | None = None) -> np.ndarray:
    """Resample a binary left-atrium mask of any spacing and orientation onto ``grid``, centred.

    The mask keeps its physical orientation (its RAS directions stay RAS directions); it is translated so
    that the centre of its bounding box (in the grid's axes) lands on the grid's centre, and resampled with
    nearest-neighbour interpolation (SimpleITK).

    Args:
        image: a :class:`losslab.io.Image` (array ``(k, j, i)`` and its LPS geometry).
        grid: the target grid (default: 128^3 x 1.1024 mm).
        name: how to name the mask in messages (default: its path).

    Raises:
        ValueError: the mask is empty, not binary (more than one non-zero value), or larger than the grid
            (the message gives its size in mm and a grid that holds it). Several connected components give
            a ``UserWarning`` and only the largest is kept.
    """
    grid = grid or Grid.cube()
    name = name or (str(image.path) if image.path else "anatomy mask")
    array = np.asarray(image.array)
    if array.ndim != 3:
        raise ValueError(f"{name}: expected a 3D mask, got shape {array.shape}")
    mask = _largest_component(_as_foreground(array, name), name)
    geometry = image.geometry
    # Physical bounding box of the foreground along the target grid's axes: the surface voxels' centres in
    # LPS, projected on the target axes, grown by half a source voxel's projected size.
    idx = np.argwhere(boundary(mask))[:, ::-1].astype(np.float64)  # (i, j, k)
    ijk_to_lps = geometry.ijk_to_lps()
    lps = idx @ ijk_to_lps[:3, :3].T + ijk_to_lps[:3, 3]
    target_dir = np.asarray(grid.geometry.direction).reshape(3, 3)
    along = lps @ target_dir  # coordinates along the target's (i, j, k) axes
    half_voxel = 0.5 * np.abs(target_dir.T @ ijk_to_lps[:3, :3]).sum(axis=1)
    lo_along, hi_along = along.min(axis=0) - half_voxel, along.max(axis=0) + half_voxel
    extent = hi_along - lo_along
    room = np.asarray(grid.geometry.spacing) * (np.asarray(grid.shape[::-1]) - 2)
    if np.any(extent > room):
        need = float(extent.max())
        n = int(max(grid.shape))
        raise ValueError(
            f"{name}: the anatomy is {extent[0]:.1f} x {extent[1]:.1f} x {extent[2]:.1f} mm across, larger than "
            f"the grid ({' x '.join(str(s) for s in grid.shape[::-1])} voxels of "
            f"{' x '.join(f'{s:g}' for s in grid.geometry.spacing)} mm holds {room.min():.1f} mm with a one-voxel "
            f"margin); use --spacing {need / (n - 2) + 5e-5:.4f} or more with --size {n}, or "
            f"--size {int(np.ceil(need / min(grid.spacing))) + 2} or more with this spacing"
        )
    centre_lps = target_dir @ ((hi_along + lo_along) / 2.0)
    source = sitk.GetImageFromArray(mask.astype(np.uint8))
    source.SetSpacing(geometry.spacing)
    source.SetOrigin(geometry.origin)
    source.SetDirection(geometry.direction)
    reference = sitk.Image([int(n) for n in grid.shape[::-1]], sitk.sitkUInt8)
    reference.SetSpacing(grid.geometry.spacing)
    reference.SetDirection(grid.geometry.direction)
    # The grid's centre (world origin for Grid.cube) moved onto the anatomy's centre.
    grid_centre = (grid.geometry.ijk_to_lps() @ np.array([*((np.asarray(grid.shape[::-1]) - 1) / 2.0), 1.0]))[
        :3
    ]
    reference.SetOrigin(tuple(np.asarray(grid.geometry.origin) + centre_lps - grid_centre))
    resampled = sitk.Resample(
        source, reference, sitk.Transform(), sitk.sitkNearestNeighbor, 0, sitk.sitkUInt8
    )
    out = sitk.GetArrayFromImage(resampled).astype(bool)
    if not out.any():
        raise ValueError(
            f"{name}: no voxel of the mask survives resampling onto {grid.spacing[0]:g} mm voxels "
            "(the anatomy is smaller than a voxel); use a finer --spacing"
        )
    return out


# ----------------------------------------------------------------------------------- the wide atrium prior
#: frequencies of the left atrial appendage morphologies drawn by :func:`sample_atrium` (Di Biase et al.
#: 2012 report chicken wing 48 %, cactus 30 %, windsock 19 %, cauliflower 3 %; the rare cauliflower is drawn
#: more often here so that a model sees it)
LAA_TYPES = {"chicken wing": 0.42, "cactus": 0.27, "windsock": 0.19, "cauliflower": 0.12}
#: probability of a common left pulmonary trunk and of a separate right middle vein (each about a fifth)
P_LEFT_COMMON_TRUNK = 0.2
P_RIGHT_MIDDLE_VEIN = 0.2
#: the body's volume range (ml): normal atria to the dilated atria of atrial fibrillation
BODY_VOLUME_ML = (40.0, 160.0)
#: free orientation of the whole atrium about each anatomical axis (degrees)
MAX_ROTATION_DEG = 20.0


def _superellipsoid_volume(semi: np.ndarray, p: float) -> float:
    from math import gamma

    return float(8.0 * np.prod(semi) * gamma(1.0 + 1.0 / p) ** 3 / gamma(1.0 + 3.0 / p))


def sample_atrium(seed: int) -> dict:
    """The parameters of one left atrium of the wide prior (sizes in mm, directions in the atrium's own
    anatomical frame ``(R, A, S)`` before its rotation), drawn from ``seed``; :func:`make_atrium` renders them.

    The ranges and their sources are in ``docs/ice.md`` ("The anatomy prior"). Returns a JSON-ready dict:
    ``volume_ml``, ``semi_axes_mm``, ``exponent``, ``shear``, ``noise`` (shape modes), ``rotation_deg``,
    ``mitral`` and ``septal`` cuts, ``veins`` (list of vein dicts, each ``name``, ``direction``, ``ostium_mm``
    (radius), ``funnel``, ``length_mm``, ``bend``, and for a common trunk its ``branches``),
    ``left_pattern`` (``"separate"`` or ``"common trunk"``), ``right_middle`` (bool) and ``laa`` (its
    ``type``, ``direction``, ``orifice_mm`` (radius), ``length_mm`` and shape draws).
    """
    rng = np.random.default_rng([int(seed), 2026])
    u = rng.uniform
    lo, hi = BODY_VOLUME_ML
    volume = float(np.exp(u(np.log(lo), np.log(hi))))
    ratios = np.array([1.0, u(0.5, 0.75), u(0.75, 1.05)])  # R : A : S
    exponent = float(u(2.0, 3.2))
    semi = ratios * (volume * 1000.0 / _superellipsoid_volume(ratios, exponent)) ** (1.0 / 3.0)
    noise = [
        {
            "k": (_unit(rng.normal(size=3)) * u(1.0, 2.4)).tolist(),
            "phase": u(0, 2 * np.pi),
            "amp": u(0.02, 0.07),
        }
        for _ in range(int(rng.integers(4, 9)))
    ]
    params: dict = {
        "seed": int(seed),
        "volume_ml": volume,
        "semi_axes_mm": semi.tolist(),
        "exponent": exponent,
        "shear": [u(-0.2, 0.2), u(-0.2, 0.2)],  # R and A shifted along S (a tilted, pear-like body)
        "noise": noise,
        "rotation_deg": [u(-MAX_ROTATION_DEG, MAX_ROTATION_DEG) for _ in range(3)],
        "mitral": {"direction": _jitter((-0.4, 0.6, -0.7), rng, 15.0), "depth": u(0.7, 0.88)},
        "septal": {"direction": _jitter((1.0, 0.4, 0.0), rng, 10.0), "depth": u(0.82, 0.97)},
    }
    veins = []
    left_common = bool(rng.random() < P_LEFT_COMMON_TRUNK)
    right_middle = bool(rng.random() < P_RIGHT_MIDDLE_VEIN)
    for side, name in ((-1, "left"), (1, "right")):
        if side == -1 and left_common:
            trunk = {
                "name": "left common trunk",
                "direction": _unit(np.array([-u(0.7, 0.9), -u(0.3, 0.55), u(-0.1, 0.15)])).tolist(),
                "ostium_mm": u(11.0, 15.0),
                "funnel": u(1.1, 1.5),
                "length_mm": u(8.0, 18.0),
                "bend": 0.0,
                "branches": [
                    {
                        "vertical": v,
                        "radius_mm": u(5.0, 7.0),
                        "length_mm": u(6.0, 22.0),
                        "spread": u(0.5, 0.9),
                    }
                    for v in (1, -1)
                ],
            }
            veins.append(trunk)
            continue
        for vertical, level in ((1, "superior"), (-1, "inferior")):
            veins.append(
                {
                    "name": f"{name} {level}",
                    "direction": _unit(
                        np.array([side * u(0.65, 0.9), -u(0.25, 0.5), vertical * u(0.2, 0.5)])
                    ).tolist(),
                    "ostium_mm": u(7.5, 11.0) if vertical == 1 else u(6.5, 9.0),
                    "funnel": u(1.0, 1.6),
                    "length_mm": u(5.0, 35.0),
                    "bend": u(0.1, 0.45),
                }
            )
        if side == 1 and right_middle:
            veins.append(
                {
                    "name": "right middle",
                    "direction": _unit(np.array([u(0.75, 0.95), -u(0.2, 0.5), u(-0.15, 0.1)])).tolist(),
                    "ostium_mm": u(3.0, 5.5),
                    "funnel": u(1.0, 1.3),
                    "length_mm": u(5.0, 25.0),
                    "bend": u(0.1, 0.4),
                }
            )
    params["veins"] = veins
    params["left_pattern"] = "common trunk" if left_common else "separate"
    params["right_middle"] = right_middle
    types = list(LAA_TYPES)
    laa_type = types[int(rng.choice(len(types), p=np.array(list(LAA_TYPES.values()))))]
    params["laa"] = {
        "type": laa_type,
        "direction": _unit(np.array([-u(0.5, 0.85), u(0.3, 0.75), u(0.15, 0.6)])).tolist(),
        "orifice_mm": u(7.0, 12.0),
        "length_mm": u(15.0, 25.0) if laa_type == "cauliflower" else u(25.0, 45.0),
        "curl_sign": float(rng.choice([-1.0, 1.0])),
        "lobes": [(_unit(rng.normal(size=3))).tolist() for _ in range(5)],
        "lobe_sizes": [u(0.3, 0.6) for _ in range(5)],
    }
    return params


def _jitter(direction: Sequence[float], rng: np.random.Generator, degrees: float) -> list[float]:
    """A unit vector within about ``degrees`` of ``direction``."""
    d = _unit(np.asarray(direction, float))
    axis = np.cross(d, rng.normal(size=3))
    return (rotation_matrix(_unit(axis), np.radians(rng.uniform(-degrees, degrees))) @ d).tolist()


def _atrium_frame(grid: Grid, rotation_deg: Sequence[float]) -> np.ndarray:
    """Columns: the atrium's R, A, S axes in grid mm, after its rotation about the anatomical axes."""
    R, A, S = (grid.ras_direction(v) for v in (_R, _A, _S))
    rot = np.eye(3)
    for axis, angle in zip((R, A, S), rotation_deg):
        rot = rotation_matrix(axis, np.radians(angle)) @ rot
    return rot @ np.stack([R, A, S], axis=1)


def _body(grid: Grid, params: dict, axes: np.ndarray, centre: np.ndarray) -> tuple[np.ndarray, callable]:
    """The atrial body (a superellipsoid with shear and shape noise, cut by the mitral and septal planes), and
    a function giving its wall distance (mm) from ``centre`` along a unit direction (grid mm)."""
    semi = np.asarray(params["semi_axes_mm"])
    p = float(params["exponent"])
    reach = float(semi.max()) * 1.5
    box, (z, y, x) = _box(grid, centre - reach, centre + reach)
    rel = [z - np.float32(centre[0]), y - np.float32(centre[1]), x - np.float32(centre[2])]
    local = [sum(np.float32(axes[d, c]) * rel[d] for d in range(3)) / np.float32(semi[c]) for c in range(3)]
    shear_r, shear_a = params["shear"]
    local[0] = local[0] - np.float32(shear_r) * local[2]
    local[1] = local[1] - np.float32(shear_a) * local[2]
    rho = (np.abs(local[0]) ** p + np.abs(local[1]) ** p + np.abs(local[2]) ** p) ** (1.0 / p)
    rho += np.float32(1e-6)
    shape_noise = np.zeros_like(rho)
    for mode in params["noise"]:
        k = mode["k"]
        dot = np.float32(k[0]) * local[0] + np.float32(k[1]) * local[1] + np.float32(k[2]) * local[2]
        shape_noise += np.float32(mode["amp"]) * np.cos(
            np.float32(np.pi) * dot / rho + np.float32(mode["phase"])
        )
    inside = rho <= 1.0 + shape_noise

    def wall_distance(direction: np.ndarray) -> float:
        v = axes.T @ direction / semi
        return float(1.0 / (np.sum(np.abs(v) ** p) ** (1.0 / p)))

    for cut in ("mitral", "septal"):
        n = axes @ np.asarray(params[cut]["direction"])
        depth = float(params[cut]["depth"]) * wall_distance(n)
        inside &= rel[0] * np.float32(n[0]) + rel[1] * np.float32(n[1]) + rel[2] * np.float32(n[2]) <= depth
    mask = np.zeros(grid.shape, dtype=bool)
    mask[box] = inside
    return mask, wall_distance


def _add_vein(mask, grid, vein: dict, axes, centre, wall_distance) -> None:
    """A pulmonary vein (or a common trunk with its two branches): a funnel from the ostium to the trunk's
    radius over the first 5-10 mm, then a bent tube."""
    d = axes @ np.asarray(vein["direction"])
    wall = wall_distance(d)
    start, ostium = centre + 0.5 * wall * d, centre + wall * d
    r_o = float(vein["ostium_mm"])
    r_t = r_o / float(vein["funnel"])
    length = float(vein["length_mm"])
    funnel_end = ostium + min(8.0, 0.5 * length) * d
    side = np.sign(np.asarray(vein["direction"])[0]) or 1.0
    bend = _unit(d + side * float(vein["bend"]) * axes[:, 0])
    end = funnel_end + max(length - 8.0, 0.5 * length) * bend
    _add_tube(mask, grid, [start, ostium, funnel_end, end], [r_o, r_o, r_t, r_t * 0.9])
    for branch in vein.get("branches", []):
        b = _unit(d + branch["vertical"] * float(branch["spread"]) * axes[:, 2])
        tip = end + float(branch["length_mm"]) * b
        _add_tube(mask, grid, [end, tip], [float(branch["radius_mm"])] * 2)


def _add_appendage(mask, grid, laa: dict, axes, centre, wall_distance) -> None:
    """The left atrial appendage in one of four morphologies (chicken wing: a sharp bend back on itself;
    windsock: one long tapering lobe; cactus: a central lobe with a superior and an inferior side lobe;
    cauliflower: short and wide with several lobules)."""
    A, S = axes[:, 1], axes[:, 2]
    d = axes @ np.asarray(laa["direction"])
    wall = centre + wall_distance(d) * d
    r0, length = float(laa["orifice_mm"]), float(laa["length_mm"])
    base = centre + 0.6 * wall_distance(d) * d
    curl = _unit(np.cross(d, S) * float(laa["curl_sign"]) + 0.3 * A)
    kind = laa["type"]
    if kind == "chicken wing":
        p1 = wall + 0.45 * length * d
        p2 = p1 + 0.3 * length * _unit(0.3 * d + curl)
        p3 = p2 + 0.35 * length * _unit(-0.6 * d + 0.6 * curl)  # folded back
        _add_tube(mask, grid, [base, wall, p1, p2, p3], [r0, r0, 0.75 * r0, 0.6 * r0, 0.4 * r0])
    elif kind == "windsock":
        p1 = wall + 0.5 * length * d
        p2 = p1 + 0.5 * length * _unit(d + 0.3 * curl)
        _add_tube(mask, grid, [base, wall, p1, p2], [r0, r0, 0.8 * r0, 0.45 * r0])
    elif kind == "cactus":
        p1 = wall + 0.4 * length * d
        p2 = p1 + 0.45 * length * _unit(d + 0.2 * curl)
        _add_tube(mask, grid, [base, wall, p1, p2], [r0, r0, 0.75 * r0, 0.5 * r0])
        for vertical, size in zip((1.0, -1.0), laa["lobe_sizes"]):
            tip = p1 + (0.25 + 0.3 * size) * length * _unit(0.4 * d + vertical * S)
            _add_tube(mask, grid, [p1, tip], [0.5 * r0, 0.35 * r0])
    else:  # cauliflower
        p1 = wall + 0.6 * length * d
        _add_tube(mask, grid, [base, wall, p1], [1.1 * r0, 1.1 * r0, 0.9 * r0])
        for direction, size in zip(laa["lobes"][:4], laa["lobe_sizes"][:4]):
            centre_lobe = p1 + 0.6 * r0 * _unit(np.asarray(direction) + d)
            _add_tube(mask, grid, [p1, centre_lobe], [0.6 * r0, (0.4 + 0.4 * size) * r0])


def make_atrium(grid: Grid | None = None, seed: int = 0) -> np.ndarray:
    """A left-atrium blood pool from the wide anatomy prior on ``grid`` (default 128^3 x 1.1024 mm), seeded.

    The parameters are :func:`sample_atrium`'s (independent of the grid: one seed gives the same atrium at
    every resolution): a body of 40-160 ml (log-uniform), a superellipsoid with shear and low-frequency shape
    noise, cut by the mitral plane (antero-inferior-left) and flattened on the septal side (right-anterior,
    where the catheter looks from); pulmonary veins leaving the posterior wall, each with a funnel-shaped
    ostium (four separate veins; a common left trunk in about a fifth; a right middle vein in about a
    fifth; 5-35 mm long); an appendage (chicken wing, windsock, cactus or cauliflower) on the left, anterior
    and superior; the whole atrium rotated by up to 20 degrees about each anatomical axis. Vein and
    appendage ends beyond the grid (less a two-voxel margin) are cut off, as a scan's field of view cuts them.

    Raises:
        ValueError: the atrial body does not fit the grid (the message suggests a grid that holds it).
    """
    grid = grid or Grid.cube()
    params = sample_atrium(seed)
    axes = _atrium_frame(grid, params["rotation_deg"])
    centre = grid.centre_mm
    mask, wall_distance = _body(grid, params, axes, centre)
    room = np.asarray(grid.spacing) * (np.asarray(grid.shape) - 4)
    idx = np.argwhere(mask)
    if not len(idx) or np.any((idx.max(0) - idx.min(0) + 1) * np.asarray(grid.spacing) > room):
        need = 2.0 * float(np.max(params["semi_axes_mm"])) * 1.3
        raise ValueError(
            f"the atrium of seed {seed} (body {params['volume_ml']:.0f} ml, up to {need:.0f} mm across) does not "
            f"fit the grid of {' x '.join(str(s) for s in grid.shape)} voxels of {grid.spacing[0]:g} mm "
            f"({float(room.min()):.0f} mm inside a two-voxel margin); use a grid at least {need + 10:.0f} mm across"
        )
    for vein in params["veins"]:
        _add_vein(mask, grid, vein, axes, centre, wall_distance)
    _add_appendage(mask, grid, params["laa"], axes, centre, wall_distance)
    margin = 2
    inner = np.zeros_like(mask)
    inner[margin:-margin, margin:-margin, margin:-margin] = True
    mask &= inner
    labels, n = ndimage.label(mask, structure=np.ones((3, 3, 3), bool))
    if n > 1:  # a vein cut off by the margin can leave a detached piece: keep the atrium
        mask = labels == (int(np.argmax(np.bincount(labels.ravel())[1:])) + 1)
    return _recentre(mask)
