"""The model registry: trained models shipped with LossLab (or kept in a folder of your own), each with a card.

A registered model is a folder ``<root>/<name>/`` holding a card, ``model.json``, and the files it lists::

    {
      "name": "fetal-leafdice-1.6mm",
      "task": "fetal brain parcellation (8 tissues), T2w MRI",
      "format": "losslab-engine-ensemble",          # the path loads with losslab.engine.load_predictor
      "entry": ".",                                  # checkpoint file or ensemble folder, relative to the card
      "files": {"member0/model.pt": "<sha256>", "ensemble.json": "<sha256>"},
      "grid": {"spacing_mm": [1.6, 1.6, 1.6], "direction": [...]},
      "labels": ["background", "WM", ...],
      "input": {"mask": "optional"},                 # optional; see below
      "metrics": {...}, "training": {...}
    }

``input.mask`` says whether the model needs a brain mask with its image: ``"required"`` (the model finds no
brain by itself: given a whole field of view it labels voxels outside the brain as tissues; every caller
refuses to run it without a mask, :func:`require_mask`) or ``"optional"`` (the default when the key is absent;
a fetal model that finds the brain itself, measured within 0.05 mean Dice of its with-mask result).

The registry root is, in order: the ``root=`` argument, the ``LOSSLAB_MODELS_DIR`` environment variable, or the
package folder (``losslab/models/``, installed as package data). :func:`model_path` and :func:`load_model`
check every listed file's sha256 first: a mismatch (a corrupt or replaced file) is a
:class:`ModelChecksumError`, never a silent load. :func:`register_model` writes a card with the checksums.
"""

from __future__ import annotations

import hashlib
import json
import os
import warnings
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

CARD = "model.json"
ENV_ROOT = "LOSSLAB_MODELS_DIR"


class ModelChecksumError(ValueError):
    """A file of a registered model does not match the sha256 its card lists."""


class MaskRequiredError(ValueError):
    """A model whose card requires a brain mask (``"input": {"mask": "required"}``) was run without one."""


#: the values of a card's ``input.mask``
MASK_POLICIES = ("required", "optional")


@dataclass
class ModelCard:
    """A parsed ``model.json``; ``folder`` is where it lies."""

    name: str
    folder: Path
    task: str
    files: dict[str, str]
    entry: str = "."
    format: str = "losslab-engine"
    grid: dict[str, Any] = field(default_factory=dict)
    labels: list[str] = field(default_factory=list)
    metrics: dict[str, Any] = field(default_factory=dict)
    raw: dict[str, Any] = field(default_factory=dict)

    @property
    def size_bytes(self) -> int:
        return sum((self.folder / f).stat().st_size for f in self.files if (self.folder / f).is_file())

    @property
    def spacing(self) -> list[float] | None:
        sp = self.grid.get("spacing_mm")
        return [float(s) for s in sp] if sp else None

    @property
    def direction(self) -> list[float] | None:
        d = self.grid.get("direction")
        return [float(v) for v in d] if d else None

    @property
    def mask_policy(self) -> str:
        """``"required"`` or ``"optional"``: the card's ``input.mask`` (``"optional"`` when absent)."""
        return str((self.raw.get("input") or {}).get("mask", "optional"))

    @property
    def path(self) -> Path:
        """The checkpoint file or ensemble folder (what ``losslab.engine.load_predictor`` takes)."""
        return (self.folder / self.entry).resolve()


def registry_root(root: str | os.PathLike | None = None) -> Path:
    """The registry folder: ``root``, else ``$LOSSLAB_MODELS_DIR``, else this package's folder."""
    if root is not None:
        return Path(root)
    env = os.environ.get(ENV_ROOT)
    return Path(env) if env else Path(__file__).resolve().parent


def sha256_file(path: str | os.PathLike, chunk: int = 1 << 20) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while block := handle.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def read_card(folder: str | os.PathLike) -> ModelCard:
    """Parse ``folder/model.json``.

    Raises:
        FileNotFoundError: no card; ValueError: invalid JSON or a missing key (named).
    """
    folder = Path(folder)
    path = folder / CARD
    if not path.is_file():
        raise FileNotFoundError(f"no model card {path}")
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ValueError(f"{path}: not valid JSON ({exc})") from None
    if not isinstance(raw, dict):
        raise ValueError(f"{path}: a model card must hold a JSON object, got {type(raw).__name__}")
    for key in ("name", "task", "files"):
        if key not in raw:
            raise ValueError(f"{path}: the card lacks {key!r} (has {sorted(raw)})")
    if not isinstance(raw["files"], dict) or not raw["files"]:
        raise ValueError(f"{path}: 'files' must map file names to sha256 digests, got {raw['files']!r}")
    inputs = raw.get("input", {})
    if not isinstance(inputs, dict) or inputs.get("mask", "optional") not in MASK_POLICIES:
        raise ValueError(
            f"{path}: 'input' must be an object whose 'mask' is one of {list(MASK_POLICIES)}, got {inputs!r}"
        )
    return ModelCard(
        name=str(raw["name"]),
        folder=folder,
        task=str(raw["task"]),
        files={str(k): str(v).lower() for k, v in raw["files"].items()},
        entry=str(raw.get("entry", ".")),
        format=str(raw.get("format", "losslab-engine")),
        grid=dict(raw.get("grid") or {}),
        labels=list(raw.get("labels") or []),
        metrics=dict(raw.get("metrics") or {}),
        raw=raw,
    )


def list_models(root: str | os.PathLike | None = None) -> list[ModelCard]:
    """Cards of every model of the registry, sorted by name (folders without a card are ignored; a card that
    cannot be read is skipped with a ``UserWarning`` naming it)."""
    base = registry_root(root)
    if not base.is_dir():
        return []
    cards, broken = [], []
    for p in sorted(base.iterdir()):
        if p.is_dir() and (p / CARD).is_file():
            try:
                cards.append(read_card(p))
            except (ValueError, UnicodeDecodeError) as exc:
                broken.append(str(exc))
    for problem in broken:  # one damaged card must not hide the other models
        warnings.warn(f"skipped a model whose card cannot be read: {problem}", stacklevel=2)
    return sorted(cards, key=lambda c: c.name)


def get_card(name: str, root: str | os.PathLike | None = None) -> ModelCard:
    """The card of the model ``name``.

    Raises:
        ValueError: no such model (the message lists the registered names).
    """
    cards = list_models(root)
    for card in cards:
        if card.name == name:
            return card
    names = [c.name for c in cards]
    raise ValueError(f"no registered model {name!r} in {registry_root(root)}; registered: {names or 'none'}")


def verify_model(card: ModelCard) -> None:
    """Check every file listed by the card against its sha256.

    Raises:
        FileNotFoundError: a listed file is missing; ModelChecksumError: a digest differs (both named).
    """
    for rel, expected in card.files.items():
        file = card.folder / rel
        if not file.is_file():
            raise FileNotFoundError(
                f"model {card.name!r}: file {rel!r} listed in its card is missing ({file})"
            )
        actual = sha256_file(file)
        if actual != expected:
            raise ModelChecksumError(
                f"model {card.name!r}: {rel} has sha256 {actual}, its card says {expected}; "
                "the file is corrupt or was replaced: reinstall the model"
            )


def card_of_path(path: str | os.PathLike) -> ModelCard | None:
    """The card of a model given by path: a model folder holding ``model.json``, or a file or folder that the
    card beside it (or one folder up, for an ensemble member) lists. ``None`` when no card covers it, so that
    ``losslab infer models/NAME/model.pt`` checks the same sha256 as ``losslab infer NAME``."""
    path = Path(path)
    if not path.exists():
        return None
    target = path.resolve()
    for folder in (
        (path, path.parent, path.parent.parent) if path.is_dir() else (path.parent, path.parent.parent)
    ):
        if not (folder / CARD).is_file():
            continue
        card = read_card(folder)
        listed = {(card.folder / rel).resolve() for rel in card.files}
        if target == card.path or target in listed or target == folder.resolve():
            return card
    return None


def find_card(model: str | os.PathLike, root: str | os.PathLike | None = None) -> ModelCard | None:
    """The card that covers ``model``: a path (a model folder, its entry, or a file its card lists:
    :func:`card_of_path`), else a registered name; ``None`` when no card covers it (a plain checkpoint, an
    unknown name). No checksum is checked here."""
    if Path(model).exists():
        return card_of_path(model)
    try:
        return get_card(str(model), root)
    except ValueError:
        return None


def require_mask(
    card: ModelCard | None, has_mask: bool, how: str = "give --mask MASK, a brain mask on the image's grid"
) -> None:
    """Refuse to run a model whose card requires a brain mask (``"input": {"mask": "required"}``) without
    one, before any work; nothing to check for ``card=None`` or an optional mask.

    Args:
        card: the model's card (:func:`find_card`), or None.
        has_mask: whether the caller has a brain mask for the image.
        how: how the caller's user gives one (the command line's ``--mask``, a segment to paint, ...).

    Raises:
        MaskRequiredError: one line naming the model and ``how``.
    """
    if card is None or has_mask or card.mask_policy != "required":
        return
    raise MaskRequiredError(
        f"{card.name} needs a brain mask ({how}); it has no brain "
        "extraction of its own, and without a mask it parcellates the whole field of view into unusable "
        'labels (its card: "input": {"mask": "required"})'
    )


def trained_mask_policy(config: Mapping[str, Any]) -> str:
    """The ``input.mask`` a card should carry for a model trained with the engine ``config``:
    ``"optional"`` when its augmentation showed it both masked and unmasked inputs
    (``augmentation.foreground_mask.prob`` strictly between 0 and 1), so it finds the brain itself;
    otherwise ``"required"``: trained on one look only, it has no brain extraction to rely on."""
    augmentation = config.get("augmentation") or {}
    if augmentation.get("enabled", True) is False:
        return "required"
    prob = float((augmentation.get("foreground_mask") or {}).get("prob", 0.0))
    return "optional" if 0.0 < prob < 1.0 else "required"


#: issue 19: a model may run without a brain mask when its no-mask result is within 0.05 mean Dice (5 points)
#: of its with-mask one on every centre it was measured on
NO_MASK_RULE_POINTS = 5.0


def measured_mask_policy(gaps: Mapping[str, float]) -> str:
    """The ``input.mask`` the measurements support: ``gaps`` maps each centre (or test set) to the with-mask
    mean Dice minus the no-mask one, in points; ``"optional"`` when every gap is at most
    :data:`NO_MASK_RULE_POINTS`, else (or with no measurement) ``"required"``."""
    if not gaps:
        return "required"
    return "optional" if all(float(g) <= NO_MASK_RULE_POINTS for g in gaps.values()) else "required"


def model_path(name: str, root: str | os.PathLike | None = None, verify: bool = True) -> Path:
    """The checkpoint file or ensemble folder of a registered model, after the checksum check."""
    card = get_card(name, root)
    if verify:
        verify_model(card)
    return card.path


def load_model(name: str, root: str | os.PathLike | None = None, device: str = "auto"):
    """A :class:`losslab.engine.Predictor` for a registered model (checksums verified first)."""
    from ..engine import load_predictor

    return load_predictor(model_path(name, root), device=device)


def register_model(
    folder: str | os.PathLike, card: Mapping[str, Any], files: list[str] | None = None
) -> Path:
    """Write ``folder/model.json`` from ``card`` with the sha256 of ``files`` (default: every file under
    ``folder`` except the card); returns the card's path."""
    from .. import io as _io  # here, not at the top: `losslab models` and --help stay free of numpy / ITK

    folder = Path(folder)
    if files is None:
        files = sorted(
            p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file() and p.name != CARD
        )
    body = dict(card)
    body["files"] = {f: sha256_file(folder / f) for f in files}
    body["size_bytes"] = sum((folder / f).stat().st_size for f in files)
    for key in ("name", "task"):
        if key not in body:
            raise ValueError(f"a model card needs {key!r}")
    return _io.write_text(folder / CARD, json.dumps(body, indent=2) + "\n")


__all__ = [
    "ENV_ROOT",
    "ModelCard",
    "MASK_POLICIES",
    "MaskRequiredError",
    "ModelChecksumError",
    "card_of_path",
    "find_card",
    "get_card",
    "list_models",
    "load_model",
    "model_path",
    "read_card",
    "register_model",
    "registry_root",
    "require_mask",
    "trained_mask_policy",
    "measured_mask_policy",
    "NO_MASK_RULE_POINTS",
    "sha256_file",
    "verify_model",
]
