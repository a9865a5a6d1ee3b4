"""LossLabLib.mrml_io on a real MRML scene: grids, segments, volumes, curves, tables."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("slicer", reason="slicer-core is not installed (pip install slicer-core)")

import slicer  # noqa: E402
import slicer.util  # noqa: E402
from mrml_builders import (  # noqa: E402
    ijk_to_ras,
    linear_transform,
    make_curve,
    make_segmentation,
    make_volume,
    oblique_directions,
    sphere,
)

from LossLabLib import mrml_io  # noqa: E402
from LossLabLib.mrml_io import Grid  # noqa: E402

SHAPE = (12, 16, 20)  # (k, j, i)


@pytest.fixture
def oblique_volume(scene):
    return make_volume(
        scene, SHAPE, spacing_ijk=(0.8, 1.2, 2.5), origin=(-30.0, 12.5, 40.0), directions=oblique_directions()
    )


def test_grid_from_volume_orders_and_matrices(oblique_volume):
    grid = Grid.from_volume(oblique_volume)
    assert grid.shape == SHAPE
    assert grid.spacing_ijk == pytest.approx((0.8, 1.2, 2.5))
    assert grid.array_spacing == pytest.approx((2.5, 1.2, 0.8))  # (k, j, i), as the arrays
    # one name, one order: as losslab.io.Geometry, "spacing" alone would be ambiguous, so Grid has none
    assert not hasattr(grid, "spacing")
    assert grid.origin == pytest.approx((-30.0, 12.5, 40.0))
    np.testing.assert_allclose(grid.directions, oblique_directions(), atol=1e-9)
    ijk = np.array([[0, 0, 0], [3, 5, 7], [19, 15, 11]], dtype=float)
    ras = ijk_to_ras(oblique_volume, ijk)
    np.testing.assert_allclose(grid.ras_to_continuous_ijk(ras), ijk, atol=1e-9)
    assert grid.same_as(Grid.from_volume(oblique_volume))


def test_grid_applies_a_linear_parent_transform(scene):
    volume = make_volume(scene, SHAPE)
    shift = np.eye(4)
    shift[:3, 3] = (5.0, -2.0, 3.0)
    volume.SetAndObserveTransformNodeID(linear_transform(scene, shift).GetID())
    assert Grid.from_volume(volume).origin == pytest.approx((5.0, -2.0, 3.0))


def test_grid_rejects_bad_inputs():
    with pytest.raises(ValueError, match="three positive dimensions"):
        Grid((0, 3, 3), np.eye(4))
    with pytest.raises(ValueError, match="invertible"):
        Grid((3, 3, 3), np.zeros((4, 4)))


def test_segment_mask_matches_slicer_util_and_leaves_the_segmentation_alone(scene, oblique_volume):
    # two segments that share one labelmap layer: the mask must hold only the asked segment's label
    a = sphere(SHAPE, (5, 8, 9), 5.0, (2.5, 1.2, 0.8))
    b = sphere(SHAPE, (7, 7, 12), 4.0, (2.5, 1.2, 0.8)) & ~a
    seg, ids = make_segmentation(scene, oblique_volume, {"a": a, "b": b})
    seg.GetSegmentation().CollapseBinaryLabelmaps(False)
    assert seg.GetSegmentation().GetNumberOfLayers() == 1
    before = seg.GetMTime(), slicer.util.arrayFromSegmentInternalBinaryLabelmap(seg, ids["a"]).copy()
    grid = Grid.from_volume(oblique_volume)
    for name, expected in (("a", a), ("b", b)):
        mask = mrml_io.segment_mask(seg, ids[name], grid)
        assert mask.dtype == bool and mask.shape == SHAPE
        np.testing.assert_array_equal(mask, expected)
        np.testing.assert_array_equal(
            mask, slicer.util.arrayFromSegmentBinaryLabelmap(seg, ids[name], oblique_volume) > 0
        )
    assert seg.GetMTime() == before[0]
    np.testing.assert_array_equal(
        slicer.util.arrayFromSegmentInternalBinaryLabelmap(seg, ids["a"]), before[1]
    )
    assert Grid.from_segmentation(seg).same_as(grid)


def test_segment_mask_on_a_shifted_aligned_grid_is_an_exact_copy(scene):
    volume = make_volume(scene, SHAPE, spacing_ijk=(1.0, 1.5, 2.0), origin=(0.0, 0.0, 0.0))
    mask = sphere(SHAPE, (6, 8, 10), 6.0, (2.0, 1.5, 1.0))
    seg, ids = make_segmentation(scene, volume, {"s": mask})
    # a grid starting 2 voxels further along i, 1 along k, and smaller: crops and shifts
    matrix = Grid.from_volume(volume).ijk_to_ras.copy()
    matrix[:3, 3] = (2.0, 0.0, 2.0)
    shifted = Grid((10, 16, 15), matrix)
    np.testing.assert_array_equal(mrml_io.segment_mask(seg, ids["s"], shifted), mask[1:11, :, 2:17])


def test_segment_mask_refuses_unaligned_grids_unless_resampling_is_allowed(scene):
    coarse = make_volume(scene, SHAPE, spacing_ijk=(1.0, 1.0, 1.0), name="coarse")
    fine = make_volume(scene, (24, 32, 40), spacing_ijk=(0.5, 0.5, 0.5), origin=(-0.25, -0.25, -0.25))
    mask = sphere(SHAPE, (6, 8, 10), 5.0)
    seg, ids = make_segmentation(scene, coarse, {"s": mask})
    with pytest.raises(ValueError, match="different voxel grid"):
        mrml_io.segment_mask(seg, ids["s"], Grid.from_volume(fine))
    resampled = mrml_io.segment_mask(seg, ids["s"], Grid.from_volume(fine), allow_resample=True)
    # each coarse voxel becomes exactly 2x2x2 fine voxels with this half-voxel-shifted origin
    np.testing.assert_array_equal(resampled, mask.repeat(2, 0).repeat(2, 1).repeat(2, 2))


def test_unknown_segment_is_a_clear_error(scene):
    volume = make_volume(scene, SHAPE)
    seg, _ = make_segmentation(scene, volume, {"liver": sphere(SHAPE, (6, 8, 10), 3.0)})
    with pytest.raises(
        ValueError, match=r"'nope' is not in .*available segments \(ID \(name\)\): 'liver' \(liver\)"
    ):
        mrml_io.segment_mask(seg, "nope", Grid.from_volume(volume))
    with pytest.raises(ValueError, match="needs a segmentation node"):
        mrml_io.segment_mask(volume, "liver", Grid.from_volume(volume))


def test_empty_segment_gives_an_empty_mask(scene):
    volume = make_volume(scene, SHAPE)
    seg, _ = make_segmentation(scene, volume, {})
    segment_id = seg.GetSegmentation().AddEmptySegment("empty")
    assert not mrml_io.segment_mask(seg, segment_id, Grid.from_volume(volume)).any()


def test_set_segment_from_mask_round_trips(scene, oblique_volume):
    grid = Grid.from_volume(oblique_volume)
    seg, _ = make_segmentation(scene, oblique_volume, {})
    mask = sphere(SHAPE, (6, 8, 10), 6.0, grid.array_spacing)
    mrml_io.set_segment_from_mask(seg, "edited", mask, grid)
    np.testing.assert_array_equal(mrml_io.segment_mask(seg, "edited", grid), mask)
    assert mrml_io.segment_ids(seg) == ["edited"]


def test_array_to_volume_round_trips_and_updates_in_place(scene, oblique_volume):
    grid = Grid.from_volume(oblique_volume)
    data = np.random.default_rng(0).random(SHAPE).astype(np.float32)
    node = mrml_io.array_to_volume(scene, data, grid, name="out")
    assert node.IsA("vtkMRMLScalarVolumeNode") and node.GetDisplayNode() is not None
    np.testing.assert_array_equal(mrml_io.volume_array(node), data)
    np.testing.assert_array_equal(slicer.util.arrayFromVolume(node), data)
    assert Grid.from_volume(node).same_as(grid)
    same = mrml_io.array_to_volume(scene, data * 2, grid, node=node)
    assert same is node
    np.testing.assert_array_equal(mrml_io.volume_array(node), data * 2)
    labels = mrml_io.array_to_volume(scene, data > 0.5, grid, labelmap=True)
    assert labels.IsA("vtkMRMLLabelMapVolumeNode")
    assert mrml_io.volume_array(labels).dtype == np.uint8
    with pytest.raises(ValueError, match="does not match the grid shape"):
        mrml_io.array_to_volume(scene, data[1:], grid)
    with pytest.raises(ValueError, match="integer voxels"):
        mrml_io.array_to_volume(scene, data, grid, labelmap=True)


def test_polyline_is_gap_free_and_hits_its_vertices(oblique_volume):
    grid = Grid.from_volume(oblique_volume)
    vertices_ijk = np.array([[1, 1, 1], [18, 3, 2], [10, 14, 10]])
    mask = mrml_io.polyline_to_mask(ijk_to_ras(oblique_volume, vertices_ijk), grid)
    for i, j, k in vertices_ijk:
        assert mask[k, j, i]
    # a straight run along i is exactly the voxels between its ends
    run = mrml_io.polyline_to_mask(ijk_to_ras(oblique_volume, [[2, 5, 4], [12, 5, 4]]), grid)
    assert run.sum() == 11 and run[4, 5, 2:13].all()
    # gap-free: the voxels are one 26-connected piece
    from scipy import ndimage

    _, pieces = ndimage.label(mask, structure=np.ones((3, 3, 3)))
    assert pieces == 1


def test_polyline_outside_points_are_dropped_with_a_warning(oblique_volume):
    grid = Grid.from_volume(oblique_volume)
    with pytest.warns(UserWarning, match="outside the voxel grid"):
        mask = mrml_io.polyline_to_mask(ijk_to_ras(oblique_volume, [[5, 5, 5], [-10, 5, 5]]), grid)
    assert mask[5, 5, :6].all() and mask.sum() == 6


def test_curve_node_to_mask_with_parent_transform(scene):
    volume = make_volume(scene, SHAPE, spacing_ijk=(1.0, 1.0, 2.0))
    grid = Grid.from_volume(volume)
    curve = make_curve(scene, ijk_to_ras(volume, [[2, 3, 4], [9, 3, 4]]))
    mask = mrml_io.curve_to_mask(curve, grid)
    assert mask[4, 3, 2:10].all() and mask.sum() == 8
    shift = np.eye(4)
    shift[:3, 3] = (0.0, 2.0, 2.0)  # +2 voxels in j, +1 in k
    curve.SetAndObserveTransformNodeID(linear_transform(scene, shift).GetID())
    moved = mrml_io.curve_to_mask(curve, grid)
    assert moved[5, 5, 2:10].all() and moved.sum() == 8


def test_closed_curve_spline_and_point_lists(scene):
    volume = make_volume(scene, SHAPE)
    grid = Grid.from_volume(volume)
    square = ijk_to_ras(volume, [[3, 3, 5], [12, 3, 5], [12, 12, 5], [3, 12, 5]])
    closed = mrml_io.markups_to_mask(make_curve(scene, square, closed=True), grid)
    assert closed[5, 3:13, 3].all()  # the closing side
    spline = mrml_io.markups_to_mask(make_curve(scene, square, linear=False), grid)
    assert spline[5, 3, 3] and spline[5, 12, 3] and spline.sum() > 20
    points = scene.AddNewNodeByClass("vtkMRMLMarkupsFiducialNode")
    for p in square[:2]:
        points.AddControlPoint(*p)
    assert mrml_io.markups_to_mask(points, grid).sum() == 2
    empty = scene.AddNewNodeByClass("vtkMRMLMarkupsCurveNode")
    assert not mrml_io.markups_to_mask(empty, grid).any()
    with pytest.raises(ValueError, match="expected a markups node"):
        mrml_io.markups_to_mask(volume, grid)


def test_table_from_rows_round_trips_and_updates_in_place(scene):
    rows = [("dice", 0.5, ""), ("hd95", float("nan"), "mm"), ("count", 3, "voxels")]
    node = mrml_io.table_from_rows(scene, rows, name="metrics")
    assert node.GetNumberOfRows() == 3 and node.GetNumberOfColumns() == 3
    assert node.GetColumnName(0) == "Metric"
    got = mrml_io.table_rows(node)
    assert got[0] == ("dice", 0.5, "") and got[2] == ("count", 3.0, "voxels")
    assert np.isnan(got[1][1])
    again = mrml_io.table_from_rows(scene, rows[:1], node=node)
    assert again is node and node.GetNumberOfRows() == 1
    with pytest.raises(ValueError, match="needs 3 values"):
        mrml_io.table_from_rows(scene, [("dice", 1.0)])


def test_color_nodes_are_created_once(scene):
    distance = mrml_io.continuous_color_node(scene)
    assert distance is mrml_io.continuous_color_node(scene)
    labels = mrml_io.labels_color_node(scene, "regions", [("near", (1, 0.5, 0)), ("far", (0, 0.4, 1))])
    assert labels is mrml_io.labels_color_node(scene, "regions", [])
    assert labels.GetColorName(1) == "near" and labels.GetColorName(2) == "far"
    viridis = slicer.vtkMRMLColorTableNode()
    viridis.SetName("Viridis")
    scene.AddNode(viridis)
    assert mrml_io.continuous_color_node(scene) is viridis


def test_resampling_an_oblique_segment_agrees_with_vtk(scene, oblique_volume):
    """Nearest-neighbour resampling across a rotation: same voxels as vtkOrientedImageDataResample."""
    grid = Grid.from_volume(oblique_volume)
    mask = sphere(SHAPE, (6, 8, 10), 7.0, grid.array_spacing)
    seg, ids = make_segmentation(scene, oblique_volume, {"s": mask})
    target = Grid(
        (30, 34, 36),
        np.diag([0.7, 0.9, 1.1, 1.0])
        @ np.array([[1, 0, 0, -40.0], [0, 1, 0, -10.0], [0, 0, 1, 25.0], [0, 0, 0, 1]]),
    )
    ours = mrml_io.segment_mask(seg, ids["s"], target, allow_resample=True)
    source = slicer.vtkOrientedImageData()
    slicer.vtkSlicerSegmentationsModuleLogic.GetSegmentBinaryLabelmapRepresentation(
        seg, ids["s"], source, True
    )
    resampled = slicer.vtkOrientedImageData()
    assert slicer.vtkOrientedImageDataResample.ResampleOrientedImageToReferenceOrientedImage(
        source, target.to_oriented_image(allocate=False), resampled, False, False
    )
    e = resampled.GetExtent()
    theirs = np.zeros(target.shape, dtype=bool)
    theirs[e[4] : e[5] + 1, e[2] : e[3] + 1, e[0] : e[1] + 1] = (
        mrml_io.volume_array(
            mrml_io.array_to_volume(
                scene, mrml_io._image_array(resampled), Grid.from_oriented_image(resampled)
            )
        )
        > 0
    )
    assert ours.sum() > 100
    assert (ours != theirs).sum() <= 0.01 * ours.sum()  # ties at exact half-voxel distances may differ


def test_volume_and_node_masks(scene, oblique_volume):
    grid = Grid.from_volume(oblique_volume)
    mask = sphere(SHAPE, (6, 8, 10), 5.0, grid.array_spacing)
    labelmap = mrml_io.array_to_volume(scene, mask, grid, labelmap=True)
    np.testing.assert_array_equal(mrml_io.volume_mask(labelmap, grid), mask)
    np.testing.assert_array_equal(mrml_io.node_mask(labelmap, grid), mask)
    with pytest.raises(ValueError, match="needs a scalar or labelmap volume"):
        mrml_io.volume_mask(scene.AddNewNodeByClass("vtkMRMLTableNode"), grid)
    with pytest.raises(ValueError, match="is not set"):
        mrml_io.node_mask(None, grid)


def test_closed_surface_segment_is_converted_on_a_copy(scene):
    import vtk

    volume = make_volume(scene, (20, 20, 20), spacing_ijk=(1.0, 1.0, 1.0))
    seg = scene.AddNewNodeByClass("vtkMRMLSegmentationNode", "surface")
    seg.SetReferenceImageGeometryParameterFromVolumeNode(volume)
    source = vtk.vtkSphereSource()
    source.SetCenter(10.0, 10.0, 10.0)
    source.SetRadius(6.0)
    source.SetPhiResolution(40)
    source.SetThetaResolution(40)
    source.Update()
    seg.GetSegmentation().SetSourceRepresentationName("Closed surface")
    segment = slicer.vtkSegment()
    segment.SetName("ball")
    segment.AddRepresentation("Closed surface", source.GetOutput())
    seg.GetSegmentation().AddSegment(segment, "ball")
    mask = mrml_io.segment_mask(seg, "ball", Grid.from_volume(volume))
    expected = sphere((20, 20, 20), (10, 10, 10), 6.0)
    assert abs(int(mask.sum()) - int(expected.sum())) < 0.1 * expected.sum()
    assert (mask & expected).sum() > 0.9 * expected.sum()
    assert (
        seg.GetSegmentation().GetSegment("ball").GetRepresentation("Binary labelmap") is None
    )  # input untouched


def test_segmentation_parent_transforms(scene):
    import vtk

    volume = make_volume(scene, SHAPE, spacing_ijk=(1.0, 1.0, 2.0))
    grid = Grid.from_volume(volume)
    mask = sphere(SHAPE, (6, 8, 10), 4.0, grid.array_spacing)
    seg, ids = make_segmentation(scene, volume, {"s": mask})
    shift = np.eye(4)
    shift[:3, 3] = (3.0, 0.0, 2.0)  # +3 voxels along i, +1 along k
    seg.SetAndObserveTransformNodeID(linear_transform(scene, shift).GetID())
    np.testing.assert_array_equal(
        mrml_io.segment_mask(seg, ids["s"], grid), np.roll(mask, (1, 3), axis=(0, 2))
    )
    assert Grid.from_segmentation(seg).origin == pytest.approx((3.0, 0.0, 2.0))
    # a non-linear transform is refused with advice
    spline = vtk.vtkThinPlateSplineTransform()
    source, target = vtk.vtkPoints(), vtk.vtkPoints()
    for p in ((0, 0, 0), (20, 0, 0), (0, 20, 0), (0, 0, 20), (10, 10, 10)):
        source.InsertNextPoint(*p)
        target.InsertNextPoint(p[0] + (1.0 if p == (10, 10, 10) else 0.0), p[1], p[2])
    spline.SetSourceLandmarks(source)
    spline.SetTargetLandmarks(target)
    spline.SetBasisToR()
    warp = scene.AddNewNodeByClass("vtkMRMLTransformNode", "warp")
    warp.SetAndObserveTransformToParent(spline)
    seg.SetAndObserveTransformNodeID(warp.GetID())
    with pytest.raises(ValueError, match="non-linear transform .*harden"):
        mrml_io.segment_mask(seg, ids["s"], grid)
