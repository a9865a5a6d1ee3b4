"""The ideal-user protocol (losslab.ice.ideal, `losslab ice evaluate --protocol ideal`): damaged starts,
edits with y's own contour, Dice / HD95 to y per edit, harmful edits and far changes counted, the noisy
and strict conditions, the summary and the command's outputs."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from losslab import ice
from losslab.cli import main
from losslab.ice.editing import EditResult, edit_changes
from losslab.ice.ideal import (
    DEFAULT_NOISE,
    damage_mask,
    evaluate_ideal,
    evaluate_ideal_case,
    ideal_edits,
    ideal_markdown,
)
from losslab.metrics import boundary, dice_score

SPACING = 4.4096
SIGMA = 12.0


@pytest.fixture(scope="module")
def case():
    grid = ice.Grid.cube(32, SPACING)
    return ice.simulate_case(ice.make_atrium(grid, seed=4), grid, ice.SimulationConfig(frames=16), seed=4)


class Rule:
    """A stand-in editing model: 'truth' sets y where the scribble's A >= 0.5, 'copy' keeps the mask,
    'erode' erodes it everywhere; strict_threshold as EditingModel (A below it keeps the mask)."""

    def __init__(self, rule, truth):
        self.rule, self.truth, self.scribbles, self.strict = rule, truth != 0, [], []

    def edit(self, image, initial, scribble, spacing, strict_threshold=None):
        from scipy import ndimage

        self.scribbles.append(np.asarray(scribble, bool).copy())
        self.strict.append(strict_threshold)
        initial = np.asarray(initial, bool)
        a = ice.encode(scribble, spacing, SIGMA)
        mask = {
            "truth": np.where(a >= 0.5, self.truth, initial),
            "copy": initial,
            "erode": ndimage.binary_erosion(initial),
        }[self.rule]
        if strict_threshold is not None:
            mask = np.where(a >= strict_threshold, mask, initial)
        return EditResult(mask, mask.astype(np.float32), a, a, edit_changes(initial, mask, a))


def test_damage_bites_and_bumps_at_the_boundary():
    y = np.zeros((40, 40, 40), bool)
    grid = np.indices(y.shape)
    y[sum((g - 19.5) ** 2 for g in grid) <= 12**2] = True
    damaged = damage_mask(y, (1.0, 1.0, 1.0), seed=3, bites_mm=(5.0,), bumps_mm=(4.0,))
    removed, added = y & ~damaged, damaged & ~y
    assert removed.sum() > 50 and added.sum() > 30
    # each defect lies within its radius of y's boundary
    edge = np.argwhere(boundary(y))
    for part, radius in ((removed, 5.0), (added, 4.0)):
        pts = np.argwhere(part)
        centre = pts.mean(0)
        assert np.min(np.linalg.norm(edge - centre, axis=1)) <= radius
        assert np.max(np.linalg.norm(pts - centre, axis=1)) <= 2 * radius
    assert 0.85 < dice_score(damaged, y) < 0.995
    assert np.array_equal(damaged, damage_mask(y, (1.0, 1.0, 1.0), seed=3, bites_mm=(5.0,), bumps_mm=(4.0,)))
    assert not np.array_equal(
        damaged, damage_mask(y, (1.0, 1.0, 1.0), seed=4, bites_mm=(5.0,), bumps_mm=(4.0,))
    )
    with pytest.raises(ValueError, match="empty"):
        damage_mask(np.zeros_like(y), (1, 1, 1), seed=0)


def test_a_model_that_draws_y_near_the_scribble_converges(case):
    y = case.label != 0
    start = damage_mask(y, case.spacing, seed=1)
    run = ideal_edits(case, start, Rule("truth", y), edits=6, seed=0)
    assert len(run["dice"]) == len(run["hd95"]) == 7
    assert run["dice"][0] == pytest.approx(dice_score(start, y))
    assert np.all(np.diff(run["dice"]) >= 0) and run["dice"][-1] > run["dice"][0] + 0.01
    assert run["hd95"][-1] < run["hd95"][0]
    assert sum(run["changed_far"]) == 0 and sum(run["changed"]) > 0


def test_copying_stops_nothing_and_a_harmful_model_is_counted(case):
    y = case.label != 0
    start = damage_mask(y, case.spacing, seed=2)
    copy = ideal_edits(case, start, Rule("copy", y), edits=3, seed=0)
    assert copy["dice"] == [copy["dice"][0]] * 4 and copy["changed"] == [0, 0, 0]
    erode = Rule("erode", y)
    values = evaluate_ideal_case(case, start, {"erode": erode}, edits=3, seed=2, strict_threshold=0.1)
    clean = values["runs"]["segmentation"]["erode"]["clean"]
    assert all(d < 0 for d in np.diff(clean["dice"])) and sum(clean["changed_far"]) > 0
    strict = values["runs"]["segmentation"]["erode"]["strict"]
    assert strict["changed_far"] == [0, 0, 0] and 0.1 in erode.strict
    assert set(values["runs"]) == {"segmentation", "damaged"}
    assert values["segmentation"]["dice"] == pytest.approx(dice_score(start, y))


def test_noisy_scribbles_are_perturbed_and_a_perfect_mask_ends_the_sequence(case):
    y = case.label != 0
    start = damage_mask(y, case.spacing, seed=5)
    clean, noisy = Rule("copy", y), Rule("copy", y)
    ideal_edits(case, start, clean, edits=2, seed=0)
    ideal_edits(case, start, noisy, edits=2, seed=0, noise=DEFAULT_NOISE)
    assert not np.array_equal(clean.scribbles[0], noisy.scribbles[0])
    assert noisy.scribbles[0].sum() < clean.scribbles[0].sum()  # a partial piece (60 %)
    done = ideal_edits(case, y, Rule("copy", y), edits=3, seed=0)
    assert done["stopped_at"] == 0 and done["dice"] == [1.0] * 4 and done["frames"] == []


def _save(path, channels, preset):
    from losslab.engine.checkpoint import save_checkpoint
    from losslab.nets import build_network, network_spec

    torch.manual_seed(0)
    spec = {"preset": preset, "features": [2, 4, 8, 16]}
    info = {
        "labels": ["background", "left atrium"],
        "channel_names": channels,
        "n_image_channels": 1,
        "normalize": "none",
        "window": None,
        "overlap": 0.5,
        "network": network_spec(spec),
    }
    save_checkpoint(path, {"model": build_network(spec).state_dict(), "model_info": info})
    return path


def test_evaluate_ideal_summary_and_the_command(tmp_path):
    data = tmp_path / "data"
    assert main(["ice", "simulate", str(data), "--cases", "2", "--size", "24", "--spacing", "5.88"]) == 0
    cases = [ice.read_case(p) for p in ice.dataset_cases(data).values()]
    truth = Rule("truth", cases[0].label)
    result = evaluate_ideal(
        data / "dataset.json",
        lambda image: np.zeros(image.shape, bool) | (image > 0.5),
        {"copy": Rule("copy", cases[0].label), "truth": truth},
        edits=2,
        split="all",
        progress=False,
    )
    s = result["summary"]
    assert s["segmentation"]["cases"] == 2
    row = s["starts"]["damaged"]["copy"]["clean"]
    assert row["final_dice"] == row["start_dice"] and row["worst_step_dice_change"] == 0.0
    assert len(row["dice"]) == 3 and row["harmful_edits"] == 0
    assert set(s["starts"]["segmentation"]["truth"]) == {"clean", "noisy", "strict"}
    only = evaluate_ideal(
        data / "dataset.json",
        lambda image: image > 0.5,
        {"copy": Rule("copy", cases[0].label)},
        edits=1,
        split="all",
        conditions=["clean"],
        progress=False,
    )
    assert set(only["summary"]["starts"]["damaged"]["copy"]) == {"clean"}
    with pytest.raises(ValueError, match="conditions"):
        evaluate_ideal(data, lambda image: image > 0.5, {"c": truth}, conditions=["loud"], progress=False)
    text = ideal_markdown(result)
    assert "| copy | clean |" in text and "Higher Dice" in text
    # the command, with tiny untrained checkpoints
    seg = _save(tmp_path / "seg.pt", ["image"], "ice_segmentation")
    edit = _save(tmp_path / "edit.pt", ["image", "initial", "heatmap"], "ice_editing")
    out = tmp_path / "ideal"
    args = ["ice", "evaluate", str(data), "--segmentation-model", str(seg), "--editing-model", f"e={edit}"]
    assert main([*args, "--protocol", "ideal", "--edits", "2", "--split", "all", "-o", str(out)]) == 0
    written = json.loads((out / "ideal.json").read_text())  # strict JSON: no NaN / Infinity
    assert written["settings"]["protocol"] == "ideal" and written["settings"]["noise"] == DEFAULT_NOISE
    assert len(written["cases"]) == 2 and (out / "ideal.png").stat().st_size > 1000
    assert "| e | strict |" in (out / "ideal.md").read_text()
    assert main([*args, "--protocol", "ideal", "--noise", "1", "1", "0", "-o", str(tmp_path / "x")]) == 2
    assert main([*args, "--protocol", "ideal", "--strict-threshold", "0", "-o", str(tmp_path / "x")]) == 2
