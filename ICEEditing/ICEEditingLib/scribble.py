"""A scribble, however it is drawn, as voxels of the ICE grid.

A scribble arrives as a markups curve (RAS control points), as the RAS points of a stroke collected in a
slice view (the effect converts each mouse position with ``xyToRas``, in any slice orientation, including
a view aligned with an oblique ICE frame), or as slice-view ``(x, y)`` pixels with the view's slice node.
All become one boolean ``(k, j, i)`` mask: the polyline through the points is sampled every quarter voxel
in index space and each sample goes to the voxel whose centre is nearest
(:func:`LossLabLib.mrml_io.polyline_to_mask`), so consecutive voxels touch (no gaps) whatever the spacing
of the mouse events; a single point marks one voxel.
"""

from __future__ import annotations

import numpy as np

from LossLabLib import mrml_io
from LossLabLib.mrml_io import Grid

__all__ = [
    "MIN_STROKE_PIXELS",
    "STEP_VOXELS",
    "curve_to_voxels",
    "is_click",
    "slice_xy_to_ras",
    "stroke_to_voxels",
]

#: sampling step along a stroke, in voxels (0.25: a segment crossing a voxel corner still marks both voxels)
STEP_VOXELS = 0.25
#: a mouse path shorter than this (screen pixels, along the path) is a click, not a scribble
MIN_STROKE_PIXELS = 5.0


def is_click(xy) -> bool:
    """Whether the screen positions ``(N, 2)`` of a mouse press ... release are a click rather than a
    scribble: a path shorter than :data:`MIN_STROKE_PIXELS` (a hand that presses and releases moves a pixel
    or two). An edit from a click would be a one-voxel scribble the user never meant to draw."""
    xy = np.asarray(xy, dtype=np.float64).reshape(-1, 2)
    if len(xy) < 2:
        return True
    return float(np.linalg.norm(np.diff(xy, axis=0), axis=1).sum()) < MIN_STROKE_PIXELS


def stroke_to_voxels(points_ras, grid: Grid, *, closed: bool = False) -> np.ndarray:
    """RAS points of a stroke ``(N, 3)``, in drawing order -> boolean ``(k, j, i)`` scribble mask on ``grid``.

    Raises:
        ValueError: no point, or no point inside the grid (the message gives the points' RAS bounds).
    """
    points = np.asarray(points_ras, dtype=np.float64).reshape(-1, 3)
    if len(points) == 0:
        raise ValueError("the stroke has no point: draw on a slice view over the ICE volume")
    if not np.all(np.isfinite(points)):
        raise ValueError("the stroke has non-finite RAS coordinates")
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # samples outside the grid: reported below if all are
        mask = mrml_io.polyline_to_mask(points, grid, step=STEP_VOXELS, closed=closed)
    if not mask.any():
        raise ValueError(
            f"the stroke (RAS from {np.round(points.min(0), 1).tolist()} to {np.round(points.max(0), 1).tolist()}"
            f") lies outside the ICE volume ({grid.describe()}): draw on the volume"
        )
    return mask


def curve_to_voxels(curve_node, grid: Grid) -> np.ndarray:
    """A markups curve (open or closed; parent transforms applied) -> scribble mask (see module docstring)."""
    if curve_node is None or not curve_node.IsA("vtkMRMLMarkupsNode"):
        raise ValueError(f"the scribble must be a markups curve, got {curve_node}")
    if curve_node.GetNumberOfControlPoints() == 0:
        raise ValueError(f"the scribble curve '{curve_node.GetName()}' has no control point")
    mask = mrml_io.markups_to_mask(curve_node, grid, step=STEP_VOXELS)
    if not mask.any():
        raise ValueError(f"the scribble curve '{curve_node.GetName()}' lies outside the ICE volume")
    return mask


def slice_xy_to_ras(slice_node, xy) -> np.ndarray:
    """Slice-view pixel positions ``(N, 2)`` -> RAS ``(N, 3)`` through the slice node's XYToRAS matrix (what
    a Segment Editor effect's ``xyToRas`` does for a view; here for scripts and tests without views)."""
    xy = np.asarray(xy, dtype=np.float64).reshape(-1, 2)
    matrix = slice_node.GetXYToRAS()
    m = np.array([[matrix.GetElement(r, c) for c in range(4)] for r in range(4)])
    homogeneous = np.c_[xy, np.zeros(len(xy)), np.ones(len(xy))]
    return (homogeneous @ m.T)[:, :3]
