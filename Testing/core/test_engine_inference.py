"""Inference: round trip from files (geometry kept), the CLI, sliding windows, numpy and tensors, errors."""

from __future__ import annotations

import argparse
import json

import numpy as np
import pytest
import SimpleITK as sitk
import torch

from losslab import io as _io
from losslab.cli import COMMAND_MODULES
from losslab.cli import main as cli_main
from losslab.cli.engine import register_commands
from losslab.engine import load_predictor, predict_logits, train
from losslab.engine.synthetic import make_blobs_dataset
from losslab.nets import UNet


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    root = tmp_path_factory.mktemp("infer")
    manifest = make_blobs_dataset(
        root / "data", n_cases=6, shape=(16, 16, 16), seed=3, extra_channels=["prior"]
    )
    cfg = {
        "data": {"manifest": str(manifest)},
        "network": {"features": [4, 8, 16]},  # batch norm: folded at inference
        "optimizer": {"lr": 0.01},
        "epochs": 4,
        "batch_size": 2,
        "output_dir": str(root / "run"),
    }
    result = train(cfg)
    return root, result.model_path


def test_round_trip_from_files_keeps_geometry(trained, tmp_path):
    root, model = trained
    image = sitk.GetImageFromArray(np.random.default_rng(0).normal(size=(20, 18, 22)).astype(np.float32))
    image.SetSpacing((0.8, 0.9, 1.5))
    image.SetOrigin((10.0, -5.0, 3.0))
    image.SetDirection((0.0, 1.0, 0.0, 1.0, 0.0, 0.0, 0.0, 0.0, 1.0))
    sitk.WriteImage(image, str(tmp_path / "t2.nrrd"))
    sitk.WriteImage(image, str(tmp_path / "prior.nii.gz"))
    predictor = load_predictor(model, device="cpu")
    out = predictor.predict_files(
        [tmp_path / "t2.nrrd", tmp_path / "prior.nii.gz"],
        tmp_path / "seg.nii.gz",
        probabilities=tmp_path / "p.nrrd",
    )
    seg = sitk.ReadImage(str(out))
    assert seg.GetSize() == image.GetSize()
    np.testing.assert_allclose(seg.GetSpacing(), image.GetSpacing(), rtol=1e-6)
    np.testing.assert_allclose(seg.GetOrigin(), image.GetOrigin(), rtol=1e-6)
    np.testing.assert_allclose(seg.GetDirection(), image.GetDirection(), atol=1e-6)
    probs = sitk.ReadImage(str(tmp_path / "p.nrrd"))
    assert probs.GetNumberOfComponentsPerPixel() == 3
    expected = predictor.predict(np.stack([sitk.GetArrayFromImage(image)] * 2))
    np.testing.assert_array_equal(sitk.GetArrayFromImage(seg), expected.labels)
    p = sitk.GetArrayFromImage(probs)
    np.testing.assert_allclose(p.sum(-1), 1.0, atol=1e-5)


def test_cli_infer_and_wrong_channel_count(trained, tmp_path, capsys):
    root, model = trained
    case = root / "data" / "images" / "case00.nii.gz"
    prior = root / "data" / "prior" / "case00.nii.gz"
    parser = argparse.ArgumentParser()
    register_commands(parser.add_subparsers(dest="command"))
    args = parser.parse_args(["infer", str(model), str(case), str(prior), "-o", str(tmp_path / "o.nii.gz")])
    assert args.func(args) == 0
    assert (tmp_path / "o.nii.gz").is_file()
    assert cli_main(["infer", str(model), str(case), "-o", str(tmp_path / "x.nii.gz")]) == 2
    assert "2 input channel(s)" in capsys.readouterr().err
    assert cli_main(["infer", str(tmp_path / "none.pt"), str(case), "-o", str(tmp_path / "x.nii.gz")]) == 2
    assert "none.pt" in capsys.readouterr().err


def test_cli_train_with_overrides(trained, tmp_path, capsys):
    root, _ = trained
    config = tmp_path / "c.json"
    config.write_text(json.dumps({"data": {"manifest": str(root / "data" / "dataset.json")}, "epochs": 5}))
    code = cli_main(
        [
            "train",
            str(config),
            "epochs=1",
            "network.features=[4,8]",
            "network.norm=instance",
            f"output_dir={tmp_path}/r",
        ]
    )
    assert code == 0
    assert json.loads(capsys.readouterr().out.splitlines()[-1])["epochs"] == 1
    assert cli_main(["train", str(config), "optimizer.name=lbfgs"]) == 2
    assert "lbfgs" in capsys.readouterr().err


def test_losslab_command_line_lists_train_and_infer(trained, tmp_path, capsys):
    assert "losslab.cli.engine" in COMMAND_MODULES
    root, model = trained
    case = root / "data" / "images" / "case00.nii.gz"
    prior = root / "data" / "prior" / "case00.nii.gz"
    assert cli_main(["infer", str(model), str(case), str(prior), "-o", str(tmp_path / "o.nrrd")]) == 0
    assert (tmp_path / "o.nrrd").is_file()
    assert cli_main(["train", str(tmp_path / "missing.json")]) == 2
    assert "missing.json" in capsys.readouterr().err


def test_numpy_and_tensor_inputs_agree(trained):
    _, model = trained
    predictor = load_predictor(model, device="cpu")
    x = np.random.default_rng(1).normal(size=(2, 13, 17, 11)).astype(np.float32)
    a = predictor.predict(x)
    b = predictor.predict(torch.from_numpy(x))
    assert isinstance(a.labels, np.ndarray) and isinstance(b.labels, torch.Tensor)
    np.testing.assert_allclose(a.probabilities, b.probabilities.numpy(), atol=1e-6)
    assert a.probabilities.shape == (3, 13, 17, 11) and a.labels.shape == (13, 17, 11)
    with pytest.raises(ValueError, match=r"\(2, \*, \*, \*\)"):
        predictor.predict(x[0])


def test_large_volumes_switch_to_windows_of_the_patch_size(trained, monkeypatch):
    _, model = trained
    predictor = load_predictor(model, device="cpu")
    assert predictor.info.patch_size == [16, 16, 16]
    seen = []
    import losslab.engine.inference as inference

    real = inference.predict_logits
    monkeypatch.setattr(
        inference, "predict_logits", lambda m, x, w, o, d: seen.append(w) or real(m, x, w, o, d)
    )
    x = np.zeros((2, 20, 20, 20), dtype=np.float32)
    predictor.predict(x)
    predictor.max_whole_voxels = 10**3
    out = predictor.predict(x)
    assert seen == [None, [16, 16, 16]] and out.labels.shape == (20, 20, 20)


def test_fused_predictor_matches_the_trained_model(trained):
    _, model = trained
    fused = load_predictor(model, device="cpu", fuse=True)
    plain = load_predictor(model, device="cpu", fuse=False)
    x = np.random.default_rng(2).normal(size=(2, 16, 16, 16)).astype(np.float32)
    np.testing.assert_allclose(fused.predict(x).probabilities, plain.predict(x).probabilities, atol=1e-4)


def test_sliding_window_covers_large_volumes():
    torch.manual_seed(0)
    net = UNet(1, 2, features=(4, 8), norm="none").eval()
    x = torch.randn(1, 1, 40, 24, 30)
    with torch.no_grad():
        whole = predict_logits(net, x)
        tiled = predict_logits(net, x, window=[16, 16, 16], overlap=0.5)
        one = predict_logits(net, x, window=[64, 64, 64])
    assert tiled.shape == whole.shape == (1, 2, 40, 24, 30)
    torch.testing.assert_close(one, whole)
    # away from window borders, the receptive field (2 levels: 10 voxels) sees the same data
    inner = (slice(None), slice(None), slice(18, 22), slice(10, 14), slice(13, 17))
    assert torch.isfinite(tiled).all()
    torch.testing.assert_close(tiled[inner], whole[inner], rtol=0.2, atol=0.2)


def test_geometry_writing_is_atomic_and_named_errors(tmp_path):
    with pytest.raises(ValueError, match="unsupported file type"):
        _io.write_image(tmp_path / "x.png", np.zeros((2, 2, 2)))
    with pytest.raises(FileNotFoundError, match="nope.nii.gz"):
        _io.read_image(tmp_path / "nope.nii.gz")
    _io.write_image(tmp_path / "a.nii.gz", np.ones((3, 4, 5), dtype=np.uint8))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.nii.gz"]  # no temporary file left
