"""The training and inference engine: datasets with a JSON manifest, config-driven runs, checkpoints,
resume, ensembles, torch.distributed, and inference from numpy or files.

What a GUI calls (see ``docs/engine.md``):

- :func:`train` / :func:`run` / :func:`train_ensemble` with ``progress=callback`` and
  ``stop=threading.Event()``;
- ``python -m losslab.engine.worker CONFIG [key=value ...] [--resume]``: the same in a background process,
  streaming JSON lines (one event per line) on stdout; SIGTERM / SIGINT stop it cleanly;
- :func:`load_predictor` then ``Predictor.predict(array)`` for in-process inference (one ICE edit).
"""

from __future__ import annotations

from .checkpoint import RunFolderError, load_checkpoint, read_ensemble_manifest, save_checkpoint
from .config import DEFAULTS, ConfigError, apply_overrides, load_config, validate_config
from .data import DatasetError, Manifest, VolumeDataset, load_manifest, split_cases
from .device import select_device
from .ensemble import ensemble_configs, run, train_ensemble
from .inference import Prediction, Predictor, ensemble_members, load_predictor, predict, predict_logits
from .trainer import TrainingDiverged, TrainResult, build_loss, dice_per_class, train

__all__ = [
    "DEFAULTS",
    "ConfigError",
    "DatasetError",
    "Manifest",
    "Prediction",
    "Predictor",
    "RunFolderError",
    "TrainResult",
    "TrainingDiverged",
    "VolumeDataset",
    "apply_overrides",
    "build_loss",
    "dice_per_class",
    "ensemble_configs",
    "ensemble_members",
    "load_checkpoint",
    "load_config",
    "load_manifest",
    "load_predictor",
    "predict",
    "predict_logits",
    "read_ensemble_manifest",
    "run",
    "save_checkpoint",
    "select_device",
    "split_cases",
    "train",
    "train_ensemble",
    "validate_config",
]
