"""SegmentationMetricsLogic on a real MRML scene, checked against losslab.metrics called on numpy arrays."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("slicer", reason="slicer-core is not installed (pip install slicer-core)")

import slicer  # noqa: E402
import slicer.util  # noqa: E402
from mrml_builders import ijk_to_ras, make_curve, make_segmentation, make_volume, oblique_directions, sphere  # noqa: E402

from losslab.metrics import attention_map, boundary, compare_masks, editing_metric  # noqa: E402
from LossLabLib import SegmentationMetricsLogic, mrml_io  # noqa: E402
from LossLabLib.mrml_io import Grid  # noqa: E402

SHAPE = (14, 22, 26)  # (k, j, i)
GEOMETRIES = {
    "anisotropic": dict(spacing_ijk=(1.0, 1.25, 2.0), origin=(0.0, 0.0, 0.0), directions=None),
    "oblique": dict(
        spacing_ijk=(0.9, 1.1, 1.7), origin=(-41.0, 17.5, 3.25), directions=oblique_directions(25)
    ),
}
SCRIBBLE_IJK = [(19, 6, 7), (19, 16, 7)]  # a straight run along j on slice k = 7, at i = 19


class Case:
    """Reference (CAS truth), initial and edited segments, a scribble, and the same data as numpy arrays."""

    def __init__(self, scene, geometry="anisotropic"):
        g = GEOMETRIES[geometry]
        self.volume = make_volume(scene, SHAPE, **g, name="image")
        self.spacing = tuple(reversed(g["spacing_ijk"]))  # (k, j, i)
        centre = (7, 11, 13)
        self.reference = sphere(SHAPE, centre, 9.0, self.spacing)
        self.initial = sphere(SHAPE, (7, 11, 11), 9.0, self.spacing)  # shifted 2 voxels along -i
        self.edited = sphere(SHAPE, (7, 11, 12), 9.0, self.spacing)  # half-way back
        self.seg, ids = make_segmentation(
            scene, self.volume, {"truth": self.reference, "initial": self.initial, "edited": self.edited}
        )
        self.ids = ids
        self.scribble_node = make_curve(scene, ijk_to_ras(self.volume, SCRIBBLE_IJK))
        self.scribble = np.zeros(SHAPE, dtype=bool)
        self.scribble[7, 6:17, 19] = True

    def compute(self, logic, **kwargs):
        args = dict(
            initial_node=self.seg,
            initial_segment_id=self.ids["initial"],
            scribble=self.scribble_node,
            sigma_mm=6.0,
        )
        args.update(kwargs)
        return logic.compute(self.seg, self.ids["truth"], self.seg, self.ids["edited"], **args)

    def expected(self, sigma_mm=6.0):
        attention = attention_map(self.scribble, sigma=sigma_mm, spacing=self.spacing)
        editing = editing_metric(boundary(self.reference), self.initial, self.edited, attention, self.spacing)
        return compare_masks(self.edited, self.reference, self.spacing), editing


def _rows_by_name(table_node):
    return {metric: (value, unit) for metric, value, unit in mrml_io.table_rows(table_node)}


@pytest.mark.parametrize("geometry", sorted(GEOMETRIES))
def test_table_and_maps_match_losslab_on_numpy(scene, geometry):
    case = Case(scene, geometry)
    result = case.compute(SegmentationMetricsLogic(scene))
    metrics, editing = case.expected()
    assert result.grid.same_as(Grid.from_volume(case.volume))
    assert result.metrics == pytest.approx(metrics)
    rows = _rows_by_name(result.table_node)
    assert rows["Dice"] == (pytest.approx(metrics["dice"]), "")
    assert rows["HD95"] == (pytest.approx(metrics["hd95"]), "mm")
    assert rows["ASSD"] == (pytest.approx(metrics["assd"]), "mm")
    assert rows["Reference voxels"] == (case.reference.sum(), "voxels")
    assert rows["Attention sigma"] == (6.0, "mm")
    assert rows["Scribble voxels"] == (11.0, "voxels")
    for region, label in (
        ("overall", "D overall"),
        ("near", "D near"),
        ("far", "D far"),
        ("no_editing", "No Editing"),
    ):
        stats = editing.stats[region]
        assert rows[f"{label} p95"] == (pytest.approx(stats["p95"], nan_ok=True), "mm")
        assert rows[f"{label} mean"] == (pytest.approx(stats["mean"], nan_ok=True), "mm")
        assert rows[f"{label} voxels"] == (stats["count"], "voxels")
    assert editing.stats["near"]["count"] > 0 and editing.stats["far"]["count"] > 0  # the case is not trivial

    d_node = result.distance_map_node
    assert d_node.IsA("vtkMRMLScalarVolumeNode") and not d_node.IsA("vtkMRMLLabelMapVolumeNode")
    assert Grid.from_volume(d_node).same_as(result.grid)
    np.testing.assert_array_equal(slicer.util.arrayFromVolume(d_node), editing.d_map)  # NaN off-contour kept
    display = d_node.GetDisplayNode()
    assert display.GetColorNode() is not None and display.GetApplyThreshold()
    assert display.GetLowerThreshold() == 0 and display.GetUpperThreshold() == pytest.approx(
        np.nanmax(editing.d_map)
    )

    regions = slicer.util.arrayFromVolume(result.regions_node)
    assert result.regions_node.IsA("vtkMRMLLabelMapVolumeNode")
    assert Grid.from_volume(result.regions_node).same_as(result.grid)
    defined = ~np.isnan(editing.d_map)
    np.testing.assert_array_equal(regions == 1, defined & editing.near)
    np.testing.assert_array_equal(regions == 2, defined & ~editing.near)
    assert result.regions_node.GetDisplayNode().GetColorNode().GetColorName(1) == "near"


def test_inputs_are_untouched(scene):
    case = Case(scene)
    before = {
        "seg": case.seg.GetMTime(),
        "curve": case.scribble_node.GetMTime(),
        "volume": case.volume.GetMTime(),
        "arrays": {
            k: slicer.util.arrayFromSegmentBinaryLabelmap(case.seg, v, case.volume)
            for k, v in case.ids.items()
        },
    }
    case.compute(SegmentationMetricsLogic(scene), reference_volume=case.volume)
    assert case.seg.GetMTime() == before["seg"]
    assert case.scribble_node.GetMTime() == before["curve"]
    assert case.volume.GetMTime() == before["volume"]
    for name, segment_id in case.ids.items():
        np.testing.assert_array_equal(
            slicer.util.arrayFromSegmentBinaryLabelmap(case.seg, segment_id, case.volume),
            before["arrays"][name],
        )


def test_rerun_updates_the_given_output_nodes(scene):
    case = Case(scene)
    logic = SegmentationMetricsLogic(scene)
    first = case.compute(logic)
    count = scene.GetNumberOfNodes()
    second = case.compute(
        logic,
        sigma_mm=3.0,
        output_table=first.table_node,
        output_distance_map=first.distance_map_node,
        output_regions=first.regions_node,
    )
    assert scene.GetNumberOfNodes() == count
    assert second.table_node is first.table_node
    assert second.distance_map_node is first.distance_map_node and second.regions_node is first.regions_node
    _, editing = case.expected(sigma_mm=3.0)
    np.testing.assert_array_equal(slicer.util.arrayFromVolume(second.distance_map_node), editing.d_map)
    assert _rows_by_name(second.table_node)["Attention sigma"][0] == 3.0


def test_overlap_only_without_initial_and_scribble(scene):
    case = Case(scene)
    result = SegmentationMetricsLogic(scene).compute(
        case.seg, case.ids["truth"], case.seg, case.ids["edited"]
    )
    assert result.editing is None and result.distance_map_node is None and result.regions_node is None
    assert [row[0] for row in mrml_io.table_rows(result.table_node)] == [
        "Dice",
        "IoU",
        "Hausdorff distance",
        "HD95",
        "ASSD",
        "Reference voxels",
        "Compared voxels",
    ]


def test_progress_is_reported_up_to_one(scene):
    case = Case(scene)
    calls = []
    case.compute(SegmentationMetricsLogic(scene, progress=lambda f, m: calls.append((f, m))))
    fractions = [f for f, _ in calls]
    assert fractions == sorted(fractions) and fractions[0] == 0.0 and fractions[-1] == 1.0
    assert all(isinstance(m, str) and m for _, m in calls)


def test_segmentations_on_another_grid_need_a_reference_volume(scene):
    case = Case(scene)
    other_volume = make_volume(scene, (10, 12, 14), spacing_ijk=(1.5, 1.5, 1.5), origin=(0.3, 0.0, 0.0))
    other, other_ids = make_segmentation(
        scene, other_volume, {"pred": sphere((10, 12, 14), (5, 6, 7), 6.0, (1.5, 1.5, 1.5))}, name="other"
    )
    logic = SegmentationMetricsLogic(scene)
    with pytest.raises(
        ValueError, match=r"compared segment 'pred' of .*different voxel grid.*reference volume"
    ):
        logic.compute(case.seg, case.ids["truth"], other, other_ids["pred"])
    result = logic.compute(
        case.seg, case.ids["truth"], other, other_ids["pred"], reference_volume=case.volume
    )
    assert result.resampled == ["other / pred"]
    assert 0 < result.metrics["dice"] < 1


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(scribble=None), "needs both the initial segment and the scribble"),
        (dict(initial_node=None, initial_segment_id=None), "needs both the initial segment and the scribble"),
        (dict(initial_segment_id="missing"), r"initial segment 'missing' is not in"),
        (dict(sigma_mm=0.0), "sigma_mm must be a positive number"),
        (dict(sigma_mm=float("nan")), "sigma_mm must be a positive number"),
    ],
)
def test_invalid_editing_inputs_are_clear_errors(scene, kwargs, message):
    case = Case(scene)
    count = scene.GetNumberOfNodes()
    with pytest.raises(ValueError, match=message):
        case.compute(SegmentationMetricsLogic(scene), **kwargs)
    assert scene.GetNumberOfNodes() == count  # nothing half-written


def test_invalid_segments_and_outputs_are_clear_errors(scene):
    case = Case(scene)
    logic = SegmentationMetricsLogic(scene)
    with pytest.raises(ValueError, match=r"reference segment 'nope' is not in .*available segments"):
        logic.compute(case.seg, "nope", case.seg, case.ids["edited"])
    with pytest.raises(ValueError, match="compared segment: choose a segmentation and a segment"):
        logic.compute(case.seg, case.ids["truth"], None, "")
    with pytest.raises(ValueError, match="output_table must be a vtkMRMLTableNode"):
        logic.compute(case.seg, case.ids["truth"], case.seg, case.ids["edited"], output_table=case.volume)
    labelmap = scene.AddNewNodeByClass("vtkMRMLLabelMapVolumeNode")
    with pytest.raises(ValueError, match="output_distance_map must be a vtkMRMLScalarVolumeNode"):
        case.compute(logic, output_distance_map=labelmap)
    with pytest.raises(ValueError, match="output_distance_map is the reference volume"):
        case.compute(logic, reference_volume=case.volume, output_distance_map=case.volume)
    with pytest.raises(ValueError, match="needs the MRML scene"):
        SegmentationMetricsLogic(None)


def test_scribble_off_the_grid_is_a_clear_error(scene):
    case = Case(scene)
    far_away = make_curve(scene, ijk_to_ras(case.volume, [(100, 100, 100), (120, 100, 100)]), name="far")
    with pytest.raises(ValueError, match="has no voxel on the comparison grid"), pytest.warns(UserWarning):
        case.compute(SegmentationMetricsLogic(scene), scribble=far_away)


def test_outputs_round_trip_through_storage_nodes(scene, tmp_path):
    sitk = pytest.importorskip("SimpleITK")
    slicerio = pytest.importorskip("slicerio")
    case = Case(scene, "oblique")
    result = case.compute(SegmentationMetricsLogic(scene))

    def save(node, storage_class, filename):
        storage = scene.AddNewNodeByClass(storage_class)
        storage.SetFileName(str(tmp_path / filename))
        assert storage.WriteData(node), f"writing {filename} failed"
        return tmp_path / filename

    d_path = save(result.distance_map_node, "vtkMRMLVolumeArchetypeStorageNode", "d_map.nrrd")
    image = sitk.ReadImage(str(d_path))
    np.testing.assert_array_equal(
        sitk.GetArrayFromImage(image), slicer.util.arrayFromVolume(result.distance_map_node)
    )
    assert image.GetSpacing() == pytest.approx(result.grid.spacing_ijk)
    # SimpleITK is LPS: flip R and A of the RAS origin
    origin_ras = result.grid.origin
    assert image.GetOrigin() == pytest.approx((-origin_ras[0], -origin_ras[1], origin_ras[2]))

    r_path = save(result.regions_node, "vtkMRMLVolumeArchetypeStorageNode", "regions.nrrd")
    np.testing.assert_array_equal(
        sitk.GetArrayFromImage(sitk.ReadImage(str(r_path))), slicer.util.arrayFromVolume(result.regions_node)
    )

    s_path = save(case.seg, "vtkMRMLSegmentationStorageNode", "segments.seg.nrrd")
    segmentation = slicerio.read_segmentation(str(s_path))
    for name, expected in (("truth", case.reference), ("edited", case.edited)):
        voxels = slicerio.extract_segments(segmentation, [(name, 1)])["voxels"]  # (i, j, k), maybe cropped
        assert voxels.sum() == expected.sum()

    t_path = save(result.table_node, "vtkMRMLTableStorageNode", "metrics.tsv")
    lines = t_path.read_text().splitlines()
    assert lines[0].split("\t") == ["Metric", "Value", "Unit"] and lines[1].startswith("Dice\t")


def test_generated_example_and_parameter_node_glue(scene):
    """What the module's self-test and Apply button do, with a stand-in for the parameter node."""
    import types

    from LossLabLib import create_editing_example

    example = create_editing_example(scene)
    seg = example["segmentation"]
    assert mrml_io.segment_ids(seg) == ["truth", "initial", "edited"]
    assert mrml_io.markups_to_mask(example["scribble"], example["grid"]).sum() == 7
    params = types.SimpleNamespace(
        referenceSegmentation=seg,
        referenceSegmentId="truth",
        comparedSegmentation=seg,
        comparedSegmentId="edited",
        referenceVolume=None,
        initialSegmentation=seg,
        initialSegmentId="initial",
        scribble=example["scribble"],
        sigmaMm=5.0,
        outputTable=None,
        outputDistanceMap=None,
        outputRegions=None,
    )
    logic = SegmentationMetricsLogic(scene)
    result = logic.compute_from_parameters(params)
    assert 0.5 < result.metrics["dice"] < 1.0
    assert result.editing.stats["near"]["count"] > 0 and result.editing.stats["far"]["count"] > 0
    # the edit moved the contour towards the truth near the scribble: D near < No Editing
    assert result.editing.stats["near"]["mean"] < result.editing.stats["no_editing"]["mean"]
    assert params.outputTable is result.table_node and params.outputDistanceMap is result.distance_map_node
    count = scene.GetNumberOfNodes()
    assert logic.compute_from_parameters(params).regions_node is params.outputRegions
    assert scene.GetNumberOfNodes() == count
    params.initialSegmentation = params.scribble = None  # overlap only: the editing outputs stay as they are
    assert logic.compute_from_parameters(params).distance_map_node is None
    assert params.outputDistanceMap is result.distance_map_node


def test_cas_segment_and_scribble_as_segment_or_labelmap(scene):
    """Sparse CAS contours as their own segment; the scribble as a segment or a labelmap: same D as on numpy."""
    case = Case(scene)
    cas = boundary(case.reference)
    cas[::3] = False  # only every third k-slice has contours, as the sparse ICE frames
    scribble_seg, scribble_ids = make_segmentation(
        scene, case.volume, {"cas": cas, "scribble": case.scribble}, "extra"
    )
    attention = attention_map(case.scribble, sigma=6.0, spacing=case.spacing)
    expected = editing_metric(cas, case.initial, case.edited, attention, case.spacing)
    logic = SegmentationMetricsLogic(scene)
    as_segment = case.compute(
        logic,
        scribble=scribble_seg,
        scribble_segment_id=scribble_ids["scribble"],
        cas_node=scribble_seg,
        cas_segment_id=scribble_ids["cas"],
    )
    np.testing.assert_array_equal(as_segment.editing.d_map, expected.d_map)
    assert _rows_by_name(as_segment.table_node)["CAS contour voxels"] == (cas.sum(), "voxels")
    labelmap = mrml_io.array_to_volume(scene, case.scribble, Grid.from_volume(case.volume), labelmap=True)
    as_labelmap = case.compute(
        logic, scribble=labelmap, cas_node=scribble_seg, cas_segment_id=scribble_ids["cas"]
    )
    np.testing.assert_array_equal(as_labelmap.editing.d_map, expected.d_map)
    # the curve gives the same scribble voxels as the mask
    as_curve = case.compute(logic, cas_node=scribble_seg, cas_segment_id=scribble_ids["cas"])
    np.testing.assert_array_equal(as_curve.editing.d_map, expected.d_map)
    with pytest.raises(ValueError, match="scribble must be a markups curve, a segment or a labelmap"):
        case.compute(logic, scribble=as_curve.table_node)
