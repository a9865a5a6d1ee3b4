"""losslab.labelsets: dataset builder round trip, Table-1 patterns, make-partial on the atlas."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from losslab import io
from losslab.cli import main
from losslab.engine import load_manifest
from losslab.labelsets import (
    TABLE1_PATTERNS,
    PartialAnnotationError,
    apply_pattern,
    assign_patterns,
    build_dataset,
    export_cases,
    pattern_counts,
)

ATLAS = Path(__file__).resolve().parents[3] / "shared" / "data" / "fetal-sb-atlas"
needs_atlas = pytest.mark.skipif(
    not (ATLAS / "GA21_notoperated" / "srr.nii.gz").is_file(),
    reason=f"fetal atlas data not found at {ATLAS} (shared/data/fetal-sb-atlas, see its README)",
)
GEOM = io.Geometry((1.0, 1.5, 2.0), (3.0, -4.0, 5.0), (0, 1, 0, -1, 0, 0, 0, 0, 1))


def _write_case(folder: Path, annotated: list[str] | None, seed: int) -> np.ndarray:
    """A synthetic parcellation (random tissues in a box mask) with some tissues erased."""
    rng = np.random.default_rng(seed)
    parc = np.zeros((6, 7, 8), np.uint8)
    parc[1:5, 1:6, 1:7] = rng.integers(1, 9, size=(4, 5, 6))
    parc[1, 1, 1 : 9 - 1] = np.arange(1, 8)  # every tissue 1..7 present
    parc[2, 1, 1] = 8
    mask = (parc > 0).astype(np.uint8)
    from losslab.labelsets import tissue_labels

    keep = tissue_labels(annotated) if annotated is not None else list(range(1, 9))
    partial = np.where(np.isin(parc, keep), parc, 0).astype(np.uint8)
    io.write_image(folder / "srr.nii.gz", rng.normal(size=parc.shape).astype(np.float32), GEOM)
    if annotated is None:
        io.write_image(folder / "parcellation.nii.gz", parc, GEOM)
    else:
        io.write_image(folder / "partial.nii.gz", partial, GEOM)
        (folder / "annotation.json").write_text(json.dumps({"annotated": annotated}))
    io.write_image(folder / "mask.nii.gz", mask, GEOM)
    return partial


def test_builder_round_trip_and_engine_reads_it(tmp_path):
    cases = tmp_path / "cases"
    spec = {"A": ["WM", "Vent", "Cer"], "B": ["WM", "Vent", "Cer", "ECSF"], "C": None, "D": ["Vent", "BS"]}
    partials = {}
    for i, (cid, annotated) in enumerate(spec.items()):
        (cases / cid).mkdir(parents=True)
        partials[cid] = _write_case(cases / cid, annotated, i)
    manifest_path = build_dataset(cases, tmp_path / "ds", progress=False)
    raw = json.loads(manifest_path.read_text())
    # A -> 9, B -> 10 (released code's numbers), D's set {1,3,4,5,6,8} gets the next free label 12
    assert raw["label_sets"] == {"9": [4, 5, 6, 7, 8], "10": [5, 6, 7, 8], "12": [1, 3, 4, 5, 6, 8]}
    assert raw["splits"]["full"] == ["C"] and raw["splits"]["train"] == ["A", "B", "C", "D"]
    manifest = load_manifest(manifest_path)
    assert manifest.label_sets == {9: [4, 5, 6, 7, 8], 10: [5, 6, 7, 8], 12: [1, 3, 4, 5, 6, 8]}
    label_a = io.read_image(tmp_path / "ds" / "labels" / "A.nii.gz")
    assert set(np.unique(label_a.array)) <= {0, 1, 2, 3, 9} and label_a.geometry.direction == GEOM.direction
    back = export_cases(manifest_path, tmp_path / "back", progress=False)
    assert [p.name for p in back] == ["A", "B", "C", "D"]
    for cid, annotated in spec.items():
        np.testing.assert_array_equal(
            io.read_image(tmp_path / "back" / cid / "partial.nii.gz").array, partials[cid]
        )
        mask = io.read_image(cases / cid / "mask.nii.gz").array
        np.testing.assert_array_equal(io.read_image(tmp_path / "back" / cid / "mask.nii.gz").array, mask)
        got = json.loads((tmp_path / "back" / cid / "annotation.json").read_text())["annotated"]
        want = annotated or ["WM", "Vent", "Cer", "ECSF", "CGM", "DGM", "BS", "CC"]
        assert sorted(got) == sorted(want)
    # building again from the exported folders gives the same maps
    build_dataset(tmp_path / "back", tmp_path / "ds2", progress=False)
    for cid in spec:
        a = io.read_image(tmp_path / "ds" / "labels" / f"{cid}.nii.gz").array
        np.testing.assert_array_equal(io.read_image(tmp_path / "ds2" / "labels" / f"{cid}.nii.gz").array, a)


def test_builder_reports_every_bad_case(tmp_path):
    cases = tmp_path / "cases"
    for cid, annotated in {
        "A": ["WM", "Vent"],
        "B": ["WM", "Vent", "Cer"],
        "C": ["Vent", "Cer", "WM", "Blob"],
    }.items():
        (cases / cid).mkdir(parents=True)
        _write_case(cases / cid, ["WM", "Vent", "Cer"], 0)
        (cases / cid / "annotation.json").write_text(json.dumps({"annotated": annotated}))
    with pytest.raises(PartialAnnotationError) as info:
        build_dataset(cases, tmp_path / "ds", progress=False)
    text = str(info.value)
    assert "case 'A': tissue(s) painted but not declared annotated: Cer (3)" in text
    assert "unknown tissue name(s) ['Blob']" in text and "case 'B'" not in text
    assert not (tmp_path / "ds" / "dataset.json").exists()


def test_table1_patterns_and_proportions():
    assert [p.paper_count for p in TABLE1_PATTERNS] == [18, 18, 36, 92]  # 164 = 18 atlas + 116 + 30
    assert [p.abbreviations for p in TABLE1_PATTERNS][1:] == [
        ["WM", "Vent", "Cer", "ECSF", "CC"], ["WM", "Vent", "Cer", "ECSF"], ["WM", "Vent", "Cer"]
    ]  # fmt: skip
    assert pattern_counts(164) == [18, 18, 36, 92]
    assert pattern_counts(11) == [1, 1, 3, 6] and pattern_counts(15) == [2, 2, 3, 8]
    assert pattern_counts(3) == [1, 0, 1, 1]  # at least one fully annotated volume
    assert sum(pattern_counts(37)) == 37
    ids = [f"c{i}" for i in range(11)]
    a, b = assign_patterns(ids, seed=1), assign_patterns(ids, seed=1)
    assert a == b and assign_patterns(ids, seed=2) != a
    assert sorted(p.name for p in a.values()).count("wm-vent-cer") == 6
    parc = np.arange(9).reshape(3, 3)
    np.testing.assert_array_equal(apply_pattern(parc, TABLE1_PATTERNS[2]), [[0, 1, 2], [3, 4, 0], [0, 0, 0]])


@needs_atlas
def test_make_partial_on_the_atlas(tmp_path, capsys):
    cases = ["GA21_notoperated", "GA25_operated", "GA28_operated", "GA32_operated"]
    rc = main(["fetal", "make-partial", str(ATLAS), str(tmp_path / "p"), "--spacing", "4.0", "--seed", "3",
               "--cases", *cases, "--include-test"])  # fmt: skip
    assert rc == 0, capsys.readouterr().err
    record = json.loads((tmp_path / "p" / "patterns.json").read_text())
    assert record["counts"] == {"full": 1, "wm-vent-cer-ecsf-cc": 0, "wm-vent-cer-ecsf": 1, "wm-vent-cer": 2}
    manifest = load_manifest(tmp_path / "p" / "dataset.json")
    assert sorted(manifest.cases) == cases
    for cid, name in record["cases"].items():
        pattern = next(p for p in TABLE1_PATTERNS if p.name == name)
        label = io.read_image(tmp_path / "p" / "labels" / f"{cid}.nii.gz")
        assert label.geometry.spacing == pytest.approx((4.0, 4.0, 4.0))
        assert label.array.shape == (31, 38, 27)  # ceil(155, 189, 135 * 0.8 / 4)
        parc = io.read_image(ATLAS / cid / "parcellation.nii.gz").array
        values = set(np.unique(label.array).tolist())
        assert values - {0} == set(pattern.annotated) | (
            set() if name == "full" else {manifest_set(manifest, pattern)}
        )
        assert values <= set(np.unique(parc).tolist()) | {9, 10, 11}
    # default exclusion of the protocol's test volumes
    with pytest.raises(ValueError, match="no atlas case left"):
        from losslab.labelsets.atlas import make_partial_atlas

        make_partial_atlas(ATLAS, tmp_path / "q", cases=["GA23_notoperated"], progress=False)


def manifest_set(manifest, pattern) -> int:
    missing = sorted(set(range(1, 9)) - set(pattern.annotated))
    return next(k for k, v in manifest.label_sets.items() if v == missing)


def test_cli_build_and_export(tmp_path, capsys):
    (tmp_path / "cases" / "A").mkdir(parents=True)
    partial = _write_case(tmp_path / "cases" / "A", ["WM", "Vent", "Cer", "ECSF", "CC"], 5)
    assert main(["fetal", "build-dataset", str(tmp_path / "cases"), str(tmp_path / "ds"), "--name", "x"]) == 0
    raw = json.loads((tmp_path / "ds" / "dataset.json").read_text())
    assert raw["name"] == "x" and raw["label_sets"] == {"11": [5, 6, 7]}
    assert main(["fetal", "export-cases", str(tmp_path / "ds" / "dataset.json"), str(tmp_path / "back")]) == 0
    assert "wrote 1 case folder(s)" in capsys.readouterr().out
    np.testing.assert_array_equal(io.read_image(tmp_path / "back" / "A" / "partial.nii.gz").array, partial)
    assert main(["fetal", "build-dataset", str(tmp_path / "nowhere"), str(tmp_path / "ds2")]) == 2
    assert "no such folder of cases" in capsys.readouterr().err
