"""Catalogue of ``losslab infer`` user errors (issue 7): each case goes through ``losslab.cli.main`` in
process and must exit with code 2, print exactly one line on stderr (no traceback) that names the problem
(``EXPECT``), and leave every file in its folder byte for byte as it was, with no new file.

Each case is ``(setup, argv)``: ``setup(ws)`` may add files to the case's folder; ``argv(ws)`` is the command
line after ``losslab``. ``ws`` holds the folder, a one-channel model, a two-channel model (image + prior) and
a 20^3 image with its prior.
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

from losslab import io as _io
from losslab.cli import main as cli_main
from losslab.engine import train
from losslab.engine.synthetic import make_blobs_dataset


def _train(root: Path, extra: list[str]) -> Path:
    manifest = make_blobs_dataset(
        root / "data", n_cases=4, shape=(16, 16, 16), seed=5, n_val=1, extra_channels=extra
    )
    cfg = {
        "data": {"manifest": str(manifest)},
        "network": {"features": [4, 8], "norm": "none"},
        "epochs": 1,
        "batch_size": 2,
        "device": "cpu",
        "output_dir": str(root / "run"),
    }
    return train(cfg).model_path


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    root = tmp_path_factory.mktemp("catalogue_models")
    return _train(root / "one", []), _train(root / "two", ["prior"])


@dataclass
class Workspace:
    folder: Path
    model: Path  # one input channel
    model2: Path  # two input channels: image, prior
    image: Path
    prior: Path

    def p(self, name: str) -> str:
        return str(self.folder / name)


def _write(path: Path, array: np.ndarray, spacing=None, origin=None, vector=False) -> Path:
    img = sitk.GetImageFromArray(array, isVector=vector)
    if spacing is not None:
        img.SetSpacing(spacing)
    if origin is not None:
        img.SetOrigin(origin)
    sitk.WriteImage(img, str(path))
    return path


def _image_with(ws: Workspace, name: str, value: float) -> str:
    array = np.random.default_rng(0).normal(size=(20, 20, 20)).astype(np.float32)
    array[3, 4, 5] = value
    return str(_write(ws.folder / name, array))


def _ensemble(ws: Workspace, text: str) -> str:
    folder = ws.folder / "ens"
    (folder / "member0").mkdir(parents=True)
    shutil.copy(ws.model, folder / "member0" / "model.pt")
    (folder / "ensemble.json").write_text(text, encoding="utf-8")
    return str(folder)


def _symlink(ws: Workspace) -> str:
    link = ws.folder / "link.nii.gz"
    link.symlink_to(ws.image)
    return str(link)


def _hardlink(ws: Workspace) -> str:
    link = ws.folder / "hard.nii.gz"
    os.link(ws.image, link)
    return str(link)


def _existing_output(ws: Workspace) -> str:
    (ws.folder / "seg.nii.gz").write_bytes(b"my earlier segmentation")
    return ws.p("seg.nii.gz")


def _big_image(ws: Workspace) -> str:
    array = np.random.default_rng(2).normal(size=(64, 64, 64)).astype(np.float32)
    return str(_write(ws.folder / "big.nii.gz", array))


def _corrupted_registered_copy(ws: Workspace) -> str:
    from losslab import models as registry

    folder = ws.folder / "ice-seg"
    shutil.copytree(registry.get_card("ice-segmentation-64").folder, folder)
    model = folder / "model.pt"
    data = bytearray(model.read_bytes())
    data[-100] ^= 0xFF
    model.write_bytes(bytes(data))
    return str(model)


def _shipped_fetal_folder(ws: Workspace) -> str:
    from losslab import models as registry

    return str(registry.get_card("fetal-leafdice-1.6mm").folder)


#: the issue-22 cases of this catalogue (appended to CASES) and their class on the issue
ISSUE22 = {
    "output_exists_without_overwrite": "loss",
    "registered_ice_model_on_another_spacing": "wrong",
    "model_beside_its_card_is_corrupted": "wrong",
    "window_smaller_than_the_network_needs": "runaway",
    "window_tiling_into_thousands": "runaway",
    "missing_checkpoint_path": "message",
}


CASES = {
    # issue 22
    "output_exists_without_overwrite": lambda ws: [
        "infer",
        str(ws.model),
        str(ws.image),
        "-o",
        _existing_output(ws),
    ],
    "registered_ice_model_on_another_spacing": lambda ws: [
        "infer",
        "ice-segmentation-64",
        str(ws.image),
        "-o",
        ws.p("seg.nii.gz"),
    ],
    "model_beside_its_card_is_corrupted": lambda ws: [
        "infer",
        _corrupted_registered_copy(ws),
        str(ws.image),
        "-o",
        ws.p("seg.nii.gz"),
    ],
    "window_smaller_than_the_network_needs": lambda ws: [
        "infer",
        str(ws.model),
        _big_image(ws),
        "-o",
        ws.p("seg.nii.gz"),
        "--window",
        "7",
    ],
    "window_tiling_into_thousands": lambda ws: [
        "infer",
        str(ws.model),
        _big_image(ws),
        "-o",
        ws.p("seg.nii.gz"),
        "--window",
        "16",
        "--overlap",
        "0.95",
    ],
    "missing_checkpoint_path": lambda ws: ["infer", ws.p("nosuch.pt"), str(ws.image), "-o", ws.p("s.nii.gz")],
    # issue 19: a model whose card requires a brain mask, by name and by its folder's path
    # the shipped fetal ensemble runs without a mask, but not on a 20 mm volume (13 voxels of its 1.6 mm grid)
    "fetal_model_by_name_on_an_image_smaller_than_a_brain": lambda ws: [
        "infer",
        "fetal-leafdice-1.6mm",
        str(ws.image),
        "-o",
        ws.p("seg.nii.gz"),
    ],
    "fetal_model_by_its_folder_on_an_image_smaller_than_a_brain": lambda ws: [
        "infer",
        _shipped_fetal_folder(ws),
        str(ws.image),
        "-o",
        ws.p("seg.nii.gz"),
    ],
    # outputs that would overwrite an input, or each other
    "output_is_the_input": lambda ws: ["infer", str(ws.model), str(ws.image), "-o", str(ws.image)],
    "output_is_the_input_spelled_differently": lambda ws: [
        "infer",
        str(ws.model),
        str(ws.image),
        "-o",
        str(ws.folder / "." / ".." / ws.folder.name / ws.image.name),
    ],
    "output_is_a_symlink_to_the_input": lambda ws: [
        "infer",
        str(ws.model),
        str(ws.image),
        "-o",
        _symlink(ws),
    ],
    "output_is_a_hard_link_to_the_input": lambda ws: [
        "infer",
        str(ws.model),
        str(ws.image),
        "-o",
        _hardlink(ws),
    ],
    "probabilities_is_the_input": lambda ws: [
        "infer",
        str(ws.model),
        str(ws.image),
        "-o",
        ws.p("seg.nii.gz"),
        "--probabilities",
        str(ws.image),
    ],
    "probabilities_is_the_extra_channel": lambda ws: [
        "infer",
        str(ws.model2),
        str(ws.image),
        str(ws.prior),
        "-o",
        ws.p("seg.nii.gz"),
        "--probabilities",
        str(ws.prior),
    ],
    "output_is_the_probabilities": lambda ws: [
        "infer",
        str(ws.model),
        str(ws.image),
        "-o",
        ws.p("same.nii.gz"),
        "--probabilities",
        ws.p("same.nii.gz"),
    ],
    "output_is_a_directory": lambda ws: ["infer", str(ws.model), str(ws.image), "-o", str(ws.folder)],
    "output_has_an_unknown_suffix": lambda ws: ["infer", str(ws.model), str(ws.image), "-o", ws.p("s.png")],
    # sliding-window options
    "overlap_negative": lambda ws: [
        "infer",
        str(ws.model),
        str(ws.image),
        "-o",
        ws.p("seg.nii.gz"),
        "--window",
        "6",
        "6",
        "6",
        "--overlap",
        "-0.9",
    ],
    "overlap_one": lambda ws: [
        "infer",
        str(ws.model),
        str(ws.image),
        "-o",
        ws.p("seg.nii.gz"),
        "--window",
        "8",
        "8",
        "8",
        "--overlap",
        "1",
    ],
    "overlap_nan": lambda ws: [
        "infer",
        str(ws.model),
        str(ws.image),
        "-o",
        ws.p("seg.nii.gz"),
        "--overlap",
        "nan",
    ],
    "window_zero": lambda ws: [
        "infer",
        str(ws.model),
        str(ws.image),
        "-o",
        ws.p("seg.nii.gz"),
        "--window",
        "0",
        "0",
        "0",
    ],
    "window_negative": lambda ws: [
        "infer",
        str(ws.model),
        str(ws.image),
        "-o",
        ws.p("seg.nii.gz"),
        "--window",
        "8",
        "-8",
        "8",
    ],
    "window_of_the_wrong_length": lambda ws: [
        "infer",
        str(ws.model),
        str(ws.image),
        "-o",
        ws.p("seg.nii.gz"),
        "--window",
        "8",
        "8",
    ],
    "device_banana": lambda ws: [
        "infer",
        str(ws.model),
        str(ws.image),
        "-o",
        ws.p("seg.nii.gz"),
        "--device",
        "banana",
    ],
    # images the model cannot take
    "image_with_nan": lambda ws: [
        "infer",
        str(ws.model),
        _image_with(ws, "nan.nii.gz", np.nan),
        "-o",
        ws.p("s.nrrd"),
    ],
    "image_with_nan_nrrd": lambda ws: [
        "infer",
        str(ws.model),
        _image_with(ws, "nan.nrrd", np.nan),
        "-o",
        ws.p("s.nrrd"),
    ],
    "image_with_inf_uncompressed_nifti": lambda ws: [
        "infer",
        str(ws.model),
        _image_with(ws, "inf.nii", -np.inf),
        "-o",
        ws.p("s.nrrd"),
    ],
    "image_with_inf": lambda ws: [
        "infer",
        str(ws.model),
        _image_with(ws, "inf.nrrd", np.inf),
        "-o",
        ws.p("s.nrrd"),
    ],
    "image_2d_into_a_3d_model": lambda ws: [
        "infer",
        str(ws.model),
        str(_write(ws.folder / "slice.nii.gz", np.ones((20, 20), np.float32))),
        "-o",
        ws.p("seg.nii.gz"),
    ],
    "image_4d_into_a_3d_model": lambda ws: [
        "infer",
        str(ws.model),
        str(_write(ws.folder / "t.nii.gz", np.ones((3, 10, 10, 10), np.float32))),
        "-o",
        ws.p("seg.nii.gz"),
    ],
    "vector_image_of_32_components": lambda ws: [
        "infer",
        str(ws.model),
        str(_write(ws.folder / "v.nrrd", np.ones((10, 10, 10, 32), np.float32), vector=True)),
        "-o",
        ws.p("seg.nii.gz"),
    ],
    "image_and_model_swapped": lambda ws: ["infer", str(ws.image), str(ws.model), "-o", ws.p("seg.nii.gz")],
    "model_where_the_image_goes": lambda ws: [
        "infer",
        str(ws.model),
        str(ws.model),
        "-o",
        ws.p("seg.nii.gz"),
    ],
    "image_where_the_model_goes": lambda ws: [
        "infer",
        str(ws.image),
        str(ws.image),
        "-o",
        ws.p("seg.nii.gz"),
    ],
    "extra_channel_with_other_spacing": lambda ws: [
        "infer",
        str(ws.model2),
        str(ws.image),
        str(_write(ws.folder / "p2.nii.gz", np.zeros((20, 20, 20), np.float32), spacing=(1.0, 1.0, 2.0))),
        "-o",
        ws.p("seg.nii.gz"),
    ],
    "extra_channel_with_other_origin": lambda ws: [
        "infer",
        str(ws.model2),
        str(ws.image),
        str(_write(ws.folder / "p3.nii.gz", np.zeros((20, 20, 20), np.float32), origin=(0.0, 5.0, 0.0))),
        "-o",
        ws.p("seg.nii.gz"),
    ],
    # ensemble folders
    "ensemble_json_empty": lambda ws: ["infer", _ensemble(ws, ""), str(ws.image), "-o", ws.p("seg.nii.gz")],
    "ensemble_json_malformed": lambda ws: [
        "infer",
        _ensemble(ws, '{"members": ["member0/model.pt"'),
        str(ws.image),
        "-o",
        ws.p("seg.nii.gz"),
    ],
    "ensemble_json_without_members": lambda ws: [
        "infer",
        _ensemble(ws, '{"member": ["member0/model.pt"]}'),
        str(ws.image),
        "-o",
        ws.p("seg.nii.gz"),
    ],
    "ensemble_json_members_not_a_list": lambda ws: [
        "infer",
        _ensemble(ws, '{"members": "member0/model.pt"}'),
        str(ws.image),
        "-o",
        ws.p("seg.nii.gz"),
    ],
    "ensemble_json_no_member": lambda ws: [
        "infer",
        _ensemble(ws, '{"members": []}'),
        str(ws.image),
        "-o",
        ws.p("seg.nii.gz"),
    ],
}


#: what each message must name (a regular expression searched in stderr)
EXPECT = {
    "output_exists_without_overwrite": r"seg\.nii\.gz' exists already: pass --overwrite",
    "registered_ice_model_on_another_spacing": r"1 x 1 x 1 mm voxels; the model ice-segmentation-64 works on 2\.2048",
    "model_beside_its_card_is_corrupted": r"model\.pt has sha256 .* its card says",
    "window_smaller_than_the_network_needs": r"--window \[7, 7, 7\] is too small",
    "window_tiling_into_thousands": r"windows \(more than 4096\)",
    "missing_checkpoint_path": r"nosuch\.pt': no such file",
    "fetal_model_by_name_on_an_image_smaller_than_a_brain": r"smaller than the 16 voxels .* right image",
    "fetal_model_by_its_folder_on_an_image_smaller_than_a_brain": r"smaller than the 16 voxels .* right image",
    "output_is_the_input": r"output '.*image\.nii\.gz' is the input",
    "output_is_the_input_spelled_differently": r"is the input '.*image\.nii\.gz'",
    "output_is_a_symlink_to_the_input": r"'.*link\.nii\.gz' is the input",
    "output_is_a_hard_link_to_the_input": r"'.*hard\.nii\.gz' is the input",
    "probabilities_is_the_input": r"probabilities output '.*image\.nii\.gz' is the input",
    "probabilities_is_the_extra_channel": r"probabilities output '.*prior\.nii\.gz' is the input",
    "output_is_the_probabilities": r"same file '.*same\.nii\.gz'",
    "output_is_a_directory": r"is a folder",
    "output_has_an_unknown_suffix": r"'.*s\.png' has an unsupported suffix",
    "overlap_negative": r"overlap must be in \[0, 1\).*got -0\.9",
    "overlap_one": r"overlap must be in \[0, 1\).*got 1\.0",
    "overlap_nan": r"overlap must be in \[0, 1\).*got nan",
    "window_zero": r"window.*positive.*\[0, 0, 0\]",
    "window_negative": r"window.*positive.*\[8, -8, 8\]",
    "window_of_the_wrong_length": r"window \[8, 8\] has 2 sizes.*3D",
    "device_banana": r"device.*'banana'",
    "image_with_nan": r"nan\.nii\.gz' has 1 NaN or infinite",
    "image_with_nan_nrrd": r"nan\.nrrd' has 1 NaN or infinite",
    "image_with_inf": r"inf\.nrrd' has 1 NaN or infinite",
    "image_with_inf_uncompressed_nifti": r"inf\.nii' has 1 NaN or infinite",
    "image_2d_into_a_3d_model": r"slice\.nii\.gz' is a 2D image.*3D",
    "image_4d_into_a_3d_model": r"t\.nii\.gz' is a 4D image.*3D",
    "vector_image_of_32_components": r"v\.nrrd' is a vector image of 32 components.*1 input channel",
    "image_and_model_swapped": r"image\.nii\.gz' is an image, not a model.*swapped",
    "model_where_the_image_goes": r"model\.pt' is a model, not an image.*swapped",
    "image_where_the_model_goes": r"image\.nii\.gz' is an image, not a model",
    "extra_channel_with_other_spacing": r"p2\.nii\.gz.*not on the same voxel grid: spacing",
    "extra_channel_with_other_origin": r"p3\.nii\.gz.*not on the same voxel grid: origin",
    "ensemble_json_empty": r"ensemble\.json' is empty",
    "ensemble_json_malformed": r"ensemble\.json' is not valid JSON",
    "ensemble_json_without_members": r"ensemble\.json' must hold.*\"members\"",
    "ensemble_json_members_not_a_list": r"ensemble\.json' must hold.*\"members\"",
    "ensemble_json_no_member": r"ensemble\.json' must hold.*\"members\"",
}


def test_every_case_says_what_its_message_names():
    assert sorted(EXPECT) == sorted(CASES)


def _snapshot(folder: Path) -> dict[str, str]:
    out = {}
    for path in sorted(folder.rglob("*")):
        if path.is_file():
            out[str(path.relative_to(folder))] = hashlib.sha256(path.read_bytes()).hexdigest()
    return out


@pytest.mark.parametrize("case", sorted(CASES))
def test_infer_user_error_is_one_line_exit_2_and_changes_no_file(case, models, tmp_path, capsys):
    image = np.random.default_rng(1).normal(size=(20, 20, 20)).astype(np.float32)
    ws = Workspace(
        folder=tmp_path,
        model=Path(shutil.copy(models[0], tmp_path / "model.pt")),
        model2=Path(shutil.copy(models[1], tmp_path / "model2.pt")),
        image=_io.write_image(tmp_path / "image.nii.gz", image),
        prior=_io.write_image(tmp_path / "prior.nii.gz", np.clip(image, 0, 1)),
    )
    argv = CASES[case](ws)
    before = _snapshot(tmp_path)
    capsys.readouterr()
    try:
        code = cli_main(argv)
    except SystemExit as exc:  # argparse's own usage errors
        code = exc.code
    except BaseException as exc:  # a traceback reaching the user
        pytest.fail(f"{case}: {type(exc).__name__} escaped main(): {exc}")
    err = capsys.readouterr().err
    assert code == 2, f"{case}: exit code {code}, stderr {err!r}"
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1 and "Traceback" not in err, f"{case}: stderr {err!r}"
    assert _snapshot(tmp_path) == before, f"{case}: files changed or were added"
    assert re.search(EXPECT[case], err), f"{case}: the message does not match {EXPECT[case]!r}: {err!r}"
