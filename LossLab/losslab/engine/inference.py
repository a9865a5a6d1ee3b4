"""Inference: one checkpoint or an ensemble, any volume size, numpy or files, GPU or CPU.

>>> from losslab.engine import load_predictor
>>> predictor = load_predictor("runs/fetal/model.pt")          # or an ensemble folder
>>> result = predictor.predict(volume)                         # (C, *spatial) or (*spatial) numpy / tensor
>>> result.probabilities.shape, result.labels.shape            # (K, *spatial) float32, (*spatial) int64
>>> predictor.predict_files(["t2.nii.gz"], "seg.nii.gz")       # keeps origin, spacing and direction

Sizes that do not divide by the network's pooling factor are padded and cropped back
(:class:`~losslab.nets.UNet`).
With ``window`` set (from the checkpoint's ``inference.window`` or the call), volumes larger than the window
are predicted by overlapping sliding windows, blended with Gaussian weights by MONAI's
``sliding_window_inference`` (imported only then); a model without that setting uses windows of its training
patch size for volumes above ``Predictor.max_whole_voxels`` (256^3).

Why MONAI's blending and not our former hand-written uniform average: measured with ``python
benchmarks/engine.py --tiling`` (a small U-Net trained on blobs, a 48^3 volume in windows of 24^3, 2 CPU
cores), the former code was no faster, and its probabilities were further from the whole-volume prediction
than the Gaussian blend's: by 3-7 % with instance norm, 1.8-3.5x with batch norm (figures in docs/engine.md,
"Sliding windows"). MONAI is a dependency of
``losslab`` (it needs only torch and numpy); it is imported lazily because its import costs about two seconds,
which the whole-volume path (an ICE edit) does not pay.
"""

from __future__ import annotations

import json
import math
import os
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from .. import io as _io
from ..nets import UNet, fuse_batch_norm
from .checkpoint import load_checkpoint
from .data import normalize_intensity
from .device import amp_dtype, autocast, select_device

#: suffixes of model files, so that a checkpoint given where an image goes (or the reverse) is named as such
CHECKPOINT_SUFFIXES = (".pt", ".pth", ".ckpt")
_USAGE = "usage: losslab infer MODEL IMAGE [IMAGE ...] -o OUTPUT"


def validate_window(window: Sequence[int] | int | None, spatial_dims: int) -> list[int] | None:
    """The sliding-window size as a list of ``spatial_dims`` positive ints (one value means a cube).

    Raises:
        ValueError: naming the value received, when it is not positive integers or has the wrong length.
    """
    if window is None:
        return None
    values = [window] if isinstance(window, (int, np.integer)) else list(window)
    if not values or not all(isinstance(v, (int, np.integer)) and not isinstance(v, bool) for v in values):
        raise ValueError(f"window must be {spatial_dims} positive integers (voxels), got {window!r}")
    if len(values) == 1:
        values = values * spatial_dims
    if len(values) != spatial_dims:
        raise ValueError(
            f"window {list(values)} has {len(values)} sizes; the model is {spatial_dims}D: give "
            f"{spatial_dims} sizes (or one, for a cube)"
        )
    if any(v <= 0 for v in values):
        raise ValueError(f"window sizes must be positive numbers of voxels, got {list(values)}")
    return [int(v) for v in values]


def validate_overlap(overlap: float) -> float:
    """``overlap`` as a float in [0, 1) (the fraction of a window shared with its neighbour).

    Raises:
        ValueError: naming the value received (negative leaves gaps, 1 or more never advances, NaN).
    """
    if isinstance(overlap, bool) or not isinstance(overlap, (int, float, np.floating, np.integer)):
        raise ValueError(f"overlap must be a number in [0, 1), got {overlap!r}")
    if not 0 <= float(overlap) < 1:  # also false for NaN
        raise ValueError(
            f"overlap must be in [0, 1) (the fraction of a window shared with its neighbour), got {overlap!r}"
        )
    return float(overlap)


def _scan_interval(size: int, roi: int, overlap: float) -> int:
    # MONAI's rule (monai.inferers.utils._get_scan_interval)
    return roi if roi == size else max(int(roi * (1 - overlap)), 1)


def count_windows(spatial: Sequence[int], window: Sequence[int] | None, overlap: float) -> int:
    """How many windows :func:`predict_logits` runs for a volume of size ``spatial`` (1: the whole volume)."""
    if window is None or all(s <= w for s, w in zip(spatial, window)):
        return 1
    total = 1
    for s, w in zip(spatial, window):
        roi = min(int(w), int(s))
        step = _scan_interval(int(s), roi, overlap)
        total *= 1 if roi >= s else math.ceil((s - roi) / step) + 1
    return total


def _sliding_window_inference():
    try:
        from monai.inferers import sliding_window_inference
    except ImportError as exc:  # MONAI is a dependency: only a broken install gets here
        raise ImportError(
            "sliding-window inference needs MONAI (pip install 'monai>=1.3'); or predict the whole volume "
            f"at once (window=None): {exc}"
        ) from exc
    return sliding_window_inference


def predict_logits(
    model: nn.Module,
    image: torch.Tensor,
    window: Sequence[int] | None = None,
    overlap: float = 0.5,
    dtype: torch.dtype | None = None,
    progress: Callable[[int], Any] | None = None,
    input_dtype: torch.dtype | None = None,
) -> torch.Tensor:
    """Logits ``(B, K, *spatial)`` of ``model`` for ``image`` ``(B, C, *spatial)`` (already on its device).

    Without ``window`` (or when the volume fits in it) the whole volume goes through the network at once.
    Otherwise MONAI's ``sliding_window_inference`` runs windows of that size (clipped to the volume),
    overlapping by ``overlap``, and blends their logits with Gaussian weights (sigma = 1/8 of the window),
    so voxels near a window's border, which see less context, count less.

    Args:
        window: one size per spatial axis (one value: a cube), positive.
        overlap: in [0, 1).
        dtype: autocast dtype (None: float32).
        progress: called with the number of windows just run (for a progress bar).
        input_dtype: cast each window to this dtype before the network (a model with bfloat16 weights);
            the logits are float32 either way, and so is the blending.

    Raises:
        ValueError: a window or overlap out of range (the message names the value).
    """
    spatial = tuple(image.shape[2:])
    window = validate_window(window, len(spatial))
    overlap = validate_overlap(overlap)

    def run(patch: torch.Tensor) -> torch.Tensor:
        if input_dtype is not None:
            patch = patch.to(input_dtype)
        with autocast(image.device, dtype):
            out = model(patch).float()
        if progress is not None:
            progress(int(patch.shape[0]))
        return out

    if window is None or all(s <= w for s, w in zip(spatial, window)):
        return run(image)
    roi = [min(w, s) for w, s in zip(window, spatial)]
    return _sliding_window_inference()(
        image, roi, 1, run, overlap=overlap, mode="gaussian", sigma_scale=0.125
    )


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


def _is_image_name(path: Path) -> bool:
    name = path.name.lower()
    return any(name.endswith(s) for s in (_io.SEG_SUFFIX, *_io.IMAGE_SUFFIXES))


def _read_ensemble_index(index: Path) -> list[str]:
    text = index.read_text(encoding="utf-8")
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        what = "is empty" if not text.strip() else f"is not valid JSON ({exc.msg} at line {exc.lineno})"
        raise ValueError(
            f'ensemble index {str(index)!r} {what}; expected {{"members": ["member0/model.pt", ...]}}'
        ) from None
    members = data.get("members") if isinstance(data, dict) else None
    if not isinstance(members, list) or not members or not all(isinstance(m, str) and m for m in members):
        raise ValueError(
            f'ensemble index {str(index)!r} must hold a non-empty list of checkpoint paths under "members" '
            f'(e.g. {{"members": ["member0/model.pt"]}}), got {json.dumps(data)[:120]}'
        )
    return members


def ensemble_members(path: str | os.PathLike) -> list[Path]:
    """Checkpoint files of a model path: the file itself, or an ensemble folder's members.

    A folder lists its members in ``ensemble.json`` (``{"members": ["member0/model.pt", ...]}``, written by
    :func:`losslab.engine.train_ensemble`); without it, every ``*/model.pt`` (then ``model.pt``) is used.

    Raises:
        FileNotFoundError: no such file or folder, or a listed member is missing.
        ValueError: ``path`` is an image (model and image swapped), or ``ensemble.json`` is empty, not JSON
            or has no list of members (the message names the file).
    """
    path = Path(path)
    if path.is_file() and _is_image_name(path):
        raise ValueError(
            f"{str(path)!r} is an image, not a model (a checkpoint file or ensemble folder): were the model "
            f"and the image swapped? {_USAGE}"
        )
    if path.is_file():
        return [path]
    if not path.is_dir():
        raise FileNotFoundError(
            f"model not found: {str(path)!r} (expected a checkpoint file, an ensemble folder or a registered model's name: losslab models)"
        )
    index = path / "ensemble.json"
    if index.is_file():
        members = [path / m for m in _read_ensemble_index(index)]
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


def check_output_paths(
    inputs: Sequence[str | os.PathLike],
    outputs: dict[str, str | os.PathLike | None],
    overwrite: bool | None = None,
) -> None:
    """Refuse, before any work, outputs that would overwrite an input or each other, or cannot be written
    (:func:`losslab.io.check_outputs`, the rule of every command that writes), or are not image files.

    Args:
        inputs: files read (images, checkpoints).
        outputs: ``{what: path}`` of the files to write (None entries are skipped); ``what`` names the output in
            messages ("label map", "probabilities").
        overwrite: ``False``: an existing output is refused (the command line's ``--overwrite`` allows it);
            ``None`` (library calls): existing outputs are replaced.

    Raises:
        ValueError: an output that resolves (also through symbolic or hard links) to an input or to another
            output, exists without ``overwrite``, is a folder, or has a suffix no image writer knows.
    """
    for what, out in outputs.items():
        if out is None:
            continue
        if Path(out).is_dir():
            raise ValueError(
                f"the {what} output {str(out)!r} is a folder; give a file name such as seg.nii.gz"
            )
        if not _is_image_name(Path(out)):
            raise ValueError(
                f"the {what} output {str(out)!r} has an unsupported suffix; expected one of "
                f"{', '.join((_io.SEG_SUFFIX, *_io.IMAGE_SUFFIXES))}"
            )
    _io.check_outputs(outputs, inputs, overwrite=overwrite)


class Predictor:
    """One model or an ensemble (probabilities averaged), ready to predict on one device.

    Build with :func:`load_predictor`. For speed on CPU (an ICE edit) the models are put in eval mode, batch
    norm is folded into the convolutions and 3D tensors use the channels-last layout; on CUDA, mixed
    precision is used unless ``amp=False``; with ``amp=True``, CPUs that compute bfloat16 natively
    (AVX512-BF16 / AMX) run the networks in bfloat16 (2-3x faster than float32; the probabilities are
    float32 again).
    """

    def __init__(
        self,
        models: Sequence[nn.Module],
        info: ModelInfo,
        device: torch.device,
        amp="auto",
        members: Sequence[Path] = (),
    ):
        self.info = info
        self.device = device
        self.dtype = amp_dtype(device, amp)
        #: on CPU, bfloat16 runs as bfloat16 weights and inputs (about 20 % faster than autocast there)
        self.input_dtype = torch.float32
        if self.dtype == torch.bfloat16 and device.type == "cpu":
            models = [m.to(torch.bfloat16) for m in models]
            self.input_dtype, self.dtype = torch.bfloat16, None
        self.models = list(models)
        self.channels_last = device.type != "mps" and info.network.get("spatial_dims", 3) == 3
        #: the checkpoint files the models came from (inputs that no output may overwrite)
        self.members = [Path(m) for m in members]
        #: above this many voxels, a model trained without ``inference.window`` predicts by sliding windows
        #: of its training patch size (memory); below, the whole (padded) volume goes through at once.
        self.max_whole_voxels = 256**3

    @property
    def num_classes(self) -> int:
        return max(2, int(self.info.network["out_channels"]))

    @property
    def spatial_dims(self) -> int:
        return int(self.info.network.get("spatial_dims", 3))

    def preprocess(self, image: np.ndarray | torch.Tensor) -> torch.Tensor:
        """Add the channel axis if missing, check the channel count and that every value is finite, normalise
        the intensity channels."""
        tensor = torch.as_tensor(image)
        n_in = int(self.info.network["in_channels"])
        dims = self.spatial_dims
        if tensor.ndim == dims:
            tensor = tensor[None]
        if tensor.ndim != dims + 1 or tensor.shape[0] != n_in:
            raise ValueError(
                f"expected an image of shape ({n_in}, {', '.join(['*'] * dims)}) with channels "
                f"{self.info.channel_names}, got {tuple(tensor.shape)}"
            )
        tensor = tensor.to(self.device, torch.float32)
        _check_finite(tensor, self.info.channel_names)
        if self.info.normalize != "none" and self.info.n_image_channels:
            tensor = tensor.clone()
            for c in range(self.info.n_image_channels):
                tensor[c] = normalize_intensity(tensor[c], self.info.normalize)
        return tensor

    def resolve_window(
        self, spatial: Sequence[int], window: Sequence[int] | int | None | str = "checkpoint"
    ) -> list[int] | None:
        """The window :meth:`predict` uses for a volume of size ``spatial`` (None: the whole volume)."""
        if isinstance(window, str):
            if window != "checkpoint":
                raise ValueError(f"window must be a list of sizes, None or 'checkpoint', got {window!r}")
            window = self.info.window
            if window is None and math.prod(spatial) > self.max_whole_voxels:
                window = self.info.patch_size or [128] * len(spatial)
        return validate_window(window, len(spatial))

    @torch.inference_mode()
    def predict(
        self,
        image: np.ndarray | torch.Tensor,
        window: Sequence[int] | None | str = "checkpoint",
        overlap: float | None = None,
        normalize: bool = True,
        progress: bool = False,
    ) -> Prediction:
        """Probabilities and labels for one volume ``(C, *spatial)`` (or ``(*spatial)`` with one channel).

        Args:
            image: numpy array or tensor; a numpy input gives numpy outputs, a tensor gives tensors on the
                predictor's device. Every value must be finite.
            window: sliding-window size (one per spatial axis, or one for a cube); None: the whole volume at
                once; ``"checkpoint"``: the trained model's ``inference.window``, or, when it has none, the
                whole volume up to ``max_whole_voxels`` (256^3) and windows of the training patch size above.
            overlap: overlap of the windows in [0, 1) (default: the checkpoint's).
            normalize: apply the training's intensity normalisation to the image channels (turn off only when
                the input is already normalised).
            progress: show a progress bar on stderr (tqdm) when the prediction takes more than a second
                (windows times ensemble members).

        Raises:
            ValueError: wrong shape or channel count, a NaN or infinite value, a window or overlap out of
                range (the message names the value).
        """
        overlap = validate_overlap(self.info.overlap if overlap is None else overlap)
        as_numpy = not isinstance(image, torch.Tensor)
        if normalize:
            x = self.preprocess(image)[None]
        else:
            x = torch.as_tensor(image, dtype=torch.float32, device=self.device)
            x = x[None, None] if x.ndim == self.spatial_dims else x[None]
            _check_finite(x[0], self.info.channel_names)
        window = self.resolve_window(tuple(x.shape[2:]), window)
        if self.channels_last and x.ndim == 5:
            x = x.contiguous(memory_format=torch.channels_last_3d)
        n_windows = count_windows(tuple(x.shape[2:]), window, overlap)
        bar = _progress_bar(n_windows * len(self.models), n_windows > 1, progress)
        probs = None
        try:
            for model in self.models:
                logits = predict_logits(
                    model, x, window, overlap, self.dtype, progress=bar.update, input_dtype=self.input_dtype
                )
                p = logits_to_probabilities(logits)
                probs = p if probs is None else probs + p
        finally:
            bar.close()
        probs = (probs / len(self.models))[0].contiguous()
        labels = probabilities_to_labels(probs)
        if as_numpy:
            return Prediction(
                probs.cpu().numpy().astype(np.float32, copy=False),
                labels.cpu().numpy().astype(np.int64, copy=False),
            )
        return Prediction(probs, labels)

    def read_inputs(self, images: Sequence[str | os.PathLike]) -> tuple[np.ndarray, _io.Geometry]:
        """The channel files as one float32 array ``(C, *spatial)`` and the first file's geometry.

        One scalar file per input channel, in training order, on one voxel grid; or one vector image whose
        components are the channels.

        Raises:
            FileNotFoundError: a file is missing.
            ValueError: a checkpoint where an image goes, an image of the wrong dimension, a vector image
                where scalar images are expected (or of the wrong number of components), channel files on
                different grids (naming the field), the wrong number of files, NaN or infinite values (naming
                the file).
        """
        dims, n_in, names = self.spatial_dims, int(self.info.network["in_channels"]), self.info.channel_names
        read = []
        for file in images:
            file = Path(file)
            if file.is_dir() or file.name.lower().endswith(CHECKPOINT_SUFFIXES):
                raise ValueError(
                    f"{str(file)!r} is a model, not an image: were the model and the image swapped? {_USAGE}"
                )
            image = _io.read_image(file, allow_vector=True)
            space = image.geometry.ndim
            if space != dims:
                raise ValueError(
                    f"{str(file)!r} is a {space}D image of shape {image.array.shape}; the model takes {dims}D "
                    f"images (channels {names})"
                )
            components = image.array.ndim - space
            if components and (len(images) > 1 or image.array.shape[-1] != n_in):
                raise ValueError(
                    f"{str(file)!r} is a vector image of {image.array.shape[-1]} components; the model takes "
                    f"{n_in} input channel(s) {names}: give one scalar image per channel"
                    + ("" if len(images) > 1 or n_in == 1 else f" (or one vector image of {n_in} components)")
                )
            read.append(image)
        if len(read) == 1 and read[0].array.ndim == dims + 1:
            stacked = np.moveaxis(read[0].array, -1, 0).astype(np.float32)  # one vector image: all channels
        else:
            if len(read) != n_in:
                raise ValueError(
                    f"the model takes {n_in} input channel(s) {names}; got {len(read)} image file(s): give one "
                    f"file per channel, in that order"
                )
            for k, other in enumerate(read[1:], start=1):
                _io.check_same_grid(read[0], other, names=(f"channel {names[0]!r}", f"channel {names[k]!r}"))
            stacked = np.stack([r.array.astype(np.float32) for r in read])
        for c in range(stacked.shape[0]):
            where = read[min(c, len(read) - 1)].path
            bad = int(np.count_nonzero(~np.isfinite(stacked[c])))
            if not bad and c < len(read):
                bad = nifti_nonfinite_count(where)  # ITK read them as 0
            if bad:
                raise ValueError(
                    f"{str(where)!r} has {bad} NaN or infinite voxel(s) (channel {names[c]!r}); inference "
                    f"needs finite intensities: fill or mask them first"
                )
        return stacked, read[0].geometry

    def predict_files(
        self,
        images: Sequence[str | os.PathLike] | str | os.PathLike,
        output: str | os.PathLike,
        probabilities: str | os.PathLike | None = None,
        **kwargs: Any,
    ) -> Path:
        """Read the input channel files, predict, write the label map (and optionally the probabilities as a
        vector image) with the first image's geometry. Returns the label map's path.

        Before reading anything, outputs that would overwrite an input (image or checkpoint, also through
        links) or each other are refused, and so are windows and overlaps out of range. ``kwargs`` go to
        :meth:`predict` (``window``, ``overlap``, ``normalize``, ``progress``).

        Raises:
            FileNotFoundError: an image is missing.
            ValueError: see :func:`check_output_paths`, :meth:`read_inputs` and :meth:`predict`.
        """
        if isinstance(images, (str, os.PathLike)):
            images = [images]
        images = [Path(f) for f in images]
        check_output_paths([*images, *self.members], {"label map": output, "probabilities": probabilities})
        if probabilities is not None and str(probabilities).lower().endswith(_io.SEG_SUFFIX):
            raise ValueError(
                f"the probabilities output {str(probabilities)!r} cannot be a .seg.nrrd (a vector image): "
                f"use .nrrd or .nii.gz"
            )
        if kwargs.get("overlap") is not None:
            validate_overlap(kwargs["overlap"])
        window = kwargs.get("window", "checkpoint")
        if window is not None and not isinstance(window, str):
            validate_window(window, self.spatial_dims)
        stacked, geometry = self.read_inputs(images)
        result = self.predict(stacked, **kwargs)
        out = _io.write_image(
            output, result.labels.astype(np.uint8 if self.num_classes < 256 else np.int32), geometry
        )
        if probabilities is not None:
            _io.write_image(probabilities, result.probabilities, geometry, vector=True)
        return out


_NIFTI_FLOAT_TYPES = {16: "f4", 64: "f8"}  # NIfTI-1 datatype codes of float32 / float64


def nifti_nonfinite_count(path: str | os.PathLike) -> int:
    """How many NaN / infinite voxels a float NIfTI-1 file holds on disk (0 for other files).

    ITK's NIfTI reader (SimpleITK, Slicer) silently reads NaN and inf as 0, so an image with undefined
    voxels would be segmented as if they were intensity 0; this reads the stored values themselves.
    """
    import gzip

    path = Path(path)
    name = path.name.lower()
    if not (name.endswith(".nii") or name.endswith(".nii.gz")):
        return 0
    opener = gzip.open if name.endswith(".gz") else open
    try:
        with opener(path, "rb") as handle:
            header = handle.read(348)
            if len(header) < 348:
                return 0
            order = "<" if int.from_bytes(header[:4], "little") == 348 else ">"
            datatype = int(np.frombuffer(header, f"{order}i2", 1, 70)[0])
            if datatype not in _NIFTI_FLOAT_TYPES:
                return 0
            offset = max(352, int(np.frombuffer(header, f"{order}f4", 1, 108)[0]))
            handle.read(offset - 348)
            bad = 0
            dtype = np.dtype(order + _NIFTI_FLOAT_TYPES[datatype])
            while chunk := handle.read(dtype.itemsize * (1 << 20)):
                usable = len(chunk) - len(chunk) % dtype.itemsize
                bad += int(np.count_nonzero(~np.isfinite(np.frombuffer(chunk[:usable], dtype))))
            return bad
    except (OSError, EOFError, ValueError):  # unreadable here: ITK's reader reports that file itself
        return 0


def _check_finite(tensor: torch.Tensor, channel_names: Sequence[str]) -> None:
    # A finite float64 sum of the float32 values means that every value is finite (a NaN or an infinity
    # makes the sum NaN or infinite; float32 values cannot overflow a float64 sum of this size): one pass,
    # no boolean temporary. Otherwise the exact count below.
    if tensor.dtype == torch.float32 and bool(torch.isfinite(tensor.sum(dtype=torch.float64))):
        return
    finite = torch.isfinite(tensor)
    if not bool(finite.all()):
        per_channel = (~finite).reshape(tensor.shape[0], -1).sum(1).tolist()
        c = next(i for i, n in enumerate(per_channel) if n)
        name = channel_names[c] if c < len(channel_names) else c
        raise ValueError(
            f"the image has {int(sum(per_channel))} NaN or infinite value(s) (first in channel {name!r}); "
            f"inference needs finite intensities"
        )


class _NoBar:
    """The progress bar when none is shown: counts nothing, closes nothing."""

    def update(self, n: int = 1) -> None:
        """No bar to advance."""

    def close(self) -> None:
        """No bar to close."""


def _progress_bar(total: int, windows: bool, enabled: bool):
    """A tqdm bar on stderr that appears only after a second (tqdm's ``delay``), or a no-op."""
    if not enabled:
        return _NoBar()
    from tqdm.auto import tqdm

    return tqdm(
        total=total,
        unit="window" if windows else "model",
        desc="inference",
        file=sys.stderr,
        delay=1.0,
        leave=False,
    )


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
    members = ensemble_members(path)
    for member in members:
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
    return Predictor(models, info, device, amp, members=members)


def predict(
    model: str | os.PathLike | Predictor, image: np.ndarray | torch.Tensor, **kwargs: Any
) -> Prediction:
    """One-call inference: ``model`` is a checkpoint / ensemble path or a :class:`Predictor`."""
    predictor = model if isinstance(model, Predictor) else load_predictor(model)
    return predictor.predict(image, **kwargs)
