"""The catalogue of user errors and faults of ``losslab metrics``, ``losslab demo`` and ``losslab sample-data``
(issue 7): each case runs through ``losslab.cli.main`` in process and must give its exit code (2 for a user
error), exactly one non-empty line on stderr, no traceback, and leave every file that existed before (inputs
and previous outputs) byte-identical. ``train`` / ``infer`` have their own catalogue.

Cases that need a real file system fault (a read-only folder, a full disk) mount a small tmpfs (we run as
root in CI); they skip, saying why, where mounting is not allowed.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

from losslab.cli import main

# ----------------------------------------------------------------------------------------------------------
# Inputs (written with SimpleITK directly, so the fixtures do not depend on the code under test)


def _mask(shape=(24, 24, 24), seed=0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    m = np.zeros(shape, np.uint8)
    m[4:18, 5:19, 6:20] = 1
    # Speckle on the border so that the gzip stream is long enough to cut in the middle of the data.
    m[rng.random(shape) < 0.15] ^= 1
    return m


def _sitk_write(path: Path, array: np.ndarray, compress: bool | None = None) -> Path:
    img = sitk.GetImageFromArray(array)
    img.SetSpacing((1.0, 1.0, 1.0))
    if compress is None:
        compress = path.name.endswith((".gz", ".nrrd"))
    sitk.WriteImage(img, str(path), useCompression=compress)
    return path


def _pair(tmp: Path) -> tuple[Path, Path]:
    ref = _sitk_write(tmp / "ref.nii.gz", _mask())
    cmp = _sitk_write(tmp / "cmp.nii.gz", _mask(seed=1))
    return ref, cmp


def _editing_inputs(tmp: Path, cas: np.ndarray | None = None) -> list[str]:
    ref, cmp = _pair(tmp)
    base = np.zeros((24, 24, 24), np.uint8)
    base[5:17, 6:18, 7:19] = 1
    scribble = np.zeros_like(base)
    scribble[10, 4:8, 10] = 1
    if cas is None:
        cas = np.zeros_like(base)
        cas[::4][(_mask() > 0)[::4]] = 1
    _sitk_write(tmp / "init.nii.gz", base)
    _sitk_write(tmp / "scribble.nii.gz", scribble)
    _sitk_write(tmp / "cas.nii.gz", cas.astype(np.uint8))
    return [
        "metrics",
        str(ref),
        str(cmp),
        "--initial",
        str(tmp / "init.nii.gz"),
        "--scribble",
        str(tmp / "scribble.nii.gz"),
        "--cas",
        str(tmp / "cas.nii.gz"),
    ]


def _previous_dmap(tmp: Path, name: str = "d.nii.gz") -> Path:
    """A pre-existing output file that a failed write must leave whole."""
    path = tmp / name
    _sitk_write(path, np.arange(24**3, dtype=np.float32).reshape(24, 24, 24))
    return path


@contextlib.contextmanager
def _tmpfs(where: Path, size: str):
    where.mkdir()
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(where)], capture_output=True, text=True
    )
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here ({done.stderr.strip() or done.returncode})")
    try:
        yield where
    finally:
        subprocess.run(["umount", "-l", str(where)], check=False)


def _fill(folder: Path) -> None:
    subprocess.run(["dd", "if=/dev/zero", f"of={folder / 'fill'}", "bs=4k"], capture_output=True, check=False)


# ----------------------------------------------------------------------------------------------------------
# Cases: each takes (tmp, monkeypatch, stack) and returns the command line; `stack` is an ExitStack for
# mounts. EXPECTED[id] = (exit code, words the one stderr line must contain).


def case_missing_reference(tmp, mp, stack):
    _, cmp = _pair(tmp)
    return ["metrics", str(tmp / "nope.nii.gz"), str(cmp)]


def case_missing_cas(tmp, mp, stack):
    argv = _editing_inputs(tmp)
    (tmp / "cas.nii.gz").unlink()
    return argv


def case_unsupported_type(tmp, mp, stack):
    ref, _ = _pair(tmp)
    (tmp / "cmp.txt").write_text("1 0 1\n")
    return ["metrics", str(ref), str(tmp / "cmp.txt")]


def case_not_an_image(tmp, mp, stack):
    ref, _ = _pair(tmp)
    (tmp / "bad.nrrd").write_text("this is not an NRRD file\n")
    return ["metrics", str(ref), str(tmp / "bad.nrrd")]


def case_truncated_nii_gz(tmp, mp, stack):
    ref, cmp = _pair(tmp)
    data = cmp.read_bytes()
    cmp.write_bytes(data[: int(len(data) * 0.7)])
    return ["metrics", str(ref), str(cmp)]


def case_corrupted_gzip_crc(tmp, mp, stack):
    # The deflate stream is whole but the CRC of the trailer is wrong: the data is not what was written.
    ref, cmp = _pair(tmp)
    data = bytearray(cmp.read_bytes())
    data[-8] ^= 0xFF
    cmp.write_bytes(bytes(data))
    return ["metrics", str(ref), str(cmp)]


def case_corrupted_gzip_data(tmp, mp, stack):
    ref, cmp = _pair(tmp)
    data = bytearray(cmp.read_bytes())
    middle = len(data) // 2
    data[middle : middle + 16] = bytes(16)
    cmp.write_bytes(bytes(data))
    return ["metrics", str(ref), str(cmp)]


def case_truncated_nii(tmp, mp, stack):
    ref = _sitk_write(tmp / "ref.nii", _mask(), compress=False)
    cmp = _sitk_write(tmp / "cmp.nii", _mask(seed=1), compress=False)
    cmp.write_bytes(cmp.read_bytes()[: 352 + 24 * 24 * 10])
    return ["metrics", str(ref), str(cmp)]


def case_truncated_seg_nrrd(tmp, mp, stack):
    ref, _ = _pair(tmp)
    import slicerio

    seg = slicerio.create_segmentation((24, 24, 24), np.eye(4))
    slicerio.add_segment(seg, _mask(seed=1).transpose() > 0, {"id": "S1", "name": "LA"})
    path = tmp / "cmp.seg.nrrd"
    slicerio.write_segmentation(str(path), seg)
    path.write_bytes(path.read_bytes()[:-200])
    return ["metrics", str(ref), str(path)]


def case_nan_in_nifti_mask(tmp, mp, stack):
    ref, _ = _pair(tmp)
    m = _mask(seed=1).astype(np.float32)
    m[3, 3, 3] = np.nan
    _sitk_write(tmp / "cmp.nii.gz", m)
    return ["metrics", str(ref), str(tmp / "cmp.nii.gz")]


def case_nan_in_nrrd_mask(tmp, mp, stack):
    ref, _ = _pair(tmp)
    m = _mask(seed=1).astype(np.float32)
    m[3, 3, 3] = np.nan
    _sitk_write(tmp / "cmp.nrrd", m)
    return ["metrics", str(ref), str(tmp / "cmp.nrrd")]


def case_inf_in_nrrd_initial(tmp, mp, stack):
    argv = _editing_inputs(tmp)
    m = sitk.GetArrayFromImage(sitk.ReadImage(str(tmp / "init.nii.gz"))).astype(np.float64)
    m[0, 0, 0] = np.inf
    _sitk_write(tmp / "init.nrrd", m)
    argv[argv.index("--initial") + 1] = str(tmp / "init.nrrd")
    return argv


def case_intensity_image_as_mask(tmp, mp, stack):
    ref, _ = _pair(tmp)
    image = np.random.default_rng(0).normal(100.0, 20.0, (24, 24, 24)).astype(np.float32)
    _sitk_write(tmp / "image.nii.gz", image)
    return ["metrics", str(ref), str(tmp / "image.nii.gz")]


def case_integer_intensity_image_as_mask(tmp, mp, stack):
    # A CT-like int16 image: integer values, but thousands of them.
    ref, _ = _pair(tmp)
    image = np.random.default_rng(0).integers(-1000, 2000, (24, 24, 24)).astype(np.int16)
    _sitk_write(tmp / "ct.nii.gz", image)
    return ["metrics", str(ref), str(tmp / "ct.nii.gz")]


def case_fractional_initial_mask(tmp, mp, stack):
    argv = _editing_inputs(tmp)
    m = sitk.GetArrayFromImage(sitk.ReadImage(str(tmp / "init.nii.gz"))).astype(np.float32) * 0.5
    _sitk_write(tmp / "init.nrrd", m)
    argv[argv.index("--initial") + 1] = str(tmp / "init.nrrd")
    return argv


def case_four_d_image(tmp, mp, stack):
    ref, _ = _pair(tmp)
    frames = [sitk.GetImageFromArray(_mask(seed=s)) for s in (1, 2)]
    sitk.WriteImage(sitk.JoinSeries(frames), str(tmp / "cmp4d.nii.gz"), True)
    return ["metrics", str(ref), str(tmp / "cmp4d.nii.gz")]


def case_different_grids(tmp, mp, stack):
    ref, _ = _pair(tmp)
    img = sitk.GetImageFromArray(_mask(seed=1))
    img.SetOrigin((0.0, 0.0, 5.0))
    sitk.WriteImage(img, str(tmp / "moved.nii.gz"), True)
    return ["metrics", str(ref), str(tmp / "moved.nii.gz")]


def case_both_empty(tmp, mp, stack):
    _sitk_write(tmp / "a.nii.gz", np.zeros((8, 8, 8), np.uint8))
    return ["metrics", str(tmp / "a.nii.gz"), str(tmp / "a.nii.gz")]


def case_invalid_option_value(tmp, mp, stack):
    ref, cmp = _pair(tmp)
    return ["metrics", str(ref), str(cmp), "--labels", "one"]


def case_unknown_option(tmp, mp, stack):
    ref, cmp = _pair(tmp)
    return ["metrics", str(ref), str(cmp), "--frobnicate"]


def case_negative_sigma(tmp, mp, stack):
    return [*_editing_inputs(tmp), "--sigma", "-3"]


def case_dmap_without_editing_inputs(tmp, mp, stack):
    ref, cmp = _pair(tmp)
    return ["metrics", str(ref), str(cmp), "--dmap", str(tmp / "d.nrrd")]


def case_dmap_is_a_folder(tmp, mp, stack):
    argv = _editing_inputs(tmp)
    (tmp / "out.nii.gz").mkdir()
    (tmp / "out.nii.gz" / "keep.txt").write_text("mine")
    return [*argv, "--dmap", str(tmp / "out.nii.gz")]


def case_dmap_over_an_input(tmp, mp, stack):
    argv = _editing_inputs(tmp)
    return [*argv, "--dmap", argv[1]]


def case_dmap_unsupported_suffix(tmp, mp, stack):
    return [*_editing_inputs(tmp), "--dmap", str(tmp / "d.png")]


def case_dmap_disk_full_unreported(tmp, mp, stack):
    # ITK does not report a gzip error on a full disk: the writer "succeeds" with a truncated file.
    argv = _editing_inputs(tmp)
    dmap = _previous_dmap(tmp)
    real = sitk.WriteImage

    def truncated(image, path, *args, **kwargs):
        real(image, path, *args, **kwargs)
        data = Path(path).read_bytes()
        Path(path).write_bytes(data[: len(data) // 2])

    mp.setattr(sitk, "WriteImage", truncated)
    return [*argv, "--dmap", str(dmap), "--overwrite"]  # a failed write leaves the old file whole


def case_dmap_disk_full_raised(tmp, mp, stack):
    argv = _editing_inputs(tmp)
    dmap = _previous_dmap(tmp)

    def full(image, path, *args, **kwargs):
        Path(path).write_bytes(b"\x1f\x8b partial")
        raise OSError(errno.ENOSPC, "No space left on device", str(path))

    mp.setattr(sitk, "WriteImage", full)
    return [*argv, "--dmap", str(dmap), "--overwrite"]  # a failed write leaves the old file whole


def case_dmap_nrrd_write_error(tmp, mp, stack):
    # ITK raises a RuntimeError (a multi-line message) when it cannot write a NRRD.
    argv = _editing_inputs(tmp)
    dmap = _previous_dmap(tmp, "d.nrrd")

    def fails(image, path, *args, **kwargs):
        raise RuntimeError(
            "Exception thrown in SimpleITK ImageFileWriter_Execute: itkNrrdImageIO.cxx:1000:\n"
            "ITK ERROR: NrrdImageIO(0x1): Write: Error writing " + str(path) + ":\n[nrrd] nrrdSave: trouble\n"
        )

    mp.setattr(sitk, "WriteImage", fails)
    return [*argv, "--dmap", str(dmap), "--overwrite"]  # a failed write leaves the old file whole


def case_dmap_real_full_disk(tmp, mp, stack):
    argv = _editing_inputs(tmp)
    full = stack.enter_context(_tmpfs(tmp / "full", "2m"))
    dmap = _previous_dmap(full)
    _fill(full)
    return [*argv, "--dmap", str(dmap), "--overwrite"]  # a failed write leaves the old file whole


def case_dmap_read_only_folder(tmp, mp, stack):
    argv = _editing_inputs(tmp)
    ro = stack.enter_context(_tmpfs(tmp / "ro", "1m"))
    dmap = _previous_dmap(ro)
    done = subprocess.run(["mount", "-o", "remount,ro", str(ro)], capture_output=True, text=True)
    if done.returncode != 0:
        pytest.skip(f"cannot remount read-only ({done.stderr.strip()})")
    return [*argv, "--dmap", str(dmap), "--overwrite"]  # a failed write leaves the old file whole


def case_dmap_permission_denied(tmp, mp, stack):
    # As root, chmod does not stop writes: fake the refusal where the temporary file is created.
    argv = _editing_inputs(tmp)
    dmap = _previous_dmap(tmp)
    import tempfile

    def denied(*args, dir=None, **kwargs):
        raise PermissionError(errno.EACCES, "Permission denied", str(dir))

    mp.setattr(tempfile, "mkstemp", denied)
    return [*argv, "--dmap", str(dmap), "--overwrite"]  # a failed write leaves the old file whole


def case_interrupted(tmp, mp, stack):
    argv = _editing_inputs(tmp)
    import losslab.cli.metrics as cli_metrics

    def interrupt(*args, **kwargs):
        raise KeyboardInterrupt

    mp.setattr(cli_metrics, "compute_metrics", interrupt)
    return argv


def case_sample_data_into_a_used_folder(tmp, mp, stack):
    (tmp / "out").mkdir()
    (tmp / "out" / "image.nii.gz").write_bytes(b"the user's own image")
    (tmp / "out" / "notes.txt").write_text("the user's notes")
    return ["sample-data", str(tmp / "out")]


def case_sample_data_onto_a_file(tmp, mp, stack):
    (tmp / "out").write_text("a file, not a folder")
    return ["sample-data", str(tmp / "out")]


def case_demo_into_a_used_folder(tmp, mp, stack):
    (tmp / "out").mkdir()
    (tmp / "out" / "report.md").write_text("my own report")
    (tmp / "out" / "data.csv").write_text("1,2,3\n")
    return ["demo", "-o", str(tmp / "out")]


def case_demo_onto_a_file(tmp, mp, stack):
    (tmp / "out").write_text("a file, not a folder")
    return ["demo", "-o", str(tmp / "out")]


def case_empty_cas_warnings_in_json(tmp, mp, stack):
    return [*_editing_inputs(tmp, cas=np.zeros((24, 24, 24), np.uint8)), "--json"]


def _check_empty_cas(out: str) -> None:
    report = json.loads(out)
    assert any("CAS contour is empty" in w for w in report["warnings"]), report["warnings"]
    for region in ("overall", "near", "far", "no_editing", "cas_to_prediction"):
        assert report["editing"][region]["p95"] is None, (region, report["editing"][region])
        assert report["editing"][region]["mean"] is None, (region, report["editing"][region])


# ---------------------------------------------------------------------------------------------- issue 22
def _no_work(mp, module: str, name: str) -> None:
    """Make ``module.name`` fail the case if called: the refusal must come before that work."""
    import importlib

    def called(*args, **kwargs):
        raise AssertionError(f"{module}.{name} ran before the refusal")

    mp.setattr(importlib.import_module(module), name, called)


def case_reference_is_a_folder(tmp, mp, stack):
    _, cmp = _pair(tmp)
    (tmp / "ref_folder").mkdir()
    return ["metrics", str(tmp / "ref_folder"), str(cmp)]


def case_zero_voxel_size_in_the_header(tmp, mp, stack):
    import struct

    _, cmp = _pair(tmp)
    ref = _sitk_write(tmp / "ref.nii", _mask(), compress=False)
    data = bytearray(ref.read_bytes())
    data[84:88] = struct.pack("<f", 0.0)  # pixdim[2]: ITK reads a zero voxel size as 1 mm
    ref.write_bytes(bytes(data))
    return ["metrics", str(ref), str(cmp)]


def case_dmap_exists_without_overwrite(tmp, mp, stack):
    argv = _editing_inputs(tmp)
    return [*argv, "--dmap", str(_previous_dmap(tmp))]


def case_sample_data_negative_seed(tmp, mp, stack):
    return ["sample-data", str(tmp / "out"), "--seed", "-1"]


def case_demo_negative_seed(tmp, mp, stack):
    _no_work(mp, "losslab.ice.demo", "run_demo")
    return ["demo", "-o", str(tmp / "out"), "--seed", "-1"]


def case_demo_on_cuda_without_a_gpu(tmp, mp, stack):
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    _no_work(mp, "losslab.ice.demo", "run_demo")
    return ["demo", "-o", str(tmp / "out"), "--device", "cuda"]


def _read_only(tmp: Path, stack) -> Path:
    ro = stack.enter_context(_tmpfs(tmp / "ro", "1m"))
    done = subprocess.run(["mount", "-o", "remount,ro", str(ro)], capture_output=True, text=True)
    if done.returncode != 0:
        pytest.skip(f"cannot remount read-only ({done.stderr.strip()})")
    return ro


def case_demo_into_a_read_only_folder(tmp, mp, stack):
    _no_work(mp, "losslab.ice.demo", "run_demo")
    return ["demo", "-o", str(_read_only(tmp, stack) / "demo")]


def case_infer_into_a_read_only_folder(tmp, mp, stack):
    _no_work(mp, "losslab.engine.inference", "load_predictor")
    image = sitk.GetImageFromArray(np.zeros((16, 16, 16), np.float32))
    image.SetSpacing((2.2048, 2.2048, 2.2048))
    sitk.WriteImage(image, str(tmp / "x.nii.gz"))
    return [
        "infer",
        "ice-segmentation-64",
        str(tmp / "x.nii.gz"),
        "-o",
        str(_read_only(tmp, stack) / "seg.nii.gz"),
    ]


def case_demo_over_the_users_report(tmp, mp, stack):
    _no_work(mp, "losslab.ice.demo", "run_demo")
    (tmp / "out").mkdir()
    (tmp / "out" / "report.md").write_text("my own report")
    return ["demo", "-o", str(tmp / "out")]


def case_models_root_that_does_not_exist(tmp, mp, stack):
    return ["models", "--root", str(tmp / "nonexistent")]


#: the issue-22 cases of this catalogue and their class on the issue
ISSUE22 = {
    "a folder where a file goes": "message",
    "zero voxel size in a NIfTI header": "wrong",
    "--dmap exists, no --overwrite": "loss",
    "sample-data --seed -1": "message",
    "demo --seed -1": "message",
    "demo on CUDA without a GPU": "message",
    "demo into a read-only folder (real)": "message",
    "infer into a read-only folder (real)": "message",
    "models --root that does not exist": "message",
    "demo over the user's report.md": "loss",
}


CASES = {
    "a folder where a file goes": (case_reference_is_a_folder, 2, ["ref_folder", "is a folder"]),
    "zero voxel size in a NIfTI header": (case_zero_voxel_size_in_the_header, 2, ["ref.nii", "voxel size"]),
    "--dmap exists, no --overwrite": (case_dmap_exists_without_overwrite, 2, ["d.nii.gz", "--overwrite"]),
    "sample-data --seed -1": (case_sample_data_negative_seed, 2, ["--seed", "-1"]),
    "demo --seed -1": (case_demo_negative_seed, 2, ["--seed", "-1"]),
    "demo on CUDA without a GPU": (case_demo_on_cuda_without_a_gpu, 2, ["--device", "CUDA is not available"]),
    "demo into a read-only folder (real)": (case_demo_into_a_read_only_folder, 2, ["ro", "read-only"]),
    "infer into a read-only folder (real)": (case_infer_into_a_read_only_folder, 2, ["ro", "read-only"]),
    "models --root that does not exist": (
        case_models_root_that_does_not_exist,
        2,
        ["nonexistent", "no such folder"],
    ),
    "demo over the user's report.md": (case_demo_over_the_users_report, 2, ["report.md", "--overwrite"]),
    "missing reference": (case_missing_reference, 2, ["reference", "nope.nii.gz"]),
    "missing --cas file": (case_missing_cas, 2, ["cas", "cas.nii.gz"]),
    "unsupported file type": (case_unsupported_type, 2, ["cmp.txt", "unsupported"]),
    "not an image": (case_not_an_image, 2, ["bad.nrrd"]),
    "truncated .nii.gz": (case_truncated_nii_gz, 2, ["cmp.nii.gz"]),
    "gzip CRC error": (case_corrupted_gzip_crc, 2, ["cmp.nii.gz"]),
    "corrupted gzip data": (case_corrupted_gzip_data, 2, ["cmp.nii.gz"]),
    "truncated .nii": (case_truncated_nii, 2, ["cmp.nii"]),
    "truncated .seg.nrrd": (case_truncated_seg_nrrd, 2, ["cmp.seg.nrrd"]),
    "NaN in a NIfTI mask": (case_nan_in_nifti_mask, 2, ["cmp.nii.gz", "NaN"]),
    "NaN in a NRRD mask": (case_nan_in_nrrd_mask, 2, ["cmp.nrrd", "NaN"]),
    "inf in a NRRD --initial": (case_inf_in_nrrd_initial, 2, ["init.nrrd", "inf"]),
    "float intensity image as mask": (case_intensity_image_as_mask, 2, ["image.nii.gz", "integer"]),
    "int16 intensity image as mask": (case_integer_intensity_image_as_mask, 2, ["ct.nii.gz", "--labels"]),
    "fractional --initial mask": (case_fractional_initial_mask, 2, ["init.nrrd", "integer"]),
    "4D image as mask": (case_four_d_image, 2, ["cmp4d.nii.gz", "3D"]),
    "different grids": (case_different_grids, 2, ["origin"]),
    "both masks empty": (case_both_empty, 2, ["empty"]),
    "invalid option value": (case_invalid_option_value, 2, ["--labels", "one"]),
    "unknown option": (case_unknown_option, 2, ["--frobnicate"]),
    "negative sigma": (case_negative_sigma, 2, ["sigma"]),
    "--dmap without editing inputs": (case_dmap_without_editing_inputs, 2, ["--dmap"]),
    "--dmap is a folder": (case_dmap_is_a_folder, 2, ["out.nii.gz", "folder"]),
    "--dmap over an input": (case_dmap_over_an_input, 2, ["ref.nii.gz", "input"]),
    "--dmap unsupported suffix": (case_dmap_unsupported_suffix, 2, ["d.png"]),
    "disk full, unreported by ITK (faked)": (case_dmap_disk_full_unreported, 2, ["d.nii.gz"]),
    "disk full, ENOSPC (faked)": (case_dmap_disk_full_raised, 2, ["d.nii.gz", "No space left"]),
    "NRRD write error": (case_dmap_nrrd_write_error, 2, ["d.nrrd"]),
    "disk full (real tmpfs)": (case_dmap_real_full_disk, 2, ["d.nii.gz"]),
    "read-only output folder (real)": (case_dmap_read_only_folder, 2, ["ro", "read-only"]),
    "permission denied (faked)": (case_dmap_permission_denied, 2, ["Permission denied"]),
    "Ctrl-C": (case_interrupted, 130, ["interrupted"]),
    "sample-data into a used folder": (case_sample_data_into_a_used_folder, 2, ["notes.txt", "--overwrite"]),
    "sample-data onto a file": (case_sample_data_onto_a_file, 2, ["out"]),
    "demo into a used folder": (case_demo_into_a_used_folder, 2, ["data.csv", "--overwrite"]),
    "demo onto a file": (case_demo_onto_a_file, 2, ["out"]),
    "empty CAS: warnings and nulls in the JSON": (case_empty_cas_warnings_in_json, 0, []),
}


def _hashes(root: Path) -> dict[str, str]:
    out = {}
    for path in sorted(root.rglob("*")):
        if path.is_file():
            out[str(path.relative_to(root))] = hashlib.sha256(path.read_bytes()).hexdigest()
    return out


@pytest.mark.parametrize("name", list(CASES))
def test_catalogue(name, tmp_path, monkeypatch, capsys):
    setup, expected_rc, words = CASES[name]
    with contextlib.ExitStack() as stack:
        argv = setup(tmp_path, monkeypatch, stack)
        before = _hashes(tmp_path)
        capsys.readouterr()
        try:
            rc = main(argv)
        except SystemExit as exc:  # argparse
            rc = exc.code
        except KeyboardInterrupt:  # must not escape main(): it would stop this test run
            rc = "KeyboardInterrupt escaped main()"
        out, err = capsys.readouterr()
        after = _hashes(tmp_path)
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert rc == expected_rc, (rc, err)
    assert "Traceback" not in err
    if expected_rc == 0:
        _check_empty_cas(out)
    else:
        assert len(lines) == 1, err
        line = lines[0]
        assert line.startswith(f"losslab {argv[0]}: "), line
        for word in words:
            assert word in line, (word, line)
    for rel, digest in before.items():
        assert after.get(rel) == digest, f"{rel} was changed or lost"
    new = set(after) - set(before)
    if expected_rc != 0:
        assert not new, f"files left behind: {sorted(new)}"


@pytest.mark.parametrize(
    ("signame", "code", "line"),
    [
        ("SIGINT", 130, "losslab metrics: interrupted"),
        ("SIGTERM", 143, "losslab metrics: terminated (SIGTERM)"),
    ],
)
def test_catalogue_subprocess_interrupt(tmp_path, signame, code, line):
    """A real SIGINT (Ctrl-C) or SIGTERM to a ``losslab metrics`` process: one line, exit 130 / 143, no
    traceback (SIGTERM exited 143 without a word before issue 22). The metrics are replaced by a sleep
    inside the child so that the signal surely arrives while the command runs."""
    import signal

    argv = _editing_inputs(tmp_path)
    script = (
        "import sys, time\n"
        "import losslab.cli.metrics as m\n"
        "def slow(*a, **k):\n"
        "    print('computing', flush=True)\n"
        "    time.sleep(60)\n"
        "m.compute_metrics = slow\n"
        "from losslab.cli import main\n"
        "sys.exit(main(sys.argv[1:]))\n"
    )
    env = {"PYTHONPATH": str(Path(__file__).resolve().parents[2] / "LossLab"), "PATH": "/usr/bin:/bin"}
    proc = subprocess.Popen(
        [sys.executable, "-c", script, *argv],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout.readline().strip() == "computing"
        proc.send_signal(getattr(signal, signame))
        out, err = proc.communicate(timeout=60)
    finally:
        proc.kill()
    assert proc.returncode == code, err
    assert "Traceback" not in err
    assert [ln for ln in err.splitlines() if ln.strip()] == [line]
