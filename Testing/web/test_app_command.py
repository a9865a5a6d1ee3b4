"""``losslab app``'s command line (runs in every environment; the server itself is tested in test_browser.py)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from losslab.cli import COMMAND_MODULES, main

ROOT = Path(__file__).resolve().parents[2]


def test_the_core_cli_imports_no_web_stack():
    code = "import sys, losslab.cli, losslab.cli.app; print(sorted(m for m in sys.modules if m.split('.')[0] in ('trame', 'trame_slicer', 'slicer', 'vtkmodules')))"
    env = {**os.environ, "PYTHONPATH": str(ROOT / "LossLab")}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
    assert "losslab.cli.app" in COMMAND_MODULES


def test_without_the_web_extra_it_is_one_line_with_the_install_hint(monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "trame_slicer", None)  # as if trame-slicer were not installed
    assert main(["app", "--port", "8999"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and 'pip install -e ".[web]"' in err and "is missing" in err, err


@pytest.mark.parametrize(
    ("argv", "expect"),
    [
        (["app", "--port", "0"], "--port must be in 1..65535, got 0"),
        (["app", "--case", "/no/such/mri.nii.gz"], "no such file"),
        (["app", "--mask", "m.nii.gz"], "--mask needs --case"),
        (["app", "--case", "/no/such/case", "--page", "ice"], "no such folder"),
        (
            ["app", "--case", str(ROOT / "Web"), "--page", "ice"],
            "not an ICE case folder, image.nii.gz is missing",
        ),
        (
            ["app", "--case", str(ROOT), "--page", "ice", "--mask", "m.nii.gz"],
            "--mask needs --case on the fetal",
        ),
        (["app", "--sample", "heart"], "invalid choice"),
        (["app", "--page", "heart"], "invalid choice"),
    ],
)
def test_bad_options_are_one_line_errors(argv, expect, capsys):
    with pytest.raises(SystemExit) if argv[1] in ("--sample", "--page") else _nothing():
        assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and expect in err, err


class _nothing:
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False
