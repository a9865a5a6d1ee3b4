"""Package a trained fetal ensemble for the model registry, with held-out figures measured on the package.

:func:`package_ensemble` copies an engine ensemble (``ensemble.json`` + ``member*/model.pt``) as weights-only
float16 checkpoints (the network runs in float32: ``load_state_dict`` casts), segments the held-out atlas
volumes with the packaged files through :func:`.segment.segment` (native 0.8 mm grid, brain mask given), and
writes the card (:func:`losslab.models.register_model`): task, grid, labels, tissue colours, training record,
the command, per-tissue held-out Dice / HD95 (mean, std, per case) and the sha256 of every file.
"""

from __future__ import annotations

import json
import os
import platform
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .. import io as _io
from .. import models
from ..engine import ensemble_members, load_checkpoint, save_checkpoint
from .evaluate import case_metrics, json_ready
from .segment import ATLAS_DIRECTION, segment
from .tissues import ABBREVIATIONS, LABEL_NAMES, TISSUES


def _half_checkpoint(src: Path, dst: Path) -> None:
    data = load_checkpoint(src)
    state = {k: (v.half() if torch.is_floating_point(v) else v) for k, v in data["model"].items()}
    keep = {"model": state, "model_info": data["model_info"], "epoch": data.get("epoch")}
    if "config" in data:
        keep["config"] = data["config"]
    save_checkpoint(dst, keep)


def held_out_metrics(
    model_folder: str | os.PathLike,
    atlas_dir: str | os.PathLike,
    cases: Sequence[str],
    spacing: Sequence[float],
    direction: Sequence[float] = ATLAS_DIRECTION,
) -> dict[str, Any]:
    """Segment ``cases`` of the atlas (native grid, brain mask) with the model folder's files and measure Dice
    and HD95 per tissue against their parcellations."""
    atlas_dir = Path(atlas_dir)
    per_case = {}
    with tempfile.TemporaryDirectory() as tmp:
        for case in cases:
            out = Path(tmp) / f"{case}.nii.gz"
            segment(
                model_folder,
                atlas_dir / case / "srr.nii.gz",
                out,
                mask=atlas_dir / case / "mask.nii.gz",
                spacing=spacing,
                direction=direction,
                progress=False,
            )
            ref = _io.read_image(atlas_dir / case / "parcellation.nii.gz")
            per_case[case] = case_metrics(_io.read_image(out).array, ref.array, ref.geometry.array_spacing)
    summary: dict[str, Any] = {}
    for t in ABBREVIATIONS:
        summary[t] = {}
        for k in ("dice", "hd95"):
            v = np.asarray([per_case[c][t][k] for c in cases], dtype=float)
            v = v[np.isfinite(v)]
            summary[t][k] = {"mean": float(v.mean()), "std": float(v.std(ddof=1)) if v.size > 1 else 0.0}
    return {
        "cases": list(cases),
        "per_tissue": summary,
        "per_case": per_case,
        "summary": {
            "mean_dice": float(np.mean([summary[t]["dice"]["mean"] for t in ABBREVIATIONS])),
            "mean_hd95": float(np.mean([summary[t]["hd95"]["mean"] for t in ABBREVIATIONS])),
        },
        "note": "Dice in %, HD95 in mm, at the atlas's native 0.8 mm grid; volumes no member trained on",
    }


def package_ensemble(
    run_dir: str | os.PathLike,
    out_dir: str | os.PathLike,
    name: str,
    spacing: Sequence[float],
    atlas_dir: str | os.PathLike,
    test_cases: Sequence[str],
    training: Mapping[str, Any],
    direction: Sequence[float] = ATLAS_DIRECTION,
    task: str = "fetal brain parcellation (8 tissues) of T2w MRI, trained from partial annotations (leaf-Dice)",
    mask: str | None = None,
) -> Path:
    """Write ``out_dir`` (members as float16, ``ensemble.json``, ``model.json``); returns the card's path.

    ``mask`` is the card's ``input.mask`` (:mod:`losslab.models`); by default what the members' training
    config implies (:func:`losslab.models.trained_mask_policy`): ``"required"`` for an ensemble that never
    saw an unmasked input (no brain extraction of its own), ``"optional"`` for one trained with
    ``augmentation.foreground_mask``, to be confirmed by measuring it without a mask on other data
    (configs/fetal/cross_centre_card.py writes the measured rule)."""
    members = ensemble_members(run_dir)
    if mask is None:
        config = load_checkpoint(members[0]).get("config") or {}
        mask = models.trained_mask_policy(config)
    if mask not in models.MASK_POLICIES:
        raise ValueError(f"mask must be one of {list(models.MASK_POLICIES)}, got {mask!r}")
    out_dir = Path(out_dir)
    names = []
    for k, member in enumerate(members):
        rel = f"member{k}/model.pt"
        _half_checkpoint(member, out_dir / rel)
        names.append(rel)
    _io.write_text(out_dir / "ensemble.json", json.dumps({"members": names}, indent=2) + "\n")
    info = load_checkpoint(members[0])["model_info"]
    held_out = held_out_metrics(out_dir, atlas_dir, test_cases, spacing, direction)
    card = {
        "name": name,
        "task": task,
        "format": "losslab-engine-ensemble",
        "entry": ".",
        "members": len(names),
        "dtype": "float16 weights (computed in float32)",
        "grid": {
            "spacing_mm": [float(s) for s in spacing],
            "direction": list(direction),
            "note": "inputs are resampled to this spacing and direction (the training volumes') by losslab fetal "
            "segment and the labels brought back to the input's grid",
        },
        "input": {"mask": mask},
        "labels": LABEL_NAMES,
        "tissues": {
            str(t.label): {"abbreviation": t.abbreviation, "name": t.name, "color": t.color} for t in TISSUES
        },
        "network": info["network"],
        "normalize": info["normalize"],
        "training": dict(training),
        "metrics": json_ready(held_out),
        "environment": {"torch": torch.__version__, "python": platform.python_version()},
    }
    return models.register_model(out_dir, card)
