"""MRML nodes <-> numpy arrays: segments, volumes, markups curves and tables, with their geometry.

Qt-free: it uses MRML and VTK classes only, takes the scene as an argument and runs unchanged in desktop
Slicer and on the ``slicer-core`` wheel. Reused by every LossLab module (SegmentationMetrics, ICE editing).

Conventions:

- Arrays are in Slicer's **(k, j, i)** axis order (as ``slicer.util.arrayFromVolume`` and SimpleITK), so
  ``array[k, j, i]`` is the voxel at IJK index ``(i, j, k)``. :attr:`Grid.array_spacing` is in the same
  (k, j, i) order, ready for :mod:`losslab.metrics` (as :attr:`losslab.io.Geometry.array_spacing`);
  :attr:`Grid.spacing_ijk` is Slicer's (i, j, k) order. No name says just "spacing": the order is in the name.
- Geometry is in **world** RAS: a node's parent transform is applied when it is linear; a non-linear
  parent transform raises ``ValueError`` (harden it first). Output volumes get the world geometry and no
  parent transform.
- Voxel centres sit at integer IJK indices; a RAS point belongs to the voxel whose centre is nearest.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np
import slicer
import vtk
from vtk.util import numpy_support

__all__ = [
    "Grid",
    "array_to_volume",
    "check_segment",
    "continuous_color_node",
    "curve_to_mask",
    "find_color_node",
    "labels_color_node",
    "markups_to_mask",
    "mask_on_grid",
    "node_mask",
    "parent_to_world",
    "polyline_to_mask",
    "segment_ids",
    "segment_mask",
    "set_segment_from_mask",
    "table_from_rows",
    "table_rows",
    "volume_array",
    "volume_mask",
]

BINARY_LABELMAP = "Binary labelmap"
_ALIGN_TOL = 1e-3  # relative tolerance on spacing / direction, and on the voxel offset between two grids


def _matrix_to_array(matrix: vtk.vtkMatrix4x4) -> np.ndarray:
    return np.array([[matrix.GetElement(r, c) for c in range(4)] for r in range(4)], dtype=np.float64)


def _array_to_matrix(array: np.ndarray) -> vtk.vtkMatrix4x4:
    matrix = vtk.vtkMatrix4x4()
    for r in range(4):
        for c in range(4):
            matrix.SetElement(r, c, float(array[r, c]))
    return matrix


def _node_label(node) -> str:
    if node is None:
        return "None"
    return f"{node.GetClassName()} '{node.GetName()}' ({node.GetID()})"


def parent_to_world(node) -> np.ndarray:
    """4x4 matrix from a transformable node's coordinates to world RAS (identity without a parent transform).

    Raises:
        ValueError: the parent transform is not linear (harden the transform first).
    """
    transform = node.GetParentTransformNode() if hasattr(node, "GetParentTransformNode") else None
    if transform is None:
        return np.eye(4)
    if not transform.IsTransformToWorldLinear():
        raise ValueError(
            f"{_node_label(node)} is under a non-linear transform ({transform.GetName()}); LossLab works on "
            "voxel grids in world coordinates: harden the transform (Transforms module) and try again"
        )
    matrix = vtk.vtkMatrix4x4()
    transform.GetMatrixTransformToWorld(matrix)
    return _matrix_to_array(matrix)


@dataclass(frozen=True)
class Grid:
    """A voxel lattice in world RAS: array shape (k, j, i) and the 4x4 IJK-to-RAS matrix.

    ``ijk_to_ras`` maps homogeneous ``(i, j, k, 1)`` to ``(R, A, S, 1)``; its columns hold the axis
    directions scaled by the spacing, and the origin (centre of voxel (0, 0, 0)).
    """

    shape: tuple[int, int, int]
    ijk_to_ras: np.ndarray

    def __post_init__(self):
        shape = tuple(int(n) for n in self.shape)
        if len(shape) != 3 or min(shape) < 1:
            raise ValueError(f"a grid needs three positive dimensions (k, j, i), got {self.shape}")
        matrix = np.array(self.ijk_to_ras, dtype=np.float64)
        if matrix.shape != (4, 4) or abs(np.linalg.det(matrix[:3, :3])) < 1e-12:
            raise ValueError(f"ijk_to_ras must be an invertible 4x4 matrix, got\n{matrix}")
        matrix.setflags(write=False)
        object.__setattr__(self, "shape", shape)
        object.__setattr__(self, "ijk_to_ras", matrix)

    # Construction ------------------------------------------------------------------------------------------

    @classmethod
    def from_volume(cls, volume_node) -> Grid:
        """The grid of a volume node (any vtkMRMLVolumeNode with image data), in world RAS."""
        if volume_node is None or volume_node.GetImageData() is None:
            raise ValueError(f"{_node_label(volume_node)} has no image data: cannot take its voxel grid")
        matrix = vtk.vtkMatrix4x4()
        volume_node.GetIJKToRASMatrix(matrix)
        ni, nj, nk = volume_node.GetImageData().GetDimensions()
        return cls((nk, nj, ni), parent_to_world(volume_node) @ _matrix_to_array(matrix))

    @classmethod
    def from_oriented_image(cls, image, extent: Sequence[int] | None = None) -> Grid:
        """The grid of a ``vtkOrientedImageData`` over its extent (or ``extent``), from the extent start."""
        extent = list(extent if extent is not None else image.GetExtent())
        if extent[1] < extent[0] or extent[3] < extent[2] or extent[5] < extent[4]:
            raise ValueError(f"empty image extent {extent}: no voxel grid")
        matrix = vtk.vtkMatrix4x4()
        image.GetImageToWorldMatrix(matrix)
        ijk_to_ras = _matrix_to_array(matrix)
        ijk_to_ras[:3, 3] = (ijk_to_ras @ np.array([extent[0], extent[2], extent[4], 1.0]))[:3]
        shape = (extent[5] - extent[4] + 1, extent[3] - extent[2] + 1, extent[1] - extent[0] + 1)
        return cls(shape, ijk_to_ras)

    @classmethod
    def from_segmentation(cls, segmentation_node) -> Grid:
        """The reference image geometry of a segmentation node (in world RAS).

        That is the grid its segments are drawn on (set from the source volume in the Segment Editor).

        Raises:
            ValueError: the segmentation has no reference image geometry.
        """
        segmentation = segmentation_node.GetSegmentation()
        name = slicer.vtkSegmentationConverter.GetReferenceImageGeometryParameterName()
        text = segmentation.GetConversionParameter(name)
        image = slicer.vtkOrientedImageData()
        if not text or not slicer.vtkSegmentationConverter.DeserializeImageGeometry(text, image, False):
            raise ValueError(
                f"{_node_label(segmentation_node)} has no reference image geometry: select a reference "
                "volume (the grid to compare on), or set the segmentation's geometry from a volume"
            )
        grid = cls.from_oriented_image(image)
        return cls(grid.shape, parent_to_world(segmentation_node) @ grid.ijk_to_ras)

    # Geometry ------------------------------------------------------------------------------------------

    @property
    def spacing_ijk(self) -> tuple[float, float, float]:
        """Voxel size in mm in Slicer's (i, j, k) order."""
        return tuple(float(v) for v in np.linalg.norm(self.ijk_to_ras[:3, :3], axis=0))

    @property
    def array_spacing(self) -> tuple[float, float, float]:
        """Voxel size in mm in the arrays' (k, j, i) order: pass it to :mod:`losslab.metrics` (as
        :attr:`losslab.io.Geometry.array_spacing`; there is deliberately no plain ``spacing``)."""
        return tuple(reversed(self.spacing_ijk))

    @property
    def origin(self) -> tuple[float, float, float]:
        """RAS position of the centre of voxel (0, 0, 0)."""
        return tuple(float(v) for v in self.ijk_to_ras[:3, 3])

    @property
    def directions(self) -> np.ndarray:
        """3x3 matrix whose columns are the unit RAS directions of the i, j, k axes."""
        return self.ijk_to_ras[:3, :3] / np.array(self.spacing_ijk)

    @property
    def ras_to_ijk(self) -> np.ndarray:
        return np.linalg.inv(self.ijk_to_ras)

    def vtk_ijk_to_ras(self) -> vtk.vtkMatrix4x4:
        return _array_to_matrix(self.ijk_to_ras)

    def ras_to_continuous_ijk(self, points_ras: np.ndarray) -> np.ndarray:
        """(N, 3) RAS points -> (N, 3) continuous (i, j, k) indices (voxel centres at integers)."""
        points = np.asarray(points_ras, dtype=np.float64).reshape(-1, 3)
        homogeneous = np.c_[points, np.ones(len(points))]
        return (homogeneous @ self.ras_to_ijk.T)[:, :3]

    def offset_in(self, other: Grid) -> np.ndarray | None:
        """Integer (i, j, k) index in ``other`` of this grid's voxel (0,0,0), if the two lattices coincide.

        Two grids are aligned when they have the same spacing and directions and their origins differ by a
        whole number of voxels; then copying voxels between them is exact. Returns ``None`` otherwise.
        """
        if not np.allclose(self.ijk_to_ras[:3, :3], other.ijk_to_ras[:3, :3], rtol=_ALIGN_TOL, atol=1e-6):
            return None
        shift = other.ras_to_continuous_ijk(np.array(self.origin))[0]
        rounded = np.round(shift)
        if np.max(np.abs(shift - rounded)) > _ALIGN_TOL * 10:
            return None
        return rounded.astype(int)

    def is_aligned_with(self, other: Grid) -> bool:
        return self.offset_in(other) is not None

    def same_as(self, other: Grid) -> bool:
        offset = self.offset_in(other)
        return offset is not None and not offset.any() and self.shape == other.shape

    def to_oriented_image(self, scalar_type: int = vtk.VTK_UNSIGNED_CHAR, allocate: bool = True):
        """An empty ``vtkOrientedImageData`` with this geometry (extent from 0), zero-filled if allocated."""
        image = slicer.vtkOrientedImageData()
        image.SetExtent(0, self.shape[2] - 1, 0, self.shape[1] - 1, 0, self.shape[0] - 1)
        image.SetImageToWorldMatrix(self.vtk_ijk_to_ras())
        if allocate:
            image.AllocateScalars(scalar_type, 1)
            image.GetPointData().GetScalars().Fill(0)
        return image

    def describe(self) -> str:
        """One line for error messages: shape, spacing, origin and directions."""
        return (
            f"shape (k,j,i)={self.shape}, spacing (i,j,k)={tuple(round(s, 4) for s in self.spacing_ijk)} mm, "
            f"origin={tuple(round(o, 3) for o in self.origin)}, "
            f"directions={np.round(self.directions, 4).T.tolist()}"
        )


# Volumes ---------------------------------------------------------------------------------------------------


def _image_array(image) -> np.ndarray:
    """A copy of a vtkImageData's scalars as a (k, j, i) array."""
    ni, nj, nk = image.GetDimensions()
    scalars = image.GetPointData().GetScalars()
    if scalars is None:
        raise ValueError("the image has no scalars")
    if scalars.GetNumberOfComponents() != 1:
        raise ValueError(
            f"expected a single-component image, got {scalars.GetNumberOfComponents()} components"
        )
    return numpy_support.vtk_to_numpy(scalars).reshape(nk, nj, ni).copy()


def volume_array(volume_node) -> np.ndarray:
    """A copy of a scalar or labelmap volume's voxels, (k, j, i) (pair it with :meth:`Grid.from_volume`)."""
    if volume_node is None or volume_node.GetImageData() is None:
        raise ValueError(f"{_node_label(volume_node)} has no image data")
    return _image_array(volume_node.GetImageData())


def array_to_volume(
    scene,
    array: np.ndarray,
    grid: Grid,
    *,
    node=None,
    name: str = "",
    labelmap: bool = False,
):
    """Write a (k, j, i) array into a volume node with ``grid``'s geometry; create the node if needed.

    Args:
        scene: the vtkMRMLScene that holds (or will hold) the node.
        array: voxels, shape ``grid.shape``. bool becomes uint8; labelmaps need an integer dtype.
        grid: the geometry (world RAS). The node's parent transform, if any, is removed.
        node: an existing vtkMRMLScalarVolumeNode / vtkMRMLLabelMapVolumeNode to update in place.
        name: name of a new node (a unique name is made from it).
        labelmap: create a vtkMRMLLabelMapVolumeNode instead of a scalar volume.

    Returns:
        The volume node, in ``scene``, with default display nodes.
    """
    array = np.asarray(array)
    if array.dtype == bool:
        array = array.astype(np.uint8)
    if tuple(array.shape) != grid.shape:
        raise ValueError(f"array shape {array.shape} does not match the grid shape (k, j, i) {grid.shape}")
    if labelmap and not np.issubdtype(array.dtype, np.integer):
        raise ValueError(f"a labelmap needs integer voxels, got dtype {array.dtype}")
    if node is None:
        class_name = "vtkMRMLLabelMapVolumeNode" if labelmap else "vtkMRMLScalarVolumeNode"
        node = scene.AddNewNodeByClass(class_name, scene.GenerateUniqueName(name or "Volume"))
    elif node.GetScene() is None:
        scene.AddNode(node)
    image = vtk.vtkImageData()
    image.SetDimensions(grid.shape[2], grid.shape[1], grid.shape[0])
    vtk_array = numpy_support.numpy_to_vtk(np.ascontiguousarray(array).ravel(), deep=True)
    vtk_array.SetName("ImageScalars")
    image.GetPointData().SetScalars(vtk_array)
    was_modifying = node.StartModify()
    node.SetAndObserveTransformNodeID(None)
    node.SetIJKToRASMatrix(grid.vtk_ijk_to_ras())
    node.SetAndObserveImageData(image)
    node.EndModify(was_modifying)
    if node.GetDisplayNode() is None:
        _add_volume_display(scene, node, labelmap or node.IsA("vtkMRMLLabelMapVolumeNode"))
    return node


def _add_volume_display(scene, node, labelmap: bool) -> None:
    # As CreateDefaultDisplayNodes, but with a colour table that exists in the scene: headless scenes lack
    # Slicer's colour files (GenericColors), which the default labelmap display asks for.
    display = scene.AddNewNodeByClass(
        "vtkMRMLLabelMapVolumeDisplayNode" if labelmap else "vtkMRMLScalarVolumeDisplayNode"
    )
    candidates = (
        ("vtkMRMLColorTableNodeFileGenericColors.txt", "vtkMRMLColorTableNodeLabels")
        if labelmap
        else ("vtkMRMLColorTableNodeGrey",)
    )
    for color_id in candidates:
        if scene.GetNodeByID(color_id) is not None:
            display.SetAndObserveColorNodeID(color_id)
            break
    node.SetAndObserveDisplayNodeID(display.GetID())


# Segmentations ---------------------------------------------------------------------------------------------


def segment_ids(segmentation_node) -> list[str]:
    """IDs of the segments of a segmentation node, in order."""
    ids = vtk.vtkStringArray()
    segmentation_node.GetSegmentation().GetSegmentIDs(ids)
    return [ids.GetValue(i) for i in range(ids.GetNumberOfValues())]


def check_segment(segmentation_node, segment_id: str, role: str = "segment") -> None:
    """Raise a ``ValueError`` naming ``role`` unless ``segment_id`` is a segment of ``segmentation_node``."""
    if segmentation_node is None or not segmentation_node.IsA("vtkMRMLSegmentationNode"):
        raise ValueError(f"the {role} needs a segmentation node, got {_node_label(segmentation_node)}")
    segment = segmentation_node.GetSegmentation().GetSegment(segment_id or "")
    if segment is None:
        available = ", ".join(
            f"{sid!r} ({segmentation_node.GetSegmentation().GetSegment(sid).GetName()})"
            for sid in segment_ids(segmentation_node)
        )
        raise ValueError(
            f"{role} {segment_id!r} is not in {_node_label(segmentation_node)}; "
            f"available segments (ID (name)): {available or 'none'}"
        )


def _segment_labelmap(segmentation_node, segment_id: str):
    """(oriented image in world RAS, label value) of a segment, converting on a copy if needed."""
    segment = segmentation_node.GetSegmentation().GetSegment(segment_id)
    image = slicer.vtkOrientedImageData()
    logic = slicer.vtkSlicerSegmentationsModuleLogic
    if segment.GetRepresentation(BINARY_LABELMAP) is not None:
        if not logic.GetSegmentBinaryLabelmapRepresentation(segmentation_node, segment_id, image, True):
            raise ValueError(
                f"cannot read the binary labelmap of segment {segment_id!r} of "
                f"{_node_label(segmentation_node)}"
            )
        return image, segment.GetLabelValue()
    # Source representation is something else (closed surface...): convert a copy, never the input node.
    copy = slicer.vtkSegmentation()
    copy.DeepCopy(segmentation_node.GetSegmentation())
    if not copy.CreateRepresentation(BINARY_LABELMAP):
        source = segmentation_node.GetSegmentation().GetSourceRepresentationName()
        raise ValueError(
            f"segment {segment_id!r} of {_node_label(segmentation_node)} has no binary labelmap and cannot "
            f"be converted to one from its {source!r} representation"
        )
    copied_segment = copy.GetSegment(segment_id)
    image.DeepCopy(copied_segment.GetRepresentation(BINARY_LABELMAP))
    to_world = parent_to_world(segmentation_node)
    if not np.allclose(to_world, np.eye(4)):
        matrix = vtk.vtkMatrix4x4()
        image.GetImageToWorldMatrix(matrix)
        image.SetImageToWorldMatrix(_array_to_matrix(to_world @ _matrix_to_array(matrix)))
    return image, copied_segment.GetLabelValue()


def segment_mask(
    segmentation_node, segment_id: str, grid: Grid, *, allow_resample: bool = False, role: str = "segment"
) -> np.ndarray:
    """A segment as a boolean (k, j, i) mask on ``grid``. The segmentation node is not modified.

    When the segment's labelmap lattice is aligned with ``grid`` (same spacing and directions, origins a
    whole number of voxels apart: see :meth:`Grid.offset_in`) the voxels are copied exactly; parts outside
    ``grid`` are cropped. Otherwise the segment is resampled with nearest-neighbour interpolation if
    ``allow_resample``, else a ``ValueError`` says so.

    Raises:
        ValueError: not a segmentation node, unknown segment ID (the message lists the available ones),
            unaligned grids without ``allow_resample``, non-linear parent transform. Messages start with
            ``role`` ("reference segment"...).
    """
    check_segment(segmentation_node, segment_id, role)
    parent_to_world(segmentation_node)  # raises on a non-linear parent transform
    image, label = _segment_labelmap(segmentation_node, segment_id)
    extent = image.GetExtent()
    if (
        extent[1] < extent[0]
        or extent[3] < extent[2]
        or extent[5] < extent[4]
        or image.GetPointData().GetScalars() is None
    ):
        return np.zeros(grid.shape, dtype=bool)  # empty segment
    source_grid = Grid.from_oriented_image(image)
    what = f"{role} {segment_id!r} of {_node_label(segmentation_node)}"
    return mask_on_grid(
        _image_array(image) == label, source_grid, grid, allow_resample=allow_resample, what=what
    )


def mask_on_grid(
    mask: np.ndarray, source_grid: Grid, grid: Grid, *, allow_resample: bool = False, what: str = "the mask"
) -> np.ndarray:
    """Move a boolean (k, j, i) mask from ``source_grid`` onto ``grid``.

    Aligned lattices (:meth:`Grid.offset_in`): an exact copy of the overlap, the rest False. Otherwise,
    with ``allow_resample``: nearest-neighbour resampling (each target voxel takes the value of the source
    voxel whose centre is nearest its centre; False outside the source). Else a ``ValueError`` naming
    ``what`` and both grids.
    """
    mask = np.asarray(mask, dtype=bool)
    if mask.shape != source_grid.shape:
        raise ValueError(f"mask shape {mask.shape} does not match its grid shape {source_grid.shape}")
    offset = source_grid.offset_in(grid)
    out = np.zeros(grid.shape, dtype=bool)
    if offset is not None:
        # voxel (0,0,0) of the source is voxel `offset` (i, j, k) of the target: paste the overlap
        start = offset[::-1]  # (k, j, i)
        dst = tuple(slice(max(0, s), min(n, s + m)) for s, n, m in zip(start, grid.shape, mask.shape))
        src = tuple(slice(d.start - s, d.stop - s) for d, s in zip(dst, start))
        if all(d.stop > d.start for d in dst):
            out[dst] = mask[src]
        return out
    if not allow_resample:
        raise ValueError(
            f"{what} lies on a different voxel grid ({source_grid.describe()}) than the comparison grid "
            f"({grid.describe()}); choose a reference volume to resample onto, or resample the input "
            "(Segmentations module > Specify geometry, or Resample Scalar/Vector/DWI Volume)"
        )
    if not mask.any():
        return out
    # target IJK -> source IJK, one k-slice at a time to bound memory
    target_to_source = source_grid.ras_to_ijk @ grid.ijk_to_ras
    nk, nj, ni = grid.shape
    jj, ii = np.meshgrid(np.arange(nj), np.arange(ni), indexing="ij")
    limits = np.array(source_grid.shape[::-1])  # (ni, nj, nk) of the source
    for k in range(nk):
        ijk = np.stack([ii.ravel(), jj.ravel(), np.full(ii.size, k), np.ones(ii.size)])
        src = np.floor((target_to_source @ ijk)[:3] + 0.5).astype(np.int64)
        inside = np.all((src >= 0) & (src < limits[:, None]), axis=0)
        values = np.zeros(ii.size, dtype=bool)
        values[inside] = mask[src[2, inside], src[1, inside], src[0, inside]]
        out[k] = values.reshape(nj, ni)
    return out


def volume_mask(volume_node, grid: Grid, *, allow_resample: bool = False, role: str = "volume") -> np.ndarray:
    """Voxels > 0 of a scalar or labelmap volume as a boolean (k, j, i) mask on ``grid`` (see
    :func:`mask_on_grid` for aligned and resampled grids)."""
    if volume_node is None or not volume_node.IsA("vtkMRMLScalarVolumeNode"):
        raise ValueError(f"the {role} needs a scalar or labelmap volume node, got {_node_label(volume_node)}")
    return mask_on_grid(
        volume_array(volume_node) > 0,
        Grid.from_volume(volume_node),
        grid,
        allow_resample=allow_resample,
        what=f"{role} {_node_label(volume_node)}",
    )


def node_mask(
    node, grid: Grid, segment_id: str | None = None, *, allow_resample: bool = False, role: str = "input"
) -> np.ndarray:
    """Any node that can mark voxels, as a boolean (k, j, i) mask on ``grid``: a markups node (curve, line,
    point list: :func:`markups_to_mask`), a segment of a segmentation node (``segment_id`` needed), or a
    scalar / labelmap volume (voxels > 0). Used for scribbles, which users draw in any of these forms."""
    if node is None:
        raise ValueError(f"the {role} is not set")
    if node.IsA("vtkMRMLMarkupsNode"):
        return markups_to_mask(node, grid)
    if node.IsA("vtkMRMLSegmentationNode"):
        return segment_mask(node, segment_id, grid, allow_resample=allow_resample, role=role)
    if node.IsA("vtkMRMLScalarVolumeNode"):
        return volume_mask(node, grid, allow_resample=allow_resample, role=role)
    raise ValueError(
        f"the {role} must be a markups curve, a segment or a labelmap volume, got {_node_label(node)}"
    )


def set_segment_from_mask(segmentation_node, segment_id: str, mask: np.ndarray, grid: Grid) -> None:
    """Replace a segment's voxels by a boolean (k, j, i) mask on ``grid`` (creating the segment if missing).

    The mask is written in the segmentation's own coordinates (the inverse of its parent transform is
    applied to ``grid``). Used by editing tools; the metrics never call it on their inputs.
    """
    mask = np.asarray(mask)
    if tuple(mask.shape) != grid.shape:
        raise ValueError(f"mask shape {mask.shape} does not match the grid shape (k, j, i) {grid.shape}")
    segmentation = segmentation_node.GetSegmentation()
    if segmentation.GetSegment(segment_id) is None:
        segmentation.AddEmptySegment(segment_id)
    local = Grid(grid.shape, np.linalg.inv(parent_to_world(segmentation_node)) @ grid.ijk_to_ras)
    image = local.to_oriented_image()
    numpy_support.vtk_to_numpy(image.GetPointData().GetScalars())[:] = mask.astype(np.uint8).ravel()
    logic = slicer.vtkSlicerSegmentationsModuleLogic
    if not logic.SetBinaryLabelmapToSegment(image, segmentation_node, segment_id, logic.MODE_REPLACE):
        raise ValueError(f"writing segment {segment_id!r} of {_node_label(segmentation_node)} failed")


# Markups -------------------------------------------------------------------------------------------------


def _densify(points_ijk: np.ndarray, step: float) -> np.ndarray:
    """Points along a polyline in continuous IJK, no two consecutive ones more than ``step`` voxel apart."""
    if len(points_ijk) < 2:
        return points_ijk
    pieces = []
    for start, stop in zip(points_ijk[:-1], points_ijk[1:]):
        n = max(1, math.ceil(float(np.max(np.abs(stop - start))) / step))
        t = np.arange(n)[:, None] / n
        pieces.append(start + t * (stop - start))
    pieces.append(points_ijk[-1:])
    return np.concatenate(pieces)


def polyline_to_mask(
    points_ras: np.ndarray,
    grid: Grid,
    *,
    step: float = 0.25,
    closed: bool = False,
    connect: bool = True,
) -> np.ndarray:
    """Rasterise RAS points (a polyline when ``connect``) into a boolean (k, j, i) mask on ``grid``.

    The polyline is resampled in index space every ``step`` voxel (0.25 leaves no gaps between voxels that
    a straight segment crosses), each sample goes to the voxel whose centre is nearest, and samples outside
    the grid are dropped with a ``UserWarning`` saying how many.

    Args:
        points_ras: ``(N, 3)`` world RAS points, in order along the curve.
        grid: the voxel grid.
        step: sampling step in voxels along the polyline (0 < step <= 1).
        closed: join the last point to the first.
        connect: join consecutive points; ``False`` marks only the voxels of the points themselves.
    """
    if not 0 < step <= 1:
        raise ValueError(f"step must be in (0, 1] voxel, got {step}")
    points = np.asarray(points_ras, dtype=np.float64).reshape(-1, 3)
    mask = np.zeros(grid.shape, dtype=bool)
    if len(points) == 0:
        return mask
    ijk = grid.ras_to_continuous_ijk(points)
    if connect:
        if closed and len(ijk) > 2:
            ijk = np.vstack([ijk, ijk[:1]])
        ijk = _densify(ijk, step)
    index = np.floor(ijk + 0.5).astype(np.int64)
    inside = np.all((index >= 0) & (index < np.array(grid.shape[::-1])), axis=1)
    dropped = int((~inside).sum())
    if dropped:
        warnings.warn(
            f"{dropped} of {len(index)} curve samples fall outside the voxel grid ({grid.describe()}) and "
            "were dropped",
            UserWarning,
            stacklevel=2,
        )
    index = index[inside]
    mask[index[:, 2], index[:, 1], index[:, 0]] = True
    return mask


def _vtk_points_array(points) -> np.ndarray:
    if points is None or points.GetNumberOfPoints() == 0:
        return np.zeros((0, 3))
    return numpy_support.vtk_to_numpy(points.GetData()).astype(np.float64).reshape(-1, 3)


def markups_to_mask(markups_node, grid: Grid, *, step: float = 0.25) -> np.ndarray:
    """Rasterise a markups node in world coordinates (parent transforms applied) onto ``grid``.

    Curves (open or closed) use their interpolated curve points, so a spline follows its drawn shape;
    lines join their two points; other markups (point lists...) mark the voxel of each control point.
    An empty markups gives an empty mask.
    """
    if markups_node is None or not markups_node.IsA("vtkMRMLMarkupsNode"):
        raise ValueError(
            f"expected a markups node (curve, line or point list), got {_node_label(markups_node)}"
        )
    if markups_node.GetNumberOfControlPoints() == 0:
        return np.zeros(grid.shape, dtype=bool)
    if markups_node.IsA("vtkMRMLMarkupsCurveNode"):
        points = _vtk_points_array(markups_node.GetCurvePointsWorld())
        if len(points) == 0:  # a single control point has no curve points
            points = _control_points_world(markups_node)
        closed = bool(markups_node.IsA("vtkMRMLMarkupsClosedCurveNode"))
        return polyline_to_mask(points, grid, step=step, closed=closed)
    connect = bool(markups_node.IsA("vtkMRMLMarkupsLineNode"))
    return polyline_to_mask(_control_points_world(markups_node), grid, step=step, connect=connect)


def curve_to_mask(curve_node, grid: Grid, *, step: float = 0.25) -> np.ndarray:
    """A scribble drawn as a markups curve -> boolean (k, j, i) mask on ``grid`` (:func:`markups_to_mask`)."""
    return markups_to_mask(curve_node, grid, step=step)


def _control_points_world(markups_node) -> np.ndarray:
    out = np.zeros((markups_node.GetNumberOfControlPoints(), 3))
    for index in range(len(out)):
        markups_node.GetNthControlPointPositionWorld(index, out[index])
    return out


# Tables and colours ----------------------------------------------------------------------------------------


def table_from_rows(
    scene,
    rows: Iterable[Sequence],
    *,
    columns: Sequence[str] = ("Metric", "Value", "Unit"),
    node=None,
    name: str = "Metrics",
):
    """Fill a table node with rows; columns holding only numbers (or None / NaN) become double columns.

    Args:
        scene: the scene that holds (or will hold) the node.
        rows: sequences of ``len(columns)`` values.
        columns: column names.
        node: an existing vtkMRMLTableNode to overwrite (its columns are replaced).
        name: name of a new node.

    Returns:
        The table node.
    """
    rows = [tuple(row) for row in rows]
    for row in rows:
        if len(row) != len(columns):
            raise ValueError(f"each row needs {len(columns)} values ({', '.join(columns)}), got {row!r}")
    if node is None:
        node = scene.AddNewNodeByClass("vtkMRMLTableNode", scene.GenerateUniqueName(name))
    elif node.GetScene() is None:
        scene.AddNode(node)
    table = vtk.vtkTable()
    for index, column in enumerate(columns):
        values = [row[index] for row in rows]
        numeric = all(
            v is None or (isinstance(v, (int, float, np.number)) and not isinstance(v, bool)) for v in values
        )
        if numeric and values:
            array = vtk.vtkDoubleArray()
            for v in values:
                array.InsertNextValue(float("nan") if v is None else float(v))
        else:
            array = vtk.vtkStringArray()
            for v in values:
                array.InsertNextValue("" if v is None else str(v))
        array.SetName(column)
        table.AddColumn(array)
    was_modifying = node.StartModify()
    node.SetAndObserveTable(table)
    node.SetUseColumnTitleAsColumnHeader(True)
    node.EndModify(was_modifying)
    return node


def table_rows(table_node) -> list[tuple]:
    """The rows of a table node as tuples (numbers as float, text as str): for tests and scripts."""
    table = table_node.GetTable()
    out = []
    for r in range(table.GetNumberOfRows()):
        row = []
        for c in range(table.GetNumberOfColumns()):
            column = table.GetColumn(c)
            row.append(
                column.GetValue(r) if isinstance(column, vtk.vtkStringArray) else float(column.GetTuple1(r))
            )
        out.append(tuple(row))
    return out


def find_color_node(scene, names: Sequence[str]):
    """The first colour node in ``scene`` whose name is one of ``names`` (in that order of preference)."""
    for name in names:
        nodes = scene.GetNodesByClassByName("vtkMRMLColorNode", name)
        if nodes.GetNumberOfItems():
            return nodes.GetItemAsObject(0)
    return None


_COLOR_ATTRIBUTE = "LossLab.ColorNode"


def _owned_color_node(scene, key: str):
    nodes = scene.GetNodesByClass("vtkMRMLColorNode")
    for index in range(nodes.GetNumberOfItems()):
        node = nodes.GetItemAsObject(index)
        if node.GetAttribute(_COLOR_ATTRIBUTE) == key:
            return node
    return None


def continuous_color_node(scene, preferred: Sequence[str] = ("Viridis", "ColdToHotRainbow")):
    """A colour map for distance maps: Slicer's Viridis (or ColdToHotRainbow) when the scene has it,
    else a viridis-like procedural colour node created once per scene (headless scenes lack Slicer's
    colour files)."""
    node = find_color_node(scene, preferred) or _owned_color_node(scene, "distance")
    if node is not None:
        return node
    node = slicer.vtkMRMLProceduralColorNode()
    node.SetName(scene.GenerateUniqueName("LossLabDistance"))
    node.SetAttribute(_COLOR_ATTRIBUTE, "distance")
    function = node.GetColorTransferFunction()
    # viridis at 0, 0.25, 0.5, 0.75, 1
    for x, rgb in (
        (0.0, (0.267, 0.005, 0.329)),
        (0.25, (0.229, 0.322, 0.546)),
        (0.5, (0.128, 0.567, 0.551)),
        (0.75, (0.369, 0.789, 0.383)),
        (1.0, (0.993, 0.906, 0.144)),
    ):
        function.AddRGBPoint(x, *rgb)
    node.SetHideFromEditors(False)
    scene.AddNode(node)
    return node


def labels_color_node(scene, key: str, labels: Sequence[tuple[str, tuple[float, float, float]]]):
    """A colour table for a labelmap: value 0 transparent "background", then ``labels`` (name, RGB) from 1.

    Created once per scene under ``key`` (a node attribute) and reused after.
    """
    node = _owned_color_node(scene, key)
    if node is not None:
        return node
    node = slicer.vtkMRMLColorTableNode()
    node.SetTypeToUser()
    node.SetNumberOfColors(len(labels) + 1)
    node.SetName(scene.GenerateUniqueName(f"LossLab{key[:1].upper()}{key[1:]}"))
    node.SetAttribute(_COLOR_ATTRIBUTE, key)
    node.SetColor(0, "background", 0.0, 0.0, 0.0, 0.0)
    for value, (label, rgb) in enumerate(labels, start=1):
        node.SetColor(value, label, *rgb, 1.0)
    node.SetHideFromEditors(False)
    scene.AddNode(node)
    return node
