"""Inference: round trip from files (geometry kept), the CLI, sliding windows, numpy and tensors, errors."""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import time

import numpy as np
import pytest
import SimpleITK as sitk
import torch
from torch import nn

from losslab import io as _io
from losslab.cli import COMMAND_MODULES
from losslab.cli import main as cli_main
from losslab.cli.engine import register_commands
from losslab.engine import ensemble_members, load_predictor, predict_logits, train
from losslab.engine.inference import count_windows
from losslab.engine.synthetic import make_blobs_dataset


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
        inference, "predict_logits", lambda m, x, w, o, d, **kw: seen.append(w) or real(m, x, w, o, d, **kw)
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


def _conv_net(kernel: int, layers: int, channels: int = 1, classes: int = 3) -> nn.Module:
    """A plain conv net, zero padding, no pooling: translation-equivariant, receptive-field radius
    ``layers * (kernel // 2)``."""
    torch.manual_seed(0)
    mods, width = [], channels
    for i in range(layers):
        out = classes if i == layers - 1 else 6
        mods.append(nn.Conv3d(width, out, kernel, padding=kernel // 2))
        if i < layers - 1:
            mods.append(nn.Tanh())
        width = out
    return nn.Sequential(*mods).eval()


def _safe_along(size: int, window: int, step: int, radius: int) -> np.ndarray:
    """Voxels of one axis at least ``radius`` from every inner border of every window that covers them
    (windows at 0, step, 2 step, ..., the last one flush with the end)."""
    if window >= size:
        return np.ones(size, bool)
    starts = sorted({*range(0, size - window, step), size - window})
    safe = np.ones(size, bool)
    for p in range(size):
        for s in starts:
            if s <= p < s + window:
                if (s > 0 and p - s < radius) or (s + window < size and s + window - 1 - p < radius):
                    safe[p] = False
    return safe


@pytest.mark.parametrize("overlap", [0.0, 0.25, 0.5])
def test_tiling_a_per_voxel_model_matches_the_whole_volume_everywhere(overlap):
    # a 1x1x1 network sees one voxel: windows, their placement and the Gaussian blend must not change it
    net = _conv_net(kernel=1, layers=2)
    x = torch.randn(1, 1, 40, 23, 30)
    with torch.no_grad():
        whole = predict_logits(net, x)
        tiled = predict_logits(net, x, window=[16, 10, 16], overlap=overlap)
    assert whole.abs().max() > 0.3  # not a trivially small output
    torch.testing.assert_close(tiled, whole, rtol=0, atol=1e-5)


def test_tiling_matches_the_whole_volume_where_the_receptive_field_fits_in_every_window():
    radius = 2  # two 3^3 convolutions
    net = _conv_net(kernel=3, layers=2)
    x = torch.randn(1, 1, 40, 24, 30)
    window, overlap = [16, 16, 16], 0.5
    with torch.no_grad():
        whole = predict_logits(net, x)
        tiled = predict_logits(net, x, window=window, overlap=overlap)
        one = predict_logits(net, x, window=[64, 64, 64])
    assert tiled.shape == whole.shape == (1, 3, 40, 24, 30)
    torch.testing.assert_close(one, whole)  # a window larger than the volume: the whole volume at once
    axes = [_safe_along(s, w, int(w * (1 - overlap)), radius) for s, w in zip(x.shape[2:], window)]
    safe = torch.from_numpy(axes[0][:, None, None] & axes[1][None, :, None] & axes[2][None, None, :])
    assert 0.1 < safe.float().mean() < 0.9
    assert whole.abs().max() > 0.3
    # where every window that holds a voxel also holds its receptive field, tiling changes nothing
    torch.testing.assert_close(tiled[..., safe], whole[..., safe], rtol=0, atol=1e-5)
    # elsewhere some window cut the context off: the blend differs (the test can tell tiled from whole)
    assert (tiled[..., ~safe] - whole[..., ~safe]).abs().max() > 1e-3


def test_gaussian_blending_weighs_window_centres_over_borders():
    # a voxel near an inner window border (little context) counts less than where it is a window's centre:
    # closer to the whole-volume logits than a uniform average of the same windows
    from monai.inferers import sliding_window_inference

    net = _conv_net(kernel=3, layers=3)
    x = torch.randn(1, 1, 48, 48, 48)
    with torch.no_grad():
        whole = predict_logits(net, x)
        gaussian = predict_logits(net, x, window=[16, 16, 16], overlap=0.5)
        uniform = sliding_window_inference(x, [16, 16, 16], 1, net, overlap=0.5, mode="constant")
    err_g = (gaussian - whole).abs().mean()
    err_u = (uniform - whole).abs().mean()
    assert err_g < 0.8 * err_u


def test_window_and_overlap_are_validated_naming_the_value(trained):
    _, model = trained
    predictor = load_predictor(model, device="cpu")
    x = np.zeros((2, 12, 12, 12), dtype=np.float32)
    net = _conv_net(kernel=1, layers=1)
    for bad, match in [(-0.1, "got -0.1"), (1.0, "got 1.0"), (float("nan"), "got nan"), ("half", "'half'")]:
        with pytest.raises(ValueError, match=match):
            predictor.predict(x, window=[8, 8, 8], overlap=bad)
        with pytest.raises(ValueError, match="overlap"):
            predict_logits(net, torch.zeros(1, 1, 12, 12, 12), window=[8, 8, 8], overlap=bad)
    for bad, match in [
        ([0, 0, 0], r"\[0, 0, 0\]"),
        ([8, 8], "2 sizes"),
        ([8, -1, 8], "-1"),
        ("big", "'big'"),
    ]:
        with pytest.raises(ValueError, match=match):
            predictor.predict(x, window=bad)
    # one size means a cube
    assert predictor.resolve_window((12, 12, 12), 8) == [8, 8, 8]


def test_device_names_are_validated(trained):
    _, model = trained
    for bad in ("banana", "meta", "cuda:x", ""):
        with pytest.raises(ValueError, match=f"device must be auto, cpu, cuda, cuda:N or mps, got '{bad}'"):
            load_predictor(model, device=bad)
    assert load_predictor(model, device="cpu").device == torch.device("cpu")


def test_window_count_and_progress_bar(trained, capsys):
    calls = []

    class Slow(nn.Module):
        def forward(self, x):
            calls.append(tuple(x.shape[2:]))
            time.sleep(0.25)
            return torch.zeros(x.shape[0], 2, *x.shape[2:])

    x = torch.zeros(1, 1, 20, 20, 20)
    seen = []
    predict_logits(Slow(), x, window=[12, 12, 12], overlap=0.25, progress=seen.append)
    assert len(calls) == count_windows((20, 20, 20), [12, 12, 12], 0.25) == 8 and sum(seen) == 8
    assert count_windows((20, 20, 20), None, 0.5) == count_windows((20, 20, 20), [32, 32, 32], 0.5) == 1
    _, model = trained
    predictor = load_predictor(model, device="cpu")
    predictor.models = [Slow()]
    predictor.info.network["in_channels"] = 2
    capsys.readouterr()
    predictor.predict(np.zeros((2, 20, 20, 20), np.float32), window=[12, 12, 12], overlap=0.25, progress=True)
    err = capsys.readouterr().err
    assert "inference" in err and "8/8" in err and "window" in err  # tqdm's bar, after about a second
    predictor.predict(np.zeros((2, 12, 12, 12), np.float32), window=None, progress=True)
    assert capsys.readouterr().err == ""  # quick: no bar


def test_outputs_that_would_overwrite_an_input_are_refused_before_any_work(trained, tmp_path):
    root, model = trained
    image = root / "data" / "images" / "case00.nii.gz"
    prior = root / "data" / "prior" / "case00.nii.gz"
    predictor = load_predictor(model, device="cpu")
    link = tmp_path / "link.nii.gz"
    link.symlink_to(image)
    hard = tmp_path / "hard.nii.gz"
    os.link(prior, hard)
    digest = {p: hashlib.sha256(p.read_bytes()).hexdigest() for p in (image, prior)}
    cases = [
        ({"output": image}, "label map output .* is the input"),
        ({"output": link}, "label map output .*link.nii.gz' is the input"),
        ({"output": tmp_path / "s.nii.gz", "probabilities": hard}, "probabilities output .*hard.nii.gz"),
        ({"output": model.with_name("model.nii.gz"), "probabilities": model}, "unsupported suffix"),
        ({"output": tmp_path / "a.nrrd", "probabilities": tmp_path / "a.nrrd"}, "same file"),
        ({"output": tmp_path / "a.nrrd", "probabilities": tmp_path / "p.seg.nrrd"}, "cannot be a .seg.nrrd"),
        ({"output": tmp_path}, "is a folder"),
    ]
    for kwargs, match in cases:
        with pytest.raises(ValueError, match=match):
            predictor.predict_files([image, prior], **kwargs)
    assert {p: hashlib.sha256(p.read_bytes()).hexdigest() for p in (image, prior)} == digest
    assert sorted(p.name for p in tmp_path.iterdir()) == ["hard.nii.gz", "link.nii.gz"]


def test_non_finite_images_are_refused(trained, tmp_path):
    _, model = trained
    predictor = load_predictor(model, device="cpu")
    x = np.zeros((2, 12, 12, 12), dtype=np.float32)
    x[1, 3, 3, 3] = np.nan
    with pytest.raises(ValueError, match=r"1 NaN or infinite value\(s\) \(first in channel 'prior'\)"):
        predictor.predict(x)
    with pytest.raises(ValueError, match="NaN or infinite"):
        predictor.predict(torch.from_numpy(x), normalize=False)
    x[1, 3, 3, 3] = 0
    x[0, 1, 1, 1] = np.inf
    for name in ("a.nii.gz", "a.nii", "a.nrrd"):  # ITK reads a NIfTI's NaN / inf as 0: read from the file
        sitk.WriteImage(sitk.GetImageFromArray(x[0]), str(tmp_path / name))
        sitk.WriteImage(sitk.GetImageFromArray(x[1]), str(tmp_path / f"p{name}"))
        with pytest.raises(
            ValueError, match=rf"{name}' has 1 NaN or infinite voxel\(s\) \(channel 'image'\)"
        ):
            predictor.predict_files([tmp_path / name, tmp_path / f"p{name}"], tmp_path / "o.nii.gz")
    assert not (tmp_path / "o.nii.gz").exists()


def test_malformed_ensemble_index_names_the_file(trained, tmp_path):
    _, model = trained
    (tmp_path / "m0").mkdir()
    shutil.copy(model, tmp_path / "m0" / "model.pt")
    for text, match in [
        ("", "is empty"),
        ("[1, 2", "is not valid JSON"),
        ('{"members": []}', "must hold a non-empty list"),
    ]:
        (tmp_path / "ensemble.json").write_text(text)
        with pytest.raises(ValueError, match=f"ensemble index '.*ensemble.json' {match}"):
            ensemble_members(tmp_path)
    (tmp_path / "ensemble.json").write_text('{"members": ["m0/model.pt"]}')
    assert ensemble_members(tmp_path) == [tmp_path / "m0" / "model.pt"]


def test_geometry_writing_is_atomic_and_named_errors(tmp_path):
    with pytest.raises(ValueError, match="unsupported file type"):
        _io.write_image(tmp_path / "x.png", np.zeros((2, 2, 2)))
    with pytest.raises(FileNotFoundError, match="nope.nii.gz"):
        _io.read_image(tmp_path / "nope.nii.gz")
    _io.write_image(tmp_path / "a.nii.gz", np.ones((3, 4, 5), dtype=np.uint8))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.nii.gz"]  # no temporary file left


def test_amp_on_cpu_is_opt_in_and_needs_native_bf16(monkeypatch):
    from losslab.engine import device as dev

    cpu = torch.device("cpu")
    assert dev.amp_dtype(cpu, "auto") is None and dev.amp_dtype(cpu, False) is None
    monkeypatch.setattr(dev, "cpu_bf16_supported", lambda: True)
    assert dev.amp_dtype(cpu, True) == torch.bfloat16
    monkeypatch.setattr(dev, "cpu_bf16_supported", lambda: False)
    assert dev.amp_dtype(cpu, True) is None  # emulated bf16 is slower than float32: keep float32


def test_bf16_predictor_on_cpu_runs_bf16_and_agrees_with_float32(trained, monkeypatch):
    from losslab.engine import device as dev

    _, model = trained
    monkeypatch.setattr(dev, "cpu_bf16_supported", lambda: True)  # bf16 kernels run (slowly) on any CPU
    x = np.random.default_rng(5).normal(size=(2, 16, 16, 16)).astype(np.float32)
    exact = load_predictor(model, device="cpu", amp=False)
    fast = load_predictor(model, device="cpu", amp=True)
    assert fast.input_dtype == torch.bfloat16
    assert all(p.dtype == torch.bfloat16 for p in fast.models[0].parameters())
    assert all(p.dtype == torch.float32 for p in exact.models[0].parameters())
    a, b = exact.predict(x), fast.predict(x)
    assert b.probabilities.dtype == np.float32
    np.testing.assert_allclose(a.probabilities, b.probabilities, atol=0.05)
    assert np.mean(a.labels != b.labels) < 0.01
    # sliding windows in bf16 too (MONAI blends the float32 window outputs)
    c = fast.predict(x, window=[8, 8, 8], overlap=0.5)
    assert np.mean(c.labels != b.labels) < 0.05


def test_nan_check_counts_after_the_fast_sum(trained):
    _, model = trained
    p = load_predictor(model, device="cpu")
    x = np.random.default_rng(6).normal(size=(2, 16, 16, 16)).astype(np.float32)
    x[1, 3, 4, 5] = np.nan
    x[1, 0, 0, 0] = np.inf
    with pytest.raises(ValueError, match=r"2 NaN or infinite value\(s\) \(first in channel"):
        p.predict(x)
    big = np.full((2, 16, 16, 16), 3e38, np.float32)  # a float32 sum would overflow; float64 does not
    p.predict(big)
