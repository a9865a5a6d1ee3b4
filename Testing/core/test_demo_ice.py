"""`losslab demo`, the README's first command: the shipped models segment a simulated case and edit it in
sequence; the report's files and keys; a corrupted model file stops it with one line."""

from __future__ import annotations

import json
import shutil

import pytest

from losslab import models
from losslab.cli import main
from losslab.ice.demo import EDITING_MODELS, SEGMENTATION_MODEL


def test_the_shipped_models_are_registered_with_cards():
    names = {c.name: c for c in models.list_models()}
    for name in (SEGMENTATION_MODEL, *EDITING_MODELS.values()):
        card = names[name]
        models.verify_model(card)
        assert card.grid["spacing_mm"] == [2.2048] * 3
        assert card.raw["training"]["command"] and card.raw["training"]["date"] and card.metrics
        assert card.size_bytes < 8e6
    for name in EDITING_MODELS.values():
        assert names[name].raw["inputs"] == ["image", "initial", "heatmap"]
        assert names[name].raw["sigma_mm"] == pytest.approx(22.048)


def test_demo_segments_and_edits_with_the_shipped_models(tmp_path, capsys):
    out = tmp_path / "demo"
    assert main(["demo", "-o", str(out), "--edits", "3"]) == 0
    assert sorted(p.name for p in out.iterdir()) == ["report.json", "report.md", "report.png"]
    report = json.loads((out / "report.json").read_text())
    assert set(report["edits"]) == set(EDITING_MODELS)
    for rows in report["edits"].values():
        assert [r["edit"] for r in rows] == [1, 2, 3]
        assert len({r["frame"] for r in rows}) == 3  # a new CAS contour each time
        for r in rows:
            assert {
                "D_overall_p95",
                "D_near_p95",
                "D_far_p95",
                "cas_to_prediction_p95",
                "dice_vs_y",
                "changes",
            } <= set(r)
    # the ideal user (y's own contour on the worst frame) beside the CAS sequence, from the same y_init
    assert set(report["ideal_user"]) == set(EDITING_MODELS)
    for run in report["ideal_user"].values():
        assert len(run["dice_vs_y"]) == 4 and run["dice_vs_y"][0] == pytest.approx(
            report["segmentation"]["dice_vs_y"]
        )
    # the first edit is the same contour for both models: the furthest from y_init
    assert len({rows[0]["frame"] for rows in report["edits"].values()}) == 1
    assert report["segmentation"]["dice_vs_y"] > 0.5, "the shipped segmentation model segments the LA"
    text = (out / "report.md").read_text()
    assert "| edit |" in text and "ice-editing-64" in text
    assert "How to read this" in text and "higher is better" in text and "An ideal user" in text
    assert (out / "report.png").stat().st_size > 10_000
    assert "report written to" in capsys.readouterr().out


def test_demo_stops_on_a_corrupted_model(tmp_path, monkeypatch, capsys):
    root = tmp_path / "registry"
    for name in (SEGMENTATION_MODEL, *EDITING_MODELS.values()):
        shutil.copytree(models.get_card(name).folder, root / name)
    with open(root / EDITING_MODELS["CE"] / "model.pt", "r+b") as handle:
        handle.seek(200)
        byte = handle.read(1)
        handle.seek(200)
        handle.write(bytes([byte[0] ^ 0xFF]))
    monkeypatch.setenv(models.ENV_ROOT, str(root))
    assert main(["demo", "-o", str(tmp_path / "out"), "--edits", "1"]) == 2
    assert "sha256" in capsys.readouterr().err
