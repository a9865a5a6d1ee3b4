"""losslab.labelsets: tissues, partial annotation -> label-set map, validation messages, declarations."""

from __future__ import annotations

import json

import numpy as np
import pytest

from losslab import io
from losslab.cli import main
from losslab.labelsets import (
    LABEL_NAMES,
    PAPER_LABEL_SETS,
    TISSUES,
    Declaration,
    LabelSetNumbering,
    PartialAnnotationError,
    check_partial_annotation,
    make_label_set_map,
    make_label_set_map_files,
    split_label_set_map,
    tissue,
    tissue_labels,
)
from losslab.labelsets.tissues import color_table_text, segment_colors


def test_tissue_table_follows_the_paper_and_released_code():
    assert [(t.label, t.abbreviation) for t in TISSUES] == [
        (1, "WM"), (2, "Vent"), (3, "Cer"), (4, "ECSF"), (5, "CGM"), (6, "DGM"), (7, "BS"), (8, "CC")
    ]  # fmt: skip
    assert LABEL_NAMES[0] == "background" and LABEL_NAMES[1:] == [t.abbreviation for t in TISSUES]
    assert (
        tissue("cortical_gm").label == 5 and tissue("Brainstem").label == 7 and tissue(8).abbreviation == "CC"
    )
    assert tissue_labels(["CC", "wm", "white matter"]) == [1, 8]
    colours = [t.color for t in TISSUES]
    assert len(set(colours)) == 8 and all(0 <= c <= 255 for rgb in colours for c in rgb)
    assert segment_colors()[2] == pytest.approx(tuple(c / 255 for c in TISSUES[1].color), abs=1e-6)
    assert color_table_text().splitlines()[3].startswith("2 Vent 30 80 200")


def _case():
    """A 1x4x6 slab: mask on columns 1..4; WM, Vent and Cer painted."""
    partial = np.zeros((1, 4, 6), np.uint8)
    mask = np.zeros_like(partial)
    mask[0, :, 1:5] = 1
    partial[0, 0, 1:3] = 1  # WM
    partial[0, 1, 1] = 2  # Vent
    partial[0, 3, 4] = 3  # Cer
    return partial, mask


def test_label_set_map_equals_a_hand_made_one():
    partial, mask = _case()
    out, decl = make_label_set_map(partial, mask, ["WM", "Vent", "Cer"])
    expected = np.array(
        [[[0, 1, 1, 9, 9, 0], [0, 2, 9, 9, 9, 0], [0, 9, 9, 9, 9, 0], [0, 9, 9, 9, 3, 0]]], np.uint8
    )
    np.testing.assert_array_equal(out, expected)
    assert (
        decl.set_label == 9
        and decl.label_sets == {9: [4, 5, 6, 7, 8]}
        and decl.unannotated == [4, 5, 6, 7, 8]
    )
    # the released code's other two sets
    partial[0, 2, 2] = 4
    out, decl = make_label_set_map(partial, mask, ["WM", "Vent", "Cer", "ECSF"])
    assert decl.set_label == 10 and out[0, 2, 3] == 10 and out[0, 2, 2] == 4
    partial[0, 2, 3] = 8
    assert make_label_set_map(partial, mask, [1, 2, 3, 4, 8])[1].set_label == 11


def test_full_annotation_has_no_set_label_and_new_sets_get_new_numbers():
    partial = np.arange(9, dtype=np.uint8).reshape(1, 3, 3)
    mask = np.ones_like(partial)
    out, decl = make_label_set_map(partial, mask, list(range(1, 9)))
    np.testing.assert_array_equal(out, partial)
    assert decl.set_label is None and decl.label_sets == {}
    numbering = LabelSetNumbering()
    assert [numbering.label_for(s) for s in ([4, 5, 6, 7, 8], [2, 3], [3, 2], [7])] == [9, 12, 12, 13]
    assert numbering.as_dict(used=[12, 13]) == {12: [2, 3], 13: [7]}
    assert LabelSetNumbering({}).label_for([5, 6]) == 9
    with pytest.raises(ValueError, match="above the tissue labels"):
        LabelSetNumbering({8: [1, 2]})


@pytest.mark.parametrize(
    ("annotated", "edit", "message"),
    [
        (["WM", "Vent", "Cer", "grey"], None, r"unknown tissue name\(s\) \['grey'\]"),
        (["WM", "Vent"], None, r"painted but not declared annotated: Cer \(3\): 1 voxels"),
        (["WM", "Vent", "Cer", "BS"], None, r"declared annotated but with no painted voxel: BS \(7\)"),
        (
            ["WM", "Vent", "Cer"],
            "outside",
            r"1 painted voxel\(s\) lie outside the brain mask \(WM \(1\)\)",
        ),
        (["WM", "Vent", "Cer"], "not_tissue", r"label value\(s\) \[12\] are not tissues"),
        (["WM", "Vent", "Cer"], "empty_mask", r"the brain mask is empty"),
        (["WM", "Vent", "Cer"], "shape", r"the label map has shape \(1, 4, 6\) but the brain mask has shape"),
    ],
)
def test_each_validation_message(annotated, edit, message):
    partial, mask = _case()
    if edit == "outside":
        partial[0, 0, 0] = 1
    elif edit == "not_tissue":
        partial[0, 2, 2] = 12
    elif edit == "empty_mask":
        mask[:] = 0
        partial[:] = 0
        partial[0, 0, 0], partial[0, 0, 1], partial[0, 0, 2] = 1, 2, 3
    elif edit == "shape":
        mask = mask[:, :, :5]
    problems = check_partial_annotation(partial, mask, annotated)
    assert any(__import__("re").search(message, p) for p in problems), problems
    with pytest.raises(PartialAnnotationError, match=message) as info:
        make_label_set_map(partial, mask, annotated, case="GA99")
    assert str(info.value).startswith("case 'GA99': ")


def test_valid_case_has_no_problem_and_every_problem_is_reported_at_once():
    partial, mask = _case()
    assert check_partial_annotation(partial, mask, ["WM", "Vent", "Cer"]) == []
    partial[0, 0, 0] = 5  # CGM painted, undeclared, and outside the mask
    problems = check_partial_annotation(partial, mask, ["WM", "Vent", "Cer", "DGM"])
    assert len(problems) == 3, problems


def test_split_is_the_inverse_and_declaration_json_round_trips():
    partial, mask = _case()
    out, decl = make_label_set_map(partial, mask, ["WM", "Vent", "Cer"])
    back_partial, back_mask, annotated = split_label_set_map(out, PAPER_LABEL_SETS)
    np.testing.assert_array_equal(back_partial, partial)
    np.testing.assert_array_equal(back_mask, mask)
    assert annotated == [1, 2, 3]
    again = Declaration.from_json(json.loads(json.dumps(decl.to_json())))
    assert (again.annotated, again.set_label, again.label_sets) == (
        decl.annotated,
        decl.set_label,
        decl.label_sets,
    )
    with pytest.raises(ValueError, match=r"label value\(s\) \[14\] are neither tissues"):
        split_label_set_map(np.array([0, 14]), PAPER_LABEL_SETS)


def test_files_and_cli(tmp_path, capsys):
    partial, mask = _case()
    geom = io.Geometry((0.8, 0.8, 0.8), (1.0, 2.0, 3.0), (1, 0, 0, 0, 1, 0, 0, 0, 1))
    io.write_image(tmp_path / "partial.nii.gz", partial, geom)
    io.write_image(tmp_path / "mask.nii.gz", mask, geom)
    (tmp_path / "annotation.json").write_text(json.dumps({"annotated": ["WM", "Vent", "Cer"]}))
    out, decl = make_label_set_map_files(
        tmp_path / "partial.nii.gz",
        tmp_path / "mask.nii.gz",
        tmp_path / "annotation.json",
        tmp_path / "m.nii.gz",
    )
    assert decl == tmp_path / "m.json" and json.loads(decl.read_text())["label_sets"] == {
        "9": [4, 5, 6, 7, 8]
    }
    img = io.read_image(out)
    assert img.geometry.origin == pytest.approx(geom.origin) and int(img.array.max()) == 9
    rc = main(["fetal", "label-set-map", str(tmp_path / "partial.nii.gz"), str(tmp_path / "mask.nii.gz"),
               "--annotated", "WM,Vent", "-o", str(tmp_path / "bad.nii.gz")])  # fmt: skip
    assert rc == 2 and "painted but not declared annotated: Cer (3)" in capsys.readouterr().err
    assert not (tmp_path / "bad.nii.gz").exists()
    rc = main(["fetal", "label-set-map", str(tmp_path / "partial.nii.gz"), str(tmp_path / "mask.nii.gz"),
               "--annotated", "WM,Vent,Cer", "-o", str(tmp_path / "ok.nii.gz")])  # fmt: skip
    assert rc == 0 and (tmp_path / "ok.json").is_file()
    np.testing.assert_array_equal(io.read_image(tmp_path / "ok.nii.gz").array, img.array)
