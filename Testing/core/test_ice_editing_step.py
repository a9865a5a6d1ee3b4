"""The editing step (losslab.ice.editing): inputs in the paper's order, y_hat, near / far changes, strict local,
loading by path and by registered name, and the errors a caller can make."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from losslab.engine.inference import ModelInfo, Predictor
from losslab.ice import EditingModel, edit_changes, encode
from losslab.metrics import attention_map


class _Rule(nn.Module):
    """logits of a fixed rule of the inputs (x, y_init, u): 'initial' copies y_init, 'heatmap' adds u > 0.5."""

    def __init__(self, rule: str):
        super().__init__()
        self.rule = rule
        self.seen: list[torch.Tensor] = []

    def forward(self, x):
        self.seen.append(x.detach().clone())
        fg = x[:, 1:2] > 0.5
        if self.rule == "heatmap":
            fg = fg | (x[:, 2:3] > 0.5)
        return torch.where(fg, 10.0, -10.0).to(x.dtype)


def _predictor(rule: str, in_channels: int = 3) -> Predictor:
    info = ModelInfo(
        network={"in_channels": in_channels, "out_channels": 1, "spatial_dims": 3},
        labels=["background", "LA"],
        channel_names=["image", "initial", "heatmap"][:in_channels],
        n_image_channels=1,
        normalize="none",
        window=None,
        overlap=0.5,
    )
    return Predictor([_Rule(rule)], info, torch.device("cpu"), amp=False)


def _case(shape=(24, 24, 24)):
    image = np.random.default_rng(0).random(shape).astype(np.float32)
    initial = np.zeros(shape, bool)
    initial[6:14, 6:14, 6:14] = True
    scribble = np.zeros(shape, bool)
    scribble[shape[0] - 4, shape[1] - 4, shape[2] - 6 : shape[2] - 2] = True
    return image, initial, scribble


def test_inputs_are_x_yinit_u_and_changes_split_near_far():
    model = EditingModel(_predictor("heatmap"), sigma_mm=4.0)
    image, initial, scribble = _case()
    spacing = (2.0, 1.0, 1.5)
    result = model.edit(image, initial, scribble, spacing)
    seen = model.predictor.models[0].seen[-1][0]
    np.testing.assert_array_equal(seen[0].numpy(), image)
    np.testing.assert_array_equal(seen[1].numpy(), initial.astype(np.float32))
    expected_u = attention_map(scribble, sigma=4.0, spacing=spacing)
    np.testing.assert_allclose(seen[2].numpy(), expected_u, atol=1e-6)
    np.testing.assert_allclose(result.u, encode(scribble, spacing, 4.0), atol=1e-6)
    np.testing.assert_array_equal(result.mask, initial | (expected_u > 0.5))
    added = result.mask & ~initial
    assert result.changes == {
        "added_near": int(np.count_nonzero(added & (expected_u >= 0.5))),
        "removed_near": 0,
        "added_far": int(np.count_nonzero(added & (expected_u < 0.5))),
        "removed_far": 0,
    }
    assert result.changes["added_near"] > 0
    assert result.probability.shape == initial.shape and result.probability.dtype == np.float32


def test_a_model_that_copies_y_init_changes_nothing():
    model = EditingModel(_predictor("initial"))
    image, initial, scribble = _case()
    result = model.edit(image, initial, scribble, (1.0, 1.0, 1.0))
    np.testing.assert_array_equal(result.mask, initial)
    assert sum(result.changes.values()) == 0


def test_strict_local_keeps_y_init_where_the_attention_is_low():
    model = EditingModel(_predictor("heatmap"), sigma_mm=6.0)
    image, initial, scribble = _case()
    free = model.edit(image, initial, scribble, (1.0, 1.0, 1.0))
    strict = model.edit(image, initial, scribble, (1.0, 1.0, 1.0), strict_threshold=0.8)
    low = strict.u < 0.8
    np.testing.assert_array_equal(strict.mask[low], initial[low])
    np.testing.assert_array_equal(strict.mask[~low], free.mask[~low])
    assert np.count_nonzero(free.mask[low] != initial[low]) > 0  # the clamp did something


def test_edit_changes_counts():
    before = np.array([[[1, 1, 0, 0]]], bool)
    after = np.array([[[1, 0, 1, 1]]], bool)
    attention = np.array([[[0.9, 0.9, 0.9, 0.1]]])
    assert edit_changes(before, after, attention) == {
        "added_near": 1,
        "removed_near": 1,
        "added_far": 1,
        "removed_far": 0,
    }


def test_errors():
    image, initial, scribble = _case()
    model = EditingModel(_predictor("heatmap"))
    with pytest.raises(ValueError, match="no voxel"):
        model.edit(image, initial, np.zeros_like(scribble), (1, 1, 1))
    with pytest.raises(ValueError, match="one grid"):
        model.edit(image, initial[:-1], scribble, (1, 1, 1))
    with pytest.raises(ValueError, match="strict_threshold"):
        model.edit(image, initial, scribble, (1, 1, 1), strict_threshold=0)
    with pytest.raises(ValueError, match="3 input channels"):
        EditingModel(_predictor("heatmap", in_channels=1))
    with pytest.raises(ValueError, match="sigma_mm"):
        EditingModel(_predictor("heatmap"), sigma_mm=0)


def test_load_by_path_and_by_registered_name(tmp_path, monkeypatch):
    from losslab import models
    from losslab.engine import train
    from losslab.engine.synthetic import make_blobs_dataset

    manifest = make_blobs_dataset(
        tmp_path / "data",
        n_cases=3,
        shape=(16, 16, 16),
        n_classes=2,
        seed=0,
        extra_channels=["initial", "heatmap"],
    )
    result = train(
        {
            "data": {"manifest": str(manifest)},
            "network": {"preset": "ice_editing", "features": [4, 8]},
            "epochs": 1,
            "batch_size": 1,
            "output_dir": str(tmp_path / "run"),
        }
    )
    by_path = EditingModel.load(result.model_path, sigma_mm=5.0)
    assert by_path.sigma_mm == 5.0
    import shutil

    folder = tmp_path / "registry" / "ice-editing-test"
    folder.mkdir(parents=True)
    shutil.copy(result.model_path, folder / "model.pt")
    models.register_model(
        folder,
        {"name": "ice-editing-test", "task": "ICE editing", "entry": "model.pt", "sigma_mm": 7.5},
    )
    by_name = EditingModel.load("ice-editing-test", root=tmp_path / "registry")
    assert by_name.sigma_mm == 7.5 and by_name.name == "ice-editing-test"
    image, initial, scribble = _case((16, 16, 16))
    a = by_path.edit(image, initial, scribble, (8.0, 8.0, 8.0), sigma_mm=7.5).probability
    b = by_name.edit(image, initial, scribble, (8.0, 8.0, 8.0)).probability
    np.testing.assert_allclose(a, b, atol=1e-6)
    with pytest.raises((FileNotFoundError, KeyError, ValueError)):
        EditingModel.load("no-such-model", root=tmp_path / "registry")
    # by name, the card's checksum is verified: a shipped model's copy with one byte changed is refused
    shipped = tmp_path / "shipped"
    shutil.copytree(models.get_card("ice-editing-64").folder, shipped / "ice-editing-64")
    EditingModel.load("ice-editing-64", root=shipped)  # the intact copy loads
    weights = shipped / "ice-editing-64" / "model.pt"
    data = bytearray(weights.read_bytes())
    data[len(data) // 2] ^= 0xFF
    weights.write_bytes(bytes(data))
    with pytest.raises(models.ModelChecksumError):
        EditingModel.load("ice-editing-64", root=shipped)
