"""Training on generated 3D data: learning, outputs, resume, stop, early stopping, ensembles, the worker."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
from pathlib import Path

import pytest
import torch

from losslab.engine import ConfigError, DatasetError, load_checkpoint, load_predictor, run, train
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


def test_partial_annotations_are_excluded_from_dice(tmp_path):
    manifest = make_blobs_dataset(tmp_path / "d", n_cases=6, shape=(12, 12, 12), partial=True, n_val=3)
    # validation cases 0..2 are fully annotated; make case01 partial to check the per-class exclusion
    from losslab.engine import dice_per_class

    label = torch.zeros(4, 4, 4, dtype=torch.long)
    label[:2] = 3  # set label 3 = {1, 2}: classes 1 and 2 not annotated in this case
    pred = torch.ones_like(label)
    dice = dice_per_class(pred, label, 3, {3: [1, 2]})
    assert all(d != d for d in dice)  # NaN: skipped by the means
    data = json.loads(manifest.read_text())
    assert data["label_sets"] == {"3": [1, 2]}


def test_label_set_loss_trains_on_partial_annotations(tmp_path):
    manifest = make_blobs_dataset(tmp_path / "d", n_cases=6, shape=(12, 12, 12), partial=True, n_val=2)
    cfg = tiny(manifest, tmp_path / "run", epochs=2, loss={"name": "leaf_dice"})  # label_sets from manifest
    result = train(cfg)
    assert result.model_path.is_file() and all(h["train_loss"] == h["train_loss"] for h in result.history)
    ckpt = load_checkpoint(result.model_path)
    assert ckpt["model_info"]["label_sets"] == {3: [1, 2]}


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
