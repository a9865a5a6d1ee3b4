"""Repository-level pytest setup: make this checkout's ``LossLab/`` folder importable first.

``losslab`` (the core) and ``LossLabLib`` (the MRML layer) live side by side in ``LossLab/``, as Slicer
expects for a module folder. Putting that folder first on ``sys.path`` makes the tests exercise the
files of this checkout, whatever copy of ``losslab`` is installed.
"""

import os
import sys
from pathlib import Path

import pytest

_ROOT = Path(__file__).resolve().parent
for _folder in ("LossLab", "ICEEditing", "FetalParcellation"):
    _path = _ROOT / _folder
    if _path.is_dir() and str(_path) not in sys.path:
        sys.path.insert(0, str(_path))


def pytest_collection_modifyitems(config, items):
    if os.environ.get("LOSSLAB_SLOW") == "1":
        return
    skip_slow = pytest.mark.skip(reason="slow test: covered by benchmarks/; set LOSSLAB_SLOW=1 to run it")
    for item in items:
        if "slow" in item.keywords:
            item.add_marker(skip_slow)
