"""The fetal sample case for ``losslab app --sample fetal``: GA26_operated of the CC0 spina bifida fetal brain
atlas (:mod:`FetalParcellationLib.sample_data`: the same files, URLs and SHA256 digests as Slicer's Sample Data).

Looked up, in order: ``$LOSSLAB_FETAL_SAMPLE`` (a folder with ``srr.nii.gz`` and ``mask.nii.gz``), the
repository's ``../shared/data/fetal-sb-atlas/GA26_operated``, the cache ``~/.cache/losslab/fetal-sample``;
otherwise downloaded into the cache from the fixed commit, each file checked against its digest.
"""

from __future__ import annotations

import hashlib
import os
import urllib.request
from pathlib import Path

from losslab import io as _io

REPO_ROOT = Path(__file__).resolve().parents[2]
CACHE = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "losslab" / "fetal-sample"


def _digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def fetal_sample(download: bool = True) -> tuple[Path, Path]:
    """``(mri, mask)`` paths of the sample case (see the module docstring)."""
    from FetalParcellationLib.sample_data import SAMPLE_FILES, url

    wanted = {row[0]: row[4] for row in SAMPLE_FILES}
    folders = [
        os.environ.get("LOSSLAB_FETAL_SAMPLE"),
        REPO_ROOT.parent / "shared/data/fetal-sb-atlas/GA26_operated",
    ]
    for folder in [Path(f) for f in folders if f] + [CACHE]:
        if (folder / "srr.nii.gz").is_file() and (folder / "mask.nii.gz").is_file():
            return folder / "srr.nii.gz", folder / "mask.nii.gz"
    if not download:
        raise FileNotFoundError(f"the fetal sample case is not in {CACHE}")
    CACHE.mkdir(parents=True, exist_ok=True)
    for name in ("srr.nii.gz", "mask.nii.gz"):
        target = CACHE / name
        if target.is_file() and _digest(target) == wanted[name]:
            continue
        with urllib.request.urlopen(url(name), timeout=60) as response:  # noqa: S310 (fixed https URL)
            data = response.read()
        if hashlib.sha256(data).hexdigest() != wanted[name]:
            raise ValueError(f"the downloaded {name} does not have the expected SHA256 {wanted[name]}")
        _io.write_bytes(target, data)  # atomic
    return CACHE / "srr.nii.gz", CACHE / "mask.nii.gz"
