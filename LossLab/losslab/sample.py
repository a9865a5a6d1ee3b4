"""A small synthetic ICE-editing case, bundled with the package so the demo runs without any download.

The case mimics the editing setting of ice-editing-shahin2023 on a coarse grid (64^3 voxels of 2.2048 mm,
half the paper's 128^3 x 1.1024 mm): a left-atrium-like body (an ellipsoid with two vein stubs) as the
reference, an imperfect initial segmentation (shrunk, shifted, one vein missing), a scribble drawn on the
reference boundary in one frame (an axial slice) where the initial segmentation is worst, the CAS-like
contours (reference boundary on every 6th frame: ICE frames are sparse), and an edited segmentation that
follows the reference near the scribble and the initial segmentation elsewhere (what a good editing model
returns). :func:`write_sample_case` writes them; ``losslab sample-data DIR`` is its command.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from .io import Geometry, write_image
from .metrics import attention_map, boundary, nearest_distances

SAMPLE_DIR = Path(__file__).resolve().parent / "data" / "sample"
SHAPE = (64, 64, 64)
SPACING = 2.2048
FILES = {
    "image": "image.nii.gz",
    "reference": "reference.nii.gz",
    "initial": "initial.nii.gz",
    "compared": "edited.nii.gz",
    "scribble": "scribble.nii.gz",
    "cas": "cas.nii.gz",
}


def _ellipsoid(grid: list[np.ndarray], centre, radii) -> np.ndarray:
    return sum(((g - c) / r) ** 2 for g, c, r in zip(grid, centre, radii)) <= 1.0


def _tube(grid: list[np.ndarray], start, end, radius: float) -> np.ndarray:
    p = np.stack(grid, axis=-1)
    a, b = np.asarray(start, float), np.asarray(end, float)
    t = np.clip(((p - a) @ (b - a)) / np.dot(b - a, b - a), 0.0, 1.0)
    closest = a + t[..., None] * (b - a)
    return np.linalg.norm(p - closest, axis=-1) <= radius


def make_sample_case(seed: int = 0, sigma_voxels: float = 10.0) -> dict[str, np.ndarray]:
    """Build the arrays of the sample case (``(k, j, i)`` order, voxel size ``SPACING`` mm).

    Returns:
        ``{"image", "reference", "initial", "compared", "scribble", "cas"}``: a float32 ICE-like image
        (sparse frames, speckle) and uint8 masks.
    """
    rng = np.random.default_rng(seed)
    grid = list(np.meshgrid(*[np.arange(n, dtype=float) for n in SHAPE], indexing="ij"))
    body = _ellipsoid(grid, (32, 32, 30), (14, 17, 12))
    veins = _tube(grid, (30, 22, 20), (38, 12, 12), 3.2) | _tube(grid, (34, 42, 22), (42, 52, 12), 3.0)
    reference = body | veins
    initial = _ellipsoid(grid, (31, 33, 31), (13, 15, 11)) | _tube(grid, (30, 22, 20), (36, 15, 15), 2.6)
    # The frame of maximum error between initial and reference, the scribble on the reference boundary there.
    error = (initial ^ reference).sum(axis=(1, 2))
    frame = int(np.argmax(error))
    slab = np.zeros(SHAPE, bool)
    slab[frame] = True
    ring = boundary(reference) & slab
    # The user corrects where the error is largest: the reference contour point farthest from the initial
    # contour in that frame, and the stretch of contour within 6 voxels of it.
    points = np.argwhere(ring)
    gaps = nearest_distances(ring, boundary(initial) & slab)
    worst = points[int(np.argmax(gaps))]
    scribble = ring & (np.linalg.norm(np.stack(grid, axis=-1) - worst, axis=-1) <= 6.0)
    a = attention_map(scribble, sigma=sigma_voxels)
    compared = np.where(a >= 0.5, reference, initial)
    frames = np.zeros(SHAPE, bool)
    frames[::6] = True
    frames[frame] = True
    cas = boundary(reference) & frames
    image = np.where(reference, 0.25, 0.8) + 0.15 * rng.standard_normal(SHAPE)
    image = np.where(frames, image, 0.0).astype(np.float32)  # sparse ICE frames, zero between them
    return {
        "image": image,
        "reference": reference.astype(np.uint8),
        "initial": initial.astype(np.uint8),
        "compared": compared.astype(np.uint8),
        "scribble": scribble.astype(np.uint8),
        "cas": cas.astype(np.uint8),
    }


def sample_geometry() -> Geometry:
    return Geometry.identity(3, spacing=(SPACING,) * 3)


def write_sample_case(out_dir: str | Path, seed: int = 0) -> dict[str, Path]:
    """Write the sample case as NIfTI files into ``out_dir``; returns the paths by role."""
    out_dir = Path(out_dir)
    arrays = make_sample_case(seed)
    geometry = sample_geometry()
    return {role: write_image(out_dir / name, arrays[role], geometry) for role, name in FILES.items()}


def sample_paths() -> dict[str, Path]:
    """Paths of the bundled sample case; a clear error if the package was installed without its data."""
    paths = {role: SAMPLE_DIR / name for role, name in FILES.items()}
    missing = [str(p) for p in paths.values() if not p.is_file()]
    if missing:
        raise FileNotFoundError(
            f"the bundled sample case is missing ({', '.join(missing)}); recreate it with "
            f"'losslab sample-data {SAMPLE_DIR}'"
        )
    return paths
