"""Coordinate systems of the ICE simulator: the voxel grid, the frame sector and frame poses.

Three coordinate systems, one name each:

- **index** ``(k, j, i)``: array order (SimpleITK / Slicer ``arrayFromVolume``); continuous values, voxel
  centres at integers. ``spacing`` everywhere in this package is in the same ``(k, j, i)`` order, as in
  :mod:`losslab.metrics`.
- **grid mm** ``g = index * spacing``: millimetres along the array axes, origin at voxel ``(0, 0, 0)``.
  The simulator's internal space (distances, rotations and the catheter live there).
- **RAS** mm: Slicer's world (Right, Anterior, Superior). Files use ITK's LPS (:class:`losslab.io.Geometry`),
  and ``RAS = diag(-1, -1, 1) @ LPS``. :meth:`Grid.index_to_ras` composes the two, so
  ``RAS = Grid.index_to_ras() @ (k, j, i, 1)``.

A simulated grid (:meth:`Grid.cube`) has identity direction (in LPS) and its centre at the world origin.

A **frame** is a 2D image of ``rows x cols`` pixels, array ``frame[v, u]``: ``u`` the column (lateral, along
the catheter), ``v`` the row (depth, away from the transducer). Its **pose** is a 4x4 matrix mapping the
frame pixel ``(u, v, 0, 1)`` to RAS mm; the third column is the plane's unit normal (mm per unit of the third
coordinate), so ``(u, v, w, 1)`` with ``w != 0`` is ``w`` mm off the plane. The sector's apex (the transducer)
is the pixel ``(u_c, 0)`` with ``u_c = (cols - 1) / 2``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from ..io import Geometry

#: The paper's grid (Sec. 3.1): 128^3 voxels of 1.1024 mm.
PAPER_SHAPE = (128, 128, 128)
PAPER_SPACING = 1.1024

LPS_TO_RAS = np.diag([-1.0, -1.0, 1.0, 1.0])


@dataclass(frozen=True)
class Grid:
    """A voxel grid: ``shape`` and ``spacing`` (mm) in array order ``(k, j, i)``, and its place in the world.

    ``geometry`` is the ITK description (LPS, ``(i, j, k)`` order) written to files.
    """

    shape: tuple[int, int, int]
    spacing: tuple[float, float, float]
    geometry: Geometry

    @classmethod
    def cube(cls, size: int = 128, spacing: float = PAPER_SPACING) -> Grid:
        """A ``size^3`` grid of isotropic ``spacing`` mm, identity direction, centred on the world origin.

        Spacing and origin are rounded to float32 (what a NIfTI header stores), so that the grid read back
        from a written file is this grid exactly and a pose maps a pixel to the same voxel either way."""
        size, spacing = int(size), float(np.float32(spacing))
        if size < 8:
            raise ValueError(f"the grid size must be at least 8 voxels, got {size}")
        if not np.isfinite(spacing) or spacing <= 0:
            raise ValueError(f"the grid spacing must be a positive number of mm, got {spacing}")
        half = float(np.float32((size - 1) / 2.0 * spacing))
        geometry = Geometry(
            spacing=(spacing,) * 3, origin=(-half,) * 3, direction=tuple(np.eye(3).ravel().tolist())
        )
        return cls((size,) * 3, (spacing,) * 3, geometry)

    @classmethod
    def from_geometry(cls, shape: Sequence[int], geometry: Geometry) -> Grid:
        """The grid of an image read with :func:`losslab.io.read_image` (``shape`` is the array's)."""
        if len(shape) != 3 or geometry.ndim != 3:
            raise ValueError(f"an ICE grid is 3D, got shape {tuple(shape)}")
        return cls(tuple(int(n) for n in shape), tuple(geometry.array_spacing), geometry)

    @property
    def extent_mm(self) -> np.ndarray:
        """Size of the grid in mm per array axis (``shape * spacing``)."""
        return np.asarray(self.shape, float) * np.asarray(self.spacing, float)

    @property
    def centre_mm(self) -> np.ndarray:
        """Grid-mm coordinates of the grid's centre."""
        return (np.asarray(self.shape, float) - 1.0) / 2.0 * np.asarray(self.spacing, float)

    def index_to_ras(self) -> np.ndarray:
        """4x4: ``(k, j, i, 1)`` -> RAS mm (through the file geometry, LPS -> RAS)."""
        ijk_to_lps = self.geometry.ijk_to_lps()
        reverse = np.zeros((4, 4))
        reverse[0, 2] = reverse[1, 1] = reverse[2, 0] = reverse[3, 3] = 1.0  # (k, j, i) -> (i, j, k)
        return LPS_TO_RAS @ ijk_to_lps @ reverse

    def ras_to_index(self) -> np.ndarray:
        """4x4: RAS mm -> continuous ``(k, j, i, 1)``."""
        return np.linalg.inv(self.index_to_ras())

    def grid_mm_to_ras(self) -> np.ndarray:
        """4x4: grid mm ``(k*s_k, j*s_j, i*s_i, 1)`` -> RAS mm."""
        return self.index_to_ras() @ np.diag([*(1.0 / np.asarray(self.spacing)), 1.0])

    def ras_direction(self, direction_ras: Sequence[float]) -> np.ndarray:
        """A unit direction given in RAS expressed in grid mm (the grid's axes are orthonormal in mm)."""
        linear = self.grid_mm_to_ras()[:3, :3]
        d = np.linalg.solve(linear, np.asarray(direction_ras, float))
        norm = np.linalg.norm(d)
        if norm == 0:
            raise ValueError(f"a direction must be non-zero, got {list(direction_ras)}")
        return d / norm


@dataclass(frozen=True)
class Sector:
    """The fan of an ICE frame: apex at the transducer, ``opening_deg`` wide, ``depth_mm`` deep.

    Frames are sampled on a square pixel grid of ``pixel_mm`` (finer than the voxel grid by default:
    0.7 of the paper's voxel size). ``rows`` run along the depth, ``cols`` across (along the catheter axis).
    """

    depth_mm: float = 120.0
    opening_deg: float = 90.0
    pixel_mm: float = 0.7 * 1.1024

    def __post_init__(self) -> None:
        for name, low, high in (
            ("depth_mm", 1.0, 1000.0),
            ("opening_deg", 1.0, 179.0),
            ("pixel_mm", 1e-3, 50),
        ):
            value = float(getattr(self, name))
            if not (np.isfinite(value) and low <= value <= high):
                raise ValueError(f"sector {name} must be in [{low}, {high}], got {value}")

    @property
    def rows(self) -> int:
        return int(np.floor(self.depth_mm / self.pixel_mm)) + 1

    @property
    def cols(self) -> int:
        half = self.depth_mm * np.sin(np.radians(min(self.opening_deg, 179.0)) / 2.0)
        return 2 * int(np.ceil(half / self.pixel_mm)) + 1

    @property
    def apex_pixel(self) -> tuple[float, float]:
        """``(u, v)`` of the transducer."""
        return ((self.cols - 1) / 2.0, 0.0)

    def mask(self) -> np.ndarray:
        """Boolean ``(rows, cols)`` mask of the pixels inside the fan (radius and angle from the apex)."""
        v, u = np.mgrid[0 : self.rows, 0 : self.cols].astype(np.float64)
        x = (u - self.apex_pixel[0]) * self.pixel_mm
        z = v * self.pixel_mm
        r = np.hypot(x, z)
        angle = np.degrees(np.arctan2(np.abs(x), z))
        return (r <= self.depth_mm + 1e-9) & (angle <= self.opening_deg / 2.0 + 1e-9)

    def as_dict(self) -> dict:
        return {
            "depth_mm": float(self.depth_mm),
            "opening_deg": float(self.opening_deg),
            "pixel_mm": float(self.pixel_mm),
            "rows": self.rows,
            "cols": self.cols,
            "apex_pixel_uv": list(self.apex_pixel),
        }


def frame_matrix(apex: np.ndarray, e_u: np.ndarray, e_v: np.ndarray, sector: Sector) -> np.ndarray:
    """4x4 map from frame pixel ``(u, v, w, 1)`` to grid mm, for a frame with its apex at ``apex`` (grid mm)
    and unit in-plane axes ``e_u`` (lateral) and ``e_v`` (depth); the third column is ``e_u x e_v``."""
    e_u = np.asarray(e_u, float)
    e_v = np.asarray(e_v, float)
    m = np.eye(4)
    m[:3, 0] = sector.pixel_mm * e_u
    m[:3, 1] = sector.pixel_mm * e_v
    m[:3, 2] = np.cross(e_u, e_v)
    m[:3, 3] = np.asarray(apex, float) - sector.apex_pixel[0] * sector.pixel_mm * e_u
    return m


def pixels_to_index(matrix_grid_mm: np.ndarray, uv: np.ndarray, spacing: Sequence[float]) -> np.ndarray:
    """Continuous ``(k, j, i)`` of frame pixels ``uv`` ``(N, 2)`` under a pixel -> grid-mm matrix."""
    uv = np.asarray(uv, np.float64)
    g = uv @ matrix_grid_mm[:3, :2].T + matrix_grid_mm[:3, 3]
    return g / np.asarray(spacing, np.float64)


def rotation_matrix(axis: Sequence[float], angle_rad: float) -> np.ndarray:
    """3x3 rotation by ``angle_rad`` about the unit ``axis`` (Rodrigues)."""
    a = np.asarray(axis, float)
    a = a / np.linalg.norm(a)
    k = np.array([[0, -a[2], a[1]], [a[2], 0, -a[0]], [-a[1], a[0], 0]])
    return np.eye(3) + np.sin(angle_rad) * k + (1 - np.cos(angle_rad)) * (k @ k)
