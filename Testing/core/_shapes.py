"""Analytic shapes shared by the core tests."""

from __future__ import annotations

import numpy as np


def ball(shape, centre, radius_mm, spacing=None):
    """Voxels whose centre lies within ``radius_mm`` of ``centre`` (voxel coordinates), in mm."""
    spacing = spacing or (1.0,) * len(shape)
    grids = np.meshgrid(*[(np.arange(n) - c) * s for n, c, s in zip(shape, centre, spacing)], indexing="ij")
    return sum(g**2 for g in grids) <= radius_mm**2
