"""Generated sample data for trying the modules and for their self-tests (no download, no Qt).

:func:`create_editing_example` builds, in any scene, a small image volume, one segmentation holding a
reference ("truth"), an initial and an edited sphere, and a scribble curve where the edit was made.
"""

from __future__ import annotations

import numpy as np
import vtk

from .mrml_io import Grid, array_to_volume, set_segment_from_mask

__all__ = ["create_editing_example"]


def _ball(shape: tuple[int, int, int], centre, radius_mm: float, spacing) -> np.ndarray:
    axes = np.ogrid[tuple(slice(0, n) for n in shape)]
    d2 = sum(((a - c) * s) ** 2 for a, c, s in zip(axes, centre, spacing))
    return d2 <= radius_mm**2


def create_editing_example(
    scene,
    shape: tuple[int, int, int] = (24, 32, 32),
    spacing_ijk: tuple[float, float, float] = (1.0, 1.0, 1.5),
    radius_mm: float = 9.0,
) -> dict:
    """Add an editing example to ``scene``: the reference sphere, an initial one shifted 3 voxels along
    -i, an edited one shifted 1 voxel, and a straight scribble on the reference boundary at +i.

    Returns:
        ``{"volume", "segmentation", "scribble", "grid"}`` and the segment IDs ``"truth"``, ``"initial"``,
        ``"edited"`` (keys of the same names map to the IDs).
    """
    ijk_to_ras = np.diag([*spacing_ijk, 1.0])
    grid = Grid(shape, ijk_to_ras)
    k, j, i = (n // 2 for n in shape)
    image = np.zeros(shape, dtype=np.float32)
    masks = {
        "truth": _ball(shape, (k, j, i), radius_mm, grid.array_spacing),
        "initial": _ball(shape, (k, j, i - 3), radius_mm, grid.array_spacing),
        "edited": _ball(shape, (k, j, i - 1), radius_mm, grid.array_spacing),
    }
    image[masks["truth"]] = 100.0
    volume = array_to_volume(scene, image, grid, name="LossLab example image")
    segmentation = scene.AddNewNodeByClass(
        "vtkMRMLSegmentationNode", scene.GenerateUniqueName("LossLab example")
    )
    segmentation.CreateDefaultDisplayNodes()
    segmentation.SetReferenceImageGeometryParameterFromVolumeNode(volume)
    for name, mask in masks.items():
        set_segment_from_mask(segmentation, name, mask, grid)
        segmentation.GetSegmentation().GetSegment(name).SetName(name)
    # the scribble: along j on the reference boundary where i is largest (the side the edit moved)
    edge_i = int(np.flatnonzero(masks["truth"][k, j])[-1])
    scribble = scene.AddNewNodeByClass(
        "vtkMRMLMarkupsCurveNode", scene.GenerateUniqueName("LossLab scribble")
    )
    scribble.SetCurveTypeToLinear()
    for dj in (-3, 3):
        ras = ijk_to_ras @ np.array([edge_i, j + dj, k, 1.0])
        scribble.AddControlPoint(vtk.vtkVector3d(*ras[:3]))
    out = {"volume": volume, "segmentation": segmentation, "scribble": scribble, "grid": grid}
    out.update({name: name for name in masks})
    return out
