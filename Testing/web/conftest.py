"""Web tests: ``Web/`` and ``Testing/mrml`` (atlas case helpers) on sys.path; offscreen EGL rendering.

The tests that need trame-slicer skip in an environment without it (the ``[test]`` one); there,
``test_web_environment.py`` runs this folder in ``.venv-web`` (see docs/web.md).
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

os.environ.setdefault("VTK_DEFAULT_OPENGL_WINDOW", "vtkEGLRenderWindow")

ROOT = Path(__file__).resolve().parents[2]
for _folder in (ROOT / "Testing" / "mrml", ROOT / "Web"):
    if str(_folder) not in sys.path:
        sys.path.insert(0, str(_folder))


# VTK's EGL render windows of the serverless tests can crash the interpreter while it tears down after the last
# test (seen here: exit -11 after "66 passed", in about one run of three). When test_web_environment.py runs this
# folder it asks for the exit status that pytest reported, taken before that teardown.
_EXIT_STATUS: list[int] = []


def pytest_sessionfinish(session, exitstatus):
    _EXIT_STATUS.append(int(exitstatus))


def pytest_unconfigure(config):
    if os.environ.get("LOSSLAB_WEB_EXIT_AFTER_REPORT") == "1" and _EXIT_STATUS:
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(_EXIT_STATUS[-1])
