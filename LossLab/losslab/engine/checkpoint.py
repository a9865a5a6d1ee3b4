"""Checkpoints: atomic writes, version stamps, loading with ``weights_only=True`` safety."""

from __future__ import annotations

import errno
import os
import platform
import random
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..io import WriteError, atomic_write

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

    def write(tmp: Path) -> None:
        try:
            torch.save(data, tmp)
        except RuntimeError as exc:  # torch's writer: "[enforce fail at inline_container.cc] ..." (disk full)
            reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise WriteError(
                errno.EIO, f"cannot write the checkpoint ({reason}; disk full?)", str(path)
            ) from None

    return atomic_write(path, write, verify=_verify_checkpoint, suffix=".tmp")


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


# ------------------------------------------------------------------------------------ the run folder
#: the files a training run writes into its ``output_dir`` (``checkpoints/last.pt`` is what ``--resume`` reads)
RUN_FILES = (
    "metrics.jsonl",
    "summary.json",
    "model.pt",
    "curves.png",
    "checkpoints/last.pt",
    "checkpoints/best.pt",
)
#: the checkpoint entries that resuming a run needs
RESUME_KEYS = ("model", "optimizer", "model_info", "epoch", "history", "best")


class RunFolderError(ValueError):
    """An ``output_dir`` that holds a run when a new one would replace it, or none when resuming."""


def run_files(folder: str | os.PathLike) -> list[Path]:
    """The files of a training run found in ``folder`` (see :data:`RUN_FILES`); empty when it holds none.

    Other files (a config written there, notes, data) do not make a run.
    """
    folder = Path(folder)
    return [folder / name for name in RUN_FILES if (folder / name).is_file()]


def check_run_folder(folder: str | os.PathLike, *, resume: bool = False, overwrite: bool = False) -> None:
    """Refuse to start a run that would silently replace another, or to resume where there is no run.

    - ``folder`` must be a folder (or not exist yet) that can be written.
    - ``resume``: ``folder/checkpoints/last.pt`` must exist.
    - otherwise: ``folder`` must hold no run files (:func:`run_files`) unless ``overwrite``. Even then the
      old files are only removed when the new run has completed its first epoch (see
      :func:`clear_run_files`), so a run that fails at its start leaves the old one whole.

    Raises:
        RunFolderError: with the folder and what to do.
    """
    folder = Path(folder)
    _check_writable(folder)
    if resume and overwrite:
        raise RunFolderError(
            "resume and overwrite exclude each other: --resume continues a run, --overwrite replaces it"
        )
    if resume:
        if not (folder / "checkpoints" / "last.pt").is_file():
            found = run_files(folder)
            detail = f" (it has {', '.join(p.name for p in found)})" if found else ""
            raise RunFolderError(
                f"nothing to resume in {str(folder)!r}: no checkpoints/last.pt{detail}; "
                "start a new run without --resume"
            )
        return
    found = run_files(folder)
    if found and not overwrite:
        names = ", ".join(str(p.relative_to(folder)) for p in found)
        raise RunFolderError(
            f"output_dir {str(folder)!r} already holds a run ({names}); continue it with --resume, "
            "replace it with --overwrite, or choose another output_dir"
        )


def _check_writable(folder: Path) -> None:
    """Refuse at the start, not after the first epoch: an ``output_dir`` that is a file, or whose nearest
    existing folder cannot be written."""
    if folder.exists() and not folder.is_dir():
        raise RunFolderError(f"output_dir {str(folder)!r} is a file, not a folder; choose a folder")
    existing = folder
    while not existing.exists() and existing.parent != existing:
        existing = existing.parent
    if not existing.is_dir():
        raise RunFolderError(f"output_dir {str(folder)!r} cannot be made: {str(existing)!r} is a file")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise RunFolderError(f"output_dir {str(folder)!r} cannot be written: {str(existing)!r} is read-only")


def clear_run_files(folder: str | os.PathLike) -> list[Path]:
    """Remove the files of a previous run from ``folder`` (only :data:`RUN_FILES`); returns what it removed."""
    removed = []
    for path in run_files(folder):
        path.unlink()
        removed.append(path)
    return removed


def check_resumable(state: dict[str, Any], path: str | os.PathLike) -> None:
    """Check that a checkpoint holds what resuming needs (a training ``last.pt``, not a final ``model.pt``).

    Raises:
        ValueError: naming the file and the missing entries.
    """
    missing = [key for key in RESUME_KEYS if state.get(key) is None]
    if missing:
        raise ValueError(
            f"cannot resume from {str(path)!r}: the checkpoint has no {', '.join(missing)} entry, which "
            "resuming needs (only a training checkpoint, checkpoints/last.pt as `losslab train` writes it, "
            "can be resumed); start a new run with --overwrite"
        )


#: settings a resumed run may change (``--resume epochs=80``): the others shape the training itself (patch and
#: batch size, learning rate, loss, data, seed), and a changed value would silently make a different run
RESUME_CHANGEABLE = (
    "epochs",
    "output_dir",  # the run is where its checkpoint is (a moved run folder resumes)
    "data.manifest",  # paths only: a moved dataset folder resumes
    "device",
    "threads",
    "plot_every",
    "data.cache",
    "early_stopping.patience",
    "ensemble.members",
)


def _flatten(config: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(config, dict) and config and prefix not in ("network.", "loss.options.", "loss.inputs."):
        out: dict[str, Any] = {}
        for key, value in config.items():
            out.update(_flatten(value, f"{prefix}{key}."))
        return out
    return {prefix[:-1]: config}


def check_resume_settings(
    saved: dict[str, Any] | None,
    config: dict[str, Any],
    path: str | os.PathLike,
    changeable: tuple[str, ...] = RESUME_CHANGEABLE,
    defaults: dict[str, Any] | None = None,
) -> None:
    """Refuse to resume the run of ``path`` (its ``last.pt``, whose config is ``saved``) with settings that
    differ from those it was started with, except :data:`RESUME_CHANGEABLE`. A checkpoint without a config
    (older files) is not checked. With ``defaults`` (the engine's :data:`.config.DEFAULTS`), a key the saved
    config lacks -- one added since the run started, such as a newer augmentation -- counts as its default
    there, so the run resumes as long as that key keeps its default (the run behaves as it did).

    Raises:
        ValueError: naming each changed key with the run's value and the new one, and what to do.
    """
    if not saved:
        return
    old, new, default = _flatten(saved), _flatten(config), _flatten(defaults or {})
    changed = [
        key
        for key in sorted(set(old) | set(new))
        if old.get(key, default.get(key)) != new.get(key)
        and not any(key == c or key.startswith(c + ".") for c in changeable)
    ]
    if changed:
        shown = "; ".join(f"{k}: {old.get(k)!r} in the run, {new.get(k)!r} now" for k in changed[:4])
        more = f" and {len(changed) - 4} more" if len(changed) > 4 else ""
        raise ValueError(
            f"cannot resume from {str(path)!r} with other settings ({shown}{more}): a resumed run keeps the "
            f"settings it started with (only {', '.join(changeable)} may change); give the run's own "
            "overrides again, or start a new run with --overwrite or another output_dir"
        )


# ------------------------------------------------------------------------------------ ensemble.json
def read_ensemble_manifest(path: str | os.PathLike) -> list[Path]:
    """Read and check an ensemble index ``ensemble.json`` (``{"members": ["member0/model.pt", ...]}``).

    Returns the members' checkpoint paths, resolved against the file's folder (they are not required to
    exist: a training run writes the index before its last member finishes).

    Raises:
        FileNotFoundError: no such file.
        ValueError: the file is empty, not JSON, or not ``{"members": [non-empty relative paths]}``; the
            message names the file.
    """
    import json

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"ensemble index not found: {str(path)!r}")
    text = path.read_text(encoding="utf-8", errors="replace")
    where = f"ensemble index {str(path)!r}"
    if not text.strip():
        raise ValueError(f'{where} is empty; expected {{"members": ["member0/model.pt", ...]}}')
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ValueError(f"{where} is not valid JSON: {exc}") from None
    members = data.get("members") if isinstance(data, dict) else None
    if not isinstance(members, list) or not members:
        raise ValueError(
            f'{where} must hold {{"members": ["member0/model.pt", ...]}} with at least one member, '
            f"got {text.strip()[:80]!r}"
        )
    out = []
    for item in members:
        if not isinstance(item, str) or not item or os.path.isabs(item) or ".." in Path(item).parts:
            raise ValueError(
                f"{where}: each member must be a checkpoint path relative to its folder, got {item!r}"
            )
        out.append(path.parent / item)
    return out
