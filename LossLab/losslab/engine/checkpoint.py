"""Checkpoints: atomic writes, version stamps, loading with ``weights_only=True`` safety."""

from __future__ import annotations

import os
import platform
import random
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..io import atomic_write

FORMAT = "losslab-checkpoint"
FORMAT_VERSION = 1


def versions() -> dict[str, str]:
    """Versions of the software that wrote a checkpoint."""
    from .. import __version__

    return {
        "losslab": __version__,
        "torch": str(torch.__version__),
        "numpy": np.__version__,
        "python": platform.python_version(),
    }


def rng_state() -> dict[str, Any]:
    """Python, numpy and torch RNG states in a ``weights_only``-loadable form."""
    kind, keys, pos, has_gauss, cached = np.random.get_state()  # noqa: NPY002 (the legacy global state is what users seed)
    state: dict[str, Any] = {
        "python": _to_lists(random.getstate()),
        "numpy": [kind, torch.from_numpy(keys.astype(np.int64)), int(pos), int(has_gauss), float(cached)],
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    """Restore what :func:`rng_state` saved."""
    random.setstate(_to_tuples(state["python"]))
    kind, keys, pos, has_gauss, cached = state["numpy"]
    np.random.set_state((kind, keys.numpy().astype(np.uint32), pos, has_gauss, cached))  # noqa: NPY002
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def _to_lists(value):
    return [_to_lists(v) for v in value] if isinstance(value, (tuple, list)) else value


def _to_tuples(value):
    return tuple(_to_tuples(v) for v in value) if isinstance(value, list) else value


def save_checkpoint(path: str | os.PathLike, payload: dict[str, Any]) -> Path:
    """Write ``payload`` (plus format and versions) to ``path`` atomically: temporary file, then rename."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    data = {"format": FORMAT, "format_version": FORMAT_VERSION, "versions": versions(), **payload}
    return atomic_write(path, lambda tmp: torch.save(data, tmp), verify=_verify_checkpoint, suffix=".tmp")


def _verify_checkpoint(tmp: Path) -> None:
    """Read a just-written checkpoint back (on the CPU) so that a truncated file never replaces a good one."""
    try:
        torch.load(tmp, map_location="cpu", weights_only=False)
    except Exception as exc:
        raise OSError(
            f"the checkpoint written to {tmp.parent} does not read back ({exc}); disk full?"
        ) from None


def load_checkpoint(path: str | os.PathLike, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Read a LossLab checkpoint (``weights_only=True``: no code from the file is run).

    Raises:
        FileNotFoundError: no such file.
        ValueError: the file is not a LossLab checkpoint (or is damaged).
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint not found: {str(path)!r}")
    try:
        data = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as exc:  # pickle / zip errors of a damaged or foreign file
        raise ValueError(f"could not read checkpoint {str(path)!r}: {exc}") from None
    if not isinstance(data, dict) or data.get("format") != FORMAT:
        raise ValueError(f"{str(path)!r} is not a LossLab checkpoint (no format={FORMAT!r} entry)")
    if data.get("format_version", 0) > FORMAT_VERSION:
        raise ValueError(
            f"checkpoint {str(path)!r} has format version {data['format_version']}; this losslab reads "
            f"up to {FORMAT_VERSION}: update losslab"
        )
    return data
