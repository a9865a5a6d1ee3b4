"""configs/fetal/cross_centre_eval.sh end to end (issue 19, item 2): the committed script that measures the shipped
fetal model across centres runs as written on a data folder of its layout (one folder per centre, one per case
with srr / mask / parcellation), and its summary's figures are those of the tables it writes. Synthetic data
(the T2-like phantom of the brain-extraction tests, random tissue labels inside the brain): the check is the
script's wiring, not accuracy."""

from __future__ import annotations

import json
import math
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from test_fetal_brain_extraction import SPACING, _phantom

from losslab import io, models

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "configs" / "fetal" / "cross_centre_eval.sh"
SHIPPED = "fetal-leafdice-1.6mm"


@pytest.mark.parametrize("policy", ["optional", "required"])
def test_the_script_measures_every_centre_and_summarises(tmp_path, policy):
    """A model whose card lets it run without a mask is also measured without one (no_mask); one whose card
    requires a mask is not (the script does not stop at its refusal)."""
    model = tmp_path / "model"
    shutil.copytree(models.get_card(SHIPPED).folder, model)
    card = json.loads((model / "model.json").read_text())
    card["input"] = {"mask": policy}
    (model / "model.json").write_text(json.dumps(card))
    conditions = (
        ("with_mask", "no_mask", "extracted_mask")
        if policy == "optional"
        else ("with_mask", "extracted_mask")
    )
    geometry = io.Geometry(
        spacing=tuple(reversed(SPACING)), origin=(0.0, 0.0, 0.0), direction=(-1, 0, 0, 0, -1, 0, 0, 0, 1)
    )
    # two centres for the full run, one where only the refusal's handling is new (half the time)
    centres = ["CentreA", "CentreB"] if policy == "optional" else ["CentreA"]
    for seed, centre in enumerate(centres):
        vol, brain = _phantom(seed)
        labels = np.where(brain, np.random.default_rng(seed).integers(1, 9, brain.shape), 0).astype(np.uint8)
        case = tmp_path / "data" / centre / f"{centre}_case1"
        case.mkdir(parents=True)
        io.write_image(case / "srr.nii.gz", vol, geometry)
        io.write_image(case / "mask.nii.gz", brain.astype(np.uint8), geometry)
        io.write_image(case / "parcellation.nii.gz", labels, geometry)
    (tmp_path / "data" / "README.md").write_text("not a centre\n")
    out = tmp_path / "out"
    env = {
        **os.environ,
        "OUT": str(out),
        "LOSSLAB": f"{sys.executable} -m losslab",
        "PYTHON": sys.executable,
        "PYTHONPATH": os.pathsep.join([str(ROOT / "LossLab"), os.environ.get("PYTHONPATH", "")]),
    }
    run = subprocess.run(
        ["bash", str(SCRIPT), str(tmp_path / "data"), str(model)],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
    )
    assert run.returncode == 0, run.stderr[-2000:]
    summary = json.loads((out / "summary.json").read_text())
    assert sorted(summary["centres"]) == centres
    for centre, row in summary["centres"].items():
        table = json.loads((out / centre / "table.json").read_text())
        assert table["cases"] == [f"{centre}_case1"]
        assert list(table["methods"]) == list(conditions)
        for cond in conditions:
            dice = [table["methods"][cond]["summary"][t]["dice"]["mean"] for t in table["tissues"]]
            assert math.isclose(row[cond]["mean_dice"], float(np.mean(dice)))
        assert sorted(row["gap_mean_dice"]) == sorted(conditions[1:])
        for cond in conditions[1:]:
            assert math.isclose(
                row["gap_mean_dice"][cond], row["with_mask"]["mean_dice"] - row[cond]["mean_dice"]
            )
        assert 0.9 < row["brain_mask_dice"]["mean"] <= 1.0  # the phantom's brain is found
        assert row["segment_seconds"]["with_mask"] > 0 and row["wall_seconds"]["extracted_mask"] > 0
        for sub in (*conditions, "brain_masks"):
            assert (out / centre / sub / f"{centre}_case1.nii.gz").is_file()
        assert (out / centre / "no_mask").is_dir() == (policy == "optional")
    assert summary["all"]["cases"] == [f"{c}/{c}_case1" for c in centres]
    assert f"| all | {len(centres)} |" in (out / "summary.md").read_text()
    _the_card_and_the_picture(tmp_path, model, out, centres, policy)
    for centre in centres:  # the data folder is left as it was
        assert sorted(p.name for p in (tmp_path / "data" / centre / f"{centre}_case1").iterdir()) == [
            "mask.nii.gz",
            "parcellation.nii.gz",
            "srr.nii.gz",
        ]


def _the_card_and_the_picture(tmp_path, model, out, centres, policy):
    """cross_centre_card.py puts the summary's figures on the card, and the mask rule by the measured gaps
    (whichever way they fall for this random-weight model; both sides of the rule:
    test_models_registry.py), with every file's sha256 unchanged; cross_centre_figure.py draws a case."""
    files = models.read_card(model).files
    card_run = subprocess.run(
        [sys.executable, str(ROOT / "configs" / "fetal" / "cross_centre_card.py"), str(model), str(out),
         str(tmp_path / "data"), "--source", "synthetic"],
        cwd=ROOT, capture_output=True, text=True,
    )  # fmt: skip
    assert card_run.returncode == 0, card_run.stderr[-2000:]
    card = models.read_card(model)
    assert card.files == files
    models.verify_model(card)
    cross = card.metrics["cross_centre"]
    summary = json.loads((out / "summary.json").read_text())
    assert cross["cases"] == summary["all"]["cases"] and cross["source"] == "synthetic"
    assert math.isclose(cross["summary"]["mean_dice"], summary["all"]["with_mask"]["mean_dice"])
    no_mask = card.metrics["no_mask"]
    if policy == "optional":
        found = no_mask["model_finds_the_brain"]
        gaps = [found["gap_mean_dice"][c] for c in centres]
        assert card.mask_policy == ("optional" if max(gaps) <= 5 else "required")
        assert 0 <= found["brain_dice"]["min"] <= found["brain_dice"]["mean"] <= 1
    else:
        assert "model_finds_the_brain" not in no_mask and card.mask_policy == "required"
    assert sorted(no_mask["classical_brain_extraction"]["gap_mean_dice"]) == sorted([*centres, "all"])
    picture = tmp_path / "case.png"
    case = tmp_path / "data" / centres[0] / f"{centres[0]}_case1"
    draw = subprocess.run(
        [sys.executable, str(ROOT / "configs" / "fetal" / "cross_centre_figure.py"), str(case),
         str(out / centres[0]), str(picture)],
        cwd=ROOT, capture_output=True, text=True,
    )  # fmt: skip
    assert draw.returncode == 0, draw.stderr[-2000:]
    assert picture.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
