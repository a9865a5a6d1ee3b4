"""Training on generated 3D data: learning, outputs, resume, stop, early stopping, ensembles, the worker."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
from pathlib import Path

import pytest
import SimpleITK as sitk
import torch

from losslab.engine import (
    ConfigError,
    DatasetError,
    load_checkpoint,
    load_predictor,
    run,
    save_checkpoint,
    train,
)
from losslab.engine.synthetic import make_blobs_dataset

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def blobs(tmp_path_factory):
    return make_blobs_dataset(tmp_path_factory.mktemp("blobs"), n_cases=8, shape=(16, 16, 16), seed=1)


def tiny(manifest, out, **changes):
    cfg = {
        "data": {"manifest": str(manifest)},
        "network": {"features": [4, 8, 16], "norm": "instance"},
        "optimizer": {"lr": 0.01},
        "epochs": 3,
        "batch_size": 2,
        "output_dir": str(out),
        "augmentation": {"scale": {"prob": 0.3}, "gamma": {"prob": 0.3}, "noise": {"prob": 0.3}},
        "plot_every": 0,  # curves.png once, at the end (plotting every epoch costs ~0.4 s)
    }
    for key, value in changes.items():
        cfg[key] = {**cfg[key], **value} if isinstance(value, dict) and key in cfg else value
    return cfg


def test_training_lowers_loss_and_raises_dice(blobs, tmp_path):
    events = []
    result = train(tiny(blobs, tmp_path / "run", epochs=10), progress=events.append)
    hist = result.history
    assert len(hist) == 10
    assert hist[-1]["train_loss"] < 0.8 * hist[0]["train_loss"]
    assert hist[-1]["val_loss"] < hist[0]["val_loss"]
    assert hist[-1]["val_dice_mean"] > hist[0]["val_dice_mean"] and hist[-1]["val_dice_mean"] > 0.6
    assert set(hist[-1]["val_dice"]) == {"class1", "class2"}
    # files: metrics as JSON lines, curves as PNG, checkpoints, the final model
    lines = (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(line)["epoch"] for line in lines] == list(range(1, 11))
    assert (tmp_path / "run" / "curves.png").read_bytes()[:4] == b"\x89PNG"
    for name in ("checkpoints/last.pt", "checkpoints/best.pt", "model.pt", "summary.json"):
        assert (tmp_path / "run" / name).is_file(), name
    ckpt = load_checkpoint(tmp_path / "run" / "checkpoints" / "last.pt")
    assert {"model", "optimizer", "scheduler", "config", "metrics", "versions", "rng"} <= set(ckpt)
    assert ckpt["versions"]["torch"] == str(torch.__version__)
    kinds = [e["event"] for e in events]
    assert kinds[0] == "start" and kinds[-1] == "end" and kinds.count("epoch") == 10
    assert kinds.count("batch") == 10 * 3  # 6 training cases, batch 2
    assert result.model_path == tmp_path / "run" / "model.pt" and result.best_epoch is not None


def _same_state(a, b):
    return all(torch.equal(a[k], b[k]) for k in a) and a.keys() == b.keys()


def test_resume_after_a_kill_equals_an_uninterrupted_run(blobs, tmp_path):
    full = train(tiny(blobs, tmp_path / "full", epochs=4))
    stop = threading.Event()

    def kill_in_epoch_3(event):
        if event["event"] == "batch" and event["epoch"] == 3 and event["step"] == 2:
            stop.set()

    cut = train(tiny(blobs, tmp_path / "cut", epochs=4), progress=kill_in_epoch_3, stop=stop)
    assert cut.stopped and cut.epochs_done == 2 and cut.model_path is None
    resumed = train(tiny(blobs, tmp_path / "cut", epochs=4), resume=True)
    assert resumed.epochs_done == 4 and not resumed.stopped
    a = load_checkpoint(tmp_path / "full" / "checkpoints" / "last.pt")
    b = load_checkpoint(tmp_path / "cut" / "checkpoints" / "last.pt")
    assert _same_state(a["model"], b["model"])
    for ha, hb in zip(full.history, resumed.history):
        assert ha["train_loss"] == hb["train_loss"] and ha["val_loss"] == hb["val_loss"]
    assert len((tmp_path / "cut" / "metrics.jsonl").read_text().splitlines()) == 4


def test_resume_refuses_a_different_network(blobs, tmp_path):
    train(tiny(blobs, tmp_path / "r", epochs=1))
    with pytest.raises(ConfigError, match="cannot resume"):
        train(tiny(blobs, tmp_path / "r", epochs=2, network={"features": [4, 8]}), resume=True)


def test_early_stopping_and_plateau_halving(blobs, tmp_path):
    cfg = tiny(
        blobs,
        tmp_path / "es",
        epochs=12,
        optimizer={"lr": 1e-6},  # nothing improves: the LR halves and training stops early
        scheduler={"patience": 0},
        early_stopping={"patience": 2, "min_delta": 1.0},
        augmentation={"enabled": False},
    )
    result = train(cfg)
    assert result.early_stopped and result.epochs_done == 3
    lrs = [h["lr"] for h in result.history]  # the rate used in each epoch
    assert lrs[0] == lrs[1] and lrs[2] == pytest.approx(lrs[1] / 2)  # halved after epoch 2 did not improve


def _partial_dataset(folder):
    """Blobs where case03 and case05 are partially annotated (every foreground voxel holds the set label 3
    = {1, 2}); validation gets one fully annotated case and one partial case."""
    manifest = make_blobs_dataset(folder, n_cases=6, shape=(12, 12, 12), partial=True, n_val=2)
    data = json.loads(manifest.read_text())
    data["splits"] = {"train": ["case01", "case02", "case04", "case05"], "val": ["case00", "case03"]}
    manifest.write_text(json.dumps(data))
    return manifest


def test_partial_annotations_are_excluded_from_dice(tmp_path):
    from losslab.engine import VolumeDataset, dice_per_class, load_manifest, predict_logits

    manifest = _partial_dataset(tmp_path / "d")
    cfg = tiny(
        manifest, tmp_path / "run", epochs=4, loss={"name": "leaf_dice"}, augmentation={"enabled": False}
    )
    result = train(cfg)
    record = result.history[-1]
    val = VolumeDataset(load_manifest(manifest), ["case00", "case03"])
    partial = val[1]["label"]
    assert set(torch.unique(partial).tolist()) == {0, 3}  # a real partial case: background and set label
    # what validation must report: the Dice of the fully annotated case alone (case03 annotates neither
    # class 1 nor 2); counting case03 would add Dice 0 (or anything else) for both classes
    model = result.model.eval()
    with torch.no_grad():
        logits = predict_logits(model, val[0]["image"][None], None, 0.5, None)
    expected = dice_per_class(logits.argmax(1)[0], val[0]["label"], 3, {3: [1, 2]})
    assert min(expected) > 0.1  # the model predicts both classes, so counting case03 would change the mean
    assert record["val_dice"] == pytest.approx({"class1": expected[0], "class2": expected[1]})
    assert record["val_dice_mean"] == pytest.approx(sum(expected) / 2)


def test_label_set_loss_trains_on_partial_annotations(tmp_path, monkeypatch):
    import losslab.engine.trainer as trainer

    manifest = _partial_dataset(tmp_path / "d")
    seen_sets = []
    build = trainer.build_loss

    def spying_build_loss(config, label_sets):
        loss = build(config, label_sets)
        forward = loss.forward

        def spy(input, target, **kw):
            if torch.is_grad_enabled():  # a training batch (validation runs without gradients)
                seen_sets.append(int((target == 3).sum()))
            return forward(input, target, **kw)

        loss.forward = spy
        return loss

    monkeypatch.setattr(trainer, "build_loss", spying_build_loss)
    cfg = tiny(manifest, tmp_path / "run", epochs=6, loss={"name": "leaf_dice"})  # label_sets from manifest
    result = train(cfg)
    assert max(seen_sets) > 0  # set-labelled voxels of case05 reached the leaf-Dice loss
    hist = result.history
    assert hist[-1]["train_loss"] < 0.9 * hist[0]["train_loss"]
    ckpt = load_checkpoint(result.model_path)
    assert ckpt["model_info"]["label_sets"] == {3: [1, 2]}


def test_label_set_loss_trains_on_a_fully_annotated_dataset(tmp_path):
    """A manifest without set labels (every voxel annotated, e.g. the atlas with all its tissues) trains
    with leaf-Dice as it stands: the loss gets an empty label-set map, not a config error."""
    manifest = make_blobs_dataset(tmp_path / "d", n_cases=4, shape=(12, 12, 12), n_val=1)
    from losslab.engine import load_manifest

    assert load_manifest(manifest).label_sets == {}
    result = train(tiny(manifest, tmp_path / "run", epochs=3, loss={"name": "leaf_dice"}))
    assert result.history[-1]["train_loss"] < result.history[0]["train_loss"]
    assert load_checkpoint(result.model_path)["model_info"]["label_sets"] == {}


def test_editing_loss_gets_its_extra_inputs_from_channels(tmp_path):
    manifest = make_blobs_dataset(
        tmp_path / "d",
        n_cases=4,
        shape=(12, 12, 12),
        n_classes=2,
        n_val=1,
        extra_channels=["initial", "heatmap"],
    )
    cfg = tiny(
        manifest,
        tmp_path / "run",
        epochs=2,
        network={"preset": "ice_editing", "features": [4, 8], "out_channels": 1},
        loss={"name": "editing", "inputs": {"initial": "initial", "attention": "heatmap"}},
    )
    result = train(cfg)
    assert result.history[-1]["val_dice"].keys() == {"class1"}
    prediction = load_predictor(result.model_path, device="cpu").predict(torch.rand(3, 12, 12, 12).numpy())
    assert prediction.probabilities.shape == (2, 12, 12, 12)
    with pytest.raises(DatasetError, match="unknown input channel 'scribble'"):
        inputs = {"initial": "initial", "attention": "scribble"}
        train({**cfg, "output_dir": str(tmp_path / "run2"), "loss": {"name": "editing", "inputs": inputs}})


def test_missing_data_and_bad_manifest_are_named(blobs, tmp_path):
    with pytest.raises(FileNotFoundError, match="nothing.json"):
        train(tiny(tmp_path / "nothing.json", tmp_path / "x"))
    data = json.loads(blobs.read_text())
    data["cases"][0]["image"] = "images/missing.nii.gz"
    bad = blobs.parent / "bad-manifest.json"  # next to the data: paths are relative to the manifest
    bad.write_text(json.dumps(data))
    with pytest.raises(FileNotFoundError, match="missing.nii.gz"):
        train(tiny(bad, tmp_path / "x"))
    data = json.loads(blobs.read_text())
    data["splits"]["val"] = ["case99"]
    bad.write_text(json.dumps(data))
    with pytest.raises(DatasetError, match="case99"):
        train(tiny(bad, tmp_path / "x"))
    with pytest.raises(ConfigError, match="nope"):
        train(tiny(blobs, tmp_path / "x", loss={"name": "nope"}))
    with pytest.raises(ConfigError, match="in_channels"):
        train(tiny(blobs, tmp_path / "x", network={"preset": "ice_editing"}))
    with pytest.raises(ConfigError, match="bogus"):
        train(tiny(blobs, tmp_path / "x", loss={"name": "dice", "options": {"bogus": 1}}))


def test_label_values_outside_the_labels_are_named(tmp_path):
    import numpy as np

    from losslab import io as _io

    manifest = make_blobs_dataset(tmp_path / "d", n_cases=3, shape=(8, 8, 8), n_val=1)
    _io.write_image(tmp_path / "d" / "labels" / "case02.nii.gz", np.full((8, 8, 8), 7, dtype=np.uint8))
    with pytest.raises(DatasetError, match=r"case02.*\[7\]"):
        train(tiny(manifest, tmp_path / "x", epochs=1))


def test_ensemble_members_differ_and_predict_together(blobs, tmp_path):
    cfg = tiny(blobs, tmp_path / "ens", epochs=1, ensemble={"members": 2})
    cfg["data"] = {**cfg["data"], "val_split": "none", "val_fraction": 0.25}
    results = run(cfg)
    assert len(results) == 2
    a, b = (load_checkpoint(r.model_path) for r in results)
    assert a["config"]["seed"] == 0 and b["config"]["seed"] == 1
    assert not _same_state(a["model"], b["model"])
    index = json.loads((tmp_path / "ens" / "ensemble.json").read_text())
    assert index["members"] == ["member0/model.pt", "member1/model.pt"]
    predictor = load_predictor(tmp_path / "ens", device="cpu")
    assert len(predictor.models) == 2
    image = torch.randn(16, 16, 16).numpy()
    both = predictor.predict(image).probabilities
    singles = [load_predictor(r.model_path, device="cpu").predict(image).probabilities for r in results]
    torch.testing.assert_close(torch.from_numpy(both), torch.from_numpy((singles[0] + singles[1]) / 2))


def test_worker_streams_json_lines(blobs, tmp_path):
    config = tmp_path / "cfg.json"
    config.write_text(json.dumps(tiny(blobs, tmp_path / "w", epochs=2)))
    env = {**os.environ, "PYTHONPATH": str(ROOT / "LossLab")}
    proc = subprocess.run(
        [sys.executable, "-m", "losslab.engine.worker", str(config), "epochs=1"],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )
    events = [json.loads(line) for line in proc.stdout.splitlines()]
    assert proc.returncode == 0, proc.stderr
    assert [e["event"] for e in events][-3:] == ["end", "done", "exit"]
    assert sum(e["event"] == "epoch" for e in events) == 1
    bad = subprocess.run(
        [sys.executable, "-m", "losslab.engine.worker", str(config), "optimizer.name=rmsprop"],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )
    events = [json.loads(line) for line in bad.stdout.splitlines()]
    assert bad.returncode == 2 and events[0]["event"] == "error" and "rmsprop" in events[0]["message"]


def test_worker_stops_cleanly_on_sigterm_and_resumes(blobs, tmp_path):
    import signal

    config = tmp_path / "cfg.json"
    config.write_text(json.dumps(tiny(blobs, tmp_path / "w", epochs=200)))
    env = {**os.environ, "PYTHONPATH": str(ROOT / "LossLab")}
    proc = subprocess.Popen(
        [sys.executable, "-m", "losslab.engine.worker", str(config)],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
        env=env,
    )
    events = []
    try:
        for line in proc.stdout:
            events.append(json.loads(line))
            if events[-1]["event"] == "epoch" and events[-1]["epoch"] == 2:
                proc.send_signal(signal.SIGTERM)  # the GUI's Stop button
                break
        rest, _ = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    events += [json.loads(line) for line in rest.splitlines()]
    assert proc.returncode == 0
    end = next(e for e in events if e["event"] == "end")
    assert end["stopped"] and 2 <= end["epochs_done"] < 200
    assert load_checkpoint(tmp_path / "w" / "checkpoints" / "last.pt")["epoch"] == end["epochs_done"]
    resumed = train(tiny(blobs, tmp_path / "w", epochs=end["epochs_done"] + 1), resume=True)
    assert resumed.epochs_done == end["epochs_done"] + 1 and resumed.model_path.is_file()


def test_2d_training_and_inference(tmp_path):
    manifest = make_blobs_dataset(tmp_path / "d", n_cases=5, shape=(24, 20), n_val=1)
    cfg = tiny(manifest, tmp_path / "run", epochs=2, network={"preset": "unet2d", "features": [4, 8]})
    cfg["network"] = {"preset": "unet2d", "features": [4, 8], "out_channels": 3}
    cfg["augmentation"]["flip"] = {"prob": 0.5, "axes": [0, 1]}
    result = train(cfg)
    predictor = load_predictor(result.model_path, device="cpu")
    assert predictor.predict(torch.zeros(30, 17).numpy()).labels.shape == (30, 17)


# ------------------------------------------------------------------------- run folder, divergence, CLI
def _tree(folder):
    """{relative path: bytes} of every file under folder (what "untouched" compares)."""
    folder = Path(folder)
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def old_run(blobs, tmp_path_factory):
    """A finished 2-epoch run (model.pt, summary.json, curves.png, checkpoints, metrics)."""
    out = tmp_path_factory.mktemp("old") / "run"
    train(tiny(blobs, out, epochs=2))
    return out


def _copy_run(old_run, tmp_path):
    import shutil

    return Path(shutil.copytree(old_run, tmp_path / "run"))


def test_a_folder_holding_a_run_is_refused_and_a_failed_start_keeps_it(blobs, old_run, tmp_path):
    from losslab.engine.checkpoint import RunFolderError

    out = _copy_run(old_run, tmp_path)
    before = _tree(out)
    with pytest.raises(RunFolderError, match=r"already holds a run.*--resume.*--overwrite"):
        train(tiny(blobs, out, epochs=1))
    # --overwrite, then a failure in epoch 1 (a diverging loss): the old run stays whole
    with pytest.raises(ValueError, match="diverged"):
        train(tiny(blobs, out, epochs=1, optimizer={"lr": 1e6}), overwrite=True)
    # --overwrite, then bad data found while building (a label on another grid)
    bad = blobs.parent / "bad-grid"
    import shutil

    shutil.copytree(blobs.parent, bad, ignore=shutil.ignore_patterns("bad-*"))
    image = sitk.ReadImage(str(bad / "labels" / "case05.nii.gz"))
    image.SetSpacing((1.0, 1.0, 1.5))
    sitk.WriteImage(image, str(bad / "labels" / "case05.nii.gz"))
    with pytest.raises(DatasetError, match=r"case05.*spacing"):
        train(tiny(bad / "dataset.json", out, epochs=1), overwrite=True)
    assert _tree(out) == before


def test_overwrite_replaces_the_old_run_once_the_first_epoch_is_done(blobs, old_run, tmp_path, monkeypatch):
    out = _copy_run(old_run, tmp_path)
    monkeypatch.chdir(tmp_path)  # a relative output_dir
    stop = threading.Event()

    def stop_in_epoch_2(event):
        if event["event"] == "batch" and event["epoch"] == 2:
            stop.set()

    cfg = tiny(blobs, Path("run"), epochs=3, seed=5)
    result = train(cfg, overwrite=True, progress=stop_in_epoch_2, stop=stop)
    assert result.stopped and result.epochs_done == 1
    # the new run's files, and none of the old run's: no model.pt / summary.json of the replaced run
    assert not (out / "model.pt").exists() and not (out / "summary.json").exists()
    assert len((out / "metrics.jsonl").read_text().splitlines()) == 1
    assert load_checkpoint(out / "checkpoints" / "last.pt")["config"]["seed"] == 5
    assert (out / "checkpoints" / "best.pt").is_file()  # epoch 1 improved: rewritten, not removed


def test_resume_needs_a_run_and_a_training_checkpoint(blobs, old_run, tmp_path):
    from losslab.engine.checkpoint import RunFolderError

    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "notes.txt").write_text("mine")
    with pytest.raises(RunFolderError, match=r"nothing to resume.*no checkpoints/last.pt"):
        train(tiny(blobs, tmp_path / "empty", epochs=3), resume=True)
    out = _copy_run(old_run, tmp_path)
    last = out / "checkpoints" / "last.pt"
    state = load_checkpoint(last)
    del state["optimizer"]
    save_checkpoint(last, state)
    before = _tree(out)
    with pytest.raises(ValueError, match=r"cannot resume from .*last.pt.*no optimizer"):
        train(tiny(blobs, out, epochs=3), resume=True)
    assert _tree(out) == before


def test_the_divergence_rule():
    from losslab.engine.trainer import LOGIT_LIMIT, LOSS_GROWTH, TrainingDiverged, check_divergence

    ok = {"where": "epoch 1, step 1", "lr": 1e-3}
    check_divergence(1.1, 40.0, None, **ok)  # a normal first batch
    check_divergence(1.0, LOGIT_LIMIT, 1.1, **ok)
    check_divergence(LOSS_GROWTH * 1.1, 40.0, 1.1, **ok)  # at the bound, not over it
    check_divergence(5.0, 40.0, 0.0, **ok)  # a zero first loss is no reference
    check_divergence(-3.0, 40.0, -0.5, **ok)  # negative losses that fall are fine
    for loss, peak, ref, words in [
        (float("nan"), 1.0, 1.0, "loss became nan"),
        (float("inf"), 1.0, None, "loss became inf"),
        (0.7, 2 * LOGIT_LIMIT, 0.7, "outputs reached"),
        (0.7, float("nan"), 0.7, "outputs reached"),
        (LOSS_GROWTH * 1.1 * 1.01, 40.0, 1.1, "first batch loss"),
    ]:
        with pytest.raises(TrainingDiverged, match=words) as info:
            check_divergence(loss, peak, ref, **ok)
        assert isinstance(info.value, ValueError) and "lower optimizer.lr" in str(info.value)


@pytest.mark.parametrize("loss", ["cross_entropy", "dice"])
def test_a_diverging_learning_rate_is_an_error_not_a_result(blobs, tmp_path, loss):
    cfg = tiny(blobs, tmp_path / "run", epochs=3, optimizer={"lr": 1e6}, loss={"name": loss})
    with pytest.raises(ValueError, match=r"diverged at epoch 1, step \d.*lower optimizer.lr \(now 1e\+06\)"):
        train(cfg)
    assert not (tmp_path / "run").exists()  # nothing written: the run never completed an epoch


def test_normal_training_stays_far_from_the_divergence_limits(blobs, tmp_path, monkeypatch):
    import losslab.engine.trainer as trainer

    seen = []
    check = trainer.check_divergence

    def spy(loss, peak, reference, **kw):
        seen.append((loss, peak, reference))
        return check(loss, peak, reference, **kw)

    monkeypatch.setattr(trainer, "check_divergence", spy)
    for lr, name in [(0.1, "adam"), (1.0, "sgd")]:  # high but working rates (Dice > 0.7 after 8 epochs)
        seen.clear()
        out = tmp_path / f"{name}{lr}"
        result = train(tiny(blobs, out, epochs=8, optimizer={"lr": lr, "name": name}))
        assert result.history[-1]["val_dice_mean"] > 0.5
        first = seen[0][0]
        assert max(p for _, p, _ in seen) < trainer.LOGIT_LIMIT / 50
        assert max(v for v, _, _ in seen) < trainer.LOSS_GROWTH / 100 * first


def _cli(argv, capsys):
    from losslab.cli import main

    try:
        code = main([str(a) for a in argv])
    except SystemExit as exc:
        code = exc.code
    out, err = capsys.readouterr()
    return code, out, err


def test_cli_resume_with_overrides_after_the_flag_and_one_line_per_epoch(blobs, tmp_path, capsys):
    config = tmp_path / "cfg.json"
    config.write_text(json.dumps(tiny(blobs, tmp_path / "run", epochs=1)))
    code, out, err = _cli(["train", config], capsys)
    assert code == 0, err
    lines = err.splitlines()
    assert len(lines) == 1 and lines[0].startswith("epoch 1/1: train loss ") and "val dice" in lines[0]
    assert json.loads(out)["epochs"] == 1
    code, out, err = _cli(["train", config, "--resume", "epochs=2", "plot_every=1"], capsys)
    assert code == 0, err
    assert err.splitlines()[0].startswith("resumed from epoch 1 of 2")
    assert err.splitlines()[1].startswith("epoch 2/2: train loss ")
    assert json.loads(out)["epochs"] == 2
    assert len((tmp_path / "run" / "metrics.jsonl").read_text().splitlines()) == 2
    code, out, err = _cli(["train", config], capsys)  # the folder now holds a run
    assert code == 2 and len(err.splitlines()) == 1 and "already holds a run" in err
    code, out, err = _cli(["train", config, "--overwrite", "epochs=1"], capsys)
    assert code == 0 and json.loads(out)["epochs"] == 1


@pytest.mark.parametrize("signame", ["SIGINT", "SIGTERM"])
def test_cli_stops_on_ctrl_c_and_sigterm_with_a_checkpoint_and_one_line(blobs, tmp_path, signame):
    import signal

    config = tmp_path / "cfg.json"
    config.write_text(json.dumps(tiny(blobs, tmp_path / "run", epochs=200)))
    env = {**os.environ, "PYTHONPATH": str(ROOT / "LossLab"), "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "losslab", "train", str(config)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    lines = []
    try:
        for line in proc.stderr:  # not a terminal: one line per epoch
            lines.append(line.rstrip("\n"))
            if line.startswith("epoch 2/200"):
                proc.send_signal(getattr(signal, signame))
                break
        out, rest = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
    lines += rest.splitlines()
    assert proc.returncode == 128 + getattr(signal, signame), lines
    assert "Traceback" not in "\n".join(lines) and out == ""
    assert all(line.startswith("epoch ") for line in lines[:-1])
    done = load_checkpoint(tmp_path / "run" / "checkpoints" / "last.pt")["epoch"]
    assert done >= 2 and lines[-1].startswith(f"losslab train: stopped by {signame} after epoch {done};")
    assert "--resume" in lines[-1]


def test_ensemble_index_is_validated_naming_the_file(blobs, tmp_path):
    from losslab.engine.checkpoint import read_ensemble_manifest

    index = tmp_path / "ensemble.json"
    for text, words in [
        ("", "is empty"),
        ("{", "not valid JSON"),
        ('{"members": []}', "at least one member"),
        ('["member0/model.pt"]', "members"),
        ('{"members": ["/abs/model.pt"]}', "relative"),
        ('{"members": ["../x/model.pt"]}', "relative"),
        ('{"members": [3]}', "relative"),
    ]:
        index.write_text(text)
        with pytest.raises(ValueError, match=words) as info:
            read_ensemble_manifest(index)
        assert str(index) in str(info.value)
    index.write_text('{"members": ["member0/model.pt", "member1/model.pt"]}')
    assert read_ensemble_manifest(index) == [tmp_path / "member0/model.pt", tmp_path / "member1/model.pt"]
    # resuming an ensemble reads it
    out = tmp_path / "ens"
    (out / "member0" / "checkpoints").mkdir(parents=True)
    (out / "ensemble.json").write_text("{")
    cfg = tiny(blobs, out, epochs=1, ensemble={"members": 2})
    with pytest.raises(ValueError, match=r"ensemble.json.*not valid JSON"):
        run(cfg, resume=True)
    (out / "ensemble.json").write_text('{"members": ["member0/model.pt"]}')
    with pytest.raises(ValueError, match=r"lists 1 member\(s\).*ensemble.members=2"):
        run(cfg, resume=True)
