"""End to end: the bundled sample case read by MRML storage nodes gives the numbers of ``losslab metrics``.

The files are read twice, by Slicer's volume storage node into MRML (then imported into a segmentation, as a
user would) and by ``losslab.io`` (SimpleITK) for the command-line report; both paths must agree.
"""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("slicer", reason="slicer-core is not installed (pip install slicer-core)")

import slicer  # noqa: E402
import slicer.util  # noqa: E402

from losslab import sample  # noqa: E402
from losslab.cli.metrics import compute_metrics  # noqa: E402
from losslab.io import read_image  # noqa: E402
from losslab.metrics import attention_map, editing_metric  # noqa: E402
from LossLabLib import SegmentationMetricsLogic, mrml_io  # noqa: E402

if not all((sample.SAMPLE_DIR / name).is_file() for name in sample.FILES.values()):
    pytest.skip("the bundled sample case is missing", allow_module_level=True)


def _load(scene, role, labelmap=True):
    node = scene.AddNewNodeByClass(
        "vtkMRMLLabelMapVolumeNode" if labelmap else "vtkMRMLScalarVolumeNode", role
    )
    storage = scene.AddNewNodeByClass("vtkMRMLVolumeArchetypeStorageNode")
    storage.SetFileName(str(sample.SAMPLE_DIR / sample.FILES[role]))
    assert storage.ReadData(node), f"reading {sample.FILES[role]} failed"
    return node


def test_sample_case_matches_the_command_line_report(scene):
    image = _load(scene, "image", labelmap=False)
    seg = scene.AddNewNodeByClass("vtkMRMLSegmentationNode", "sample")
    seg.SetReferenceImageGeometryParameterFromVolumeNode(image)
    ids = {}
    for role in ("reference", "compared", "initial", "cas"):
        count = seg.GetSegmentation().GetNumberOfSegments()
        assert slicer.vtkSlicerSegmentationsModuleLogic.ImportLabelmapToSegmentationNode(
            _load(scene, role), seg, ""
        )
        ids[role] = seg.GetSegmentation().GetNthSegmentID(count)
    scribble = _load(scene, "scribble")

    result = SegmentationMetricsLogic(scene).compute(
        seg,
        ids["reference"],
        seg,
        ids["compared"],
        initial_node=seg,
        initial_segment_id=ids["initial"],
        cas_node=seg,
        cas_segment_id=ids["cas"],
        scribble=scribble,
        sigma_mm=20.0,
    )
    files = {role: read_image(sample.SAMPLE_DIR / name) for role, name in sample.FILES.items()}
    report = compute_metrics(
        files["reference"],
        files["compared"],
        labels=[1],
        initial=files["initial"],
        scribble=files["scribble"],
        cas=files["cas"],
        sigma_mm=20.0,
    )
    row = report["rows"][0]
    for key in ("dice", "iou", "hd", "hd95", "assd"):
        assert result.metrics[key] == pytest.approx(row[key], rel=1e-6), key
    for region in ("overall", "near", "far", "no_editing", "cas_to_prediction"):
        ours, theirs = result.editing.stats[region], report["editing"][region]
        assert ours["count"] == theirs["count"], region
        assert ours["p95"] == pytest.approx(theirs["p95"], rel=1e-5, nan_ok=True), region
        assert ours["mean"] == pytest.approx(theirs["mean"], rel=1e-5, nan_ok=True), region
    spacing = files["reference"].geometry.array_spacing
    attention = attention_map(files["scribble"].array > 0, 20.0, spacing)
    d_map = editing_metric(
        files["cas"].array > 0, files["initial"].array > 0, files["compared"].array > 0, attention, spacing
    ).d_map
    np.testing.assert_array_equal(slicer.util.arrayFromVolume(result.distance_map_node), d_map)
    assert mrml_io.Grid.from_volume(result.distance_map_node).same_as(mrml_io.Grid.from_volume(image))
