"""Builders of test data in a real MRML scene: volumes with any geometry, sphere segments, curves.

They create nodes through Slicer's own paths (``slicer.util`` helpers, node setters) rather than through
LossLabLib, so that the tests check LossLabLib against an independent route.
"""

from __future__ import annotations

import numpy as np
import slicer
import slicer.util
import vtk


def make_volume(
    scene,
    shape_kji=(20, 24, 28),
    spacing_ijk=(1.0, 1.0, 1.0),
    origin=(0.0, 0.0, 0.0),
    directions=None,
    name="volume",
    values=None,
):
    """A scalar volume node; ``directions`` is a 3x3 matrix whose columns are the i, j, k directions."""
    node = scene.AddNewNodeByClass("vtkMRMLScalarVolumeNode", name)
    image = vtk.vtkImageData()
    image.SetDimensions(shape_kji[2], shape_kji[1], shape_kji[0])
    image.AllocateScalars(vtk.VTK_FLOAT, 1)
    node.SetAndObserveImageData(image)
    node.SetSpacing(*spacing_ijk)
    node.SetOrigin(*origin)
    if directions is not None:
        matrix = vtk.vtkMatrix4x4()
        for r in range(3):
            for c in range(3):
                matrix.SetElement(r, c, float(directions[r][c]))
        node.SetIJKToRASDirectionMatrix(matrix)
    array = values if values is not None else np.zeros(shape_kji, dtype=np.float32)
    slicer.util.updateVolumeFromArray(node, np.asarray(array, dtype=np.float32))
    node.CreateDefaultDisplayNodes()
    return node


def sphere(shape_kji, center_kji, radius_mm, spacing_kji=(1.0, 1.0, 1.0)) -> np.ndarray:
    """Boolean ball of voxels whose centres lie within ``radius_mm`` of ``center_kji`` (in index units)."""
    grids = np.meshgrid(*[np.arange(n) for n in shape_kji], indexing="ij")
    d2 = sum(((g - c) * s) ** 2 for g, c, s in zip(grids, center_kji, spacing_kji))
    return d2 <= radius_mm**2


def oblique_directions(angle_deg=30.0) -> np.ndarray:
    """A rotation about S, then a flip of the j axis: a non-trivial, left-handed-free direction matrix."""
    a = np.deg2rad(angle_deg)
    rotation = np.array([[np.cos(a), -np.sin(a), 0.0], [np.sin(a), np.cos(a), 0.0], [0.0, 0.0, 1.0]])
    return rotation @ np.diag([-1.0, -1.0, 1.0])  # RAS <- LPS-like flip, then rotate


def make_segmentation(scene, reference_volume, masks: dict, name="segmentation"):
    """A segmentation node on ``reference_volume``'s geometry with one segment per (name -> (k,j,i) mask).

    Returns (node, {segment name: segment ID}), written by slicer.util.updateSegmentBinaryLabelmapFromArray.
    """
    node = scene.AddNewNodeByClass("vtkMRMLSegmentationNode", name)
    node.CreateDefaultDisplayNodes()
    node.SetReferenceImageGeometryParameterFromVolumeNode(reference_volume)
    ids = {}
    for segment_name, mask in masks.items():
        segment_id = node.GetSegmentation().AddEmptySegment(segment_name, segment_name)
        slicer.util.updateSegmentBinaryLabelmapFromArray(
            np.asarray(mask, dtype=np.uint8), node, segment_id, reference_volume
        )
        ids[segment_name] = segment_id
    return node, ids


def make_curve(scene, points_ras, name="scribble", linear=True, closed=False):
    """A markups curve node through RAS control points (linear interpolation by default)."""
    class_name = "vtkMRMLMarkupsClosedCurveNode" if closed else "vtkMRMLMarkupsCurveNode"
    node = scene.AddNewNodeByClass(class_name, name)
    if linear:
        node.SetCurveTypeToLinear()
    for point in points_ras:
        node.AddControlPoint(vtk.vtkVector3d(*[float(v) for v in point]))
    return node


def ijk_to_ras(volume_node, ijk) -> np.ndarray:
    """RAS position of (continuous) IJK indices (N, 3) through the volume's IJK-to-RAS matrix."""
    matrix = vtk.vtkMatrix4x4()
    volume_node.GetIJKToRASMatrix(matrix)
    m = np.array([[matrix.GetElement(r, c) for c in range(4)] for r in range(4)])
    ijk = np.atleast_2d(np.asarray(ijk, dtype=float))
    return (np.c_[ijk, np.ones(len(ijk))] @ m.T)[:, :3]


def linear_transform(scene, matrix4x4, name="transform"):
    node = scene.AddNewNodeByClass("vtkMRMLLinearTransformNode", name)
    node.SetMatrixTransformToParent(slicer.util.vtkMatrixFromArray(np.asarray(matrix4x4, dtype=float)))
    return node
