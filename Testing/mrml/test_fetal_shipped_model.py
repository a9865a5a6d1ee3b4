"""The shipped fetal ensemble (``fetal-leafdice-1.6mm``, in the package's registry) through FetalParcellationLib
on a real MRML scene: a held-out atlas volume (GA26_operated, one of the 4 test volumes no member saw) at
1.2 mm, another grid than the model's 1.6 mm, gives the 8 named, coloured tissue segments on the volume's grid,
the members' disagreement, and per-tissue Dice equal to ``losslab.metrics`` on the same arrays, above a floor
for every tissue; without a brain mask (the ensemble finds the brain itself) within 0.05 mean Dice of that."""

from __future__ import annotations

import warnings

import pytest

pytest.importorskip("slicer", reason="slicer-core is not installed (pip install slicer-core)")
pytest.importorskip("torch")

import slicer  # noqa: E402
from fetal_cases import array, load_volume, write_small_case  # noqa: E402

from FetalParcellationLib import ParcellationLogic, available_models, segments, tissue_metrics  # noqa: E402
from losslab import models  # noqa: E402
from losslab.labelsets import TISSUES  # noqa: E402
from losslab.metrics import compare_masks  # noqa: E402
from LossLabLib import mrml_io  # noqa: E402

SHIPPED = "fetal-leafdice-1.6mm"
HELD_OUT = "GA26_operated"


def test_the_shipped_ensemble_parcellates_a_held_out_atlas_volume(mrml, tmp_path, monkeypatch):
    monkeypatch.delenv(models.ENV_ROOT, raising=False)  # the package's own registry
    assert SHIPPED in available_models()
    card = models.get_card(SHIPPED)
    assert HELD_OUT in card.raw["metrics"]["cases"] and HELD_OUT not in card.raw["training"]["volumes"]
    f = write_small_case(HELD_OUT, tmp_path / HELD_OUT, spacing=1.2)
    scene = mrml.scene
    volume = load_volume(scene, f["srr"], "srr")
    mask = load_volume(scene, f["mask"], "mask", labelmap=True)
    result = ParcellationLogic(scene, device="cpu", work_folder=tmp_path).run(SHIPPED, volume, mask=mask)
    node = result.segmentation_node
    ids = mrml_io.segment_ids(node)
    assert [node.GetSegmentation().GetSegment(s).GetName() for s in ids] == [t.abbreviation for t in TISSUES]
    for sid, t in zip(ids, TISSUES):
        seg = node.GetSegmentation().GetSegment(sid)
        assert seg.GetColor() == pytest.approx(t.color_float)
        assert segments.segment_tissue(seg) == t
    assert result.info["members"] == 3 and result.uncertainty_node is not None
    reference = array(f["parcellation"])
    assert result.labels.shape == reference.shape  # on the volume's 1.2 mm grid, not the model's
    labelmap = load_volume(scene, f["parcellation"], "parcellation", labelmap=True)
    ref_node = scene.AddNewNodeByClass("vtkMRMLSegmentationNode", "reference")
    assert slicer.vtkSlicerSegmentationsModuleLogic.ImportLabelmapToSegmentationNode(labelmap, ref_node, "")
    table = tissue_metrics(scene, ref_node, node, reference_volume=volume)
    spacing = mrml_io.Grid.from_volume(volume).array_spacing
    for t in TISSUES:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # a tissue the model misses: empty-mask warnings
            direct = compare_masks(result.labels == t.label, reference == t.label, spacing=spacing)
        assert table.metrics[t.abbreviation]["dice"] == pytest.approx(direct["dice"], nan_ok=True)
    for t in TISSUES:  # the card's held-out figures are 60-95 % for every tissue
        assert table.metrics[t.abbreviation]["dice"] > 0.5, (t.abbreviation, table.metrics[t.abbreviation])
    with_mask = sum(table.metrics[t.abbreviation]["dice"] for t in TISSUES) / len(TISSUES)

    # without the mask: the same MRI, the brain found by the ensemble itself
    free = ParcellationLogic(scene, device="cpu", work_folder=tmp_path / "free").run(SHIPPED, volume)
    assert free.labels.shape == reference.shape
    scores = []
    for t in TISSUES:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            scores.append(
                compare_masks(free.labels == t.label, reference == t.label, spacing=spacing)["dice"]
            )
    assert sum(scores) / len(scores) > with_mask - 0.05, (scores, with_mask)
