"""Catalogue of ``losslab fetal`` under bad input (issue 22): outputs that would replace an input (the MRI, the
mask, a reference label map, a method's prediction, the partial annotation), existing outputs without
``--overwrite``, label maps that cannot be scored, and options out of range. Each case must be refused in one
line with nothing changed (``_catalogue.py``); each was a data loss, a silent wrong result or a vague message.

Workspace: ``t2.nii.gz`` + ``mask.nii.gz`` (20^3, 1 mm), ``ref/`` and ``m1/`` (label maps of cases A and B),
``partial.nii.gz`` + ``annotation.json``, ``cases/caseA/`` (a case folder of build-dataset).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk
from _catalogue import CATEGORIES, check_refused

from losslab.cli import main

MODEL = "fetal-leafdice-1.6mm"


def _write(path: Path, array: np.ndarray, spacing=(1.0, 1.0, 1.0)) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    image = sitk.GetImageFromArray(array)
    image.SetSpacing(spacing)
    sitk.WriteImage(image, str(path))
    return path


def _labels(seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    labels = np.zeros((20, 20, 20), np.uint8)
    labels[4:16, 4:16, 4:16] = rng.integers(1, 9, (12, 12, 12))
    return labels


@pytest.fixture
def ws(tmp_path: Path) -> Path:
    rng = np.random.default_rng(0)
    _write(tmp_path / "t2.nii.gz", rng.normal(100, 20, (20, 20, 20)).astype(np.float32))
    mask = np.zeros((20, 20, 20), np.uint8)
    mask[3:17, 3:17, 3:17] = 1
    _write(tmp_path / "mask.nii.gz", mask)
    for case, seed in (("caseA", 1), ("caseB", 2)):
        _write(tmp_path / "ref" / f"{case}.nii.gz", _labels(seed))
        _write(tmp_path / "m1" / f"{case}.nii.gz", _labels(seed + 10))
    partial = np.where(_labels(3) <= 3, _labels(3), 0).astype(np.uint8) * mask
    _write(tmp_path / "partial.nii.gz", partial)
    (tmp_path / "annotation.json").write_text(json.dumps({"annotated": ["WM", "Vent", "Cer"]}))
    case = tmp_path / "cases" / "caseA"
    for name in ("t2.nii.gz", "mask.nii.gz", "partial.nii.gz", "annotation.json"):
        target = case / ("srr.nii.gz" if name == "t2.nii.gz" else name)
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes((tmp_path / name).read_bytes())
    return tmp_path


def _evaluate(ws: Path, *extra) -> list:
    return ["fetal", "evaluate", "--reference", ws / "ref", "--method", f"leaf_dice={ws / 'm1'}", *extra]


def _segment(ws: Path, *extra) -> list:
    """``fetal segment`` of the shipped model with its brain mask (its card requires one)."""
    return ["fetal", "segment", MODEL, ws / "t2.nii.gz", "--mask", ws / "mask.nii.gz", *extra]


def _m1_caseA(ws: Path, array: np.ndarray) -> None:
    _write(ws / "m1" / "caseA.nii.gz", array)


# ------------------------------------------------------------------------------------------- evaluate
def evaluate_table_over_a_reference_label_map(ws):
    return _evaluate(ws, "-o", ws / "ref" / "caseA.nii.gz"), ["caseA.nii.gz", "is the input"]


def evaluate_json_over_a_prediction(ws):
    return _evaluate(ws, "--json", ws / "m1" / "caseB.nii.gz"), ["caseB.nii.gz", "is the input"]


def evaluate_json_over_a_prediction_through_a_symlink(ws):
    (ws / "link.nii.gz").symlink_to(ws / "m1" / "caseB.nii.gz")
    return _evaluate(ws, "--json", ws / "link.nii.gz"), ["link.nii.gz", "is the input"]


def evaluate_table_over_an_earlier_table(ws):
    (ws / "table.md").write_text("my table")
    return _evaluate(ws, "-o", ws / "table.md"), ["table.md", "exists already", "--overwrite"]


def evaluate_table_and_json_on_one_path(ws):
    return _evaluate(ws, "-o", ws / "t.md", "--json", ws / "t.md"), ["same file", "t.md"]


def evaluate_a_probability_map(ws):
    _m1_caseA(ws, _labels(11).astype(np.float32) * 0.5)
    return _evaluate(ws), ["caseA.nii.gz", "non-integer"]


def evaluate_a_negative_label(ws):
    labels = _labels(11).astype(np.int16)
    labels[5, 5, 5] = -1
    _m1_caseA(ws, labels)
    return _evaluate(ws), ["caseA.nii.gz", "[-1]", "0..8"]


def evaluate_a_set_label_above_8(ws):
    labels = _labels(11)
    labels[5, 5, 5] = 12
    _m1_caseA(ws, labels)
    return _evaluate(ws), ["caseA.nii.gz", "[12]", "0..8"]


def evaluate_nan_in_a_reference(ws):
    labels = _labels(1).astype(np.float32)
    labels[5, 5, 5] = np.nan
    _write(ws / "ref" / "caseA.nii.gz", labels)
    return _evaluate(ws), ["ref/caseA.nii.gz", "NaN"]


def evaluate_alpha_negative(ws):
    return _evaluate(ws, "--alpha", "-1"), ["--alpha", "(0, 1)", "-1"]


def evaluate_alpha_nan(ws):
    return _evaluate(ws, "--alpha", "nan"), ["--alpha", "nan"]


def evaluate_alpha_5(ws):
    return _evaluate(ws, "--alpha", "5"), ["--alpha", "5"]


# ------------------------------------------------------------------------------------------- segment
def segment_over_the_mri(ws):
    return _segment(ws, "-o", ws / "t2.nii.gz"), ["t2.nii.gz", "is the input"]


def segment_over_the_mri_through_a_hard_link(ws):
    os.link(ws / "t2.nii.gz", ws / "hard.nii.gz")
    return _segment(ws, "-o", ws / "hard.nii.gz"), ["hard.nii.gz", "is the input"]


def segment_uncertainty_over_the_mask(ws):
    argv = _segment(ws, "-o", ws / "seg.nii.gz")
    return [*argv, "--uncertainty", ws / "mask.nii.gz"], ["uncertainty", "mask.nii.gz", "is the input"]


def segment_over_an_earlier_result(ws):
    (ws / "seg.nii.gz").write_bytes(b"my earlier result")
    return _segment(ws, "-o", ws / "seg.nii.gz"), ["seg.nii.gz", "exists already", "--overwrite"]


def segment_a_missing_checkpoint(ws):
    return ["fetal", "segment", ws / "nosuch.pt", ws / "t2.nii.gz", "-o", ws / "s.nii.gz"], [
        "nosuch.pt",
        "no such file",
    ]


def segment_on_cuda_without_a_gpu(ws):
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    return _segment(ws, "-o", ws / "s.nii.gz", "--device", "cuda"), ["--device", "CUDA is not available"]


def segment_an_mri_with_zero_spacing(ws):
    import struct

    path = ws / "zero.nii"
    sitk.WriteImage(sitk.ReadImage(str(ws / "t2.nii.gz")), str(path))
    data = bytearray(path.read_bytes())
    data[80:84] = struct.pack("<f", 0.0)  # pixdim[1]: ITK reads 0 as 1 mm
    path.write_bytes(bytes(data))
    return ["fetal", "segment", MODEL, path, "-o", ws / "s.nii.gz", "--mask", ws / "mask.nii.gz"], [
        "zero.nii",
        "voxel size",
    ]


def segment_an_mri_smaller_than_a_brain_without_a_mask(ws):
    """The shipped ensemble runs without a mask (it finds the brain itself), but a 20 mm volume gives a model
    grid of 13 voxels at 1.6 mm, below the network's pooling factor: before, the network failed with a
    message about tensor sizes. (A card that requires a mask: test_fetal_mask_required.py.)"""
    return ["fetal", "segment", MODEL, ws / "t2.nii.gz", "-o", ws / "s.nii.gz"], [
        "smaller than the 16 voxels",
        "right image",
    ]


def segment_by_the_model_folder_an_mri_smaller_than_a_brain(ws):
    from losslab import models

    folder = models.get_card(MODEL).folder
    return ["fetal", "segment", folder, ws / "t2.nii.gz", "-o", ws / "s.nii.gz"], [
        "smaller than the 16 voxels",
        "right image",
    ]


# ------------------------------------------------------------------------------------------- the rest
def label_set_map_over_the_partial_annotation(ws):
    argv = ["fetal", "label-set-map", ws / "partial.nii.gz", ws / "mask.nii.gz", "--annotated", "WM,Vent,Cer"]
    return [*argv, "-o", ws / "partial.nii.gz"], ["partial.nii.gz", "is the input"]


def label_set_map_declaration_over_the_declaration_read(ws):
    argv = ["fetal", "label-set-map", ws / "partial.nii.gz", ws / "mask.nii.gz"]
    argv += ["--declaration", ws / "annotation.json", "-o", ws / "annotation.nii.gz"]
    return argv, ["annotation.json", "is the input"]


def label_set_map_over_an_earlier_map(ws):
    (ws / "map.nii.gz").write_bytes(b"mine")
    argv = ["fetal", "label-set-map", ws / "partial.nii.gz", ws / "mask.nii.gz", "--annotated", "WM,Vent,Cer"]
    return [*argv, "-o", ws / "map.nii.gz"], ["map.nii.gz", "exists already"]


def build_dataset_into_its_cases_folder(ws):
    return ["fetal", "build-dataset", ws / "cases", ws / "cases", "--overwrite"], ["is the input folder"]


def build_dataset_into_a_used_folder(ws):
    (ws / "out").mkdir()
    (ws / "out" / "dataset.json").write_text("{}")
    return ["fetal", "build-dataset", ws / "cases", ws / "out"], ["dataset.json", "--overwrite"]


def export_cases_into_the_dataset_folder(ws):
    assert main(["fetal", "build-dataset", str(ws / "cases"), str(ws / "ds")]) == 0
    return ["fetal", "export-cases", ws / "ds" / "dataset.json", ws / "ds", "--overwrite"], [
        "is the input folder"
    ]


def make_partial_into_the_atlas(ws):
    return ["fetal", "make-partial", ws / "cases", ws / "cases" / "out"], ["lies inside the input folder"]


def make_partial_negative_seed(ws):
    return ["fetal", "make-partial", ws / "cases", ws / "out", "--seed", "-1"], ["--seed", "-1"]


def package_into_the_run_folder(ws):
    argv = ["fetal", "package", ws / "cases", ws / "cases", "--name", "x", "--spacing", "2", "2", "2"]
    return [*argv, "--atlas", ws / "ref", "--test-cases", "caseA"], ["is the input folder"]


CASES = {
    evaluate_table_over_a_reference_label_map: "loss",
    evaluate_json_over_a_prediction: "loss",
    evaluate_json_over_a_prediction_through_a_symlink: "loss",
    evaluate_table_over_an_earlier_table: "loss",
    evaluate_table_and_json_on_one_path: "loss",
    evaluate_a_probability_map: "wrong",
    evaluate_a_negative_label: "wrong",
    evaluate_a_set_label_above_8: "wrong",
    evaluate_nan_in_a_reference: "wrong",
    evaluate_alpha_negative: "wrong",
    evaluate_alpha_nan: "wrong",
    evaluate_alpha_5: "wrong",
    segment_over_the_mri: "loss",
    segment_over_the_mri_through_a_hard_link: "loss",
    segment_uncertainty_over_the_mask: "loss",
    segment_over_an_earlier_result: "loss",
    segment_a_missing_checkpoint: "message",
    segment_on_cuda_without_a_gpu: "message",
    segment_an_mri_with_zero_spacing: "wrong",
    segment_an_mri_smaller_than_a_brain_without_a_mask: "wrong",
    segment_by_the_model_folder_an_mri_smaller_than_a_brain: "wrong",
    label_set_map_over_the_partial_annotation: "loss",
    label_set_map_declaration_over_the_declaration_read: "loss",
    label_set_map_over_an_earlier_map: "loss",
    build_dataset_into_its_cases_folder: "loss",
    build_dataset_into_a_used_folder: "loss",
    export_cases_into_the_dataset_folder: "loss",
    make_partial_into_the_atlas: "loss",
    make_partial_negative_seed: "message",
    package_into_the_run_folder: "loss",
}


@pytest.mark.parametrize("case", list(CASES), ids=[c.__name__ for c in CASES])
def test_fetal_case_is_refused_in_one_line_and_loses_nothing(case, ws, capsys):
    argv, words = case(ws)
    check_refused(argv, words, ws, capsys)


def test_every_category_is_known():
    assert set(CASES.values()) <= set(CATEGORIES)


def test_fetal_and_ice_without_a_sub_command_alike(capsys):
    """`losslab ice` printed its help, `losslab fetal` an argparse error: both print their help now."""
    for group in ("ice", "fetal"):
        assert main([group]) == 2
        err = capsys.readouterr().err
        assert err.startswith(f"usage: losslab {group}") and "error" not in err.splitlines()[0]


def test_a_closed_pipe_is_not_an_error(tmp_path):
    """`losslab fetal tissues | head -1` ended with `error: [Errno 32] Broken pipe`, exit 2."""
    root = Path(__file__).resolve().parents[2]
    # unbuffered: each line is its own write, so the closed pipe is met every time (buffered: now and then)
    env = {**os.environ, "PYTHONPATH": str(root / "LossLab"), "PYTHONUNBUFFERED": "1"}
    done = subprocess.run(
        f"set -o pipefail; {sys.executable} -m losslab.cli fetal tissues | head -1",
        shell=True,
        executable="/bin/bash",
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("label") and done.stderr == ""
