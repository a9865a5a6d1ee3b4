"""Training a fetal parcellation model on a dataset folder, through LossLab's :class:`LossLabLib.TrainingJob`.

The defaults are the label-set paper's method: leaf-Dice (``leaf_dice``) on the ``fetal_parcellation`` U-Net
(the width of ``configs/fetal/leaf_dice.json``); the label sets are not options here: the engine takes them
from the dataset's ``dataset.json`` (:func:`losslab.engine.trainer.build_loss` passes the manifest's
``label_sets`` to any loss that has that option). Any registered loss can replace leaf-Dice (``marginal_dice``,
``fully_supervised`` baselines...). Once trained, :func:`register_trained_model` writes a model card (grid =
the dataset's voxel spacing, sha256 of every file) so the model can be chosen by name for parcellation.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from losslab import io as _io
from losslab.labelsets import LABEL_NAMES
from LossLabLib.training import TrainingJob, find_manifest

__all__ = ["DEFAULT_FEATURES", "DEFAULT_LOSS", "dataset_spacing", "register_trained_model", "start_training"]

DEFAULT_LOSS = "leaf_dice"
DEFAULT_PRESET = "fetal_parcellation"
DEFAULT_FEATURES = [8, 16, 32, 48, 64]


def _fetal_manifest(dataset) -> tuple[Path, dict[str, Any]]:
    manifest = find_manifest(dataset)
    raw = json.loads(manifest.read_text(encoding="utf-8"))
    if raw.get("labels") != LABEL_NAMES:
        raise ValueError(
            f"{manifest} is not a fetal dataset (labels {raw.get('labels')!r}, expected {LABEL_NAMES}): export "
            "cases with FetalParcellation or build it with 'losslab fetal build-dataset'"
        )
    return manifest, raw


def start_training(
    dataset: str | os.PathLike,
    output_dir: str | os.PathLike,
    *,
    loss: str = DEFAULT_LOSS,
    loss_options: str | Mapping[str, Any] | None = None,
    epochs: int = 60,
    members: int = 1,
    device: str = "auto",
    features: list[int] | None = None,
    overrides: Mapping[str, Any] | None = None,
    python_executable: str | os.PathLike | None = None,
    start: bool = True,
) -> TrainingJob:
    """A :class:`LossLabLib.TrainingJob` on a fetal dataset folder (started unless ``start=False``).

    Args:
        dataset: folder with ``dataset.json`` (or the manifest).
        output_dir: the run's folder (an ensemble folder when ``members > 1``).
        loss, loss_options: the loss (default leaf-Dice) and its options; label sets come from the dataset.
        epochs, members, device: as in the engine config.
        features: U-Net widths (default :data:`DEFAULT_FEATURES`).
        overrides: further engine config entries (e.g. ``{"batch_size": 1}``).
        python_executable: ``PythonSlicer`` in Slicer.

    Raises:
        FileNotFoundError, ValueError: no / not a fetal dataset; a bad loss, option or value (named).
    """
    manifest, _ = _fetal_manifest(dataset)
    extra: dict[str, Any] = {"ensemble": {"members": int(members)}}
    for key, value in (overrides or {}).items():
        extra[key] = {**extra[key], **value} if isinstance(value, Mapping) and key in extra else value
    job = TrainingJob.create(
        manifest,
        output_dir,
        preset=DEFAULT_PRESET,
        loss=loss,
        loss_options=loss_options,
        epochs=epochs,
        device=device,
        network={"features": list(features or DEFAULT_FEATURES)},
        overrides=extra,
        python_executable=python_executable,
    )
    return job.start() if start else job


def dataset_spacing(dataset: str | os.PathLike) -> list[float]:
    """The voxel spacing (mm, (i, j, k)) of the dataset's images (checked equal across cases).

    Raises:
        ValueError: cases with different spacings (train on a resampled dataset, or give the spacing).
    """
    manifest, raw = _fetal_manifest(dataset)
    spacings = []
    for case in raw.get("cases") or []:
        image = case["image"][0] if isinstance(case["image"], list) else case["image"]
        spacings.append(tuple(round(s, 4) for s in _io.read_image(manifest.parent / image).geometry.spacing))
    if not spacings:
        raise ValueError(f"{manifest} lists no case")
    if len(set(spacings)) > 1:
        raise ValueError(
            f"{manifest}: the cases have different spacings {sorted(set(spacings))}; give the model's spacing"
        )
    return [float(s) for s in spacings[0]]


def register_trained_model(
    job: TrainingJob,
    name: str,
    *,
    spacing: list[float] | None = None,
    task: str = "fetal brain parcellation (8 tissues), T2w MRI",
) -> Path:
    """Write a model card for a finished training run (its output folder), so that the model is found by
    name (with ``LOSSLAB_MODELS_DIR`` pointing at the folder above it) or by folder. The grid spacing is the
    dataset's (:func:`dataset_spacing`) unless given. The card's ``input.mask`` is ``"required"`` unless
    the run used ``augmentation.foreground_mask`` (:func:`losslab.models.trained_mask_policy`): parcellating
    then refuses to run without a brain mask. Returns the card's path.

    Raises:
        RuntimeError: the run has not produced a model yet.
    """
    from losslab import models

    model = job.model_path
    if model is None:
        raise RuntimeError(f"the training run in {job.output_dir} has not finished: no model to register")
    folder = Path(job.output_dir)
    entry = (
        "."
        if Path(model).resolve() == folder.resolve()
        else Path(model).resolve().relative_to(folder.resolve()).as_posix()
    )
    if spacing is None:
        spacing = dataset_spacing(job.config["data"]["manifest"])
    files = [p.relative_to(folder).as_posix() for p in sorted(folder.rglob("model.pt"))]
    if (folder / "ensemble.json").is_file():
        files.append("ensemble.json")
    card = {
        "name": name,
        "task": task,
        "format": "losslab-engine-ensemble" if entry == "." else "losslab-engine",
        "entry": entry,
        "grid": {"spacing_mm": [float(s) for s in spacing]},
        # a brain mask is required unless training showed the model unmasked inputs too
        "input": {"mask": models.trained_mask_policy(job.config)},
        "labels": list(LABEL_NAMES),
        "training": {
            "loss": job.config["loss"]["name"],
            "epochs": job.config["epochs"],
            "dataset": job.config["data"]["manifest"],
        },  # fmt: skip
    }
    return models.register_model(folder, card, files=files)
