"""Run the web tests in ``.venv-web`` (trame-slicer's pins: slicer-core 5.11, vtk 9.6.0) from the main run.

In ``.venv-web`` itself the web tests run directly and this test skips. Without ``.venv-web`` it skips with the
command that creates it (``.ci/run`` does).
"""

from __future__ import annotations

import importlib.util
import os
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
WEB_PYTHON = ROOT / ".venv-web" / "bin" / "python"


NAME = "test_web_tests_pass_in_the_web_environment"


def test_web_tests_pass_in_the_web_environment():
    if importlib.util.find_spec("trame_slicer") is not None:
        pytest.skip("trame-slicer is installed here: the web tests run in this session directly")
    if not WEB_PYTHON.is_file():
        pytest.skip(
            "no .venv-web: create it with `.venv/bin/python Testing/web/web_venv.py` (docs/web.md); "
            ".ci/run does"
        )
    # LOSSLAB_WEB_EXIT_AFTER_REPORT: the run exits with pytest's status before VTK's teardown (conftest.py)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "LOSSLAB_WEB_EXIT_AFTER_REPORT": "1"}
    env.pop("PYTHONPATH", None)
    proc = subprocess.run(
        [
            str(WEB_PYTHON),
            "-m",
            "pytest",
            "-q",
            "-p",
            "no:cacheprovider",
            "Testing/web",
            "--deselect",
            f"{Path(__file__).relative_to(ROOT)}::{NAME}",
        ],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=2400,
    )
    tail = "\n".join((proc.stdout + proc.stderr).splitlines()[-40:])
    assert proc.returncode == 0, tail
    summary = proc.stdout.strip().splitlines()[-1]
    assert " passed" in summary, tail
    # Skips are allowed only for missing data (../shared/data); never for a missing web stack or browser.
    for reason in ("trame-slicer is not installed", "Playwright is not installed", "no chromium"):
        assert reason not in proc.stdout, tail
