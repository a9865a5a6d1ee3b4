"""ICEEditingLib on real MRML: an ICE case loaded into a scene (from files or memory), frames placed by their
poses, a slice view aligned with an oblique frame, and scribbles drawn in axial, sagittal, coronal and the
frame-aligned view mapping to the same voxels."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("slicer", reason="slicer-core is not installed (pip install slicer-core)")

import slicer  # noqa: E402
import vtk  # noqa: E402
from ice_helpers import small_case  # noqa: E402
from scipy import ndimage  # noqa: E402

from ICEEditingLib import effect, sample_data  # noqa: E402
from ICEEditingLib import scene as ice_scene  # noqa: E402
from ICEEditingLib.scribble import slice_xy_to_ras, stroke_to_voxels  # noqa: E402
from losslab import ice  # noqa: E402
from LossLabLib import mrml_io  # noqa: E402

# Slicer's standard SliceToRAS rotations (x, y, normal as columns)
ORIENTATIONS = {
    "axial": [[-1, 0, 0], [0, 1, 0], [0, 0, 1]],
    "sagittal": [[0, 0, 1], [-1, 0, 0], [0, 1, 0]],
    "coronal": [[-1, 0, 0], [0, 0, 1], [0, 1, 0]],
}


@pytest.fixture(scope="module")
def case():
    return small_case(seed=3)


def _matrix(array):
    m = vtk.vtkMatrix4x4()
    for r in range(4):
        for c in range(4):
            m.SetElement(r, c, float(array[r][c]))
    return m


def _slice_node(scene, slice_to_ras, pixels=(512, 512), fov_mm=150.0):
    node = scene.AddNewNodeByClass("vtkMRMLSliceNode")
    node.SetLayoutName("Red")
    node.SetDimensions(pixels[0], pixels[1], 1)
    node.SetFieldOfView(fov_mm, fov_mm * pixels[1] / pixels[0], 1.0)
    node.GetSliceToRAS().DeepCopy(_matrix(slice_to_ras))
    node.UpdateMatrices()
    return node


def _xy_to_ras_matrix(node):
    m = node.GetXYToRAS()
    return np.array([[m.GetElement(r, c) for c in range(4)] for r in range(4)])


def _within_one_voxel(a: np.ndarray, b: np.ndarray) -> bool:
    """Every voxel of each mask has a voxel of the other within one voxel (26-neighbourhood)."""
    grow = np.ones((3, 3, 3), bool)
    return bool(np.all(ndimage.binary_dilation(b, grow)[a]) and np.all(ndimage.binary_dilation(a, grow)[b]))


def test_a_case_folder_loads_with_its_geometry(mrml, case, tmp_path):
    ice.write_case(case, tmp_path / "case")
    progress = []
    sc = ice_scene.load_case(mrml.scene, tmp_path / "case", progress=lambda f, m: progress.append((f, m)))
    assert progress[0][0] == 0.0 and progress[-1][0] == pytest.approx(1.0)
    assert [f for f, _ in progress] == sorted(f for f, _ in progress)
    assert sc.folder == tmp_path / "case" and sc.grid.shape == case.grid.shape
    np.testing.assert_allclose(mrml_io.volume_array(sc.volume_node), case.image)
    assert sc.datamask_node.IsA("vtkMRMLLabelMapVolumeNode")
    assert np.array_equal(mrml_io.volume_array(sc.datamask_node) > 0, case.datamask)
    # every voxel centre of the volume is where losslab.ice says (RAS through the files' LPS geometry)
    kji = np.array([[0, 0, 0], [3, 5, 7], [case.grid.shape[0] - 1, 2, 9]], float)
    expected = (np.c_[kji, np.ones(3)] @ case.grid.index_to_ras().T)[:, :3]
    ijk = kji[:, ::-1]
    np.testing.assert_allclose((np.c_[ijk, np.ones(3)] @ sc.grid.ijk_to_ras.T)[:, :3], expected, atol=1e-4)
    assert np.array_equal(
        mrml_io.segment_mask(sc.cas_segmentation, ice_scene.CAS_SEGMENT_ID, sc.grid), case.cas_mask()
    )
    # frames: one volume each, its IJK-to-RAS is the pose, its voxels the frame image
    assert len(sc.frame_volumes) == len(case.frames)
    for f in (0, len(case.frames) // 2):
        node = sc.frame_volumes[f]
        matrix = vtk.vtkMatrix4x4()
        node.GetIJKToRASMatrix(matrix)
        got = np.array([[matrix.GetElement(r, c) for c in range(4)] for r in range(4)])
        np.testing.assert_allclose(got, case.frames[f].pose, atol=1e-5)
        assert ice_scene.frame_of_node(node) == f
        np.testing.assert_array_equal(
            mrml_io.volume_array(node)[0], np.rint(np.clip(case.frames[f].image, 0, 1) * 255).astype(np.uint8)
        )
    # CAS curves: one per polyline, on the frame's CAS voxels to within one voxel
    for f in sc.frames_with_contours()[:5]:
        curves = sc.cas_curves[f]
        assert len(curves) == sum(len(c) >= 2 for c in case.frames[f].contours)
        voxels = np.zeros(case.grid.shape, bool)
        for curve in curves:
            assert ice_scene.frame_of_node(curve) == f
            voxels |= mrml_io.markups_to_mask(curve, sc.grid)
        assert _within_one_voxel(voxels, case.cas_mask(f))


def test_y_init_from_a_mask_and_errors(mrml, case, tmp_path):
    sc = ice_scene.load_case(mrml.scene, case, cas_curves=False, frame_volumes=False)
    seg, sid = ice_scene.initial_from_mask(mrml.scene, sc, case.label)
    assert np.array_equal(mrml_io.segment_mask(seg, sid, sc.grid), case.label.astype(bool))
    with pytest.raises(ValueError, match="shape"):
        ice_scene.initial_from_mask(mrml.scene, sc, case.label[:-1])
    # a loaded segmentation on another grid (half the spacing, shifted by half a voxel of it): resampled
    from mrml_builders import make_volume

    fine_grid = mrml_io.Grid(
        tuple(2 * n for n in case.grid.shape),
        sc.grid.ijk_to_ras
        @ np.diag([0.5, 0.5, 0.5, 1.0])
        @ np.array([[1, 0, 0, -0.5], [0, 1, 0, -0.5], [0, 0, 1, -0.5], [0, 0, 0, 1]], float),
    )
    fine_mask = mrml_io.mask_on_grid(case.label.astype(bool), sc.grid, fine_grid, allow_resample=True)
    fine_volume = make_volume(mrml.scene, fine_grid.shape, fine_grid.spacing_ijk, fine_grid.origin)
    loaded = mrml.scene.AddNewNodeByClass("vtkMRMLSegmentationNode")
    loaded.SetReferenceImageGeometryParameterFromVolumeNode(fine_volume)
    mrml_io.set_segment_from_mask(loaded, "LA", fine_mask, fine_grid)
    from ice_helpers import rule_model

    from ICEEditingLib.session import ICEEditingSession

    with pytest.raises(ValueError, match="initial_from_segmentation"):
        ICEEditingSession(mrml.scene, loaded, "LA", sc.volume_node, rule_model("grow")).current_mask()
    seg2, sid2 = ice_scene.initial_from_segmentation(mrml.scene, sc, loaded, "LA")
    assert sid2 == "LA" and seg2 is not loaded
    assert np.array_equal(mrml_io.segment_mask(seg2, sid2, sc.grid), case.label.astype(bool))
    with pytest.raises(FileNotFoundError, match="not an ICE case folder"):
        ice_scene.load_case(mrml.scene, tmp_path)
    with pytest.raises(IndexError, match="frames 0.."):
        ice_scene.frame_slice_to_ras(case, len(case.frames))


def test_the_red_view_aligns_with_an_oblique_frame(mrml, case):
    sc = ice_scene.load_case(mrml.scene, case, cas_curves=False)
    f = len(case.frames) // 3
    node = _slice_node(mrml.scene, np.eye(4), pixels=(400, 300))
    composite = mrml.scene.AddNewNodeByClass("vtkMRMLSliceCompositeNode")
    matrix = ice_scene.align_slice_node(node, sc, f, composite)
    pose = case.frames[f].pose
    normal = pose[:3, 2] / np.linalg.norm(pose[:3, 2])
    assert abs(abs(matrix[:3, 2] @ normal) - 1) < 1e-9  # the view's normal is the frame's
    assert np.linalg.det(matrix[:3, :3]) == pytest.approx(1.0)
    assert abs(normal @ [1, 0, 0]) < 0.999 and abs(normal @ [0, 0, 1]) < 0.999  # oblique to the grid
    # every pixel of the view lies in the frame's plane; the view's centre is the fan's centre
    xy_to_ras = _xy_to_ras_matrix(node)
    corners = np.array([[0, 0, 0, 1], [399, 0, 0, 1], [0, 299, 0, 1], [200, 150, 0, 1]], float) @ xy_to_ras.T
    plane = np.linalg.inv(pose) @ corners.T  # frame pixel (u, v, w): w is mm off the plane
    np.testing.assert_allclose(plane[2], 0, atol=1e-6)
    centre_uv = plane[:2, 3]
    np.testing.assert_allclose(centre_uv, [case.sector.apex_pixel[0], (case.sector.rows - 1) / 2], atol=1.0)
    # the apex is up: v (depth) grows downwards on the screen (y decreasing)
    assert plane[1, 2] < plane[1, 0]
    fov = node.GetFieldOfView()
    assert fov[0] >= case.sector.cols * case.sector.pixel_mm - 1e-6
    assert fov[1] >= case.sector.rows * case.sector.pixel_mm - 1e-6
    assert composite.GetBackgroundVolumeID() == sc.frame_volumes[f].GetID()


def _drawn(node, points_ras, follow: bool) -> np.ndarray:
    """RAS of a stroke drawn along ``points_ras`` in a slice view: each point to its mouse pixel (rounded to
    an integer, as a mouse event) and back through xyToRas. ``follow``: the view scrolls to pass through
    each point first (drawing an oblique contour in an axis-aligned view); else the view stays put."""
    out = []
    for p in points_ras:
        if follow:
            m = node.GetSliceToRAS()
            for r in range(3):
                m.SetElement(r, 3, float(p[r]))
            node.UpdateMatrices()
        xy = (np.linalg.inv(_xy_to_ras_matrix(node)) @ np.r_[p, 1.0])[:2]
        out.append(slice_xy_to_ras(node, np.round(xy))[0])
    return np.array(out)


@pytest.mark.parametrize("view", ["axial", "sagittal", "coronal", "frame"])
def test_a_scribble_along_a_cas_contour_maps_to_the_same_voxels_in_any_view(mrml, case, view):
    sc = ice_scene.load_case(mrml.scene, case, cas_curves=False)
    f = sc.frames_with_contours()[len(sc.frames_with_contours()) // 2]
    line = max(case.frames[f].contours, key=len)
    points = ice_scene.frame_points_ras(case, f, line[:: max(1, len(line) // 40)])  # a stroke's ~40 events
    reference = stroke_to_voxels(points, sc.grid)
    if view == "frame":
        node = _slice_node(mrml.scene, np.eye(4))
        ice_scene.align_slice_node(node, sc, f)
        drawn = _drawn(node, points, follow=False)  # the whole stroke in one slice: the frame's
    else:
        node = _slice_node(mrml.scene, np.r_[np.c_[ORIENTATIONS[view], np.zeros(3)], [[0, 0, 0, 1]]])
        drawn = _drawn(node, points, follow=True)
    voxels = stroke_to_voxels(drawn, sc.grid)
    assert _within_one_voxel(voxels, reference)
    # and the frame's own CAS voxels (the simulator's rasterisation of the same polyline)
    frame_voxels = np.zeros(case.grid.shape, bool)
    frame_voxels.ravel()[
        ice.polylines_to_voxels(
            [line], case.frames[f].pixel_to_index_matrix(case.grid), case.grid.shape, 0.25
        )
    ] = True
    assert _within_one_voxel(voxels, frame_voxels)
    # no gaps: the scribble's voxels form one 26-connected piece
    assert ndimage.label(voxels, np.ones((3, 3, 3)))[1] == 1
    if view == "frame":
        assert effect.frame_of_stroke(mrml.scene, drawn) == f


def test_strokes_have_no_gaps_and_outside_points_are_refused(mrml, case):
    sc = ice_scene.load_case(mrml.scene, case, cas_curves=False, frame_volumes=False)
    ijk_to_ras = sc.grid.ijk_to_ras
    far_apart = (np.array([[2, 3, 4, 1], [30, 20, 10, 1]], float) @ ijk_to_ras.T)[:, :3]
    voxels = stroke_to_voxels(far_apart, sc.grid)  # two mouse events 28 voxels apart
    assert ndimage.label(voxels, np.ones((3, 3, 3)))[1] == 1 and voxels[4, 3, 2] and voxels[10, 20, 30]
    assert np.count_nonzero(voxels) >= 28
    with pytest.raises(ValueError, match="outside the ICE volume"):
        stroke_to_voxels([[900.0, 0, 0], [901.0, 0, 0]], sc.grid)
    with pytest.raises(ValueError, match="no point"):
        stroke_to_voxels(np.zeros((0, 3)), sc.grid)


def test_the_bundled_sample_is_verified_and_loads(mrml, tmp_path):
    folder = sample_data.verify_sample()
    sc = sample_data.load_sample(mrml.scene, cas_curves=False, frame_volumes=False)
    assert sc.grid.shape == (64, 64, 64) and sc.folder == folder
    np.testing.assert_allclose(sc.grid.spacing_ijk, (2.2048,) * 3, rtol=1e-6)  # the shipped models' grid
    source = sample_data.sample_data_source("icon.png")
    assert source["checksums"] == "SHA256:" + sample_data.SAMPLE_CHECKSUMS["image.nii.gz"]
    assert source["uris"].startswith("file://") and source["uris"].endswith("image.nii.gz")
    # a corrupted copy is refused, naming the file
    import shutil

    copy = tmp_path / "copy"
    shutil.copytree(folder, copy)
    (copy / "cas.nii.gz").write_bytes(b"corrupt")
    with pytest.raises(ValueError, match="cas.nii.gz has SHA-256"):
        sample_data.verify_sample(copy)
    assert slicer.vtkMRMLScene  # the real MRML, not a stand-in


def test_a_user_curve_on_a_frame_is_attributed_to_that_frame(mrml, case):
    from ice_helpers import rule_model
    from mrml_builders import make_curve

    from ICEEditingLib.session import ICEEditingSession

    sc = ice_scene.load_case(mrml.scene, case, cas_curves=False)
    seg, sid = ice_scene.initial_from_mask(mrml.scene, sc, case.label)
    session = ICEEditingSession(mrml.scene, seg, sid, sc.volume_node, rule_model("grow"))
    f = len(case.frames) // 2
    uv = np.array(
        [[case.sector.apex_pixel[0] - 6, 18.0], [case.sector.apex_pixel[0] + 6, 24.0]]
    )  # ~50 mm deep
    on_frame = make_curve(mrml.scene, ice_scene.frame_points_ras(case, f, uv), name="drawn")
    assert session.edit_from_curve(on_frame).frame == f
    off = ice_scene.frame_points_ras(case, f, uv) + 5.0 * case.frames[f].pose[:3, 2]  # 5 mm off the plane
    assert session.edit_from_curve(make_curve(mrml.scene, off, name="off")).frame is None
