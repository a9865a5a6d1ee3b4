import os

import numpy as np
import pytest

from losslab.io import Geometry, check_same_grid, read_image, read_label_map, write_image

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
