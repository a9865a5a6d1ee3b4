"""Inference: one checkpoint or an ensemble, any volume size, numpy or files, GPU or CPU.

>>> from losslab.engine import load_predictor
>>> predictor = load_predictor("runs/fetal/model.pt")          # or an ensemble folder
>>> result = predictor.predict(volume)                         # (C, *spatial) or (*spatial) numpy / tensor
>>> result.probabilities.shape, result.labels.shape            # (K, *spatial) float32, (*spatial) int64
>>> predictor.predict_files(["t2.nii.gz"], "seg.nii.gz")       # keeps origin, spacing and direction

Sizes that do not divide by the network's pooling factor are padded and cropped back
(:class:`~losslab.nets.UNet`).
With ``window`` set (from the checkpoint's ``inference.window`` or the call), volumes larger than the window
are predicted by overlapping sliding windows whose logits are averaged; a model without that setting uses
windows of its training patch size for volumes above ``Predictor.max_whole_voxels`` (256^3).
"""

from __future__ import annotations

import itertools
import json
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from ..nets import UNet, fuse_batch_norm
from . import _io
from .checkpoint import load_checkpoint
from .data import normalize_intensity
from .device import amp_dtype, autocast, select_device


def _starts(size: int, window: int, step: int) -> list[int]:
    if size <= window:
        return [0]
    starts = list(range(0, size - window, step)) + [size - window]
    return sorted(set(starts))


def predict_logits(
    model: nn.Module,
    image: torch.Tensor,
    window: Sequence[int] | None = None,
    overlap: float = 0.5,
    dtype: torch.dtype | None = None,
) -> torch.Tensor:
    """Logits ``(B, K, *spatial)`` of ``model`` for ``image`` ``(B, C, *spatial)`` (already on its device).

    Without ``window`` (or when the volume fits in it) the whole volume goes through the network at once.
    Otherwise windows of that size, overlapping by ``overlap``, are averaged (uniform weights).
    """
    spatial = image.shape[2:]
    if window is None or all(s <= w for s, w in zip(spatial, window)):
        with autocast(image.device, dtype):
            return model(image).float()
    window = [min(int(w), s) for w, s in zip(window, spatial)]
    steps = [max(1, int(w * (1 - overlap))) for w in window]
    out = None
    count = torch.zeros((1, 1, *spatial), device=image.device)
    for corner in itertools.product(*[_starts(s, w, st) for s, w, st in zip(spatial, window, steps)]):
        region = tuple(slice(c, c + w) for c, w in zip(corner, window))
        with autocast(image.device, dtype):
            logits = model(image[(slice(None), slice(None), *region)]).float()
        if out is None:
            out = torch.zeros((image.shape[0], logits.shape[1], *spatial), device=image.device)
        out[(slice(None), slice(None), *region)] += logits
        count[(slice(None), slice(None), *region)] += 1
    return out / count


def logits_to_probabilities(logits: torch.Tensor) -> torch.Tensor:
    """Softmax over classes; one channel is a sigmoid foreground, made ``[background, foreground]``."""
    if logits.shape[1] == 1:
        p = torch.sigmoid(logits)
        return torch.cat([1 - p, p], dim=1)
    return torch.softmax(logits, dim=1)


def probabilities_to_labels(probabilities: torch.Tensor) -> torch.Tensor:
    """Arg-max over the class axis 0 of ``(K, *spatial)`` (first class on ties), int64.

    Two classes are compared directly: torch's CPU ``argmax`` over a leading axis is several times slower
    than the network's own time budget allows for an ICE edit.
    """
    if probabilities.shape[0] == 2:
        return (probabilities[1] > probabilities[0]).long()
    return probabilities.argmax(0)


@dataclass
class Prediction:
    """``probabilities`` ``(K, *spatial)`` float32 (ensemble mean) and ``labels`` ``(*spatial)`` int64."""

    probabilities: np.ndarray | torch.Tensor
    labels: np.ndarray | torch.Tensor


@dataclass
class ModelInfo:
    """What a checkpoint says about its inputs and outputs."""

    network: dict[str, Any]
    labels: list[str]
    channel_names: list[str]
    n_image_channels: int
    normalize: str
    window: list[int] | None
    overlap: float
    patch_size: list[int] | None = None
    path: Path | None = None


def _info_from_checkpoint(data: dict[str, Any], path: Path | None) -> ModelInfo:
    meta = data.get("model_info")
    if not meta:
        raise ValueError(f"checkpoint {str(path)!r} lacks 'model_info'; it was not written by losslab.engine")
    return ModelInfo(
        network=dict(meta["network"]),
        labels=list(meta["labels"]),
        channel_names=list(meta["channel_names"]),
        n_image_channels=int(meta["n_image_channels"]),
        normalize=str(meta["normalize"]),
        window=list(meta["window"]) if meta.get("window") else None,
        overlap=float(meta.get("overlap", 0.5)),
        patch_size=list(meta["patch_size"]) if meta.get("patch_size") else None,
        path=path,
    )


def ensemble_members(path: str | os.PathLike) -> list[Path]:
    """Checkpoint files of a model path: the file itself, or an ensemble folder's members.

    A folder lists its members in ``ensemble.json`` (``{"members": ["member0/model.pt", ...]}``, written by
    :func:`losslab.engine.train_ensemble`); without it, every ``*/model.pt`` (then ``model.pt``) is used.
    """
    path = Path(path)
    if path.is_file():
        return [path]
    if not path.is_dir():
        raise FileNotFoundError(
            f"model not found: {str(path)!r} (expected a checkpoint file or ensemble folder)"
        )
    index = path / "ensemble.json"
    if index.is_file():
        members = [path / m for m in json.loads(index.read_text(encoding="utf-8"))["members"]]
        missing = [str(m) for m in members if not m.is_file()]
        if missing:
            raise FileNotFoundError(f"ensemble {str(path)!r}: member checkpoint(s) missing: {missing}")
        return members
    members = sorted(path.glob("*/model.pt")) or sorted(path.glob("model.pt"))
    if not members:
        raise FileNotFoundError(
            f"no checkpoints in {str(path)!r}: expected ensemble.json, */model.pt or model.pt"
        )
    return members


class Predictor:
    """One model or an ensemble (probabilities averaged), ready to predict on one device.

    Build with :func:`load_predictor`. For speed on CPU (an ICE edit) the models are put in eval mode, batch
    norm is folded into the convolutions and 3D tensors use the channels-last layout; on CUDA, mixed
    precision is used unless ``amp=False``.
    """

    def __init__(self, models: Sequence[nn.Module], info: ModelInfo, device: torch.device, amp="auto"):
        self.models = list(models)
        self.info = info
        self.device = device
        self.dtype = amp_dtype(device, amp)
        self.channels_last = device.type != "mps" and info.network.get("spatial_dims", 3) == 3
        #: above this many voxels, a model trained without ``inference.window`` predicts by sliding windows
        #: of its training patch size (memory); below, the whole (padded) volume goes through at once.
        self.max_whole_voxels = 256**3

    @property
    def num_classes(self) -> int:
        return max(2, int(self.info.network["out_channels"]))

    def preprocess(self, image: np.ndarray | torch.Tensor) -> torch.Tensor:
        """Add the channel axis if missing, check the channel count, normalise the intensity channels."""
        tensor = torch.as_tensor(image)
        n_in = int(self.info.network["in_channels"])
        dims = int(self.info.network.get("spatial_dims", 3))
        if tensor.ndim == dims:
            tensor = tensor[None]
        if tensor.ndim != dims + 1 or tensor.shape[0] != n_in:
            raise ValueError(
                f"expected an image of shape ({n_in}, {', '.join(['*'] * dims)}) with channels "
                f"{self.info.channel_names}, got {tuple(tensor.shape)}"
            )
        tensor = tensor.to(self.device, torch.float32)
        if self.info.normalize != "none" and self.info.n_image_channels:
            tensor = tensor.clone()
            for c in range(self.info.n_image_channels):
                tensor[c] = normalize_intensity(tensor[c], self.info.normalize)
        return tensor

    @torch.inference_mode()
    def predict(
        self,
        image: np.ndarray | torch.Tensor,
        window: Sequence[int] | None | str = "checkpoint",
        overlap: float | None = None,
        normalize: bool = True,
    ) -> Prediction:
        """Probabilities and labels for one volume ``(C, *spatial)`` (or ``(*spatial)`` with one channel).

        Args:
            image: numpy array or tensor; a numpy input gives numpy outputs, a tensor gives tensors on the
                predictor's device.
            window: sliding-window size; None: the whole volume at once; ``"checkpoint"``: the trained
                model's ``inference.window``, or, when it has none, the whole volume up to
                ``max_whole_voxels`` (256^3) and windows of the training patch size above.
            overlap: overlap of the windows (default: the checkpoint's).
            normalize: apply the training's intensity normalisation to the image channels (turn off only when
                the input is already normalised).
        """
        as_numpy = not isinstance(image, torch.Tensor)
        if normalize:
            x = self.preprocess(image)[None]
        else:
            x = torch.as_tensor(image, dtype=torch.float32, device=self.device)
            x = x[None, None] if x.ndim == int(self.info.network.get("spatial_dims", 3)) else x[None]
        if self.channels_last and x.ndim == 5:
            x = x.contiguous(memory_format=torch.channels_last_3d)
        if window == "checkpoint":
            window = self.info.window
            if window is None and x[0, 0].numel() > self.max_whole_voxels:
                window = self.info.patch_size or [128] * (x.ndim - 2)
        overlap = self.info.overlap if overlap is None else overlap
        probs = None
        for model in self.models:
            p = logits_to_probabilities(predict_logits(model, x, window, overlap, self.dtype))
            probs = p if probs is None else probs + p
        probs = (probs / len(self.models))[0].contiguous()
        labels = probabilities_to_labels(probs)
        if as_numpy:
            return Prediction(
                probs.cpu().numpy().astype(np.float32, copy=False),
                labels.cpu().numpy().astype(np.int64, copy=False),
            )
        return Prediction(probs, labels)

    def predict_files(
        self,
        images: Sequence[str | os.PathLike] | str | os.PathLike,
        output: str | os.PathLike,
        probabilities: str | os.PathLike | None = None,
        **kwargs: Any,
    ) -> Path:
        """Read the input channel files, predict, write the label map (and optionally the probabilities as a
        vector image) with the first image's geometry. Returns the label map's path."""
        if isinstance(images, (str, os.PathLike)):
            images = [images]
        channels, geometry = [], None
        for file in images:
            array, geom = _io.read_image(file)
            if geometry is None:
                geometry = geom
            elif array.shape != channels[0].shape:
                raise ValueError(
                    f"{str(file)!r} has shape {array.shape}, the first image has {channels[0].shape}"
                )
            channels.append(array.astype(np.float32))
        n_in = int(self.info.network["in_channels"])
        if len(channels) == 1 and channels[0].ndim == int(self.info.network.get("spatial_dims", 3)) + 1:
            stacked = np.moveaxis(channels[0], -1, 0)  # one vector image holding all channels
        else:
            stacked = np.stack(channels)
        if stacked.shape[0] != n_in:
            raise ValueError(
                f"the model takes {n_in} input channel(s) {self.info.channel_names}; got {stacked.shape[0]} "
                f"image file(s): give one file per channel, in that order"
            )
        result = self.predict(stacked, **kwargs)
        out = _io.write_image(
            output, result.labels.astype(np.uint8 if self.num_classes < 256 else np.int32), geometry
        )
        if probabilities is not None:
            _io.write_image(probabilities, result.probabilities, geometry)
        return out


def build_model_from_checkpoint(data: dict[str, Any]) -> UNet:
    model = UNet(**data["model_info"]["network"])
    model.load_state_dict(data["model"])
    return model


def load_predictor(
    path: str | os.PathLike, device: str | torch.device = "auto", amp: str | bool = "auto", fuse: bool = True
) -> Predictor:
    """Load a checkpoint file or an ensemble folder (see :func:`ensemble_members`) for inference.

    Raises:
        FileNotFoundError: no model at ``path``.
        ValueError: not a LossLab checkpoint, or ensemble members that disagree on inputs / labels.
    """
    device = device if isinstance(device, torch.device) else select_device(str(device))
    models, info = [], None
    for member in ensemble_members(path):
        data = load_checkpoint(member)
        member_info = _info_from_checkpoint(data, member)
        if info is None:
            info = member_info
        elif (member_info.labels, member_info.channel_names, member_info.network["in_channels"]) != (
            info.labels,
            info.channel_names,
            info.network["in_channels"],
        ):
            raise ValueError(
                f"ensemble member {str(member)!r} has labels {member_info.labels} and channels "
                f"{member_info.channel_names}; the first member has {info.labels} and {info.channel_names}"
            )
        model = build_model_from_checkpoint(data).eval()
        if fuse:
            fuse_batch_norm(model)
        model = model.to(device)
        if device.type != "mps" and model.spatial_dims == 3:
            model = model.to(memory_format=torch.channels_last_3d)
        models.append(model)
    info.path = Path(path)
    return Predictor(models, info, device, amp)


def predict(
    model: str | os.PathLike | Predictor, image: np.ndarray | torch.Tensor, **kwargs: Any
) -> Prediction:
    """One-call inference: ``model`` is a checkpoint / ensemble path or a :class:`Predictor`."""
    predictor = model if isinstance(model, Predictor) else load_predictor(model)
    return predictor.predict(image, **kwargs)
