"""Engine configs: defaults, files, overrides, and errors that name the problem."""

from __future__ import annotations

import json

import pytest

from losslab.engine import DEFAULTS, ConfigError, apply_overrides, load_config, validate_config
from losslab.engine.config import parse_value


def test_defaults_fill_in_and_overrides_apply(tmp_path):
    path = tmp_path / "run.json"
    path.write_text(json.dumps({"data": {"manifest": "data/dataset.json"}, "epochs": 5}))
    cfg = load_config(
        path, ["epochs=3", "loss.name=dice", "optimizer.lr=1e-3", "augmentation.flip.axes=[0,1]"]
    )
    assert cfg["epochs"] == 3 and cfg["loss"]["name"] == "dice" and cfg["optimizer"]["lr"] == 1e-3
    assert cfg["augmentation"]["flip"]["axes"] == [0, 1]
    assert cfg["data"]["manifest"] == str(tmp_path / "data" / "dataset.json")  # relative to the config
    assert cfg["scheduler"] == DEFAULTS["scheduler"]  # halve on plateau by default


def test_yaml_config(tmp_path):
    pytest.importorskip("yaml")
    path = tmp_path / "run.yaml"
    path.write_text("data:\n  manifest: /x/dataset.json\noptimizer:\n  name: sgd\n  lr: 0.01\n")
    cfg = load_config(path)
    assert cfg["optimizer"]["name"] == "sgd" and cfg["optimizer"]["lr"] == 0.01


def test_parse_value():
    assert parse_value("3") == 3 and parse_value("1e-3") == 1e-3 and parse_value("true") is True
    assert (
        parse_value("[16, 16]") == [16, 16] and parse_value("dice") == "dice" and parse_value("null") is None
    )


BASE = {"data": {"manifest": "/data/dataset.json"}}


@pytest.mark.parametrize(
    "change, words",
    [
        ({"epochs": 0}, ["epochs", "0"]),
        ({"epoch": 3}, ["epoch", "unknown"]),
        ({"optimizer": {"name": "rmsprop"}}, ["optimizer.name", "rmsprop", "adam"]),
        ({"optimizer": {"lr": -1}}, ["optimizer.lr", "-1"]),
        ({"scheduler": {"factor": 2}}, ["scheduler.factor", "2"]),
        ({"augmentation": {"gamma": {"prob": 1.5}}}, ["augmentation.gamma.prob", "1.5"]),
        ({"augmentation": {"scale": {"range": [1.2, 0.8]}}}, ["augmentation.scale.range"]),
        ({"augmentation": {"sharpen": {"prob": 1}}}, ["augmentation.sharpen"]),
        ({"network": {"preset": "resnet"}}, ["network", "resnet", "ice_editing"]),
        ({"device": "tpu"}, ["device", "tpu"]),
        ({"data": {"manifest": "/d.json", "normalize": "robust"}}, ["data.normalize", "robust"]),
        ({"data": {"manifest": None}}, ["data.manifest", "required"]),
        ({"data": {"manifest": "/d.json", "keep_in_train": "full"}}, ["data.keep_in_train", "'full'"]),
        ({"batch_size": "two"}, ["batch_size", "two"]),
        ({"ensemble": {"members": 3, "member": 3}}, ["ensemble.member", "3"]),
        ({"augmentation": {"flip": {"axes": [5]}}}, ["augmentation.flip.axes", "[5]", "0..2"]),
        ({"augmentation": {"flip": {"axes": [1, 1]}}}, ["augmentation.flip.axes", "distinct"]),
        (
            {"network": {"preset": "unet2d"}, "augmentation": {"flip": {"axes": [2]}}},
            ["augmentation.flip.axes", "2D", "0..1"],
        ),
        ({"loss": {"name": "editing"}}, ["loss.inputs", "attention", "initial", "'editing'"]),
        (
            {"loss": {"name": "editing", "inputs": {"initial": "initial"}}},
            ["loss.inputs", "attention", "editing"],
        ),
        (
            {"loss": {"name": "compound", "options": {"terms": [{"name": "dice"}, {"name": "editing"}]}}},
            ["loss.inputs", "attention", "editing"],
        ),
        ({"loss": {"name": "dice", "inputs": {"initial": 1}}}, ["loss.inputs", "initial", "does not take"]),
    ],
)
def test_bad_configs_name_the_problem(change, words):
    cfg = {**BASE, **change}
    with pytest.raises(ConfigError) as info:
        validate_config(cfg)
    for word in words:
        assert word in str(info.value), (word, str(info.value))


def test_flip_axes_default_to_the_last_spatial_axis():
    assert validate_config(BASE)["augmentation"]["flip"]["axes"] == [2]
    assert validate_config({**BASE, "network": {"preset": "unet2d"}})["augmentation"]["flip"]["axes"] == [1]
    editing = {"name": "editing", "inputs": {"initial": "initial", "attention": "heatmap"}}
    assert validate_config({**BASE, "loss": editing})["loss"]["inputs"] == editing["inputs"]


def test_invalid_yaml_names_the_file_and_line(tmp_path):
    pytest.importorskip("yaml")
    path = tmp_path / "bad.yaml"
    path.write_text("data:\n  manifest: [unclosed\nepochs: 3\n")
    with pytest.raises(ConfigError, match=r"bad.yaml.*not valid YAML \(line \d+"):
        load_config(path)


def test_bad_override_syntax():
    with pytest.raises(ConfigError, match="key=value"):
        apply_overrides(BASE, ["epochs"])
    with pytest.raises(ConfigError, match="not a mapping"):
        apply_overrides({"epochs": 3}, ["epochs.x=1"])


def test_missing_config_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="nope.json"):
        load_config(tmp_path / "nope.json")


def test_invalid_json(tmp_path):
    path = tmp_path / "bad.json"
    path.write_text("{epochs: 3")
    with pytest.raises(ConfigError, match="not valid JSON"):
        load_config(path)


def test_device_choice_and_mixed_precision():
    import torch

    from losslab.engine import select_device
    from losslab.engine.device import amp_dtype

    assert select_device("cpu") == torch.device("cpu")
    auto = select_device("auto")
    assert auto.type in ("cuda", "mps", "cpu")
    assert amp_dtype(torch.device("cpu")) is None  # mixed precision on CUDA only
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="CUDA is not available"):
            select_device("cuda:0")
