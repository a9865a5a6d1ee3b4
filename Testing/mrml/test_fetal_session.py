"""The issue's session in a real scene: create the tissue segments, paint some tissues (labelmaps written into
segments with slicer.util), declare, validate, export -> the label-set map equals the core's for the same inputs
(and a second case added to the dataset equals losslab.labelsets.build_dataset's); save and reload the .seg.nrrd
with Slicer's storage node -> the declarations, names, colours and terminology survive; import back -> the same
segments, plus one "unannotated: ..." segment per set label."""

from __future__ import annotations

import json

import numpy as np
import pytest

pytest.importorskip("slicer", reason="slicer-core is not installed (pip install slicer-core)")

import slicer  # noqa: E402
import slicer.util  # noqa: E402
from fetal_cases import array, load_volume, write_small_case  # noqa: E402

from FetalParcellationLib import AnnotationSession, export_case, import_case, segments  # noqa: E402
from FetalParcellationLib.session import NOTHING_DECLARED  # noqa: E402
from losslab import io as _io  # noqa: E402
from losslab.labelsets import (  # noqa: E402
    TISSUES,
    PartialAnnotationError,
    build_dataset,
    check_partial_annotation,
    make_label_set_map,
)
from LossLabLib import mrml_io  # noqa: E402

CASE, CASE2 = "GA28_operated", "GA22_notoperated"
PAINTED = ["WM", "Vent", "Cer"]  # the released code's set 9 -> ECSF, CGM, DGM, BS, CC unannotated
PAINTED2 = ["WM", "Vent", "Cer", "ECSF", "CGM", "DGM"]  # not a released-code set: 12 -> BS, CC


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    base = tmp_path_factory.mktemp("fetal-cases")
    return {CASE: write_small_case(CASE, base / CASE), CASE2: write_small_case(CASE2, base / CASE2)}


def _paint(session, volume, parcellation, mask, painted):
    node = session.segmentation_node
    for name in painted:
        t = segments.tissue(name)
        slicer.util.updateSegmentBinaryLabelmapFromArray(
            (parcellation == t.label).astype(np.uint8), node, session.segment_id(name), volume
        )
    slicer.util.updateSegmentBinaryLabelmapFromArray(
        mask.astype(np.uint8), node, session.mask_segment_id, volume
    )


def _partial(parcellation, painted):
    labels = [segments.tissue(n).label for n in painted]
    return np.where(np.isin(parcellation, labels), parcellation, 0).astype(np.uint8)


def test_session_export_save_reload_import(scene, files, tmp_path):
    f = files[CASE]
    volume = load_volume(scene, f["srr"], "srr")
    parcellation, mask = array(f["parcellation"]), array(f["mask"]) != 0
    assert 25 <= min(parcellation.shape) and max(parcellation.shape) <= 48  # tiny volumes: 2 shared cores

    session = AnnotationSession.create(scene, volume)
    node = session.segmentation_node
    # 8 tissue segments with the paper's names, the core's colours and terminology; a brain mask segment
    assert len(mrml_io.segment_ids(node)) == 9
    for t in TISSUES:
        segment = node.GetSegmentation().GetSegment(session.segment_id(t.label))
        assert segment.GetName() == t.abbreviation
        assert segment.GetColor() == pytest.approx(t.color_float)
        assert segments.TERMINOLOGY[t.abbreviation][0] in segment.GetTerminology()
        assert not session.is_annotated(t.label)
    assert node.GetSegmentation().GetSegment(session.mask_segment_id).GetName() == "brain mask"
    assert session.annotated() == []
    assert session.problems() == [NOTHING_DECLARED, "the brain mask is empty (no non-zero voxel)"]

    _paint(session, volume, parcellation, mask, PAINTED + ["CGM"])
    session.set_declaration(PAINTED + ["CC"])  # CGM painted but not declared, CC declared but empty
    counts = session.voxel_counts()
    for t in TISSUES:
        painted = t.abbreviation in PAINTED + ["CGM"]
        assert counts[t.abbreviation] == (int((parcellation == t.label).sum()) if painted else 0)
    assert counts["mask"] == int(mask.sum())
    # validation: the core's messages, for the same arrays
    expected = check_partial_annotation(_partial(parcellation, PAINTED + ["CGM"]), mask, PAINTED + ["CC"])
    assert session.problems() == expected and len(expected) == 2
    assert "painted but not declared annotated: CGM (5)" in expected[0]
    with pytest.raises(PartialAnnotationError, match="declared annotated but with no painted voxel: CC"):
        export_case(session, tmp_path / "dataset", CASE)
    assert not (tmp_path / "dataset").exists()  # nothing written for an invalid session

    slicer.util.updateSegmentBinaryLabelmapFromArray(
        np.zeros(parcellation.shape, np.uint8), node, session.segment_id("CGM"), volume
    )
    session.set_annotated("CC", False)
    assert session.problems() == [] and session.annotated() == [1, 2, 3]

    # export: the label-set map equals the core's for the same inputs, on the MRI's grid
    result = export_case(session, tmp_path / "dataset", CASE)
    core_map, core_decl = make_label_set_map(_partial(parcellation, PAINTED), mask, PAINTED, case=CASE)
    np.testing.assert_array_equal(result.label_set_map, core_map)
    written = _io.read_image(result.label)
    np.testing.assert_array_equal(written.array, core_map)
    source = _io.read_image(f["srr"])
    assert not written.geometry.differences(source.geometry)
    np.testing.assert_array_equal(_io.read_image(result.image).array, source.array)
    np.testing.assert_array_equal(_io.read_image(result.mask).array, mask.astype(np.uint8))
    assert json.loads(result.declaration_file.read_text()) == core_decl.to_json()
    assert core_decl.set_label == 9

    # a second case added to the same dataset: dataset.json and maps equal build_dataset's on case folders
    f2 = files[CASE2]
    volume2 = load_volume(scene, f2["srr"], "srr2")
    parcellation2, mask2 = array(f2["parcellation"]), array(f2["mask"]) != 0
    session2 = AnnotationSession.create(scene, volume2)
    _paint(session2, volume2, parcellation2, mask2, PAINTED2)
    session2.set_declaration(PAINTED2)
    export_case(session2, tmp_path / "dataset", CASE2)
    with pytest.raises(ValueError, match="already in"):
        export_case(session2, tmp_path / "dataset", CASE2)
    cases = tmp_path / "cases"
    for cid, ff, parc, painted in ((CASE, f, parcellation, PAINTED), (CASE2, f2, parcellation2, PAINTED2)):
        _io.write_bytes(cases / cid / "srr.nii.gz", ff["srr"].read_bytes())
        _io.write_image(
            cases / cid / "partial.nii.gz", _partial(parc, painted), _io.read_image(ff["srr"]).geometry
        )
        _io.write_bytes(cases / cid / "mask.nii.gz", ff["mask"].read_bytes())
        (cases / cid / "annotation.json").write_text(json.dumps({"annotated": painted}))
    core_manifest = json.loads(build_dataset(cases, tmp_path / "core", progress=False).read_text())
    ours = json.loads((tmp_path / "dataset" / "dataset.json").read_text())
    assert ours["labels"] == core_manifest["labels"] and ours["label_sets"] == core_manifest["label_sets"]
    assert ours["label_sets"] == {"9": [4, 5, 6, 7, 8], "12": [7, 8]}
    assert {c["id"]: c["annotated"] for c in ours["cases"]} == {
        c["id"]: c["annotated"] for c in core_manifest["cases"]
    }
    assert ours["splits"]["train"] == [CASE, CASE2]
    for cid in (CASE, CASE2):
        np.testing.assert_array_equal(
            _io.read_image(tmp_path / "dataset" / "labels" / f"{cid}.nii.gz").array,
            _io.read_image(tmp_path / "core" / "labels" / f"{cid}.nii.gz").array,
        )
    from losslab.engine import load_manifest

    assert load_manifest(tmp_path / "dataset" / "dataset.json").label_sets == {9: [4, 5, 6, 7, 8], 12: [7, 8]}

    # save and reload the .seg.nrrd with Slicer's storage node: declarations (segment tags) survive
    path = tmp_path / "session.seg.nrrd"
    storage = scene.AddNewNodeByClass("vtkMRMLSegmentationStorageNode")
    storage.SetFileName(str(path))
    assert storage.WriteData(node)
    reloaded = scene.AddNewNodeByClass("vtkMRMLSegmentationNode", "reloaded")
    reader = scene.AddNewNodeByClass("vtkMRMLSegmentationStorageNode")
    reader.SetFileName(str(path))
    assert reader.ReadData(reloaded)
    again = AnnotationSession.open(scene, reloaded, volume)
    assert again.annotated() == [1, 2, 3]
    for t in TISSUES:
        segment = reloaded.GetSegmentation().GetSegment(again.segment_id(t.label))
        assert segment.GetName() == t.abbreviation and segment.GetColor() == pytest.approx(
            t.color_float, abs=1e-4
        )
        assert segment.GetTerminology() == segments.terminology_entry(t.abbreviation)
    np.testing.assert_array_equal(again.label_set_map(case=CASE)[0], core_map)
    assert again.problems() == []

    # import back: the same segments and declaration, and one "unannotated: ..." segment per set label
    imported = import_case(scene, tmp_path / "dataset", CASE)
    back = imported.session
    assert back.annotated() == session.annotated()
    grid = back.grid
    assert grid.same_as(session.grid)
    for label, m in session.tissue_masks().items():
        np.testing.assert_array_equal(back.tissue_masks(grid)[label], m)
    np.testing.assert_array_equal(back.brain_mask(grid), mask)
    np.testing.assert_array_equal(slicer.util.arrayFromVolume(imported.volume_node), source.array)
    assert list(imported.set_segments) == [9]
    unannotated = back.segmentation_node.GetSegmentation().GetSegment(imported.set_segments[9])
    assert unannotated.GetName() == "unannotated: ECSF, CGM, DGM, BS, CC"
    np.testing.assert_array_equal(
        mrml_io.segment_mask(back.segmentation_node, imported.set_segments[9], grid), core_map == 9
    )
    assert back.problems() == []  # the set segment is not a tissue: the session stays valid
    np.testing.assert_array_equal(back.label_set_map(case=CASE)[0], core_map)

    # a dataset built by the command line (losslab fetal build-dataset) imports as well
    from_core = import_case(scene, tmp_path / "core", CASE2).session
    assert from_core.annotated() == [1, 2, 3, 4, 5, 6]
    np.testing.assert_array_equal(from_core.partial_annotation()[0], _partial(parcellation2, PAINTED2))
    np.testing.assert_array_equal(from_core.brain_mask(), mask2)


def test_overlapping_paint_and_bad_inputs_are_named(scene, files, tmp_path):
    f = files[CASE]
    volume = load_volume(scene, f["srr"], "srr")
    parcellation, mask = array(f["parcellation"]), array(f["mask"]) != 0
    session = AnnotationSession.create(scene, volume)
    _paint(session, volume, parcellation, mask, ["WM"])
    slicer.util.updateSegmentBinaryLabelmapFromArray(
        (parcellation == 1).astype(np.uint8), session.segmentation_node, session.segment_id("CC"), volume
    )
    session.set_declaration(["WM", "CC"])
    problems = session.problems()
    assert problems and "painted both CC and WM" in problems[0]
    with pytest.raises(PartialAnnotationError, match="painted both"):
        session.label_set_map()
    with pytest.raises(ValueError, match="case id"):
        export_case(session, tmp_path / "d", "bad id/..")
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "dataset.json").write_text(json.dumps({"labels": ["background", "a"], "cases": []}))
    with pytest.raises(ValueError, match="not a fetal dataset"):
        export_case(session, tmp_path / "other", "c1")
    with pytest.raises(ValueError, match="segmentation node"):
        AnnotationSession(scene, volume)
    # an existing segmentation (e.g. a parcellation loaded from a label map) is completed, its segments kept
    labelmap = scene.AddNewNodeByClass("vtkMRMLLabelMapVolumeNode", "parc")
    mrml_io.array_to_volume(
        scene, parcellation.astype(np.uint8), mrml_io.Grid.from_volume(volume), node=labelmap, labelmap=True
    )
    existing = scene.AddNewNodeByClass("vtkMRMLSegmentationNode", "loaded")
    assert slicer.vtkSlicerSegmentationsModuleLogic.ImportLabelmapToSegmentationNode(labelmap, existing, "")
    adopted = AnnotationSession.create(scene, volume, segmentation_node=existing)
    assert adopted.voxel_counts()["BS"] == int((parcellation == 7).sum())
    assert len(mrml_io.segment_ids(existing)) == 9


def _stroke(editor_logic, node, segment_id, mask, grid):
    """A Segment Editor stroke: the editor logic's own ModifySegmentByLabelmap (masking and overwrite apply)."""
    image = grid.to_oriented_image()
    from vtk.util import numpy_support

    numpy_support.vtk_to_numpy(image.GetPointData().GetScalars())[:] = mask.astype(np.uint8).ravel()
    editor_logic.SetCurrentSegmentID(segment_id)
    editor_logic.ModifySegmentByLabelmap(
        node, segment_id, image, editor_logic.ModificationModeAdd, False, False
    )


def test_segment_editor_strokes_keep_the_brain_mask_whole(scene, files):
    f = files[CASE]
    volume = load_volume(scene, f["srr"], "srr")
    parcellation, mask = array(f["parcellation"]), array(f["mask"]) != 0
    session = AnnotationSession.create(scene, volume)
    grid = session.grid
    editor = slicer.vtkSlicerSegmentEditorLogic()
    editor.SetMRMLScene(scene)
    editor.SetMRMLApplicationLogic(slicer.app.applicationLogic())
    # Slicer's default: painting a tissue erases it from the other segments, the mask included
    default = scene.AddNewNodeByClass("vtkMRMLSegmentEditorNode")
    assert default.GetOverwriteMode() == default.OverwriteAllSegments
    editor.SetSegmentEditorNode(default)
    editor.SetSegmentationNode(session.segmentation_node)
    editor.SetSourceVolumeNode(volume)
    _stroke(editor, session.segmentation_node, session.mask_segment_id, mask, grid)
    _stroke(editor, session.segmentation_node, session.segment_id("WM"), parcellation == 1, grid)
    assert session.brain_mask().sum() == mask.sum() - (parcellation == 1).sum()
    session.set_declaration(["WM"])
    assert any("outside the brain mask" in p for p in session.problems())

    # prepared by the session: the editor points at it and lets segments overlap, so the mask stays whole
    session.write_segment(session.mask_segment_id, np.zeros_like(mask))
    session.write_segment(session.segment_id("WM"), np.zeros_like(mask))
    prepared = session.prepare_segment_editor()
    assert (
        prepared.GetSingletonTag() == "SegmentEditor"
        and prepared.GetOverwriteMode() == prepared.OverwriteNone
    )
    assert (
        prepared.GetSegmentationNode() is session.segmentation_node
        and prepared.GetSourceVolumeNode() is volume
    )
    assert session.prepare_segment_editor() is prepared  # the singleton is reused
    editor.SetSegmentEditorNode(prepared)
    editor.SetSegmentationNode(session.segmentation_node)
    editor.SetSourceVolumeNode(volume)
    _stroke(editor, session.segmentation_node, session.mask_segment_id, mask, grid)
    _stroke(editor, session.segmentation_node, session.segment_id("WM"), parcellation == 1, grid)
    np.testing.assert_array_equal(session.brain_mask(), mask)
    np.testing.assert_array_equal(session.tissue_masks()[1], parcellation == 1)
    assert session.problems() == []
