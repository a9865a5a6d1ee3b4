import contextlib
import gzip
import os
import stat
import subprocess
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

from losslab.io import (
    MAX_LABELS,
    Geometry,
    Image,
    WriteError,
    check_file,
    check_label_values,
    check_same_grid,
    read_image,
    read_label_map,
    save_figure,
    write_image,
    write_text,
)

GEOMETRY = Geometry(
    spacing=(0.5, 0.7, 1.5),
    origin=(10.0, -3.0, 4.25),
    direction=tuple(np.array([[0, 1, 0], [1, 0, 0], [0, 0, -1.0]]).ravel()),
)


def labelmap():
    a = np.zeros((10, 12, 14), np.uint8)
    a[2:5, 3:7, 4:9] = 1
    a[6:8, 1:3, 1:3] = 2
    return a


@pytest.mark.parametrize("suffix", [".nii.gz", ".nii", ".nrrd", ".seg.nrrd"])
def test_round_trip_keeps_values_and_geometry(tmp_path, suffix):
    a = labelmap()
    path = write_image(tmp_path / f"x{suffix}", a, GEOMETRY, labels={1: "LA", 2: "veins"})
    img = read_image(path)
    np.testing.assert_array_equal(img.array, a)
    assert img.geometry.differences(GEOMETRY) == []
    if suffix == ".seg.nrrd":
        assert img.labels == {1: "LA", 2: "veins"}
    assert os.listdir(tmp_path) == [path.name]  # no temporary files left behind


def test_float_image_round_trip(tmp_path):
    x = np.random.default_rng(0).normal(size=(4, 5, 6)).astype(np.float32)
    img = read_image(write_image(tmp_path / "x.nrrd", x, GEOMETRY))
    np.testing.assert_array_equal(img.array, x)
    assert img.geometry.array_spacing == (1.5, 0.7, 0.5)


def test_failed_write_keeps_previous_file(tmp_path):
    path = write_image(tmp_path / "x.seg.nrrd", labelmap(), GEOMETRY)
    before = path.read_bytes()
    with pytest.raises(ValueError, match="integer"):
        write_image(path, np.full((10, 12, 14), 0.5), GEOMETRY)
    assert path.read_bytes() == before
    assert os.listdir(tmp_path) == [path.name]


def test_errors_name_the_problem(tmp_path):
    with pytest.raises(FileNotFoundError, match="no such file"):
        read_image(tmp_path / "missing.nii.gz")
    (tmp_path / "x.txt").write_text("hello")
    with pytest.raises(ValueError, match="unsupported file type"):
        read_image(tmp_path / "x.txt")
    (tmp_path / "bad.nrrd").write_text("not an nrrd")
    with pytest.raises(ValueError, match="bad.nrrd"):
        read_image(tmp_path / "bad.nrrd")


def test_check_same_grid_names_the_field(tmp_path):
    a = read_image(write_image(tmp_path / "a.nrrd", labelmap(), GEOMETRY))
    other = Geometry(spacing=(0.5, 0.7, 2.0), origin=GEOMETRY.origin, direction=GEOMETRY.direction)
    b = read_image(write_image(tmp_path / "b.nrrd", labelmap(), other))
    with pytest.raises(ValueError, match=r"spacing: \(0.5, 0.7, 1.5\) vs \(0.5, 0.7, 2\)"):
        check_same_grid(a, b, ("reference", "compared"))
    check_same_grid(a, a)


def test_vector_image_round_trip(tmp_path):
    probs = np.random.default_rng(1).random((3, 4, 5, 6)).astype(np.float32)  # (components, k, j, i)
    path = write_image(tmp_path / "p.nrrd", probs, GEOMETRY, vector=True)
    with pytest.raises(ValueError, match="components"):
        read_image(path)
    img = read_image(path, allow_vector=True)
    np.testing.assert_array_equal(np.moveaxis(img.array, -1, 0), probs)
    assert img.geometry.differences(GEOMETRY) == []
    with pytest.raises(ValueError, match="vector image cannot"):
        write_image(tmp_path / "p.seg.nrrd", probs.astype(np.uint8), GEOMETRY, vector=True)


def test_read_label_map_names_and_fractions(tmp_path):
    path = write_image(tmp_path / "s.seg.nrrd", labelmap(), GEOMETRY, labels={1: "veins", 2: "LA"})
    img = read_label_map(path, ["background", "LA", "veins"])
    assert img.array.dtype == np.int64
    assert (img.array == 2).sum() == (labelmap() == 1).sum() and img.labels == {2: "veins", 1: "LA"}
    write_image(tmp_path / "f.nrrd", np.full((2, 2, 2), 0.5, np.float32))
    with pytest.raises(ValueError, match="non-integer"):
        read_label_map(tmp_path / "f.nrrd")


# ---------------------------------------------------------------------------------------------------------
# Verified writes: what ITK does not report (a truncated gzip stream on a full disk) never replaces a file.


def _truncating(real, fraction=0.5):
    def write(image, path, *args, **kwargs):
        real(image, path, *args, **kwargs)
        data = Path(path).read_bytes()
        Path(path).write_bytes(data[: int(len(data) * fraction)])

    return write


@pytest.mark.parametrize("suffix", [".nii.gz", ".nii", ".nrrd"])
@pytest.mark.parametrize("fraction", [0.5, 0.98])
def test_unreported_truncated_write_keeps_previous_file(tmp_path, monkeypatch, suffix, fraction):
    path = write_image(tmp_path / f"x{suffix}", labelmap(), GEOMETRY)
    before = path.read_bytes()
    monkeypatch.setattr(sitk, "WriteImage", _truncating(sitk.WriteImage, fraction))
    with pytest.raises(WriteError, match=f"x{suffix}.*does not read back as written") as info:
        write_image(path, np.zeros((10, 12, 14), np.float32), GEOMETRY)
    assert info.value.filename == str(path)
    assert path.read_bytes() == before
    assert os.listdir(tmp_path) == [path.name]


def test_write_that_changes_values_or_geometry_is_refused(tmp_path, monkeypatch):
    path = write_image(tmp_path / "x.nrrd", labelmap(), GEOMETRY)
    before = path.read_bytes()
    real = sitk.WriteImage

    def shifted(image, out, *args, **kwargs):
        image.SetOrigin((0.0, 0.0, 0.0))
        real(image, out, *args, **kwargs)

    monkeypatch.setattr(sitk, "WriteImage", shifted)
    with pytest.raises(WriteError, match="origin"):
        write_image(path, labelmap(), GEOMETRY)
    assert path.read_bytes() == before


def test_truncated_seg_nrrd_write_keeps_previous_file(tmp_path, monkeypatch):
    import slicerio

    path = write_image(tmp_path / "x.seg.nrrd", labelmap(), GEOMETRY, labels={1: "LA"})
    before = path.read_bytes()
    real = slicerio.write_segmentation

    def truncated(out, seg, *args, **kwargs):
        real(out, seg, *args, **kwargs)
        Path(out).write_bytes(Path(out).read_bytes()[:-100])

    monkeypatch.setattr(slicerio, "write_segmentation", truncated)
    with pytest.raises(WriteError, match="x.seg.nrrd"):
        write_image(path, labelmap()[::-1].copy(), GEOMETRY)
    assert path.read_bytes() == before


def test_itk_write_error_is_one_line_write_error(tmp_path, monkeypatch):
    path = write_image(tmp_path / "x.nrrd", labelmap(), GEOMETRY)
    before = path.read_bytes()

    def fails(image, out, *args, **kwargs):
        raise RuntimeError(f"ITK ERROR: NrrdImageIO: Write: Error writing {out}:\n[nrrd] nrrdSave: trouble\n")

    monkeypatch.setattr(sitk, "WriteImage", fails)
    with pytest.raises(WriteError, match=r"cannot write the image \(\[nrrd\] nrrdSave: trouble\)") as info:
        write_image(path, labelmap(), GEOMETRY)
    assert info.value.filename == str(path) and "\n" not in str(info.value)
    assert path.read_bytes() == before


def test_nan_in_float_images_survives_the_verification(tmp_path):
    d = np.full((4, 5, 6), np.nan, np.float32)
    d[1, 2, 3] = 2.5
    d[2, 2, 2] = np.inf
    for suffix in (".nrrd", ".nii.gz", ".nii"):
        back = read_image(write_image(tmp_path / f"d{suffix}", d, GEOMETRY)).array
        np.testing.assert_array_equal(back, d)  # NaN == NaN here; ITK alone reads NaN / inf in NIfTI as 0


@contextlib.contextmanager
def _tmpfs(where: Path, size: str):
    where.mkdir()
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(where)], capture_output=True
    )
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {done.stderr.decode().strip() or done.returncode}")
    try:
        yield where
    finally:
        subprocess.run(["umount", "-l", str(where)], check=False)


def test_real_full_disk_keeps_previous_file(tmp_path):
    with _tmpfs(tmp_path / "full", "2m") as full:
        rng = np.random.default_rng(0)
        path = write_image(full / "d.nii.gz", rng.random((20, 20, 20)).astype(np.float32), GEOMETRY)
        text = write_text(full / "notes.txt", "old notes\n")
        before, before_text = path.read_bytes(), text.read_bytes()
        subprocess.run(["dd", "if=/dev/zero", f"of={full / 'fill'}", "bs=4k"], capture_output=True)
        with pytest.raises(OSError) as info:
            write_image(path, rng.random((40, 40, 40)).astype(np.float32), GEOMETRY)
        assert str(path) in str(info.value)
        with pytest.raises(OSError, match="notes.txt"):
            write_text(text, "new notes " * 1000)
        assert path.read_bytes() == before and text.read_bytes() == before_text
        assert sorted(os.listdir(full)) == ["d.nii.gz", "fill", "notes.txt"]


# ---------------------------------------------------------------------------------------------------------
# Modes: a new file gets the umask's default, an overwritten file keeps its mode.


def _writers(tmp_path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig = plt.figure(figsize=(1, 1))
    return {
        "image": lambda p: write_image(p, labelmap(), GEOMETRY),
        "seg": lambda p: write_image(p, labelmap(), GEOMETRY),
        "text": lambda p: write_text(p, "hello\n"),
        "figure": lambda p: save_figure(fig, p),
    }, {"image": "x.nii.gz", "seg": "x.seg.nrrd", "text": "x.txt", "figure": "x.png"}


@pytest.mark.parametrize("kind", ["image", "seg", "text", "figure"])
def test_modes_follow_umask_and_previous_file(tmp_path, kind):
    writers, names = _writers(tmp_path)
    write, name = writers[kind], names[kind]
    old = os.umask(0o027)
    try:
        new = write(tmp_path / f"new-{name}")
        assert stat.S_IMODE(new.stat().st_mode) == 0o640
        kept = tmp_path / f"kept-{name}"
        kept.write_bytes(b"previous")
        os.chmod(kept, 0o664)
        write(kept)
        assert stat.S_IMODE(kept.stat().st_mode) == 0o664  # not 0640 (the umask), not 0600 (mkstemp)
    finally:
        os.umask(old)
    os.umask(0o002)
    try:
        assert stat.S_IMODE(write(tmp_path / f"group-{name}").stat().st_mode) == 0o664
    finally:
        os.umask(old)


# ---------------------------------------------------------------------------------------------------------
# Damaged files are refused, naming the file (ITK reads them silently).


def _big_mask():
    rng = np.random.default_rng(3)
    return (rng.random((30, 30, 30)) < 0.3).astype(np.uint8)


def test_truncated_nifti_is_refused(tmp_path):
    a = _big_mask()
    for suffix in (".nii", ".nii.gz"):
        path = write_image(tmp_path / f"a{suffix}", a, GEOMETRY)
        data = path.read_bytes()
        path.write_bytes(data[: int(len(data) * 0.8)])
        with pytest.raises(ValueError, match=f"a{suffix}.*(truncated|damaged)"):
            read_image(path)
        with pytest.raises(ValueError, match=f"a{suffix}"):
            check_file(path)


def test_gzip_stream_damage_is_refused(tmp_path):
    path = write_image(tmp_path / "a.nii.gz", _big_mask(), GEOMETRY)
    good = path.read_bytes()
    gzip.decompress(good)  # whole
    bad_crc = bytearray(good)
    bad_crc[-8] ^= 0xFF
    path.write_bytes(bytes(bad_crc))
    with pytest.raises(ValueError, match="a.nii.gz.*gzip stream"):
        read_image(path)
    cut = good[: len(good) - 20]  # the deflate stream does not end
    path.write_bytes(cut)
    with pytest.raises(ValueError, match="a.nii.gz.*gzip stream is truncated"):
        read_image(path)


@pytest.mark.parametrize("compress", [False, True])
def test_truncated_nrrd_is_refused(tmp_path, compress):
    path = write_image(tmp_path / "a.nrrd", _big_mask(), GEOMETRY, compress=compress)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) - 100])
    with pytest.raises(ValueError, match="a.nrrd.*(truncated|gzip)"):
        read_image(path)


def test_nifti_nan_is_seen_and_refused_in_label_maps(tmp_path):
    a = labelmap().astype(np.float32)
    a[1, 1, 1] = np.nan
    a[2, 2, 2] = -np.inf
    path = tmp_path / "nan.nii.gz"
    sitk.WriteImage(sitk.GetImageFromArray(a), str(path), True)  # written by ITK itself
    assert sitk.GetArrayFromImage(sitk.ReadImage(str(path)))[1, 1, 1] == 0  # what ITK reads
    back = read_image(path).array
    assert np.isnan(back[1, 1, 1]) and back[2, 2, 2] == -np.inf
    np.testing.assert_array_equal(np.nan_to_num(back, nan=0, neginf=0), np.nan_to_num(a, nan=0, neginf=0))
    with pytest.raises(ValueError, match=r"nan.nii.gz.*1 NaN, 1 inf.*\(1, 1, 1\)"):
        read_label_map(path)


def test_check_label_values_limits():
    geometry = Geometry.identity(3)
    ok = Image(array=labelmap(), geometry=geometry, path=Path("lab.nrrd"))
    check_label_values(ok)
    many = Image(
        array=np.arange(2000, dtype=np.int16).reshape(10, 10, 20), geometry=geometry, path=Path("ct.nii")
    )
    with pytest.raises(
        ValueError, match=f"ct.nii: the reference holds 1999 distinct labels \\(more than {MAX_LABELS}\\)"
    ):
        check_label_values(many, "reference")
    check_label_values(many, "reference", max_labels=None)
    half = Image(array=np.full((2, 2, 2), 0.5), geometry=geometry, path=Path("p.nrrd"))
    with pytest.raises(ValueError, match="p.nrrd: the mask holds non-integer values .e.g. 0.5"):
        check_label_values(half, "mask", max_labels=None)
