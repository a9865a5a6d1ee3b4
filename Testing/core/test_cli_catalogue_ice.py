"""Catalogue of ``losslab ice simulate / evaluate / train`` under bad input, faults and interruptions (issue 22):
each case was a data loss, a silent wrong result, a traceback or a vague message on the issue, and must now be
refused in one line with nothing changed (see ``_catalogue.py``). Cases that must succeed (a small dataset gets
a test case) and the real concurrent runs are tests of their own below.

Workspace of a case: ``data/`` (a 4-case dataset, 24^3 x 5.88 mm), and on demand copies of the registered ICE
models (``models/seg``, ``models/edit``: model.pt with its card) and of a finished 1-epoch training run.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk
from _catalogue import check_refused, hashes, run

from losslab import models as registry
from losslab.cli import main

SIM = ["--size", "24", "--spacing", "5.88"]


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    root = tmp_path_factory.mktemp("ice_catalogue")
    assert main(["ice", "simulate", str(root / "data"), "--cases", "4", *SIM]) == 0
    return root


def _config(ws: Path, **changes) -> dict:
    cfg = {
        "data": {"manifest": str(ws / "data" / "dataset.json")},
        "initial": {"source": "perturb"},
        "sigma_mm": 29.4,
        "batch_size": 2,
        "epochs": 1,
        "steps_per_epoch": 2,
        "threads": 1,
        "output_dir": str(ws / "run"),
    }
    cfg.update(changes)
    return cfg


def _workspace(tmp_path: Path, store: Path, run_folder: bool = False) -> Path:
    shutil.copytree(store / "data", tmp_path / "data")
    (tmp_path / "cfg.json").write_text(json.dumps(_config(tmp_path)))
    if run_folder:  # a finished 1-epoch run of this workspace's config (a few seconds)
        assert main(["ice", "train", str(tmp_path / "cfg.json")]) == 0
    return tmp_path


def _models(ws: Path) -> tuple[Path, Path]:
    """Copies of the registered segmentation and editing models, each beside its card."""
    out = []
    for name, folder in (("ice-segmentation-64", "seg"), ("ice-editing-64", "edit")):
        card = registry.get_card(name)
        shutil.copytree(card.folder, ws / "models" / folder)
        out.append(ws / "models" / folder / "model.pt")
    return out[0], out[1]


def _evaluate(ws: Path, *extra) -> list:
    seg, edit = _models(ws)
    return [
        "ice",
        "evaluate",
        ws / "data",
        "--segmentation-model",
        seg,
        "--editing-model",
        f"editing={edit}",
        "--edits",
        "1",
        "-o",
        ws / "out",
        *extra,
    ]


def _edit_image(path: Path, change) -> None:
    image = sitk.ReadImage(str(path))
    array = sitk.GetArrayFromImage(image)
    new = sitk.GetImageFromArray(change(array))
    new.CopyInformation(image)
    sitk.WriteImage(new, str(path))


def _set_voxel(value):
    def change(array):
        array = array.astype(np.float32 if isinstance(value, float) else array.dtype)
        array[3, 4, 5] = value
        return array

    return change


# ------------------------------------------------------------------------------------------- simulate
def simulate_overwrite_reads_its_anatomy_from_outdir(ws):
    mask = ws / "data" / "cases" / "ice001" / "label.nii.gz"
    argv = ["ice", "simulate", ws / "data", "--overwrite", "--cases", "1", *SIM, "--anatomy", mask]
    return argv, ["--anatomy", "label.nii.gz", "--overwrite replaces"]


def simulate_phantom_larger_than_the_grid(ws):
    # the procedural phantom (the atrium prior, the default, refuses a grid too small on its own)
    argv = [
        "ice",
        "simulate",
        ws / "new",
        "--cases",
        "1",
        "--size",
        "32",
        "--spacing",
        "0.5",
        "--prior",
        "phantom",
    ]
    return argv, ["phantom", "does not fit", "--spacing"]


def simulate_size_2000(ws):
    return ["ice", "simulate", ws / "new", "--size", "2000"], ["--size 2000", "GiB"]


def simulate_size_100000(ws):
    return ["ice", "simulate", ws / "new", "--size", "100000"], ["--size 100000", "GiB"]


def simulate_negative_seed(ws):
    return ["ice", "simulate", ws / "new", "--seed", "-1"], ["--seed", "-1"]


def simulate_while_another_run_writes(ws):
    from losslab.ice.dataset import dataset_lock

    lock = dataset_lock(ws / "new")
    lock.__enter__()  # held by "another run" until the case ends
    _held.append(lock)
    return ["ice", "simulate", ws / "new", "--cases", "1", *SIM], ["another `losslab ice simulate`"]


_held: list = []


def simulate_interrupted_overwrite_keeps_the_old_dataset(ws, monkeypatch):
    import losslab.ice as ice_pkg

    real = ice_pkg.simulate_case
    calls = []

    def interrupted(*args, **kwargs):
        calls.append(1)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return real(*args, **kwargs)

    monkeypatch.setattr(ice_pkg, "simulate_case", interrupted)
    return ["ice", "simulate", ws / "data", "--overwrite", "--cases", "3", "--seed", "7", *SIM], [
        "interrupted"
    ]


# ------------------------------------------------------------------------------------------- evaluate
def evaluate_json_over_the_manifest(ws):
    return _evaluate(ws, "--json", ws / "data" / "dataset.json"), ["dataset.json", "is the input"]


def evaluate_json_over_the_editing_model(ws):
    argv = _evaluate(ws)
    return [*argv, "--json", ws / "models" / "edit" / "model.pt"], ["edit/model.pt", "is the input"]


def evaluate_json_over_the_segmentation_model(ws):
    argv = _evaluate(ws)
    return [*argv, "--json", ws / "models" / "seg" / "model.pt"], ["seg/model.pt", "is the input"]


def evaluate_json_over_a_case_image(ws):
    image = ws / "data" / "cases" / "ice002" / "image.nii.gz"
    return _evaluate(ws, "--json", image), ["ice002/image.nii.gz", "is the input"]


def evaluate_json_through_a_symlink_to_the_manifest(ws):
    link = ws / "link.json"
    link.symlink_to(ws / "data" / "dataset.json")
    return _evaluate(ws, "--json", link), ["link.json", "is the input"]


def evaluate_into_a_folder_with_an_earlier_evaluation(ws):
    (ws / "out").mkdir()
    for name in ("table1.md", "evaluation.json", "fig3.png"):
        (ws / "out" / name).write_text(f"my earlier {name}")
    return _evaluate(ws), ["table1.md", "exists already", "--overwrite"]


def evaluate_json_and_table_on_one_path(ws):
    return _evaluate(ws, "--json", ws / "out" / "table1.md"), ["same file", "table1.md"]


def evaluate_an_empty_test_split(ws):
    manifest = ws / "data" / "dataset.json"
    raw = json.loads(manifest.read_text())
    raw["splits"]["train"] += raw["splits"]["test"]
    raw["splits"]["test"] = []
    manifest.write_text(json.dumps(raw))
    return _evaluate(ws), ["no case in split 'test'", "--split all"]


def evaluate_nan_in_a_case_image(ws):
    _edit_image(ws / "data" / "cases" / "ice003" / "image.nii.gz", _set_voxel(float("nan")))
    return _evaluate(ws), ["ice003/image.nii.gz", "NaN"]


def evaluate_a_missing_checkpoint(ws):
    argv = _evaluate(ws)
    argv[argv.index("--segmentation-model") + 1] = ws / "nosuch.pt"
    return argv, ["nosuch.pt", "no such file"]


def evaluate_a_corrupted_model_beside_its_card(ws):
    argv = _evaluate(ws)
    model = ws / "models" / "edit" / "model.pt"
    data = bytearray(model.read_bytes())
    data[-100] ^= 0xFF
    model.write_bytes(bytes(data))
    return argv, ["sha256", "model.pt"]


def evaluate_a_binary_manifest(ws):
    manifest = ws / "data" / "dataset.json"
    import gzip

    manifest.write_bytes(gzip.compress(manifest.read_bytes()))
    return _evaluate(ws), ["dataset.json", "not a UTF-8 text file"]


def evaluate_a_broken_frames_json(ws):
    frames = ws / "data" / "cases" / "ice003" / "frames.json"
    raw = json.loads(frames.read_text())
    del raw["frames"][0]["pose"]
    frames.write_text(json.dumps(raw))
    return _evaluate(ws), ["ice003/frames.json", "pose"]


def evaluate_on_cuda_without_a_gpu(ws):
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    return _evaluate(ws, "--device", "cuda"), ["--device", "CUDA is not available"]


# ------------------------------------------------------------------------------------------- train
def train_offset_nan(ws):
    return ["ice", "train", ws / "cfg.json", "perturbation.offset_mm=nan"], ["perturbation.offset_mm", "nan"]


def train_offset_abc(ws):
    return ["ice", "train", ws / "cfg.json", "perturbation.offset_mm=abc"], ["perturbation.offset_mm", "abc"]


def train_label_5_in_a_two_class_set(ws):
    _edit_image(ws / "data" / "cases" / "ice000" / "label.nii.gz", _set_voxel(5))
    return ["ice", "train", ws / "cfg.json"], ["ice000/label.nii.gz", "[5]"]


def train_inf_in_a_training_image(ws):
    _edit_image(ws / "data" / "cases" / "ice001" / "image.nii.gz", _set_voxel(float("inf")))
    return ["ice", "train", ws / "cfg.json", "patch_size=[8,8,8]"], ["ice001/image.nii.gz", "NaN or infinite"]


def train_resume_with_another_batch_size(ws):
    return ["ice", "train", ws / "cfg.json", "--resume", "epochs=2", "batch_size=1"], [
        "cannot resume",
        "batch_size",
    ]


def train_resume_with_another_patch_size(ws):
    return ["ice", "train", ws / "cfg.json", "--resume", "epochs=2", "patch_size=[16,16,16]"], [
        "cannot resume",
        "patch_size",
    ]


def train_on_cuda_without_a_gpu(ws):
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    return ["ice", "train", ws / "cfg.json", "device=cuda"], ["--device", "CUDA is not available"]


#: case -> (category on the issue, needs the finished run in the workspace)
CASES = {
    simulate_overwrite_reads_its_anatomy_from_outdir: ("loss", False),
    simulate_phantom_larger_than_the_grid: ("wrong", False),
    simulate_size_2000: ("traceback", False),
    simulate_size_100000: ("traceback", False),
    simulate_negative_seed: ("message", False),
    simulate_while_another_run_writes: ("wrong", False),
    simulate_interrupted_overwrite_keeps_the_old_dataset: ("wrong", False),
    evaluate_json_over_the_manifest: ("loss", False),
    evaluate_json_over_the_editing_model: ("loss", False),
    evaluate_json_over_the_segmentation_model: ("loss", False),
    evaluate_json_over_a_case_image: ("loss", False),
    evaluate_json_through_a_symlink_to_the_manifest: ("loss", False),
    evaluate_into_a_folder_with_an_earlier_evaluation: ("loss", False),
    evaluate_json_and_table_on_one_path: ("loss", False),
    evaluate_an_empty_test_split: ("message", False),
    evaluate_nan_in_a_case_image: ("message", False),
    evaluate_a_missing_checkpoint: ("message", False),
    evaluate_a_corrupted_model_beside_its_card: ("wrong", False),
    evaluate_a_binary_manifest: ("message", False),
    evaluate_a_broken_frames_json: ("message", False),
    evaluate_on_cuda_without_a_gpu: ("message", False),
    train_offset_nan: ("traceback", False),
    train_offset_abc: ("traceback", False),
    train_label_5_in_a_two_class_set: ("wrong", False),
    train_inf_in_a_training_image: ("wrong", False),
    train_resume_with_another_batch_size: ("wrong", True),
    train_resume_with_another_patch_size: ("wrong", True),
    train_on_cuda_without_a_gpu: ("message", False),
}
EXIT_CODES = {simulate_interrupted_overwrite_keeps_the_old_dataset: 130}


@pytest.mark.parametrize("case", list(CASES), ids=[c.__name__ for c in CASES])
def test_ice_case_is_refused_in_one_line_and_loses_nothing(case, store, tmp_path, capsys, monkeypatch):
    ws = _workspace(tmp_path, store, run_folder=CASES[case][1])
    try:
        if "monkeypatch" in case.__code__.co_varnames[: case.__code__.co_argcount]:
            argv, words = case(ws, monkeypatch)
        else:
            argv, words = case(ws)
        check_refused(argv, words, ws, capsys, code=EXIT_CODES.get(case, 2))
    finally:
        while _held:
            _held.pop().__exit__(None, None, None)


def test_every_category_is_known():
    from _catalogue import CATEGORIES

    assert {category for category, _ in CASES.values()} <= set(CATEGORIES)


# ------------------------------------------------------------------------------- what must succeed
def test_two_cases_give_a_test_case(tmp_path, capsys):
    """`ice simulate --cases 2` put both in train and `ice evaluate` then had nothing to evaluate."""
    assert main(["ice", "simulate", str(tmp_path / "two"), "--cases", "2", *SIM]) == 0
    splits = json.loads((tmp_path / "two" / "dataset.json").read_text())["splits"]
    assert splits["train"] == ["ice000"] and splits["test"] == ["ice001"]


def test_overwrite_swaps_the_dataset_in_whole(store, tmp_path, capsys):
    """A completed --overwrite replaces cases/ and dataset.json together and leaves the user's other files."""
    ws = _workspace(tmp_path, store)
    (ws / "data" / "notes.txt").write_text("mine")
    before = hashes(ws / "data" / "cases")
    assert (
        main(["ice", "simulate", str(ws / "data"), "--overwrite", "--cases", "2", "--seed", "9", *SIM]) == 0
    )
    assert (ws / "data" / "notes.txt").read_text() == "mine"
    assert sorted(p.name for p in (ws / "data" / "cases").iterdir()) == ["ice000", "ice001"]
    assert hashes(ws / "data" / "cases") != before
    assert json.loads((ws / "data" / "dataset.json").read_text())["ice"]["seed"] == 9
    assert not [p for p in (ws / "data").iterdir() if p.name.startswith(".")]  # no staging left
    assert not list(ws.glob(".*.lock"))


def _simulate_process(outdir: Path, seed: int, cases: int = 6) -> subprocess.Popen:
    root = Path(__file__).resolve().parents[2]
    env = {**os.environ, "PYTHONPATH": str(root / "LossLab"), "OMP_NUM_THREADS": "1"}
    return subprocess.Popen(
        [
            sys.executable,
            "-m",
            "losslab.cli",
            "ice",
            "simulate",
            str(outdir),
            "--cases",
            str(cases),
            "--seed",
            str(seed),
            *SIM,
        ],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def test_two_concurrent_runs_into_one_folder_do_not_mix(tmp_path):
    """Two real processes into one empty folder: one writes the dataset, the other is refused in one line;
    every case then belongs to the winner's seeds (image and label simulated together)."""
    outdir = tmp_path / "shared"
    first = _simulate_process(outdir, 0, cases=40)
    second = _simulate_process(outdir, 100, cases=40)
    results = [(p.wait(timeout=600), p.communicate()[1]) for p in (first, second)]
    codes = sorted(code for code, _ in results)
    assert codes == [0, 2], results
    refused = next(err for code, err in results if code == 2)
    # while the other writes: the lock; (rarely) after it finished: the folder holds a dataset
    assert "another `losslab ice simulate`" in refused or "already holds files" in refused, refused
    assert len(refused.strip().splitlines()) == 1 and "Traceback" not in refused
    raw = json.loads((outdir / "dataset.json").read_text())
    winner = raw["ice"]["seed"]
    from losslab.ice import Grid, SimulationConfig, make_atrium, simulate_case
    from losslab.ice.dataset import read_case

    grid = Grid.cube(24, 5.88)
    for i, cid in enumerate(["ice000", "ice001"]):
        case = read_case(outdir / "cases" / cid)
        fresh = simulate_case(make_atrium(grid, winner + i), grid, SimulationConfig(), seed=winner + i)
        assert np.array_equal(case.label, fresh.label) and np.allclose(case.image, fresh.image, atol=1e-6)


def test_sigterm_during_simulate_is_one_line_and_leaves_nothing(tmp_path):
    outdir = tmp_path / "new"
    proc = _simulate_process(outdir, 0, cases=200)
    deadline = time.time() + 120
    while time.time() < deadline and not any(p.name.startswith(".simulating-") for p in _entries(outdir)):
        time.sleep(0.1)
    time.sleep(1.0)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 143, err
    lines = [ln for ln in err.splitlines() if ln.strip() and not ln.startswith("simulating")]
    assert lines[-1] == "losslab ice simulate: terminated (SIGTERM)" and "Traceback" not in err
    assert not outdir.exists() or not any(outdir.iterdir())
    assert not list(tmp_path.glob(".*.lock"))


def _entries(folder: Path) -> list[Path]:
    return list(folder.iterdir()) if folder.is_dir() else []


def test_empty_labels_warn_once_per_case(store, tmp_path, capsys):
    ws = _workspace(tmp_path, store)
    for label in (ws / "data" / "cases").glob("*/label.nii.gz"):
        _edit_image(label, lambda a: np.zeros_like(a))
    code, _, err = run(["ice", "train", ws / "cfg.json"], capsys)
    assert code == 0, err
    warned = [ln for ln in err.splitlines() if "the label y is empty" in ln]
    assert warned and all(ln.startswith("losslab ice train: warning: ") for ln in warned)


def test_an_interrupted_run_prints_the_exact_command_to_resume(store, tmp_path, capsys, monkeypatch):
    """The hint dropped the overrides: run literally, it resumed another run (its default output_dir)."""
    import losslab.ice.training as training
    from losslab.engine.trainer import TrainResult

    def stopped(config, overrides, **kwargs):
        return TrainResult(Path(tmp_path / "elsewhere"), None, [{}], 1, stopped=True, epochs_done=1)

    monkeypatch.setattr(training, "train_editing", stopped)
    ws = _workspace(tmp_path, store)
    code, _, err = run(["ice", "train", ws / "cfg.json", "output_dir=my run", "epochs=3"], capsys)
    assert code == 1
    assert err.strip().endswith(
        f"continue with: losslab ice train {ws / 'cfg.json'} 'output_dir=my run' epochs=3 --resume"
    )
