import json

import numpy as np
import pytest

from losslab.cli import main
from losslab.io import Geometry, read_image, write_image
from losslab.metrics import attention_map, compare_masks, editing_metric
from losslab.sample import FILES, SAMPLE_DIR, make_sample_case, sample_paths


def test_bundled_sample_is_what_the_generator_makes():
    # The files shipped in the package are reproducible with `losslab sample-data`.
    case = make_sample_case()
    for role, path in sample_paths().items():
        np.testing.assert_array_equal(read_image(path).array, case[role], err_msg=role)
    assert sorted(p.name for p in SAMPLE_DIR.iterdir()) == sorted(FILES.values())


def test_metrics_json_matches_library(capsys):
    paths = sample_paths()
    assert main(["metrics", str(paths["reference"]), str(paths["compared"]), "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    ref, cmp = read_image(paths["reference"]), read_image(paths["compared"])
    expected = compare_masks(cmp.array == 1, ref.array == 1, ref.geometry.array_spacing)
    row = report["rows"][0]
    for key in ("dice", "iou", "hd", "hd95", "assd"):
        assert row[key] == pytest.approx(expected[key])


def test_metrics_editing_options_and_dmap(tmp_path, capsys):
    p = sample_paths()
    dmap = tmp_path / "dmap.nrrd"
    args = ["metrics", str(p["reference"]), str(p["compared"]), "--initial", str(p["initial"])]
    args += ["--scribble", str(p["scribble"]), "--cas", str(p["cas"]), "--sigma", "10", "--dmap", str(dmap)]
    assert main(args) == 0
    out = capsys.readouterr().out
    assert "editing metric D (sigma 10.0 voxels)" in out and "no_editing" in out
    arrays = {role: read_image(path).array for role, path in p.items()}
    spacing = read_image(p["reference"]).geometry.array_spacing
    expected = editing_metric(
        arrays["cas"] > 0,
        arrays["initial"] > 0,
        arrays["compared"] > 0,
        attention_map(arrays["scribble"] > 0, 10.0),
        spacing,
    )
    line = next(ln for ln in out.splitlines() if ln.startswith("overall"))
    assert float(line.split("\t")[1]) == pytest.approx(expected.stats["overall"]["p95"], abs=1e-4)
    np.testing.assert_allclose(read_image(dmap).array, expected.d_map, equal_nan=True)


def test_label_map_table(tmp_path, capsys):
    ref = np.zeros((12, 12, 12), np.uint8)
    ref[2:6, 2:6, 2:6] = 1
    ref[7:10, 7:10, 7:10] = 2
    cmp = ref.copy()
    cmp[2, 2:6, 2:6] = 0
    g = Geometry.identity(3, (1.0, 1.0, 2.0))
    write_image(tmp_path / "ref.nrrd", ref, g)
    write_image(tmp_path / "cmp.seg.nrrd", cmp, g, labels={1: "LA", 2: "LAA"})
    assert main(["metrics", str(tmp_path / "ref.nrrd"), str(tmp_path / "cmp.seg.nrrd")]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[1].startswith("1\tLA\t") and out[2].startswith("2\tLAA\t1.0000")
    assert any(ln.startswith("mean_iou") for ln in out)


def test_errors_are_one_line_and_name_the_problem(tmp_path, capsys):
    a = np.zeros((6, 6, 6), np.uint8)
    a[1:4, 1:4, 1:4] = 1
    write_image(tmp_path / "a.nii.gz", a, Geometry.identity(3))
    write_image(
        tmp_path / "b.nii.gz",
        a,
        Geometry(spacing=(1, 1, 1), origin=(0, 0, 5), direction=Geometry.identity().direction),
    )
    assert main(["metrics", str(tmp_path / "a.nii.gz"), str(tmp_path / "b.nii.gz")]) == 2
    err = capsys.readouterr().err
    assert "origin: (0, 0, 0) vs (0, 0, 5)" in err and "Traceback" not in err
    assert main(["metrics", str(tmp_path / "a.nii.gz"), str(tmp_path / "nope.nii.gz")]) == 2
    assert "compared file not found" in capsys.readouterr().err
    args = [
        "metrics",
        str(tmp_path / "a.nii.gz"),
        str(tmp_path / "a.nii.gz"),
        "--initial",
        str(tmp_path / "a.nii.gz"),
    ]
    assert main(args) == 2
    assert "--initial, --scribble and --cas together" in capsys.readouterr().err


def test_demo_writes_report(tmp_path, capsys):
    # the ICE editing demo (Testing/core/test_demo_ice.py has the details): report files and edits
    assert main(["demo", "-o", str(tmp_path / "out"), "--edits", "1"]) == 0
    names = sorted(p.name for p in (tmp_path / "out").iterdir())
    assert names == ["report.json", "report.md", "report.png"]
    report = json.loads((tmp_path / "out" / "report.json").read_text())
    assert all(len(rows) == 1 for rows in report["edits"].values())


# ---------------------------------------------------------------------------------------------------------
# Undefined statistics and warnings


def _editing_case(tmp_path, cas_empty=False, compared_empty=False):
    case = make_sample_case()
    if cas_empty:
        case["cas"] = np.zeros_like(case["cas"])
    if compared_empty:
        case["compared"] = np.zeros_like(case["compared"])
    g = Geometry.identity(3, (2.0, 2.0, 2.0))
    return {role: write_image(tmp_path / f"{role}.nrrd", case[role], g) for role in FILES}


def _editing_args(p):
    args = ["metrics", str(p["reference"]), str(p["compared"]), "--initial", str(p["initial"])]
    return args + ["--scribble", str(p["scribble"]), "--cas", str(p["cas"])]


def test_empty_cas_gives_undefined_editing_statistics():
    case = make_sample_case()
    a = attention_map(case["scribble"] > 0, 10.0)
    with pytest.warns(UserWarning, match="CAS contour is empty"):
        result = editing_metric(np.zeros_like(case["cas"]), case["initial"], case["compared"], a)
    for region in ("overall", "near", "far", "no_editing", "cas_to_prediction"):
        s = result.stats[region]
        assert np.isnan(s["p95"]) and np.isnan(s["mean"]) and s["count"] == 0, (region, s)


def test_empty_cas_warnings_and_nulls_in_json_and_table(tmp_path, capsys):
    p = _editing_case(tmp_path, cas_empty=True)
    assert main([*_editing_args(p), "--json"]) == 0
    captured = capsys.readouterr()
    report = json.loads(captured.out)
    assert report["warnings"] == ["editing metric: the CAS contour is empty: D_edit is undefined"]
    assert "losslab metrics: warning: editing metric: the CAS contour is empty" in captured.err
    assert report["editing"]["overall"] == {"p95": None, "mean": None, "count": 0}
    assert main(_editing_args(p)) == 0
    table = capsys.readouterr().out
    assert "warning: editing metric: the CAS contour is empty: D_edit is undefined" in table
    assert "overall\tnan\tnan\t0" in table


def test_empty_compared_gives_null_distances_and_its_warnings(tmp_path, capsys):
    p = _editing_case(tmp_path, compared_empty=True)
    assert main([*_editing_args(p), "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    row = report["rows"][0]
    assert row["dice"] == 0.0 and row["hd"] is None and row["hd95"] is None and row["assd"] is None
    assert any("prediction mask is empty" in w for w in report["warnings"]), report["warnings"]
    assert any(w.startswith("compare_masks:") for w in report["warnings"]), report["warnings"]


def test_compare_masks_refuses_non_binary_floats():
    ref = np.zeros((8, 8, 8), np.float32)
    ref[2:5, 2:5, 2:5] = 1
    with pytest.raises(ValueError, match=r"pred must be a binary mask .* other values \(0.5\)"):
        compare_masks(ref * 0.5, ref)
    nan = ref.copy()
    nan[0, 0, 0] = np.nan
    with pytest.raises(ValueError, match=r"ref must be a binary mask .*1 voxels with other values \(nan\)"):
        compare_masks(ref, nan)
    # Binary floats and integer masks (non-zero inside, e.g. 255) are masks.
    assert compare_masks(ref, ref)["dice"] == 1.0
    assert compare_masks((ref * 255).astype(np.uint8), ref.astype(bool))["dice"] == 1.0


def test_labels_option_lifts_the_label_limit(tmp_path, capsys):
    ref = np.zeros((12, 12, 12), np.int16)
    ref[2:8, 2:8, 2:8] = 1
    ct = np.random.default_rng(0).integers(-1000, 2000, ref.shape).astype(np.int16)
    ct[2:8, 2:8, 2:8] = 1
    write_image(tmp_path / "ref.nrrd", ref)
    write_image(tmp_path / "ct.nrrd", ct)
    assert main(["metrics", str(tmp_path / "ref.nrrd"), str(tmp_path / "ct.nrrd")]) == 2
    assert "distinct labels" in capsys.readouterr().err
    assert main(["metrics", str(tmp_path / "ref.nrrd"), str(tmp_path / "ct.nrrd"), "--labels", "1"]) == 0


# ---------------------------------------------------------------------------------------------------------
# Output folders of sample-data and demo


def test_sample_data_needs_overwrite_for_a_used_folder(tmp_path, capsys):
    """Existing outputs need --overwrite (issue 22): even an earlier run's files, which may be the user's own
    by now; with it the sample files are replaced and other files left alone."""
    out = tmp_path / "case"
    assert main(["sample-data", str(out)]) == 0
    image_before = (out / "image.nii.gz").read_bytes()
    assert main(["sample-data", str(out), "--seed", "1"]) == 2
    err = capsys.readouterr().err
    assert "already holds files" in err and "--overwrite" in err
    assert (out / "image.nii.gz").read_bytes() == image_before
    (out / "notes.txt").write_text("mine")
    assert main(["sample-data", str(out), "--seed", "1", "--overwrite"]) == 0
    assert (out / "notes.txt").read_text() == "mine" and (out / "image.nii.gz").read_bytes() != image_before
    assert sorted(p.name for p in out.iterdir()) == sorted([*FILES.values(), "notes.txt"])


def test_demo_needs_overwrite_for_a_used_folder(tmp_path, capsys):
    out = tmp_path / "demo"
    out.mkdir()
    (out / "report.md").write_text("my own report")  # replaced unasked before issue 22
    assert main(["demo", "-o", str(out), "--edits", "1"]) == 2
    assert "report.md" in capsys.readouterr().err
    assert (out / "report.md").read_text() == "my own report"
    assert main(["demo", "-o", str(out), "--edits", "1", "--overwrite"]) == 0
    assert sorted(p.name for p in out.iterdir()) == ["report.json", "report.md", "report.png"]


# ---------------------------------------------------------------------------------------------------------
# main(): which exceptions are user errors


def _run_raising(monkeypatch, capsys, exc):
    import losslab.cli.demo as demo

    def raise_it(args):
        raise exc

    monkeypatch.setattr(demo, "run_sample_data", raise_it)
    # main() builds its parser on each call, so the patched function is the one the parser binds.
    rc = main(["sample-data", "somewhere"])
    return rc, capsys.readouterr().err


@pytest.mark.parametrize(
    ("make", "expected"),
    [
        (lambda: PermissionError(13, "Permission denied", "/data/out"), "/data/out: Permission denied"),
        (
            lambda: OSError(28, "No space left on device", "/d.nii.gz"),
            "/d.nii.gz: No space left on device (disk full)",
        ),
        (lambda: IsADirectoryError(21, "Is a directory", "/out"), "/out: Is a directory"),
        (lambda: OSError(30, "Read-only file system", "/ro/x"), "/ro/x: Read-only file system"),
        (
            lambda: json.JSONDecodeError("Expecting value", "{\n  x", 4),
            "invalid JSON: Expecting value at line 2 column 3",
        ),
        (lambda: ValueError("first line\nsecond line"), "first line second line"),
    ],
)
def test_main_maps_user_errors_to_one_line(monkeypatch, capsys, make, expected):
    rc, err = _run_raising(monkeypatch, capsys, make())
    assert rc == 2
    assert err.splitlines() == [f"losslab sample-data: error: {expected}"], err


def test_main_names_the_yaml_file(monkeypatch, capsys, tmp_path):
    yaml = pytest.importorskip("yaml")
    bad = tmp_path / "config.yaml"
    bad.write_text("a: [1, 2\nb: 3\n")
    with open(bad) as handle:
        try:
            yaml.safe_load(handle)
        except yaml.YAMLError as exc:
            error = exc
    rc, err = _run_raising(monkeypatch, capsys, error)
    assert rc == 2 and len(err.splitlines()) == 1
    assert err.startswith(f"losslab sample-data: error: invalid YAML: {bad}, line ")


def test_main_keeps_tracebacks_for_bugs_and_maps_ctrl_c(monkeypatch, capsys):
    with pytest.raises(TypeError):
        _run_raising(monkeypatch, capsys, TypeError("a bug"))
    with pytest.raises(KeyError):
        _run_raising(monkeypatch, capsys, KeyError("a bug"))
    rc, err = _run_raising(monkeypatch, capsys, KeyboardInterrupt())
    assert rc == 130 and err == "losslab sample-data: interrupted\n"


def test_usage_errors_are_one_line(capsys):
    with pytest.raises(SystemExit) as info:
        main(["metrics", "a.nii.gz"])
    assert info.value.code == 2
    err = capsys.readouterr().err
    assert err.splitlines() == [
        "losslab metrics: error: the following arguments are required: compared (see 'losslab metrics --help')"
    ]
