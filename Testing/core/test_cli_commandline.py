"""The command line as a newcomer meets it (issue 20, "The command line"; issue 22's signals and leftovers):
``--help`` without heavy imports, a help text for every option, a readable ``losslab models``, one line for
SIGTERM and a full disk, and no temporary files left by killed writers."""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from losslab.cli import build_parser, main

ROOT = Path(__file__).resolve().parents[2]
ENV = {**os.environ, "PYTHONPATH": str(ROOT / "LossLab")}
HEAVY = ("torch", "numpy", "SimpleITK", "scipy", "matplotlib", "monai", "slicerio")


def test_the_parser_loads_no_heavy_module():
    """`--help` took 4-10 s because building the parser imported torch (through losslab.metrics); the parser
    and argument errors now load only the standard library (measured: 0.1 s for `losslab --help`)."""
    script = (
        "import sys\n"
        "from losslab.cli import build_parser\n"
        "parser = build_parser()\n"
        "for action in parser._subparsers._group_actions[0].choices.values(): action.format_help()\n"
        f"print(sorted(m for m in {HEAVY!r} if m in sys.modules))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", script], env=ENV, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]", done.stdout


def test_the_light_copy_of_max_labels_is_the_io_one():
    from losslab import io
    from losslab.cli import metrics

    assert metrics.MAX_LABELS == io.MAX_LABELS


def _parsers(parser: argparse.ArgumentParser, prog: str = "losslab"):
    yield prog, parser
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                yield from _parsers(sub, f"{prog} {name}")


def test_every_option_and_argument_has_a_help_text():
    missing = [
        f"{prog} {action.dest}"
        for prog, parser in _parsers(build_parser())
        for action in parser._actions
        if not isinstance(action, (argparse._HelpAction, argparse._SubParsersAction, argparse._VersionAction))
        and not action.help
    ]
    assert not missing, missing


def test_no_option_prints_its_metavar_nine_times():
    text = next(p for prog, p in _parsers(build_parser()) if prog == "losslab fetal segment").format_help()
    assert "DIRECTION DIRECTION" not in text and "--direction D11 D12 D13" in text


def test_models_is_a_readable_table_and_show_gives_the_whole_card(capsys):
    assert main(["models"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split()[:2] == ["name", "task"]
    assert not any("{" in line or '"' in line for line in lines), lines  # no cut JSON
    editing = next(line for line in lines if line.startswith("ice-editing-64 "))
    assert main(["models", "show", "ice-editing-64"]) == 0
    card = json.loads(capsys.readouterr().out)
    assert card["metrics"]["sequential_phantom_p95_mm"] and card["training"]["command"]
    table1 = card["metrics"]["table1_phantom_p95_mm"]
    ideal = card["metrics"]["ideal_user"]["real"]["segmentation"]["clean"]
    assert "64^3 x 2.2048 mm" in editing
    assert (
        f"D p95 {table1['overall']:.2f} / near {table1['near']:.2f} / far {table1['far']:.2f} mm" in editing
    )
    assert f"ideal user (real): Dice {ideal['start_dice']:.3f} -> {ideal['final_dice']:.3f}" in editing
    segmentation = next(line for line in lines if line.startswith("ice-segmentation-64 "))
    assert main(["models", "show", "ice-segmentation-64"]) == 0
    dice = json.loads(capsys.readouterr().out)["metrics"]["summary"]["held_out_family_dice"]
    assert "held-out Dice " + ", ".join(f"{f} {d:.3f}" for f, d in dice.items()) in segmentation
    assert main(["models", "--json"]) == 0
    cards = json.loads(capsys.readouterr().out)
    assert {c["name"] for c in cards} >= {"ice-editing-64", "fetal-leafdice-1.6mm"} and cards[0]["files"]


def test_a_malformed_card_does_not_hide_the_other_models(tmp_path, capsys):
    from losslab import models as registry

    card = registry.get_card("ice-editing-64")
    (tmp_path / "good").mkdir()
    for rel in [*card.files, registry.CARD]:
        (tmp_path / "good" / rel).write_bytes((card.folder / rel).read_bytes())
    (tmp_path / "broken").mkdir()
    (tmp_path / "broken" / "model.json").write_text('{"name": ')
    assert main(["models", "--root", str(tmp_path)]) == 0
    out, err = capsys.readouterr()
    assert "ice-editing-64" in out
    assert (
        err.startswith("losslab models: warning: skipped a model whose card cannot be read")
        and "broken" in err
    )


def test_a_full_disk_in_sample_data_is_one_line(tmp_path):
    """The NIfTI library printed `** ERROR: NWAD: wrote only 0 of ... bytes` on the process's stderr before
    our one line: only our line now (a real full tmpfs; the text C code prints is seen only out of process)."""
    full = tmp_path / "full"
    full.mkdir()
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(full)], capture_output=True)
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here ({done.stderr.decode().strip() or done.returncode})")
    try:
        subprocess.run(["dd", "if=/dev/zero", f"of={full / 'fill'}", "bs=4k"], capture_output=True)
        done = subprocess.run(
            [sys.executable, "-m", "losslab.cli", "sample-data", str(full / "out")],
            env=ENV,
            capture_output=True,
            text=True,
            timeout=120,
        )
    finally:
        subprocess.run(["umount", "-l", str(full)], check=False)
    assert done.returncode == 2
    lines = done.stderr.strip().splitlines()
    assert (
        len(lines) == 1 and lines[0].startswith("losslab sample-data: error: ") and "NWAD" not in done.stderr
    )


def test_a_killed_writer_leaves_no_temporary_file_behind(tmp_path):
    """kill -9 during a write left `.<name>.*.tmp*` files that no rerun removed; the next write of the same
    file removes those of dead writers, and leaves a live writer's alone."""
    from losslab import io

    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    stale = tmp_path / f".seg.nii.gz.{dead.pid}.abc123.tmp.nii.gz"
    live = tmp_path / f".seg.nii.gz.{os.getppid()}.def456.tmp.nii.gz"
    other = tmp_path / f".other.nii.gz.{dead.pid}.xyz.tmp.nii.gz"
    for path in (stale, live, other):
        path.write_bytes(b"partial")
    io.write_image(tmp_path / "seg.nii.gz", np.zeros((4, 4, 4), np.uint8))
    assert not stale.exists() and live.exists() and other.exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([live.name, other.name, "seg.nii.gz"])


def test_a_training_run_names_a_signal_that_came_after_its_last_batch(tmp_path, capsys, monkeypatch):
    """SIGTERM after the last epoch: the run finishes its files, says so, and exits 0 (it is complete)."""
    from losslab.cli.engine import run_training
    from losslab.engine.trainer import TrainResult

    def train(stop):
        os.kill(os.getpid(), signal.SIGTERM)  # caught by run_training: sets the stop flag
        time.sleep(0.1)
        return TrainResult(tmp_path, tmp_path / "model.pt", [{"epoch": 1}], 1, epochs_done=1)

    assert run_training("losslab train", train, "losslab train cfg.json --resume") == 0
    out, err = capsys.readouterr()
    assert json.loads(out)["epochs"] == 1
    assert "SIGTERM arrived after the last batch; the run finished and is complete" in err
