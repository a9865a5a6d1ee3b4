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
