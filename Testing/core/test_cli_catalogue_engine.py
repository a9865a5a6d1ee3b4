"""Catalogue of user errors on the training side of ``losslab`` (issue 7), run through the command line.

Each case builds a workspace (dataset, config, maybe an earlier run), runs ``losslab.cli.main([...])`` in
process and checks: exit code 2, exactly one line on stderr, no traceback, words that name the problem,
and that no file under the workspace was lost, changed or added (sha256 of every file before and after).
"""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import pytest
import SimpleITK as sitk

from losslab.engine import load_checkpoint, save_checkpoint, train
from losslab.engine.synthetic import make_blobs_dataset


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    """A dataset (3 classes, 16^3) and a finished 1-epoch run on it, copied into each case's workspace."""
    root = tmp_path_factory.mktemp("catalogue")
    data = make_blobs_dataset(root / "data", n_cases=4, shape=(16, 16, 16), n_val=1, seed=3).parent
    extra = make_blobs_dataset(
        root / "extra", n_cases=3, shape=(16, 16, 16), n_val=1, n_classes=2, extra_channels=["initial"]
    ).parent
    run = root / "run"
    train(_config(data / "dataset.json", run), progress=lambda event: None)
    return {"data": data, "extra": extra, "run": run}


def _config(manifest: Path, out: Path, **changes) -> dict:
    cfg = {
        "data": {"manifest": str(manifest)},
        "network": {"features": [4, 8], "norm": "instance"},
        "optimizer": {"lr": 0.01},
        "epochs": 1,
        "batch_size": 2,
        "output_dir": str(out),
        "plot_every": 0,
    }
    cfg.update(changes)
    return cfg


def _hashes(folder: Path) -> dict[str, str]:
    return {
        str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


def _workspace(tmp_path, store, *, data="data", run=None, **changes) -> tuple[Path, Path]:
    """Copy the dataset (and an earlier run into ``out``); write ``cfg.json``. Returns (config, out)."""
    shutil.copytree(store[data], tmp_path / "data")
    out = tmp_path / "out"
    if run is not None:
        shutil.copytree(store["run"], out / run if run else out)
    config = tmp_path / "cfg.json"
    config.write_text(json.dumps(_config(tmp_path / "data" / "dataset.json", out, **changes)))
    return config, out


def _edit_image(path: Path, change) -> None:
    image = sitk.ReadImage(str(path))
    change(image)
    sitk.WriteImage(image, str(path))


def _edit_manifest(tmp_path: Path, **changes) -> None:
    path = tmp_path / "data" / "dataset.json"
    manifest = json.loads(path.read_text())
    manifest.update(changes)
    path.write_text(json.dumps(manifest))


# ------------------------------------------------------------------------------------------- the cases
def run_folder_holds_a_run(tmp_path, store):
    config, _ = _workspace(tmp_path, store, run="")
    return ["train", config], ["already holds a run", "--resume", "--overwrite"]


def failed_start_bad_data_keeps_the_old_run(tmp_path, store):
    config, _ = _workspace(tmp_path, store, run="")
    _edit_image(tmp_path / "data" / "labels" / "case02.nii.gz", lambda im: im.SetOrigin((0.0, 0.0, 4.0)))
    return ["train", config, "--overwrite"], ["case02", "origin"]


def failed_start_in_epoch_1_keeps_the_old_run(tmp_path, store):
    config, _ = _workspace(tmp_path, store, run="")
    return ["train", config, "--overwrite", "optimizer.lr=1e6"], ["diverged", "epoch 1", "optimizer.lr"]


def resume_without_a_run(tmp_path, store):
    config, out = _workspace(tmp_path, store)
    out.mkdir()
    (out / "notes.txt").write_text("not a run")
    return ["train", config, "--resume"], ["nothing to resume", "last.pt"]


def diverging_learning_rate(tmp_path, store):
    config, _ = _workspace(tmp_path, store)
    return ["train", config, "optimizer.lr=1e6", "epochs=3"], ["diverged", "optimizer.lr"]


def flip_axis_beyond_the_spatial_dims(tmp_path, store):
    config, _ = _workspace(tmp_path, store)
    return ["train", config, "augmentation.flip.axes=[5]"], ["augmentation.flip.axes", "[5]", "0..2"]


def editing_loss_without_inputs(tmp_path, store):
    config, _ = _workspace(tmp_path, store, data="extra")
    return ["train", config, "loss.name=editing", "network.out_channels=1"], ["loss.inputs", "attention"]


def repeated_leaf_in_a_label_set(tmp_path, store):
    config, _ = _workspace(tmp_path, store)
    _edit_manifest(tmp_path, label_sets={"3": [1, 1]})
    return ["train", config, "loss.name=leaf_dice"], ["label_sets[3]", "repeats leaf label(s) [1]"]


def leaf_out_of_range_in_a_label_set(tmp_path, store):
    config, _ = _workspace(tmp_path, store)
    _edit_manifest(tmp_path, label_sets={"3": [1, 7]})
    return ["train", config, "loss.name=leaf_dice"], ["leaf label(s) [7] out of range", "0..2"]


def label_on_another_grid(tmp_path, store):
    config, _ = _workspace(tmp_path, store)
    _edit_image(tmp_path / "data" / "labels" / "case03.nii.gz", lambda im: im.SetSpacing((1.0, 2.0, 1.0)))
    return ["train", config], ["case03", "label", "spacing"]


def extra_channel_on_another_grid(tmp_path, store):
    config, _ = _workspace(tmp_path, store, data="extra")
    _edit_image(
        tmp_path / "data" / "initial" / "case01.nii.gz",
        lambda im: im.SetDirection((1, 0, 0, 0, 0, 1, 0, 1, 0)),
    )
    return ["train", config, "network.out_channels=1"], ["case01", "extra channel", "direction"]


def checkpoint_without_optimizer_state(tmp_path, store):
    config, out = _workspace(tmp_path, store, run="")
    last = out / "checkpoints" / "last.pt"
    state = load_checkpoint(last)
    del state["optimizer"]
    save_checkpoint(last, state)
    return ["train", config, "--resume", "epochs=2"], ["cannot resume", "last.pt", "optimizer"]


def malformed_ensemble_json(tmp_path, store):
    config, out = _workspace(tmp_path, store, run="member0")
    (out / "ensemble.json").write_text('{"members": ')
    return ["train", config, "--resume", "ensemble.members=2"], ["ensemble.json", "not valid JSON"]


def empty_ensemble_json(tmp_path, store):
    config, out = _workspace(tmp_path, store, run="member0")
    (out / "ensemble.json").write_text("")
    return ["train", config, "--resume", "ensemble.members=2"], ["ensemble.json", "empty"]


def output_dir_is_a_file(tmp_path, store):
    config, out = _workspace(tmp_path, store)
    out.write_text("a file of mine")
    return ["train", config], ["output_dir", "is a file"]


def output_dir_is_read_only(tmp_path, store):
    import os

    if os.geteuid() == 0:
        pytest.skip("root writes into read-only folders")
    config, out = _workspace(tmp_path, store)
    out.mkdir()
    out.chmod(0o555)
    return ["train", config], ["output_dir", "read-only"]


def invalid_yaml_config(tmp_path, store):
    pytest.importorskip("yaml")
    config = tmp_path / "cfg.yaml"
    config.write_text("data:\n  manifest: [unclosed\nepochs: 2\n")
    return ["train", config], ["cfg.yaml", "not valid YAML", "line"]


def missing_config(tmp_path, store):
    return ["train", tmp_path / "nope.json"], ["nope.json", "not found"]


# ----------------------------------------------------------------------- issue 22: silent wrong results
def _nan_voxel(value):
    def change(image):
        array = sitk.GetArrayFromImage(image).astype("float32")
        array[0, 0, 0] = value
        new = sitk.GetImageFromArray(array)
        new.CopyInformation(image)
        return new

    return change


def _replace_image(path: Path, change) -> None:
    sitk.WriteImage(change(sitk.ReadImage(str(path))), str(path))


def nan_in_a_validation_image(tmp_path, store):
    config, _ = _workspace(tmp_path, store)
    _replace_image(tmp_path / "data" / "images" / "case00.nii.gz", _nan_voxel(float("nan")))
    return ["train", config], ["case00", "NaN or infinite", "images/case00.nii.gz"]


def inf_in_a_training_image_the_crops_miss(tmp_path, store):
    config, _ = _workspace(tmp_path, store)
    _replace_image(tmp_path / "data" / "images" / "case02.nii.gz", _nan_voxel(float("inf")))
    return ["train", config, "data.patch_size=[8,8,8]"], ["case02", "NaN or infinite"]


def resume_with_another_patch_size(tmp_path, store):
    config, _ = _workspace(tmp_path, store, run="")
    return ["train", config, "--resume", "epochs=2", "data.patch_size=[8,8,8]"], [
        "cannot resume",
        "data.patch_size",
    ]


def resume_with_another_batch_size(tmp_path, store):
    config, _ = _workspace(tmp_path, store, run="")
    return ["train", config, "--resume", "epochs=2", "batch_size=1"], [
        "cannot resume",
        "batch_size: 2 in the run",
    ]


def manifest_is_a_gzip_file(tmp_path, store):
    import gzip

    config, _ = _workspace(tmp_path, store)
    manifest = tmp_path / "data" / "dataset.json"
    manifest.write_bytes(gzip.compress(manifest.read_bytes()))
    return ["train", config], ["dataset.json", "not a UTF-8 text file", "gzip"]


def label_with_zero_spacing_in_its_header(tmp_path, store):
    import gzip
    import struct

    config, _ = _workspace(tmp_path, store)
    path = tmp_path / "data" / "labels" / "case01.nii.gz"
    raw = bytearray(gzip.decompress(path.read_bytes()))
    raw[80:84] = struct.pack("<f", 0.0)  # pixdim[1]: ITK reads a zero voxel size as 1 mm
    path.write_bytes(gzip.compress(bytes(raw)))
    return ["train", config], ["case01.nii.gz", "voxel size"]


#: the issue-22 cases of this catalogue and their class on the issue
ISSUE22 = {
    nan_in_a_validation_image: "wrong",
    inf_in_a_training_image_the_crops_miss: "wrong",
    resume_with_another_patch_size: "wrong",
    resume_with_another_batch_size: "wrong",
    manifest_is_a_gzip_file: "message",
    label_with_zero_spacing_in_its_header: "wrong",
}


CASES = [
    *ISSUE22,
    run_folder_holds_a_run,
    failed_start_bad_data_keeps_the_old_run,
    failed_start_in_epoch_1_keeps_the_old_run,
    resume_without_a_run,
    diverging_learning_rate,
    flip_axis_beyond_the_spatial_dims,
    editing_loss_without_inputs,
    repeated_leaf_in_a_label_set,
    leaf_out_of_range_in_a_label_set,
    label_on_another_grid,
    extra_channel_on_another_grid,
    checkpoint_without_optimizer_state,
    output_dir_is_a_file,
    output_dir_is_read_only,
    malformed_ensemble_json,
    empty_ensemble_json,
    invalid_yaml_config,
    missing_config,
]


@pytest.mark.parametrize("case", CASES, ids=[c.__name__ for c in CASES])
def test_user_error_is_one_line_exit_2_and_touches_no_file(case, store, tmp_path, capsys):
    from losslab.cli import main

    argv, words = case(tmp_path, store)
    before = _hashes(tmp_path)
    capsys.readouterr()
    try:
        code = main([str(a) for a in argv])
    except SystemExit as exc:  # argparse errors
        code = exc.code
    out, err = capsys.readouterr()
    lines = err.strip().splitlines()
    assert code == 2, (code, err)
    assert len(lines) == 1, err
    assert "Traceback" not in err and out == ""
    for word in words:
        assert word in lines[0], (word, lines[0])
    assert _hashes(tmp_path) == before  # nothing lost, changed or added


# ------------------------------------------------------------------------------ issue 22, beyond one line
def test_disk_full_while_saving_a_checkpoint_is_one_line_and_keeps_the_run(
    store, tmp_path, capsys, monkeypatch
):
    """torch.save's `RuntimeError: [enforce fail at inline_container.cc:672]` on a full disk reached the user
    as a traceback (the files stayed whole and --resume worked): one line now, the run as it was."""
    import torch

    from losslab.cli import main

    config, out = _workspace(tmp_path, store, run="")
    before = _hashes(tmp_path)

    def full(obj, f, *args, **kwargs):
        Path(f).write_bytes(b"PK partial")
        raise RuntimeError("[enforce fail at inline_container.cc:672] . unexpected pos 320 vs 210")

    monkeypatch.setattr(torch, "save", full)
    code = main(["train", str(config), "--resume", "epochs=2"])
    lines = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and "Traceback" not in "".join(lines), lines
    assert lines[:-1] == [f"resumed from epoch 1 of 2 in {out}"]  # progress, then the one error line
    assert "last.pt" in lines[-1] and "disk full" in lines[-1]
    assert _hashes(tmp_path) == before


def test_all_empty_labels_train_with_a_warning(store, tmp_path, capsys):
    from losslab.cli import main

    config, _ = _workspace(tmp_path, store)
    for label in (tmp_path / "data" / "labels").glob("*.nii.gz"):
        _replace_image(label, lambda im: im * 0)
    code = main(["train", str(config)])
    err = capsys.readouterr().err
    assert code == 0, err
    assert "losslab train: warning: every training label map" in err and "empty" in err


def test_an_interrupted_run_prints_the_exact_command_to_resume(store, tmp_path, capsys, monkeypatch):
    """`continue with: losslab train cfg.json --resume` dropped the overrides the run was started with: run
    literally, it resumed another (finished) run in the config's own output_dir."""
    import losslab.engine.ensemble as ensemble
    from losslab.cli import main
    from losslab.engine.trainer import TrainResult

    def stopped(config, overrides=(), **kwargs):
        return [TrainResult(tmp_path / "b", None, [{}], 1, stopped=True, epochs_done=1)]

    monkeypatch.setattr(ensemble, "run", stopped)
    config, _ = _workspace(tmp_path, store)
    code = main(["train", str(config), "output_dir=runs/b", "optimizer.lr=0.02"])
    err = capsys.readouterr().err
    assert code == 1
    assert err.strip().endswith(
        f"continue with: losslab train {config} output_dir=runs/b optimizer.lr=0.02 --resume"
    )


def test_two_runs_into_one_output_dir_do_not_mix(store, tmp_path):
    """Two `losslab train` processes into one output_dir both ran and wrote one checkpoint over the other;
    now the second is refused in one line and the run is the first's alone."""
    import os
    import subprocess
    import sys

    config, out = _workspace(tmp_path, store, epochs=4)
    env = {
        **os.environ,
        "PYTHONPATH": str(Path(__file__).resolve().parents[2] / "LossLab"),
        "OMP_NUM_THREADS": "1",
    }
    runs = [
        subprocess.Popen(
            [sys.executable, "-m", "losslab.cli", "train", str(config), f"optimizer.lr={lr}"],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for lr in (0.01, 0.02)
    ]
    results = [(p.wait(timeout=600), *p.communicate()) for p in runs]
    assert sorted(code for code, _, _ in results) == [0, 2], results
    refused = next(err for code, _, err in results if code == 2).strip().splitlines()
    assert len(refused) == 1 and (
        "another training run is writing" in refused[0] or "already holds a run" in refused[0]
    )
    winner = next(lr for (code, _, _), lr in zip(results, (0.01, 0.02)) if code == 0)
    assert load_checkpoint(out / "checkpoints" / "last.pt")["config"]["optimizer"]["lr"] == winner
    assert not list(tmp_path.glob(".*.lock"))
