"""`losslab fetal evaluate`: Dice, HD95 and Wilcoxon p-values equal direct losslab.metrics / scipy calls."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from scipy import stats

from losslab import io
from losslab.cli import main
from losslab.labelsets.evaluate import case_metrics, evaluate_predictions, to_markdown, wilcoxon_p
from losslab.metrics import dice_score, hd95

SPACING = (0.8, 1.0, 1.2)  # (k, j, i)
TISSUES = ["WM", "Vent", "Cer", "ECSF", "CGM", "DGM", "BS", "CC"]


def _reference(seed: int) -> np.ndarray:
    """Eight slabs of tissue along the last axis, with random widths, in a 10x12x40 volume."""
    rng = np.random.default_rng(seed)
    ref = np.zeros((10, 12, 40), np.uint8)
    edges = np.cumsum(rng.integers(3, 5, size=8)) + 2
    start = 2
    for label, end in enumerate(edges, start=1):
        ref[2:8, 2:10, start:end] = label
        start = end
    return ref


def _degrade(ref: np.ndarray, amount: int, seed: int) -> np.ndarray:
    """Shift some tissue boundaries by ``amount`` voxels and flip random voxels."""
    rng = np.random.default_rng(seed)
    pred = np.roll(ref, amount, axis=2) if amount else ref.copy()
    flip = rng.random(ref.shape) < 0.02 * (1 + amount)
    pred[flip] = rng.integers(0, 9, size=int(flip.sum()))
    return pred


@pytest.fixture(scope="module")
def data():
    cases = [f"case{i}" for i in range(8)]
    refs = {c: _reference(i) for i, c in enumerate(cases)}
    amounts = {"fully_supervised": 2, "soft_target_dice": 1, "leaf_dice": 0}
    preds = {
        m: {c: _degrade(refs[c], a, 100 * a + i) for i, c in enumerate(cases)} for m, a in amounts.items()
    }
    refs["case7"][refs["case7"] == 8] = 0  # CC not annotated in this reference: left out of case7
    preds["leaf_dice"]["case3"][preds["leaf_dice"]["case3"] == 7] = 1  # no BS predicted at all
    return cases, refs, preds


def test_case_metrics_equal_direct_calls(data):
    cases, refs, preds = data
    pred, ref = preds["soft_target_dice"]["case2"], refs["case2"]
    got = case_metrics(pred, ref, SPACING)
    for label, t in enumerate(TISSUES, start=1):
        assert got[t]["dice"] == pytest.approx(100 * dice_score(pred == label, ref == label), rel=1e-12)
        assert got[t]["hd95"] == pytest.approx(hd95(pred == label, ref == label, SPACING), rel=1e-12)
    assert math.isnan(case_metrics(preds["leaf_dice"]["case7"], refs["case7"], SPACING)["CC"]["dice"])
    empty = case_metrics(preds["leaf_dice"]["case3"], refs["case3"], SPACING)["BS"]
    assert empty["dice"] == 0.0
    assert empty["hd95"] == pytest.approx(float(np.linalg.norm(np.multiply(ref.shape, SPACING))))


def test_summaries_and_wilcoxon_equal_scipy(data):
    cases, refs, preds = data
    per_case = {m: {c: case_metrics(preds[m][c], refs[c], SPACING) for c in cases} for m in preds}
    result = evaluate_predictions(per_case)
    assert result["cases"] == cases and list(result["methods"]) == list(preds)
    for m in preds:
        for t in TISSUES:
            for k in ("dice", "hd95"):
                values = np.array([per_case[m][c][t][k] for c in cases])
                values = values[np.isfinite(values)]
                s = result["methods"][m]["summary"][t][k]
                assert s["n"] == values.size and s["mean"] == pytest.approx(values.mean(), rel=1e-12)
                assert s["std"] == pytest.approx(values.std(ddof=1), rel=1e-12)
    assert result["methods"]["leaf_dice"]["summary"]["CC"]["dice"]["n"] == 7
    for key, ref_method in (("vs_baseline", "fully_supervised"), ("vs_leaf", "leaf_dice")):
        others = [m for m in preds if m != ref_method]
        assert sorted(result[key]) == sorted(others)
        for m in others:
            for t in TISSUES:
                for k in ("dice", "hd95"):
                    a = np.array([per_case[m][c][t][k] for c in cases])
                    b = np.array([per_case[ref_method][c][t][k] for c in cases])
                    keep = np.isfinite(a) & np.isfinite(b)
                    expected = stats.wilcoxon(a[keep], b[keep], alternative="two-sided").pvalue
                    test = result[key][m][t][k]
                    assert test["p"] == pytest.approx(expected, rel=1e-12) and test["n"] == keep.sum()
                    assert test["significant"] == (expected < 0.01)
    # leaf-Dice (no shift) beats the baseline (2-voxel shift) on every case: p = 2 / 2^8 < 0.01
    wm = result["vs_baseline"]["leaf_dice"]["WM"]
    assert wm["dice"]["p"] == pytest.approx(2 / 2**8) and wm["dice"]["significant"] and wm["dice"]["better"]
    assert wm["hd95"]["better"] and result["vs_leaf"]["fully_supervised"]["WM"]["dice"]["better"]
    md = to_markdown(result)
    lines = md.splitlines()
    header = next(line for line in lines if line.startswith("| Model |"))
    assert header == "| Model | Metric | " + " | ".join(TISSUES) + " |"
    leaf_dsc = next(line for line in lines if line.startswith("| Leaf-Dice | DSC |"))
    s = result["methods"]["leaf_dice"]["summary"]["WM"]["dice"]
    assert leaf_dsc.split(" | ")[2] == f"**{s['mean']:.1f}** ({s['std']:.1f})*"
    base_hd = next(line for line in lines if line.startswith("| Fully supervised (Dice) | HD95 |"))
    assert "*" not in base_hd and "†" not in base_hd
    assert any(line.startswith("| Soft-target Dice | DSC |") for line in lines[lines.index(header) + 2 :])
    assert "Leaf-Dice (leaf_dice) against each method" in md


def test_wilcoxon_edge_cases():
    assert math.isnan(wilcoxon_p([1.0, 2.0], [1.0, 2.0])[0])
    assert wilcoxon_p([1.0, math.nan, 3.0], [2.0, 5.0, 1.0]) == (
        pytest.approx(stats.wilcoxon([1, 3], [2, 1]).pvalue),
        2,
    )
    with pytest.raises(ValueError, match="the baseline method 'fs' is not among"):
        evaluate_predictions({"a": {"c": {}}}, baseline="fs", leaf=None)


def test_cli_on_folders(data, tmp_path, capsys):
    cases, refs, preds = data
    geom = io.Geometry(tuple(reversed(SPACING)), (0.0, 0.0, 0.0), (1, 0, 0, 0, 1, 0, 0, 0, 1))
    for c in cases:
        io.write_image(tmp_path / "ref" / c / "parcellation.nii.gz", refs[c], geom)
        for m in preds:
            io.write_image(tmp_path / m / f"{c}.nii.gz", preds[m][c], geom)
    args = ["fetal", "evaluate", "--reference", str(tmp_path / "ref"), "-o", str(tmp_path / "t.md"),
            "--json", str(tmp_path / "t.json")] + [f"--method={m}={tmp_path / m}" for m in preds]  # fmt: skip
    assert main(args) == 0
    out = capsys.readouterr().out
    assert out == (tmp_path / "t.md").read_text()
    result = json.loads((tmp_path / "t.json").read_text())  # strict JSON: NaN written as null
    assert result["methods"]["leaf_dice"]["per_case"]["case7"]["CC"]["dice"] is None
    per_case = {m: {c: case_metrics(preds[m][c], refs[c], SPACING) for c in cases} for m in preds}
    direct = evaluate_predictions(per_case)
    assert result["vs_baseline"]["leaf_dice"]["CGM"]["hd95"]["p"] == pytest.approx(
        direct["vs_baseline"]["leaf_dice"]["CGM"]["hd95"]["p"]
    )
    assert out == to_markdown(direct)
    assert main(["fetal", "evaluate", "--reference", str(tmp_path / "ref"), "--method", "x"]) == 2
    assert "--method expects NAME=FOLDER" in capsys.readouterr().err
