"""The sparse-ICE simulator: a left-atrium mask -> a catheter sweep of 2D frames -> the sparse volume x, its
data mask, y and the CAS contours (ice-editing-shahin2023, Sec. 1, 3.1, Fig. 1).

How a case is made (:func:`simulate_case`):

1. **Anatomy** ``y``: a boolean mask on the grid (:func:`~losslab.ice.anatomy.make_phantom` or
   :func:`~losslab.ice.anatomy.prepare_anatomy`); ``y`` is the anatomy's mean shape over the cardiac cycle.
   Its signed distance (mm, negative inside, zero half-way between inside and outside voxel centres) is
   computed once in a box around it.
2. **Catheter**: from the LA's centroid, a ray along the septal direction (default RAS ``(1, 0.4, 0)``:
   right and a little anterior, towards the right atrium) leaves the LA at the wall point; the transducer
   sits ``septal_gap_mm`` (drawn in 15-25 mm) beyond it, in the right atrium. The catheter axis is the
   superior direction made orthogonal to the ray (tangent to the septum), tilted by up to 10 degrees.
3. **Sweep**: the imaging plane contains the catheter axis; the sector's centre line starts towards the
   LA and is rotated about the axis. ``frames`` frames are spread evenly over the arc (default: the angles
   under which the whole LA is seen from the transducer, so the sweep covers it).
4. **Realism**: each frame has a cardiac phase (uniform in [0, 1): an ungated sweep) and an acquisition
   error. The *acquired* pose is the *nominal* one rotated about the transducer by an angle drawn from
   ``N(0, misalignment_deg^2)`` about a random axis and translated by a vector with components drawn from
   ``N(0, misalignment_mm^2 / 3)`` (RMS length ``misalignment_mm``). The anatomy at phase ``p`` is ``y``
   scaled radially about its centroid by ``1 + motion_mm / r * w(p)`` (``r`` the LA's mean radius,
   ``w(p) = -cos(2 pi p) / 2``: the wall moves ``motion_mm / 2`` in and out of ``y``, ``motion_mm`` from
   its smallest (phase 0) to its largest (phase 0.5)) plus a smooth displacement of amplitude
   ``motion_mm / 4 * w(p)``. ``y`` is thus the cycle's mean shape (phases 0.25 and 0.75), as the paper's
   ``y`` is a mesh fitted to all the CAS contours: over an ungated sweep the contours lie as much outside
   ``y`` as inside. A frame's image and its CAS contour are computed at the acquired pose and phase; both
   are *placed* at the nominal pose (the pose the tracking system reports).
5. **Appearance**: each frame pixel samples the signed distance and a tissue texture at its point of the
   reference anatomy (trilinear, :func:`scipy.ndimage.map_coordinates`): dark blood in the LA, in the right
   atrium around the catheter and in other pools, a bright wall shell 0-3 mm outside the LA, textured
   tissue elsewhere (texture: smooth 3D noise, sampled on every 4th pixel and interpolated); times a
   multiplicative speckle (fully developed: a Rayleigh amplitude of mean 1 drawn per pixel and per frame,
   pixels being about the speckle grain); depth attenuation ``exp(-a r)`` with gain compensation
   ``exp(g a r)`` (net ``exp(-(1 - g) a r)``); optional dropout (a shadowed wedge); log compression to [0, 1] (float32). Outside the
   fan the frame is 0.
6. **Sparse volume**: every fan pixel is placed at its nominal pose and assigned to its **nearest voxel**;
   ``x`` is the mean of the pixels that fall in a voxel, the data mask the voxels hit by at least one pixel.
7. **CAS contours**: the zero level of the signed distance on the frame (marching squares, contourpy),
   restricted to the fan, so a contour is open where the wall leaves the sector; as polylines in frame
   pixel coordinates ``(u, v)`` and as voxels: each polyline, resampled at a quarter voxel, placed at the
   nominal pose and rounded to the nearest voxel; the ``cas`` volume holds frame index + 1 (where frames
   cross, the later frame's label is kept; each frame's own voxels are in ``Frame.cas_voxels``).

With ``misalignment_deg = misalignment_mm = motion_mm = 0`` the CAS voxels are within one voxel of y's
boundary; with the defaults their mean distance to it is a millimetre or two (``docs/ice.md``).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field, replace

import numpy as np
from contourpy import LineType, contour_generator
from scipy import ndimage

from .geometry import Grid, Sector, frame_matrix, rotation_matrix

# RAS directions used to place the catheter.
DEFAULT_SEPTAL_DIRECTION = (1.0, 0.4, 0.0)
DEFAULT_CATHETER_AXIS = (0.0, 0.0, 1.0)


@dataclass(frozen=True)
class SimulationConfig:
    """Settings of one simulated sweep (all lengths in mm, angles in degrees).

    Attributes:
        frames: number of frames in the sweep (the paper's scans average 28).
        arc_deg: rotation range of the sweep; ``None`` covers the LA as seen from the transducer.
        depth_mm, opening_deg: the fan (defaults 120 mm, 90 degrees).
        pixel_mm: frame pixel size; ``None`` is 0.7 of the smallest voxel size (frames finer than the grid:
            each voxel a frame crosses collects about two pixels).
        septal_gap_mm: range of the transducer's distance from the LA wall, drawn per case.
        septal_direction: RAS direction from the LA towards the transducer (the right atrium).
        catheter_axis: RAS direction of the catheter before it is made tangent to the septum.
        misalignment_deg, misalignment_mm: per-frame pose error (SD of the rotation angle; RMS translation).
        motion_mm: the LA wall's excursion over the cardiac cycle (smallest to largest); ``y`` is the
            mean shape, half-way.
        speckle: strength of the multiplicative speckle (0: none, 1: fully developed).
        attenuation: depth attenuation in 1/mm; ``gain_compensation`` the fraction of it undone (TGC).
        dropout: probability, per frame, of a shadowed wedge.
    """

    frames: int = 28
    arc_deg: float | None = None
    depth_mm: float = 120.0
    opening_deg: float = 90.0
    pixel_mm: float | None = None
    septal_gap_mm: tuple[float, float] = (15.0, 25.0)
    septal_direction: tuple[float, float, float] = DEFAULT_SEPTAL_DIRECTION
    catheter_axis: tuple[float, float, float] = DEFAULT_CATHETER_AXIS
    misalignment_deg: float = 2.0
    misalignment_mm: float = 1.0
    motion_mm: float = 2.0
    speckle: float = 1.0
    attenuation: float = 0.012
    gain_compensation: float = 0.75
    dropout: float = 0.0

    def __post_init__(self) -> None:
        if int(self.frames) < 1:
            raise ValueError(f"frames must be at least 1, got {self.frames}")
        if self.arc_deg is not None and not 0 <= float(self.arc_deg) <= 360:
            raise ValueError(f"arc_deg must be in [0, 360] degrees (or None), got {self.arc_deg}")
        for name in ("misalignment_deg", "misalignment_mm", "motion_mm", "speckle", "attenuation"):
            value = float(getattr(self, name))
            if not np.isfinite(value) or value < 0:
                raise ValueError(f"{name} must be a finite number >= 0, got {value}")
        for name in ("gain_compensation", "dropout"):
            value = float(getattr(self, name))
            if not 0 <= value <= 1:
                raise ValueError(f"{name} must be in [0, 1], got {value}")
        lo, hi = (float(v) for v in self.septal_gap_mm)
        if not 0 < lo <= hi:
            raise ValueError(
                f"septal_gap_mm must be (low, high) with 0 < low <= high, got {self.septal_gap_mm}"
            )

    def sector(self, grid: Grid) -> Sector:
        pixel = self.pixel_mm if self.pixel_mm is not None else 0.7 * min(grid.spacing)
        return Sector(
            depth_mm=float(self.depth_mm), opening_deg=float(self.opening_deg), pixel_mm=float(pixel)
        )

    def without_realism(self) -> SimulationConfig:
        """The same settings with pose error and cardiac motion off (CAS contours on y's boundary)."""
        return replace(self, misalignment_deg=0.0, misalignment_mm=0.0, motion_mm=0.0)


@dataclass
class Frame:
    """One ICE frame.

    Attributes:
        index: position in the sweep (0-based; its CAS label is ``index + 1``).
        image: ``(rows, cols)`` float32 in [0, 1], ``image[v, u]``; 0 outside the fan.
        pose: 4x4, frame pixel ``(u, v, 0, 1)`` -> RAS mm, the nominal pose (where the frame is placed).
        acquired_pose: 4x4, the pose the frame was actually imaged from (pose error included).
        phase: cardiac phase in [0, 1) (0: the LA at its smallest, 0.5: largest; y is the mean shape).
        contours: CAS polylines, each ``(n, 2)`` float ``(u, v)`` pixel coordinates, oriented so that the
            tangent turned by -90 degrees, ``(t_v, -t_u)``, points out of the LA.
        voxels: flat indices (C order, ``(k, j, i)`` grid) of the voxels the frame's pixels fall in.
        cas_voxels: flat indices of the frame's CAS contour voxels.
    """

    index: int
    image: np.ndarray
    pose: np.ndarray
    acquired_pose: np.ndarray
    phase: float
    contours: list[np.ndarray]
    voxels: np.ndarray
    cas_voxels: np.ndarray

    def pixel_to_index_matrix(self, grid: Grid) -> np.ndarray:
        """4x4: frame pixel ``(u, v, w, 1)`` -> continuous ``(k, j, i, 1)`` at the nominal pose."""
        return grid.ras_to_index() @ self.pose


@dataclass
class ICECase:
    """A simulated case: arrays ``(k, j, i)`` on ``grid`` (spacing in the same order) and its frames.

    Attributes:
        image: x, float32 in [0, 1], 0 where no frame hit.
        datamask: boolean, the voxels that hold data.
        label: y, uint8 0/1 (the anatomy's mean shape over the cardiac cycle).
        cas: CAS contour voxels labelled frame index + 1 (uint16; 0 elsewhere).
        frames: the :class:`Frame` list, in sweep order.
        transducer: RAS mm of the transducer; ``catheter_axis`` its unit RAS direction.
        settings: the configuration, seed and derived values (JSON-ready).
    """

    grid: Grid
    sector: Sector
    image: np.ndarray
    datamask: np.ndarray
    label: np.ndarray
    cas: np.ndarray
    frames: list[Frame]
    transducer: np.ndarray
    catheter_axis: np.ndarray
    settings: dict = field(default_factory=dict)
    cache: dict = field(default_factory=dict, repr=False, compare=False)

    @property
    def spacing(self) -> tuple[float, float, float]:
        """Voxel size in mm, array order ``(k, j, i)``."""
        return self.grid.spacing

    def cas_mask(self, frame: int | None = None) -> np.ndarray:
        """Boolean mask of the CAS contour voxels of one frame (or of all frames)."""
        out = np.zeros(self.grid.shape, dtype=bool)
        frames = self.frames if frame is None else [self.frames[frame]]
        for f in frames:
            out.ravel()[f.cas_voxels] = True
        return out


def signed_distance(
    mask: np.ndarray, spacing: Sequence[float], margin_mm: float
) -> tuple[np.ndarray, np.ndarray]:
    """Signed distance (mm, float32; negative inside) in the mask's bounding box grown by ``margin_mm``.

    The zero level lies half a voxel from the boundary voxel centres (between inside and outside centres);
    values are clipped to ``[-margin_mm, margin_mm]``. Returns ``(distance, box_origin_index)``.
    """
    sp = np.asarray(spacing, float)
    found = [np.nonzero(mask.any(axis=tuple(a for a in range(3) if a != axis)))[0] for axis in range(3)]
    pad = np.ceil(margin_mm / sp).astype(int) + 2
    lo = np.array([max(0, f[0] - p) for f, p in zip(found, pad)])
    hi = np.array([min(n, f[-1] + 1 + p) for f, n, p in zip(found, mask.shape, pad)])
    crop = mask[tuple(slice(a, b) for a, b in zip(lo, hi))]
    # Pad with background so that the edge of the box counts as outside the anatomy.
    crop = np.pad(crop, 1)
    outside = ndimage.distance_transform_edt(~crop, sampling=sp)
    inside = ndimage.distance_transform_edt(crop, sampling=sp)
    half = 0.5 * float(sp.min())
    sd = np.where(crop, -(inside - half), outside - half)[1:-1, 1:-1, 1:-1]
    return np.clip(sd, -margin_mm, margin_mm).astype(np.float32), lo


def _smooth_noise(rng: np.random.Generator, lo_mm: np.ndarray, hi_mm: np.ndarray, step: float) -> np.ndarray:
    n = np.ceil((hi_mm - lo_mm) / step).astype(int) + 2
    noise = ndimage.gaussian_filter(rng.standard_normal(tuple(n)).astype(np.float32), 1.0)
    return noise / max(float(noise.std()), 1e-6)


def _orient(line: np.ndarray, sd_frame: np.ndarray) -> np.ndarray:
    """Orient a polyline so that ``(t_v, -t_u)`` points out of the LA (towards positive signed distance)."""
    if len(line) < 2:
        return line
    t = np.gradient(line, axis=0)
    normal = np.stack([t[:, 1], -t[:, 0]], axis=1)
    normal /= np.maximum(np.linalg.norm(normal, axis=1, keepdims=True), 1e-9)
    probe = line + normal
    uv = np.clip(np.rint(probe).astype(int), 0, np.array(sd_frame.shape[::-1]) - 1)
    values = sd_frame[uv[:, 1], uv[:, 0]]
    values = values[np.isfinite(values)]
    return line[::-1].copy() if values.size and np.median(values) < 0 else line


def densify(line: np.ndarray, step: float) -> np.ndarray:
    """The polyline's vertices plus points on each segment, at most ``step`` apart (vertices kept exactly)."""
    line = np.asarray(line, np.float64)
    if len(line) < 2:
        return line
    seg = np.linalg.norm(np.diff(line, axis=0), axis=1)
    parts = np.maximum(1, np.ceil(seg / step).astype(int))
    starts = np.repeat(line[:-1], parts, axis=0)
    deltas = np.repeat(np.diff(line, axis=0), parts, axis=0)
    fractions = np.concatenate([np.arange(p) / p for p in parts])
    return np.concatenate([starts + fractions[:, None] * deltas, line[-1:]])


def polylines_to_voxels(
    lines: Sequence[np.ndarray], pixel_to_index: np.ndarray, shape: Sequence[int], step_px: float
) -> np.ndarray:
    """Flat voxel indices (unique, C order) of polylines in frame pixels, placed by a pixel -> index matrix.

    Each polyline is resampled every ``step_px`` pixels; each point goes to its nearest voxel; points outside
    the grid are dropped."""
    pts = [densify(line, step_px) for line in lines if len(line)]
    if not pts:
        return np.zeros(0, dtype=np.int64)
    uv = np.concatenate(pts)
    idx = uv @ pixel_to_index[:3, :2].T + pixel_to_index[:3, 3]
    return _flat_in_grid(np.rint(idx).astype(np.int64), shape)


def _flat_in_grid(idx: np.ndarray, shape: Sequence[int]) -> np.ndarray:
    inside = np.all((idx >= 0) & (idx < np.asarray(shape)), axis=1)
    return np.unique(np.ravel_multi_index(tuple(idx[inside].T), tuple(shape)))


def _sigmoid(x: np.ndarray) -> np.ndarray:
    out = np.tanh(x * x.dtype.type(0.5))
    out += 1
    out *= 0.5
    return out


def _sample(volume: np.ndarray, coords: np.ndarray, mode: str, cval: float = 0.0) -> np.ndarray:
    """Trilinear samples of ``volume`` at continuous index coordinates ``coords`` ``(N, 3)``."""
    return ndimage.map_coordinates(volume, coords.T, order=1, mode=mode, cval=cval, prefilter=False)


@dataclass
class _Anatomy:
    """The anatomy as the steps of :func:`simulate_case` use it: y, its signed distance in a box, centroid."""

    mask: np.ndarray
    sd: np.ndarray  # signed distance (mm) in a box around y, clipped to +-margin
    box_lo: np.ndarray  # the box's first voxel index
    margin: float
    centroid: np.ndarray  # grid mm
    mean_radius: float  # mm, of the sphere with y's volume

    def surface_mm(self, sp: np.ndarray) -> np.ndarray:
        """Grid-mm points of y's voxels that lie within a voxel of its surface."""
        inside = self.sd < 0
        points = (np.argwhere(inside) + self.box_lo) * sp
        return points[self.sd[inside] > -float(sp.max())]


@dataclass
class _Catheter:
    transducer: np.ndarray  # grid mm
    axis: np.ndarray  # unit catheter axis (grid mm)
    toward: np.ndarray  # unit direction from the transducer towards the LA, orthogonal to the axis
    side: np.ndarray  # axis x toward
    gap: float  # transducer to LA wall, mm


def _describe_anatomy(mask: np.ndarray, sp: np.ndarray, margin: float = 12.0) -> _Anatomy:
    """Step 1: y's signed distance in a box, its centroid and mean radius."""
    sd, box_lo = signed_distance(mask, sp, margin)
    centroid = ndimage.center_of_mass(mask) * sp
    volume = float(mask.sum() * np.prod(sp))
    mean_radius = (3.0 * volume / (4.0 * np.pi)) ** (1.0 / 3.0)
    return _Anatomy(mask, sd, box_lo, margin, centroid, mean_radius)


def _place_catheter(grid: Grid, config: SimulationConfig, la: _Anatomy, rng) -> _Catheter:
    """Step 2: the transducer across the septum (beyond the LA wall on the septal ray), axis tangent to it."""
    sp = np.asarray(grid.spacing, float)
    d = grid.ras_direction(config.septal_direction)
    steps = np.arange(0.0, float(np.linalg.norm(grid.extent_mm)), 0.25 * sp.min())
    ray = la.centroid[None, :] + steps[:, None] * d[None, :]
    ray_idx = np.rint(ray / sp).astype(int)
    valid = np.all((ray_idx >= 0) & (ray_idx < np.asarray(grid.shape)), axis=1)
    hit = np.zeros(len(ray), dtype=bool)
    hit[valid] = la.mask[tuple(ray_idx[valid].T)]
    if hit.any():  # the last LA voxel on the ray from the centroid
        wall_dist = float(steps[np.nonzero(hit)[0].max()])
    else:  # the ray misses (a centroid outside a curved LA): the LA's extent along the septal direction
        surface = (np.argwhere(la.sd < 0) + la.box_lo) * sp
        wall_dist = float(((surface - la.centroid) @ d).max())
    gap = float(rng.uniform(*config.septal_gap_mm))
    transducer = la.centroid + (wall_dist + gap) * d
    up = grid.ras_direction(config.catheter_axis)
    axis = up - (up @ d) * d
    if np.linalg.norm(axis) < 1e-6:
        axis = np.cross(d, np.eye(3)[int(np.argmin(np.abs(d)))])
    axis /= np.linalg.norm(axis)
    tilt = np.radians(rng.uniform(-10, 10))
    axis = rotation_matrix(np.cross(d, axis), tilt) @ axis
    toward = -d - (-d @ axis) * axis
    toward /= np.linalg.norm(toward)
    return _Catheter(transducer, axis, toward, np.cross(axis, toward), gap)


def _sweep_angles(config: SimulationConfig, la: _Anatomy, sp: np.ndarray, cath: _Catheter) -> np.ndarray:
    """Step 3: the frames' angles about the catheter axis, spread over the arc under which the LA is seen."""
    points = la.surface_mm(sp) - cath.transducer
    angles = np.degrees(np.arctan2(points @ cath.side, points @ cath.toward))
    a_lo, a_hi = float(angles.min()), float(angles.max())
    if config.arc_deg is not None:
        mid = 0.5 * (a_lo + a_hi)
        a_lo, a_hi = mid - 0.5 * float(config.arc_deg), mid + 0.5 * float(config.arc_deg)
    n_frames = int(config.frames)
    return np.linspace(a_lo, a_hi, n_frames) if n_frames > 1 else np.array([0.5 * (a_lo + a_hi)])


def _frame_poses(sweep, cath: _Catheter, sector: Sector, config: SimulationConfig, rng):
    """Step 4: per frame its cardiac phase and its nominal and acquired pixel -> grid-mm matrices."""
    phases = rng.uniform(0.0, 1.0, len(sweep))
    nominal, acquired = [], []
    for angle in sweep:
        e_v = rotation_matrix(cath.axis, np.radians(angle)) @ cath.toward
        nominal.append(frame_matrix(cath.transducer, cath.axis, e_v, sector))
        err_axis = rng.normal(size=3)
        err = rotation_matrix(err_axis, np.radians(rng.normal(0.0, config.misalignment_deg)))
        shift = rng.normal(0.0, config.misalignment_mm / np.sqrt(3.0), 3)
        acquired.append(frame_matrix(cath.transducer + shift, err @ cath.axis, err @ e_v, sector))
    return phases, nominal, acquired


def _frame_points(uv, acquired, phases, la: _Anatomy, config: SimulationConfig, rng) -> np.ndarray:
    """Step 5: ``(frames, pixels, 3)`` grid-mm points of the reference anatomy each fan pixel images: the
    acquired pose, moved back through the cardiac motion at the frame's phase (radial scaling about the
    centroid and a smooth displacement, zero-mean over the cycle)."""
    modes = []
    for _ in range(3):
        k = rng.normal(size=3)
        k = k / np.linalg.norm(k) * (2 * np.pi / rng.uniform(60.0, 100.0))
        direction = rng.normal(size=3)
        modes.append((k, direction / np.linalg.norm(direction), rng.uniform(0, 2 * np.pi)))
    # Zero-mean over the cycle: y is the mean shape, so the CAS contours of an ungated sweep lie on both
    # sides of it (the paper's y is fitted to them), not all outside.
    w_phase = -0.5 * np.cos(2.0 * np.pi * phases)
    pts = np.empty((len(acquired), len(uv), 3), dtype=np.float32)
    for f, matrix in enumerate(acquired):
        p = uv @ matrix[:3, :2].T + matrix[:3, 3]
        if config.motion_mm > 0:
            scale = 1.0 + config.motion_mm / la.mean_radius * w_phase[f]
            q = la.centroid + (p - la.centroid) / scale
            amp = 0.25 * config.motion_mm * w_phase[f]
            for k, direction, ph in modes:
                q -= amp * np.sin(p @ k + ph)[:, None] * direction[None, :]
            p = q
        pts[f] = p
    return pts


def _textures(grid: Grid, sector: Sector, acquired, fan, cath: _Catheter, depth_mm: float, rng):
    """Step 6a: two smooth 3D noise textures (5 and 10 mm) seen on every 4th frame pixel, interpolated to the
    fan: ``(frames, fan pixels)`` each (the tissue texture and the other blood pools)."""
    tex_step = 5.0
    reach = np.linalg.norm(cath.transducer - grid.centre_mm) + depth_mm + 10.0
    tex_lo = grid.centre_mm - reach
    tex_hi = grid.centre_mm + reach
    step = 4
    n_frames = len(acquired)
    coarse_shape = (-(-sector.rows // step), -(-sector.cols // step))
    cv, cu = np.mgrid[0 : coarse_shape[0], 0 : coarse_shape[1]] * step
    cuv = np.stack([cu.ravel(), cv.ravel()], axis=1).astype(np.float64)
    coarse_pts = np.stack([cuv @ acquired[f][:3, :2].T + acquired[f][:3, 3] for f in range(n_frames)])
    tex_coords = ((coarse_pts.reshape(-1, 3) - tex_lo) / tex_step).astype(np.float32)
    zoom = (1, sector.rows / coarse_shape[0] * 1.0, sector.cols / coarse_shape[1] * 1.0)
    textures = []
    for volume, scale in (
        (_smooth_noise(rng, tex_lo, tex_hi, tex_step), 1),
        (_smooth_noise(rng, tex_lo, tex_hi, 2 * tex_step), 2),
    ):
        values = _sample(volume, tex_coords / scale, "nearest").reshape(n_frames, *coarse_shape)
        fine = ndimage.zoom(values, zoom, order=1, grid_mode=True, mode="nearest")[
            :, : sector.rows, : sector.cols
        ]
        textures.append(fine[:, fan])
    return textures


def _echo(sd_vals, texture, pools, flat_pts, cath: _Catheter, uv, sector, config: SimulationConfig, rng):
    """Step 6b: the log-compressed echo amplitude of each fan pixel ``(frames, fan pixels)`` in [0, 1]."""
    f32 = np.float32
    n_frames, n_px = sd_vals.shape
    blood = f32(0.03)
    tissue = np.clip(f32(0.17) + f32(0.07) * texture, f32(0.05), f32(0.35))
    wall = f32(0.85) * np.exp(-(((sd_vals - f32(1.5)) * f32(1 / 1.1)) ** 2))
    echo = np.where(sd_vals < 0, blood, np.maximum(tissue, wall))
    # Other blood pools (vessels, chambers) away from the LA, and the right atrium around the catheter.
    away = _sigmoid((sd_vals - f32(6.0)) * f32(1.0))
    dark = _sigmoid((pools - f32(0.9)) * f32(6.0)) * away
    ra_radius = f32(max(cath.gap - 3.0, 6.0))
    to_transducer = flat_pts - cath.transducer.astype(np.float32)
    ra_dist = np.sqrt(np.einsum("ij,ij->i", to_transducer, to_transducer)).reshape(n_frames, n_px)
    ra = _sigmoid((ra_radius - ra_dist) * f32(1 / 1.5)) * _sigmoid((sd_vals - f32(3.0)) * f32(1 / 0.7))
    np.maximum(dark, ra, out=dark)
    echo += (blood - echo) * dark
    depth = (np.hypot(uv[:, 0] - sector.apex_pixel[0], uv[:, 1]) * sector.pixel_mm).astype(np.float32)
    echo *= np.exp(-config.attenuation * (1.0 - config.gain_compensation) * depth)[None, :].astype(np.float32)
    amplitude = echo
    if config.speckle > 0:
        # Fully developed speckle: Rayleigh amplitude, one draw per pixel (pixels are about the grain size).
        speckle = np.sqrt(rng.standard_exponential(amplitude.shape, dtype=np.float32))
        speckle *= f32(config.speckle) / speckle.mean()
        speckle += f32(1.0 - config.speckle)
        amplitude *= speckle
    if config.dropout > 0:
        lateral = np.degrees(np.arctan2(uv[:, 0] - sector.apex_pixel[0], uv[:, 1]))
        for f in range(n_frames):
            if rng.uniform() < config.dropout:
                centre = rng.uniform(-0.5, 0.5) * config.opening_deg
                width = rng.uniform(5.0, 15.0)
                start = rng.uniform(10.0, 40.0)
                shadow = (np.abs(lateral - centre) < width / 2) & (depth > start)
                amplitude[f, shadow] *= f32(0.15)
    return np.clip(np.log1p(f32(8.0) * amplitude) * f32(1.0 / np.log1p(8.0 * 1.2)), f32(0), f32(1))


def _place_frames(grid: Grid, sector: Sector, uv, fan, compressed, sd_vals, nominal, acquired, phases):
    """Step 7: the frames at their nominal poses: the sparse volume (nearest-voxel means), the data mask, the
    CAS contours (polylines and voxels) and the :class:`Frame` list."""
    sp = np.asarray(grid.spacing, float)
    g2ras = grid.grid_mm_to_ras()
    n_frames, n_px = compressed.shape
    n_vox = int(np.prod(grid.shape))
    all_flat, all_values = [], []
    pixel_voxels = np.full((n_frames, n_px), -1, dtype=np.int64)
    ras_to_index = grid.ras_to_index()
    frames: list[Frame] = []
    sd_frame = np.full((sector.rows, sector.cols), np.nan, dtype=np.float64)
    step_px = 0.25 * float(sp.min()) / sector.pixel_mm
    frames_img = np.zeros((n_frames, sector.rows, sector.cols), dtype=np.float32)
    frames_img[:, fan] = compressed
    cas = np.zeros(n_vox, dtype=np.uint16)
    for f in range(n_frames):
        pose = g2ras @ nominal[f]
        to_index = ras_to_index @ pose
        idx = np.rint(uv @ to_index[:3, :2].T + to_index[:3, 3]).astype(np.int64)
        inside = np.all((idx >= 0) & (idx < np.asarray(grid.shape)), axis=1)
        flat = np.ravel_multi_index(tuple(idx[inside].T), grid.shape)
        all_flat.append(flat)
        pixel_voxels[f, inside] = flat
        all_values.append(compressed[f, inside])
        # CAS contour: zero level of the signed distance on the fan (masked outside it).
        sd_frame[fan] = sd_vals[f]
        lines = contour_generator(z=sd_frame, line_type=LineType.Separate).lines(0.0)  # NaN: masked
        # Rounded to 1e-4 pixel, as frames.json stores them: the voxels of a case read back are the same.
        contours = [
            np.round(_orient(np.asarray(line, np.float64), sd_frame), 4) for line in lines if len(line) >= 3
        ]
        cas_vox = polylines_to_voxels(contours, to_index, grid.shape, step_px)
        cas[cas_vox] = f + 1
        frames.append(
            Frame(
                index=f,
                image=frames_img[f],
                pose=pose,
                acquired_pose=g2ras @ acquired[f],
                phase=float(phases[f]),
                contours=contours,
                voxels=np.unique(flat),
                cas_voxels=cas_vox,
            )
        )
    all_flat = np.concatenate(all_flat)
    sums = np.bincount(all_flat, weights=np.concatenate(all_values), minlength=n_vox)
    counts = np.bincount(all_flat, minlength=n_vox)
    image = np.zeros(n_vox, dtype=np.float32)
    hit_vox = counts > 0
    image[hit_vox] = (sums[hit_vox] / counts[hit_vox]).astype(np.float32)
    shape = grid.shape
    return image.reshape(shape), hit_vox.reshape(shape), cas.reshape(shape), frames, pixel_voxels


def simulate_case(
    anatomy: np.ndarray,
    grid: Grid | None = None,
    config: SimulationConfig | None = None,
    seed: int = 0,
) -> ICECase:
    """Simulate one sparse-ICE case from a left-atrium mask (see the module docstring for each step).

    Args:
        anatomy: boolean mask ``(k, j, i)`` on ``grid`` (y); a single connected blood pool.
        grid: the voxel grid (default: 128^3 x 1.1024 mm, :meth:`Grid.cube`); its shape must be the mask's.
        config: :class:`SimulationConfig` (default settings when ``None``).
        seed: everything random (catheter, phases, pose errors, motion, texture, speckle) is drawn from it.

    Returns:
        An :class:`ICECase`.

    Raises:
        ValueError: the mask is empty or not on the grid.
    """
    grid = grid or Grid.cube()
    config = config or SimulationConfig()
    mask = np.asarray(anatomy).astype(bool, copy=False)
    if mask.shape != grid.shape:
        raise ValueError(f"the anatomy has shape {mask.shape}, the grid {grid.shape}; resample it first")
    if not mask.any():
        raise ValueError("the anatomy mask is empty: nothing to image")
    rng = np.random.default_rng(seed)  # drawn from in the order of the steps below
    sp = np.asarray(grid.spacing, float)
    sector = config.sector(grid)
    la = _describe_anatomy(mask, sp)
    cath = _place_catheter(grid, config, la, rng)
    sweep = _sweep_angles(config, la, sp, cath)
    phases, nominal, acquired = _frame_poses(sweep, cath, sector, config, rng)
    fan = sector.mask()
    uv = np.argwhere(fan)[:, ::-1].astype(np.float64)  # fan pixels (u, v)
    pts = _frame_points(uv, acquired, phases, la, config, rng)
    flat_pts = pts.reshape(-1, 3)
    sd_vals = _sample(
        la.sd, (flat_pts - (la.box_lo * sp).astype(np.float32)) / sp.astype(np.float32), "constant", la.margin
    ).reshape(len(sweep), len(uv))
    texture, pools = _textures(grid, sector, acquired, fan, cath, config.depth_mm, rng)
    compressed = _echo(sd_vals, texture, pools, flat_pts, cath, uv, sector, config, rng)
    image, datamask, cas, frames, pixel_voxels = _place_frames(
        grid, sector, uv, fan, compressed, sd_vals, nominal, acquired, phases
    )
    g2ras = grid.grid_mm_to_ras()
    settings = {
        "seed": int(seed),
        "config": {k: (list(v) if isinstance(v, tuple) else v) for k, v in config.__dict__.items()},
        "septal_gap_mm": cath.gap,
        "sweep_deg": [float(a) for a in sweep],
        "la_mean_radius_mm": la.mean_radius,
    }
    out = ICECase(
        grid=grid,
        sector=sector,
        image=image,
        datamask=datamask,
        label=mask.astype(np.uint8),
        cas=cas,
        frames=frames,
        transducer=(g2ras @ np.append(cath.transducer, 1.0))[:3],
        catheter_axis=g2ras[:3, :3] @ cath.axis,
        settings=settings,
    )
    out.cache["pixel_voxels"] = pixel_voxels  # frame pixel -> voxel, reused by the interaction synthesis
    return out
