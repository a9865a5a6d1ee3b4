"""The paper's evaluation protocol (losslab.ice.evaluate, `losslab ice evaluate`) on constructed cases:
a model that copies y_init has zero far error (and, with the realism on, the far floor of the "y_init
unchanged" row), with the realism off a model that copies y meets every CAS
contour, InterCNN gets the accumulated edits, the drift of the first edit, and the outputs' keys."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from scipy import ndimage

from losslab import ice
from losslab.cli import main
from losslab.ice.editing import EditResult, edit_changes
from losslab.ice.evaluate import evaluate_case, first_edit_drift, summarize, table1_markdown
from losslab.metrics import boundary

SPACING = 4.4096


@pytest.fixture(scope="module")
def case():
    """Realism off, and each frame's CAS voxels cut to those on y's boundary: CAS lies exactly on y."""
    grid = ice.Grid.cube(32, SPACING)
    c = ice.simulate_case(
        ice.make_phantom(grid, seed=1), grid, ice.SimulationConfig().without_realism(), seed=1
    )
    on_y = np.flatnonzero(boundary(c.label != 0))
    for frame in c.frames:
        frame.cas_voxels = np.intersect1d(frame.cas_voxels, on_y)
    assert c.cas_mask().sum() > 100 and not (c.cas_mask() & ~boundary(c.label != 0)).any()
    return c


class Fixed:
    """An editing 'model' with a fixed rule: 'initial' copies y_init, 'truth' returns y, 'grow' dilates
    y_init everywhere; it records the scribbles it was given."""

    def __init__(self, rule, truth):
        self.rule, self.truth, self.scribbles = rule, truth != 0, []

    def edit(self, image, initial, scribble, spacing):
        self.scribbles.append(np.asarray(scribble, bool).copy())
        initial = np.asarray(initial, bool)
        mask = {"initial": initial, "truth": self.truth, "grow": ndimage.binary_dilation(initial)}[self.rule]
        a = ice.encode(scribble, spacing, 20.0)
        return EditResult(mask, mask.astype(np.float32), a, a, edit_changes(initial, mask, a))


def test_copying_y_init_has_zero_far_error_and_growing_does_not(case):
    y = case.label != 0
    values = evaluate_case(case, y, {"copy": Fixed("initial", y), "grow": Fixed("grow", y)}, edits=3)
    assert values["no_editing"]["overall"] == 0.0  # CAS lies on y_init = y
    assert values["table1"]["copy"] == {"overall": 0.0, "near": 0.0, "far": 0.0}
    assert values["table1"]["grow"]["far"] > 0.0
    assert values["sequential"]["copy"] == [0.0, 0.0, 0.0]
    assert values["first_edit_drift"]["copy"] == [0.0, 0.0]


def test_copying_y_with_realism_off_meets_every_cas_contour(case):
    y = case.label != 0
    initial = ndimage.binary_erosion(y, iterations=2)  # y_init off by two voxels everywhere
    values = evaluate_case(case, initial, {"truth": Fixed("truth", y), "copy": Fixed("initial", y)}, edits=4)
    assert values["no_editing"]["overall"] >= 2 * SPACING
    # D_edit vanishes for y_hat = y: what is left near the scribble is the (1 - A)/2-weighted preservation
    assert values["table1"]["truth"]["near"] < values["table1"]["copy"]["near"]
    assert values["table1"]["truth"]["far"] > values["table1"]["copy"]["far"]  # it changed y_init far away
    assert values["sequential"]["truth"] == [0.0] * 4  # Fig. 3: every CAS contour on the prediction
    assert values["sequential"]["copy"] == [values["start"]] * 4
    assert values["first_edit_drift"]["truth"] == [0.0] * 3


def test_unchanged_row_is_the_far_floor_and_edited_contours_isolate_preservation():
    # With the realism on, the CAS contours disagree with y_init = y: eq. 5 weighs the contours with
    # 0 < A < 0.5 into the far region, so even a model that edits nothing has a far error > 0, and that is
    # the "y_init unchanged" row. With y_cas = the edited contour alone, its far error is 0.
    grid = ice.Grid.cube(32, SPACING)
    real = ice.simulate_case(ice.make_phantom(grid, seed=2), grid, seed=2)
    y = real.label != 0
    models = {"copy": Fixed("initial", y), "grow": Fixed("grow", y)}
    every = evaluate_case(real, y, models, edits=1)
    assert every["unchanged"] == every["table1"]["copy"]
    assert every["unchanged"]["far"] > 0.0
    assert every["table1"]["grow"]["far"] > every["unchanged"]["far"]
    edited = evaluate_case(real, y, models, edits=1, contours="edited")
    assert edited["unchanged"] == edited["table1"]["copy"] and edited["unchanged"]["far"] == 0.0
    assert edited["table1"]["grow"]["far"] > 0.0
    assert edited["no_editing"] == every["no_editing"]  # the paper's No Editing: all the contours
    assert edited["sequential"] == every["sequential"]  # Fig. 3: all the contours
    with pytest.raises(ValueError, match="contours must be one of"):
        evaluate_case(real, y, models, edits=1, contours="some")


def test_intercnn_gets_the_accumulated_edits_the_others_one(case):
    y = case.label != 0
    initial = ndimage.binary_erosion(y, iterations=2)
    inter, single = Fixed("initial", y), Fixed("initial", y)
    evaluate_case(case, initial, {"intercnn": inter, "editing": single}, edits=3)
    # call 0 is Table 1's single edit; calls 1..3 the sequence
    seq_inter, seq_single = inter.scribbles[1:], single.scribbles[1:]
    for k in range(3):
        np.testing.assert_array_equal(seq_inter[k], np.logical_or.reduce(seq_single[: k + 1]))
    assert (seq_single[0] & ~seq_single[1]).any(), "a single-edit model gets the new contour alone"


def test_first_edit_drift_measures_the_moved_region():
    a = np.zeros((20, 20, 20), bool)
    a[5:15, 5:15, 5:15] = True
    near = np.zeros_like(a)
    near[:, :, :10] = True
    assert first_edit_drift(a, a, near, (1.0, 2.0, 1.0)) == 0.0
    b = a.copy()
    b[5:15, 5:15, 3:5] = True  # grown by 2 voxels of 1 mm along i, inside the near region
    assert first_edit_drift(a, b, near, (1.0, 2.0, 1.0)) == pytest.approx(2.0)
    c = a.copy()
    c[5:15, 5:15, 15:17] = True  # a change far from the first edit does not count
    assert first_edit_drift(a, c, near, (1.0, 1.0, 1.0)) == 0.0


def test_drift_counts_only_the_first_edits_near_region(case):
    # Through evaluate_case: a model whose second sequential edit changes voxels only where the first
    # scribble's A lies in [0.05, 0.3) (well outside the near region A >= NEAR_THRESHOLD) has drift 0; the same
    # change inside the near region is drift.
    from losslab.ice.editing import NEAR_THRESHOLD

    y = case.label != 0
    sigma = 20.0

    class SecondEditGrows:
        def __init__(self, low, high):
            self.low, self.high, self.calls, self.first_a = low, high, 0, None

        def edit(self, image, initial, scribble, spacing):
            self.calls += 1  # call 1: Table 1's edit; calls 2, 3: the sequence's edits 1 and 2
            initial = np.asarray(initial, bool)
            a = ice.encode(scribble, spacing, sigma)
            mask = initial
            if self.calls == 2:
                self.first_a = a
            elif self.calls == 3:
                mask = initial | ((self.first_a >= self.low) & (self.first_a < self.high))
            return EditResult(mask, mask.astype(np.float32), a, a, edit_changes(initial, mask, a))

    outside = SecondEditGrows(0.05, 0.3)
    values = evaluate_case(case, y, {"m": outside}, edits=2, sigma_mm=sigma)
    assert outside.calls == 3 and values["sequential"]["m"][1] > 0, "the second edit changed the prediction"
    assert values["first_edit_drift"]["m"] == [0.0]
    inside = SecondEditGrows(NEAR_THRESHOLD, 1.01)
    values = evaluate_case(case, y, {"m": inside}, edits=2, sigma_mm=sigma)
    assert values["first_edit_drift"]["m"][0] > 0.0


def test_summary_wilcoxon_against_intercnn_and_table():
    rng = np.random.default_rng(0)
    cases = []
    for _ in range(8):
        cases.append(
            {
                "table1": {
                    "editing": {"overall": rng.random(), "near": rng.random(), "far": rng.random()},
                    "intercnn": {
                        "overall": 5 + rng.random(),
                        "near": 5 + rng.random(),
                        "far": 5 + rng.random(),
                    },
                },
                "no_editing": {"overall": 9.0},
                "unchanged": {"overall": 1.0, "near": 2.0, "far": 0.5},
                "start": 9.0,
                "sequential": {"editing": [1.0, 2.0], "intercnn": [3.0]},
                "first_edit_drift": {"editing": [0.5], "intercnn": []},
            }
        )
    s = summarize(cases, ["editing", "intercnn"])
    assert s["wilcoxon_vs_intercnn"]["pvalues"]["editing"]["far"] == pytest.approx(2 / 2**8)
    assert s["sequential"] == {"editing": [1.0, 2.0], "intercnn": [3.0]}
    text = table1_markdown(s, ["editing", "intercnn"], 8)
    assert "| No Editing | 9.000 |" in text and "†" in text
    assert "| y_init unchanged (D) | 1.000 | 2.000 | 0.500 |" in text


def test_cli_writes_the_documented_outputs(tmp_path):
    data = tmp_path / "data"
    assert main(["ice", "simulate", str(data), "--cases", "4", "--size", "24", "--spacing", "5.88"]) == 0
    from losslab.engine.checkpoint import save_checkpoint
    from losslab.nets import build_network, network_spec

    def save(path, channels, preset):
        torch.manual_seed(0)
        spec = {"preset": preset, "features": [2, 4, 8, 16]}
        net = build_network(spec)
        info = {
            "labels": ["background", "left atrium"],
            "channel_names": channels,
            "n_image_channels": 1,
            "normalize": "none",
            "window": None,
            "overlap": 0.5,
            "network": network_spec(spec),
        }
        save_checkpoint(path, {"model": net.state_dict(), "model_info": info})
        return path

    seg = save(tmp_path / "seg.pt", ["image"], "ice_segmentation")
    edit = save(tmp_path / "edit.pt", ["image", "initial", "heatmap"], "ice_editing")
    out = tmp_path / "eval"
    args = ["ice", "evaluate", str(data), "--segmentation-model", str(seg), "--editing-model"]
    assert (
        main([*args, f"editing={edit}", f"intercnn={edit}", "--edits", "2", "--split", "all", "-o", str(out)])
        == 0
    )
    result = json.loads((out / "evaluation.json").read_text())
    assert set(result["table1"]) == {"editing", "intercnn", "no_editing"}
    assert set(result["table1"]["editing"]) == {"overall", "near", "far"}
    assert set(result["table1"]["no_editing"]) == {"overall"}
    assert set(result["sequential"]) == set(result["first_edit_drift"]) == {"editing", "intercnn"}
    assert len(result["sequential"]["editing"]) == 2 and len(result["cases"]) == 4
    assert (out / "fig3.png").stat().st_size > 1000 and "| editing |" in (out / "table1.md").read_text()
    assert set(result["unchanged"]) == {"overall", "near", "far"}
    assert result["settings"]["metric_contours"] == "all"
    edited = tmp_path / "edited"
    assert (
        main([*args, f"editing={edit}", "--edits", "1", "--metric-contours", "edited", "-o", str(edited)])
        == 0
    )
    again = json.loads((edited / "evaluation.json").read_text())
    # 0, or NaN (null in the JSON) in a case whose whole y_init contour is near the scribble (A >= 0.5 here)
    assert again["settings"]["metric_contours"] == "edited" and not (again["unchanged"]["far"] or 0.0) > 0.0
    assert "edited frame's CAS contour alone" in (edited / "table1.md").read_text()
    assert main([*args, "editing", "-o", str(out)]) == 2
