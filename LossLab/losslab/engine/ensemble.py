"""Ensembles: N independent runs (seeds ``seed + k``, own random splits) in ``output_dir/member{k}``,
listed by ``output_dir/ensemble.json`` (the folder that :func:`losslab.engine.load_predictor` takes), and
:func:`run`, which trains one model or an ensemble as the config says.

This module sits above :mod:`losslab.engine.trainer` (it calls :func:`~losslab.engine.trainer.train` per
member); the trainer never imports it, so the two form no import cycle."""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from ..io import write_text
from .checkpoint import RunFolderError, read_ensemble_manifest, run_files
from .config import load_config
from .reporting import ProgressCallback
from .trainer import TrainResult, train


def ensemble_configs(config: Mapping[str, Any]) -> list[dict[str, Any]]:
    """The configs of an ensemble's members: member ``k`` gets seed ``seed + k``, its own random validation
    split (when the manifest has no fixed one) and ``output_dir/member{k}``."""
    base = dict(config)
    members = []
    for k in range(base["ensemble"]["members"]):
        member = json.loads(json.dumps(base))
        member["seed"] = base["seed"] + k
        if base["data"]["split_seed"] is not None:
            member["data"]["split_seed"] = base["data"]["split_seed"] + k
        member["output_dir"] = str(Path(base["output_dir"]) / f"member{k}")
        member["ensemble"] = {"members": 1, "member": None}
        members.append(member)
    return members


def write_ensemble_index(output_dir: str | os.PathLike, members: int) -> Path:
    """Write ``output_dir/ensemble.json`` naming ``member{k}/model.pt`` (the folder ``infer`` loads)."""
    path = Path(output_dir) / "ensemble.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    write_text(path, json.dumps({"members": [f"member{k}/model.pt" for k in range(members)]}, indent=2))
    return path


def plan_members(
    config: Mapping[str, Any], *, resume: bool = False, overwrite: bool = False
) -> dict[int, tuple[bool, bool]]:
    """Check an ensemble's ``output_dir`` before any member trains; ``{k: (resume, overwrite)}`` of the
    members to train.

    - fresh start: the folder must hold no run (its own run files, ``ensemble.json`` or a member's run,
      ``member{k}`` alone when ``ensemble.member`` is ``k``) unless ``overwrite``;
    - ``resume``: ``ensemble.json``, when present, must be valid and list ``ensemble.members`` members; at
      least one chosen member must have ``checkpoints/last.pt``: those resume, the others (not started yet,
      or stopped before their first epoch ended) start afresh.

    Raises:
        RunFolderError / ValueError: naming the folder or file.
    """
    if resume and overwrite:
        raise RunFolderError(
            "resume and overwrite exclude each other: --resume continues a run, --overwrite replaces it"
        )
    out = Path(config["output_dir"])
    members = ensemble_configs(config)
    whole = config["ensemble"]["member"] is None
    chosen = list(range(len(members))) if whole else [config["ensemble"]["member"]]
    index = out / "ensemble.json"
    if resume:
        if index.is_file():
            listed = read_ensemble_manifest(index)
            if len(listed) != len(members):
                raise RunFolderError(
                    f"cannot resume: {str(index)!r} lists {len(listed)} member(s), the config asks for "
                    f"ensemble.members={len(members)}"
                )
        resumable = {
            k for k in chosen if (Path(members[k]["output_dir"]) / "checkpoints" / "last.pt").is_file()
        }
        if not resumable:
            names = ", ".join(f"member{k}" for k in chosen)
            raise RunFolderError(
                f"nothing to resume in {str(out)!r}: no checkpoints/last.pt in {names}; start a new run "
                "without --resume"
            )
        return {k: (k in resumable, k not in resumable) for k in chosen}
    if whole:
        found = run_files(out) + ([index] if index.is_file() else [])
        for folder in sorted(p for p in out.glob("member*") if p.is_dir()):
            found += run_files(folder)
    else:
        found = run_files(members[chosen[0]]["output_dir"])
    if found and not overwrite:
        names = ", ".join(str(p.relative_to(out)) for p in found[:6]) + (", ..." if len(found) > 6 else "")
        raise RunFolderError(
            f"output_dir {str(out)!r} already holds a run ({names}); continue it with --resume, replace it "
            "with --overwrite, or choose another output_dir"
        )
    return {k: (False, overwrite) for k in chosen}


def train_ensemble(
    config: str | os.PathLike | Mapping[str, Any],
    overrides: Iterable[str] = (),
    *,
    resume: bool = False,
    overwrite: bool = False,
    progress: ProgressCallback | None = None,
    stop: Any = None,
) -> list:
    """Train the ``ensemble.members`` members of a config one after the other (or only ``ensemble.member``).

    Each member is an independent run (:func:`ensemble_configs`); to use several GPUs, start one process
    per member with ``ensemble.member=k device=cuda:k``. ``output_dir/ensemble.json`` lists the members, so
    ``output_dir`` is the model folder that :func:`load_predictor` and ``losslab infer`` take; it is written
    when a member's training returns (not before: a start that fails leaves an old ensemble's index whole).
    The output folder is checked first (:func:`plan_members`). Returns the members' ``TrainResult``s.
    """
    cfg = load_config(config, overrides)
    members = ensemble_configs(cfg)
    plan = plan_members(cfg, resume=resume, overwrite=overwrite)
    results = []
    for k, (member_resume, member_overwrite) in plan.items():

        def tagged(event, k=k):
            progress({**event, "member": k, "members": len(members)})

        result = train(
            members[k],
            resume=member_resume,
            overwrite=member_overwrite,
            progress=tagged if progress else None,
            stop=stop,
        )
        results.append(result)
        if result.epochs_done:
            write_ensemble_index(cfg["output_dir"], len(members))
        if result.stopped:
            break
    return results


def run(
    config: str | os.PathLike | Mapping[str, Any],
    overrides: Iterable[str] = (),
    **kwargs: Any,
) -> list[TrainResult]:
    """Train a single model or an ensemble, as ``ensemble.members`` says (what ``losslab train`` does).

    Keywords as :func:`train` (``resume``, ``overwrite``, ``progress``, ``stop``)."""
    cfg = load_config(config, overrides)
    if cfg["ensemble"]["members"] > 1:
        return train_ensemble(cfg, **kwargs)
    return [train(cfg, **kwargs)]


__all__ = ["ensemble_configs", "plan_members", "run", "train_ensemble", "write_ensemble_index"]
