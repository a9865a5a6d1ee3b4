"""The editing step of ice-editing-shahin2023 (Sec. 2.2, Fig. 2): scribble -> heatmap u -> f(x, y_init, u).

One function for every caller (the evaluation protocol, the demo, the ICEEditing Slicer module, the web app):
:meth:`EditingModel.edit` takes the sparse image ``x``, the current segmentation ``y_init`` and the scribble
voxels, encodes the scribble as ``u`` with :func:`losslab.ice.interactions.encode` (the one attention map of
LossLab) and returns the edited mask ``y_hat`` with what changed near the scribble and far from it.

Arrays are ``(k, j, i)`` with ``spacing`` in the same order (mm), as everywhere in :mod:`losslab.ice`.
The network's inputs are the three channels ``(x, y_init, u)`` in that order (Sec. 3.2); a model trained by
:mod:`losslab.engine` records them in its checkpoint, and the intensity normalisation of ``x`` is the one
it was trained with.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .interactions import PAPER_SIGMA_MM, encode

#: ``near`` / ``far`` split of the edit statistics, as the editing metric's (A >= 0.5).
NEAR_THRESHOLD = 0.5


def edit_changes(
    before: np.ndarray, after: np.ndarray, attention: np.ndarray, near: float = NEAR_THRESHOLD
) -> dict[str, int]:
    """Voxels added and removed near the scribble (``A >= near``) and far from it.

    Returns:
        ``{"added_near", "removed_near", "added_far", "removed_far"}`` (voxel counts).
    """
    before = np.asarray(before, bool)
    after = np.asarray(after, bool)
    if before.shape != after.shape or before.shape != np.shape(attention):
        raise ValueError(
            f"before {before.shape}, after {after.shape} and attention {np.shape(attention)} must share a shape"
        )
    is_near = np.asarray(attention) >= near
    added = after & ~before
    removed = before & ~after
    return {
        "added_near": int(np.count_nonzero(added & is_near)),
        "removed_near": int(np.count_nonzero(removed & is_near)),
        "added_far": int(np.count_nonzero(added & ~is_near)),
        "removed_far": int(np.count_nonzero(removed & ~is_near)),
    }


@dataclass
class EditResult:
    """One edit: ``mask`` is ``y_hat`` (bool), ``probability`` its foreground probability, ``u`` the input
    heatmap, ``attention`` the same map used to split ``changes`` into near / far."""

    mask: np.ndarray
    probability: np.ndarray
    u: np.ndarray
    attention: np.ndarray
    changes: dict[str, int]


class EditingModel:
    """An editing network ``f(x, y_init, u)`` ready to edit, on one device.

    Build with :meth:`load` (a registered model's name, a checkpoint file or an ensemble folder), or from an
    engine :class:`~losslab.engine.inference.Predictor`.

    Args:
        predictor: the loaded network(s); three input channels ``(x, y_init, u)``.
        sigma_mm: sigma of the heatmap ``u`` in mm (the paper's 20 voxels of 1.1024 mm by default; a model's
            card records the sigma it was trained with).
        name: shown in histories and reports.
    """

    def __init__(self, predictor, sigma_mm: float = PAPER_SIGMA_MM, name: str | None = None):
        n_in = int(predictor.info.network["in_channels"])
        if n_in != 3:
            raise ValueError(
                f"an editing model takes 3 input channels (x, y_init, u); {name or 'this model'} takes {n_in}"
            )
        if not sigma_mm > 0:
            raise ValueError(f"sigma_mm must be > 0, got {sigma_mm}")
        self.predictor = predictor
        self.sigma_mm = float(sigma_mm)
        self.name = name or "editing model"

    @classmethod
    def load(
        cls,
        model: str | os.PathLike,
        *,
        root: str | os.PathLike | None = None,
        device: str = "auto",
        sigma_mm: float | None = None,
        progress: Callable[[str], None] | None = None,
        amp: bool | str = True,
    ) -> EditingModel:
        """Load a registered model by name (its checksum verified, its card's ``sigma_mm`` used), or a
        checkpoint / ensemble folder by path (``sigma_mm`` given, or the paper's).

        ``amp=True`` (default, for interactive speed): the network runs in bfloat16 on CPUs that compute it
        natively (AVX512-BF16 / AMX: a 128^3 edit about 2x faster) and in mixed precision on CUDA; float32 on
        other CPUs. ``amp=False``: float32 everywhere (bit-reproducible across machines). In our tests the
        two disagree on about 0.02 % of the voxels, all at the decision boundary.

        Raises:
            FileNotFoundError: neither a registered name nor an existing path.
            losslab.models.ModelChecksumError: a registered model's files do not match its card.
        """
        from .. import models
        from ..engine.inference import load_predictor

        if progress:
            progress(f"loading editing model {model}")
        path = Path(model)
        card_sigma = None
        if path.exists():
            name = path.name if path.is_dir() else path.parent.name
        else:
            card = models.get_card(str(model), root=root)
            path = models.model_path(str(model), root=root)
            name = card.name
            card_sigma = card.raw.get("sigma_mm")
        predictor = load_predictor(path, device=device, amp=amp)
        sigma = sigma_mm if sigma_mm is not None else card_sigma if card_sigma is not None else PAPER_SIGMA_MM
        return cls(predictor, sigma_mm=float(sigma), name=name)

    def edit(
        self,
        image: np.ndarray,
        initial: np.ndarray,
        scribble: np.ndarray,
        spacing: Sequence[float],
        *,
        sigma_mm: float | None = None,
        strict_threshold: float | None = None,
    ) -> EditResult:
        """Edit ``initial`` with one scribble.

        Args:
            image: the sparse volume ``x`` ``(k, j, i)``.
            initial: ``y_init``, a binary mask on the same grid.
            scribble: the scribble's voxels, a binary mask on the same grid (at least one voxel).
            spacing: ``(k, j, i)`` voxel size in mm.
            sigma_mm: override the model's heatmap sigma (e.g. adapted to the size of the error region).
            strict_threshold: "strict local" (beyond the paper, off by default): voxels where the attention
                map is below this value keep ``y_init`` exactly.

        Raises:
            ValueError: shapes differ, the scribble is empty, or an argument is out of range.
        """
        image = np.asarray(image, np.float32)
        initial = np.asarray(initial)
        scribble = np.asarray(scribble)
        if not (image.shape == initial.shape == scribble.shape) or image.ndim != 3:
            raise ValueError(
                f"image {image.shape}, initial {initial.shape} and scribble {scribble.shape} must be 3D "
                "volumes on one grid"
            )
        if len(spacing) != 3:
            raise ValueError(f"spacing must have 3 values (k, j, i) in mm, got {tuple(spacing)}")
        if not np.any(scribble):
            raise ValueError("the scribble holds no voxel of the grid: draw it on the volume")
        if strict_threshold is not None and not 0.0 < strict_threshold <= 1.0:
            raise ValueError(f"strict_threshold must be in (0, 1], got {strict_threshold}")
        sigma = self.sigma_mm if sigma_mm is None else float(sigma_mm)
        if not sigma > 0:
            raise ValueError(f"sigma_mm must be > 0, got {sigma_mm}")
        initial = initial.astype(bool)
        u = encode(scribble.astype(bool), spacing, sigma).astype(np.float32)
        prediction = self.predictor.predict(np.stack([image, initial.astype(np.float32), u]))
        probability = np.asarray(prediction.probabilities[1], np.float32)
        mask = np.asarray(prediction.labels) == 1
        if strict_threshold is not None:
            mask = np.where(u >= strict_threshold, mask, initial)
        return EditResult(mask, probability, u, u, edit_changes(initial, mask, u))
