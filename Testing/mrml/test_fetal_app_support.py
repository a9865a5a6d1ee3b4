"""FetalParcellationLib behaviours the web app relies on (issue 20), on real MRML: an empty annotation is not
ready to export, what a replacement would lose in one line, tissues named in every problem, only fetal models
in the model menu, a parcellation saved as a .seg.nrrd with named tissues, and WM shown in a colour that
stands out on the MRI."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("slicer", reason="slicer-core is not installed (pip install slicer-core)")

from fetal_cases import array, load_volume, write_small_case  # noqa: E402

from FetalParcellationLib import AnnotationSession, available_models, export_case, save_parcellation  # noqa: E402
from FetalParcellationLib import segments as seg  # noqa: E402
from FetalParcellationLib.inference import ParcellationResult, is_fetal_model  # noqa: E402
from FetalParcellationLib.session import NOTHING_DECLARED  # noqa: E402
from losslab import io as _io  # noqa: E402
from losslab import models  # noqa: E402
from losslab.labelsets import LABEL_NAMES, TISSUES, PartialAnnotationError, tissue  # noqa: E402
from LossLabLib.mrml_io import Grid  # noqa: E402

CASE = "GA28_operated"


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    return write_small_case(CASE, tmp_path_factory.mktemp("fetal") / CASE)


@pytest.fixture
def session(scene, files):
    volume = load_volume(scene, files["srr"], "srr")
    s = AnnotationSession.create(scene, volume)
    s.write_segment(s.mask_segment_id, array(files["mask"]) > 0)
    return s


def test_an_empty_annotation_is_not_ready_to_export(session, tmp_path):
    """Issue 20 defect 9: a fresh load said "Ready to export" and exported label set 12 = every tissue."""
    assert session.problems() == [NOTHING_DECLARED]
    with pytest.raises(PartialAnnotationError, match="no tissue is declared annotated"):
        export_case(session, tmp_path / "dataset", "case01")
    assert not (tmp_path / "dataset").exists()  # nothing written


def test_the_work_a_replacement_would_lose_in_one_line(session, files):
    assert session.work_summary() is None  # the mask came from a file
    reference = array(files["parcellation"])
    session.write_segment(session.segment_id("Vent"), reference == tissue("Vent").label)
    session.set_annotated("Cer", True)
    n = int((reference == tissue("Vent").label).sum())
    assert session.work_summary() == f"painted voxels: Vent {n}; declared: Cer"


def test_problems_name_tissues_not_label_numbers(session, files):
    mask = array(files["mask"]) > 0
    outside = np.zeros_like(mask)
    outside[np.nonzero(~mask)[0][0], np.nonzero(~mask)[1][0], np.nonzero(~mask)[2][0]] = True
    session.write_segment(session.segment_id("Vent"), outside)
    session.set_annotated("Vent", True)
    text = " ".join(session.problems())
    assert "outside the brain mask (Vent (2))" in text and "label(s) [" not in text


def test_the_model_menu_lists_fetal_models_only(tmp_path, monkeypatch):
    for name, card in (
        ("fetal-a", {"labels": LABEL_NAMES}),
        ("fetal-b", {}),  # no labels on its card: judged by its name
        (
            "ice-editing-64",
            {"labels": ["background", "left atrium"], "inputs": ["image", "initial", "heatmap"]},
        ),
        ("other", {"labels": ["background", "x"]}),
    ):
        folder = tmp_path / name
        folder.mkdir()
        (folder / "model.pt").write_bytes(b"x")
        models.register_model(folder, {"name": name, "task": "t", **card})
    assert available_models(tmp_path) == ["fetal-a", "fetal-b"]
    assert not is_fetal_model(models.get_card("ice-editing-64", tmp_path))
    shipped = [c.name for c in models.list_models() if c.name.startswith("ice-")]
    assert shipped and not set(shipped) & set(available_models())  # the package's registry


def test_a_parcellation_is_saved_with_named_tissues(scene, files, tmp_path):
    volume = load_volume(scene, files["srr"], "srr")
    reference = array(files["parcellation"]).astype(np.uint8)
    grid = Grid.from_volume(volume)
    result = ParcellationResult(None, None, reference, None, {}, grid)
    path = save_parcellation(result, tmp_path / "parcellation.seg.nrrd")
    back = _io.read_label_map(path, label_names=LABEL_NAMES)
    np.testing.assert_array_equal(back.array, reference)
    assert back.geometry.differences(_io.read_image(files["srr"]).geometry) == []
    with pytest.raises(ValueError, match=r"\.seg\.nrrd"):
        save_parcellation(result, tmp_path / "parcellation.txt")
    with pytest.raises(FileNotFoundError, match="does not exist"):
        save_parcellation(result, tmp_path / "no" / "p.seg.nrrd")


def test_wm_is_shown_in_a_contrast_colour_and_keeps_its_own(session):
    """Issue 20 defect 11: the WM brush colour (245, 245, 220) was nearly invisible on the MRI."""
    node = session.segmentation_node
    shown = seg.use_contrast_colors(node)
    assert shown["WM"] == seg.CONTRAST_COLORS["WM"]
    wm = node.GetSegmentation().GetSegment(session.segment_id("WM"))
    assert wm.GetColor() == pytest.approx(tissue("WM").color_float, abs=1e-4)  # files keep the core's colour
    assert shown["Vent"] == pytest.approx(tissue("Vent").color_float, abs=1e-4)
    assert list(shown) == [t.abbreviation for t in TISSUES]
    # the contrast colour differs from the MRI's greys: far from every grey level
    r, g, b = shown["WM"]
    assert max(r, g, b) - min(r, g, b) > 0.5
