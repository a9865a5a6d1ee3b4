"""losslab.models: cards, checksums, list / path / verify, and `losslab models` (tmp registry folders)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from losslab import models
from losslab.cli import main
from losslab.engine import save_checkpoint
from losslab.nets import build_network, network_spec


def _tiny_model(folder, name="fetal-tiny", members=2):
    """An engine ensemble of tiny fetal networks (random weights, float16) with a card."""
    network = {
        "preset": "fetal_parcellation",
        "features": [2, 2, 2, 2, 2],
        "in_channels": 1,
        "out_channels": 9,
    }
    names = []
    for k in range(members):
        torch.manual_seed(k)
        net = build_network(network)
        state = {key: v.half() for key, v in net.state_dict().items()}
        info = {
            "network": network_spec(network),
            "labels": ["background", "WM", "Vent", "Cer", "ECSF", "CGM", "DGM", "BS", "CC"],
            "channel_names": ["image"],
            "n_image_channels": 1,
            "normalize": "zscore",
            "window": None,
            "overlap": 0.5,
        }
        save_checkpoint(folder / f"member{k}" / "model.pt", {"model": state, "model_info": info})
        names.append(f"member{k}/model.pt")
    (folder / "ensemble.json").write_text(json.dumps({"members": names}))
    card = {
        "name": name,
        "task": "fetal brain parcellation (test)",
        "format": "losslab-engine-ensemble",
        "entry": ".",
        "grid": {"spacing_mm": [2.4, 2.4, 2.4]},
        "metrics": {"summary": {"mean_dice": 12.5, "mean_hd95": 7.25}},
    }
    return models.register_model(folder, card)


def test_register_list_path_and_load(tmp_path, monkeypatch):
    card_path = _tiny_model(tmp_path / "fetal-tiny")
    card = json.loads(card_path.read_text())
    assert sorted(card["files"]) == ["ensemble.json", "member0/model.pt", "member1/model.pt"]
    assert card["files"]["ensemble.json"] == models.sha256_file(tmp_path / "fetal-tiny" / "ensemble.json")
    (tmp_path / "not-a-model").mkdir()
    cards = models.list_models(tmp_path)
    assert [c.name for c in cards] == ["fetal-tiny"] and cards[0].spacing == [2.4, 2.4, 2.4]
    assert cards[0].size_bytes == card["size_bytes"] > 0
    assert models.model_path("fetal-tiny", root=tmp_path) == (tmp_path / "fetal-tiny").resolve()
    monkeypatch.setenv(models.ENV_ROOT, str(tmp_path))
    assert models.registry_root() == tmp_path and models.list_models()[0].name == "fetal-tiny"
    predictor = models.load_model("fetal-tiny", device="cpu")
    assert len(predictor.models) == 2
    out = predictor.predict(np.random.default_rng(0).normal(size=(32, 32, 32)).astype(np.float32))
    assert out.probabilities.shape == (9, 32, 32, 32)
    with pytest.raises(ValueError, match=r"no registered model 'nope' .*registered: \['fetal-tiny'\]"):
        models.model_path("nope")


def test_checksum_mismatch_is_an_error(tmp_path, capsys):
    _tiny_model(tmp_path / "fetal-tiny")
    member = tmp_path / "fetal-tiny" / "member1" / "model.pt"
    data = bytearray(member.read_bytes())
    data[-10] ^= 0xFF
    member.write_bytes(bytes(data))
    with pytest.raises(
        models.ModelChecksumError,
        match=r"'fetal-tiny': member1/model.pt has sha256 [0-9a-f]{64}, its card says",
    ):
        models.model_path("fetal-tiny", root=tmp_path)
    with pytest.raises(models.ModelChecksumError):
        models.load_model("fetal-tiny", root=tmp_path, device="cpu")
    assert models.model_path("fetal-tiny", root=tmp_path, verify=False).is_dir()
    assert main(["models", "path", "fetal-tiny", "--root", str(tmp_path)]) == 2
    assert "its card says" in capsys.readouterr().err
    member.unlink()
    with pytest.raises(FileNotFoundError, match="member1/model.pt' listed in its card is missing"):
        models.verify_model(models.get_card("fetal-tiny", tmp_path))


def test_bad_cards(tmp_path):
    (tmp_path / "a").mkdir()
    (tmp_path / "a" / "model.json").write_text("{not json")
    with pytest.raises(ValueError, match="not valid JSON"):
        models.read_card(tmp_path / "a")
    _tiny_model(tmp_path / "fetal-tiny")
    # one damaged card does not hide the other models (issue 22): it is skipped with a warning naming it
    with pytest.warns(UserWarning, match=r"a/model.json: not valid JSON"):
        assert [c.name for c in models.list_models(tmp_path)] == ["fetal-tiny"]
    (tmp_path / "a" / "model.json").write_text(json.dumps({"name": "a", "files": {"x": "0"}}))
    with pytest.raises(ValueError, match="the card lacks 'task'"):
        models.read_card(tmp_path / "a")


def test_cli_list_path_verify(tmp_path, capsys):
    _tiny_model(tmp_path / "fetal-tiny")
    assert main(["models", "--root", str(tmp_path)]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0].split()[:2] == ["name", "task"]
    assert "fetal-tiny" in out[1] and "2.4 mm" in out[1] and "Dice 12.5%, HD95 7.2 mm" in out[1]
    assert main(["models", "list", "--root", str(tmp_path), "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert rows[0]["name"] == "fetal-tiny" and rows[0]["grid"] == {"spacing_mm": [2.4, 2.4, 2.4]}
    assert main(["models", "path", "fetal-tiny", "--root", str(tmp_path)]) == 0
    assert capsys.readouterr().out.strip() == str((tmp_path / "fetal-tiny").resolve())
    assert main(["models", "verify", "fetal-tiny", "--root", str(tmp_path)]) == 0
    assert "3 file(s) match" in capsys.readouterr().out
    (tmp_path / "empty").mkdir()
    assert main(["models", "--root", str(tmp_path / "empty")]) == 0
    assert "no models registered" in capsys.readouterr().out
    assert main(["models", "--root", str(tmp_path / "nonexistent")]) == 2  # not an empty registry
    assert "nonexistent: no such folder" in capsys.readouterr().err


def test_a_trained_model_needs_a_mask_unless_training_showed_it_unmasked_inputs():
    from losslab.engine.config import DEFAULTS

    policy = models.trained_mask_policy
    assert policy(DEFAULTS) == "required"  # foreground_mask off: trained on one look
    assert policy({"augmentation": {"foreground_mask": {"prob": 0.5}}}) == "optional"
    assert policy({"augmentation": {"foreground_mask": {"prob": 1.0}}}) == "required"  # always masked
    assert policy({"augmentation": {"enabled": False, "foreground_mask": {"prob": 0.5}}}) == "required"
    assert policy({}) == "required"


def test_the_models_line_shows_the_cross_centre_figures_with_and_without_a_mask():
    from losslab.cli.models import _metrics_text

    metrics = {
        "summary": {"mean_dice": 81.66, "mean_hd95": 2.36},
        "cross_centre": {"summary": {"mean_dice": 76.99}},
        "no_mask": {"model_finds_the_brain": {"summary": {"mean_dice": 74.52}}},
    }
    line = _metrics_text(metrics)
    assert line == "Dice 81.7%, HD95 2.4 mm, other centres 77.0% (74.5% without a mask)"
    del metrics["no_mask"]
    assert _metrics_text(metrics).endswith("other centres 77.0%")


def test_the_measured_rule_makes_a_mask_optional_only_within_5_points_on_every_centre():
    rule = models.measured_mask_policy
    assert rule({"Gholipour2017": 2.3, "Wu2021": 2.7}) == "optional"  # the shipped model's gaps
    assert rule({"Gholipour2017": 0.8, "Wu2021": 7.2}) == "required"  # the classical extraction's
    assert rule({"a": 5.0}) == "optional" and rule({"a": 5.01}) == "required"
    assert rule({}) == "required"  # not measured
