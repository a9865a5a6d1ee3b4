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
    assert main(["demo", "-o", str(tmp_path / "out")]) == 0
    names = sorted(p.name for p in (tmp_path / "out").iterdir())
    assert names == ["report.json", "report.md", "report.png"]
    report = json.loads((tmp_path / "out" / "report.json").read_text())
    # The edit improves on the initial segmentation near the scribble and leaves the rest alone.
    assert report["editing"]["no_editing"]["p95"] > report["editing"]["overall"]["p95"]
    assert report["rows"][0]["dice"] > report["initial_rows"][0]["dice"]
