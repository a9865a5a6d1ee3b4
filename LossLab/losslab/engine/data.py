"""Datasets a user can make by hand: a folder of images and label maps with a JSON manifest.

Manifest (``dataset.json``; paths relative to the manifest's folder)::

    {
      "name": "fetal-partial",
      "labels": ["background", "white matter", "ventricles", "cerebellum"],
      "label_sets": {"4": [2, 3]},            # optional: set label -> leaf labels (partial annotations)
      "extra_channels": ["initial", "heatmap"],  # optional: extra input channels, in this order
      "cases": [
        {"id": "case01", "image": "images/case01.nii.gz", "label": "labels/case01.nii.gz",
         "extra": {"initial": "initial/case01.nii.gz", "heatmap": "heatmaps/case01.nii.gz"}},
        {"id": "case02", "image": ["t2/case02.nrrd", "t1/case02.nrrd"], "label": "labels/case02.seg.nrrd"}
      ],
      "splits": {"train": ["case01"], "val": ["case02"], "test": []}   # optional
    }

``image`` is one file or a list (one file per intensity channel; all cases must have the same number).
Intensity channels are normalised (``data.normalize``); extra channels are used as they are. The network
input is the image channels followed by the extra channels. Label values are leaf labels ``0..len(labels)-1``
or set labels listed in ``label_sets`` (the label-set paper's convention: set labels above the leaves).
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from .. import io as _io


class DatasetError(ValueError):
    """The manifest or a data file is missing or inconsistent (the message names the case and file)."""


@dataclass
class Case:
    id: str
    images: list[Path]
    label: Path | None
    extra: list[Path] = field(default_factory=list)


@dataclass
class Manifest:
    """A parsed, checked manifest. ``channel_names`` lists the network's input channels in order."""

    path: Path
    name: str
    labels: list[str]
    label_sets: dict[int, list[int]]
    extra_channels: list[str]
    cases: dict[str, Case]
    splits: dict[str, list[str]]
    n_image_channels: int

    @property
    def channel_names(self) -> list[str]:
        if self.n_image_channels == 1:
            names = ["image"]
        else:
            names = [f"image{i}" for i in range(self.n_image_channels)]
        return names + list(self.extra_channels)

    @property
    def num_classes(self) -> int:
        return len(self.labels)

    def channel_index(self, channel: int | str) -> int:
        """Index of an input channel given by index or name (``image``, ``image0``, an extra channel)."""
        names = self.channel_names
        if isinstance(channel, int):
            if not 0 <= channel < len(names):
                raise DatasetError(f"input channel index {channel} out of range; channels are {names}")
            return channel
        if channel not in names:
            raise DatasetError(f"unknown input channel {channel!r}; channels are {names}")
        return names.index(channel)


def _need(entry: dict, key: str, where: str):
    if key not in entry:
        raise DatasetError(f"{where} lacks the key {key!r}")
    return entry[key]


def load_manifest(path: str | os.PathLike, check_files: bool = True) -> Manifest:
    """Read and check a dataset manifest (see the module docstring for the format).

    Raises:
        FileNotFoundError: the manifest, or (with ``check_files``) a file it lists, does not exist.
        DatasetError: the manifest is malformed; the message names the key or case.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"dataset manifest not found: {str(path)!r}")
    try:
        raw = json.loads(_io.read_text(path, "dataset manifest"))
    except json.JSONDecodeError as exc:
        raise DatasetError(f"manifest {str(path)!r} is not valid JSON: {exc}") from None
    where = f"manifest {str(path)!r}"
    if not isinstance(raw, dict):
        raise DatasetError(f"{where} must hold a JSON object")
    labels = _need(raw, "labels", where)
    if isinstance(labels, dict):  # {"0": "background", ...}
        try:
            keys = sorted(int(k) for k in labels)
        except ValueError:
            raise DatasetError(f"{where}: 'labels' keys must be integers, got {sorted(labels)}") from None
        if keys != list(range(len(keys))):
            raise DatasetError(f"{where}: 'labels' must number the labels 0..N-1, got {keys}")
        labels = [labels[str(k)] if str(k) in labels else labels[k] for k in keys]
    if not isinstance(labels, list) or len(labels) < 2 or not all(isinstance(n, str) for n in labels):
        raise DatasetError(
            f"{where}: 'labels' must list at least 2 label names (background first), got {labels!r}"
        )
    from ..losses.label_set import validate_label_sets

    try:  # the one validation of label sets, shared with the losses
        checked = validate_label_sets(raw.get("label_sets") or {}, num_classes=len(labels))
    except ValueError as exc:
        raise DatasetError(f"{where}: {exc}") from None
    label_sets: dict[int, list[int]] = {s: list(leaves) for s, leaves in checked.items()}
    extra_channels = raw.get("extra_channels") or []
    if not isinstance(extra_channels, list) or not all(isinstance(c, str) for c in extra_channels):
        raise DatasetError(f"{where}: 'extra_channels' must list channel names, got {extra_channels!r}")
    base = path.resolve().parent
    cases: dict[str, Case] = {}
    n_image = None
    entries = _need(raw, "cases", where)
    if not isinstance(entries, list) or not entries:
        raise DatasetError(f"{where}: 'cases' must be a non-empty list of case objects")
    for i, entry in enumerate(entries):
        if not isinstance(entry, dict):
            raise DatasetError(f"{where}: cases[{i}] must be an object, got {entry!r}")
        cid = str(entry.get("id", f"case{i:03d}"))
        if cid in cases:
            raise DatasetError(f"{where}: case id {cid!r} appears twice")
        cwhere = f"{where}, case {cid!r}"
        images = _need(entry, "image", cwhere)
        images = [images] if isinstance(images, str) else images
        if not isinstance(images, list) or not images or not all(isinstance(p, str) for p in images):
            raise DatasetError(f"{cwhere}: 'image' must be a path or a list of paths, got {images!r}")
        if n_image is None:
            n_image = len(images)
        elif len(images) != n_image:
            raise DatasetError(f"{cwhere}: has {len(images)} image channels, other cases have {n_image}")
        extra_entry = entry.get("extra") or {}
        if isinstance(extra_entry, list):
            extra_entry = dict(zip(extra_channels, extra_entry))
        missing = [c for c in extra_channels if c not in extra_entry]
        if missing:
            raise DatasetError(f"{cwhere}: lacks the extra channel(s) {missing} declared in 'extra_channels'")
        label = entry.get("label")
        case = Case(
            cid,
            [base / p for p in images],
            base / label if label else None,
            [base / extra_entry[c] for c in extra_channels],
        )
        if check_files:
            for file in [*case.images, *case.extra, *([case.label] if case.label else [])]:
                if not file.is_file():
                    raise FileNotFoundError(f"{cwhere}: file not found: {str(file)!r}")
        cases[cid] = case
    splits = raw.get("splits") or {}
    if not isinstance(splits, dict):
        raise DatasetError(f"{where}: 'splits' must map split names to lists of case ids")
    for name, ids in splits.items():
        if not isinstance(ids, list):
            raise DatasetError(f"{where}: split {name!r} must be a list of case ids, got {ids!r}")
        unknown = [c for c in ids if str(c) not in cases]
        if unknown:
            raise DatasetError(f"{where}: split {name!r} names unknown case(s) {unknown}")
    splits = {name: [str(c) for c in ids] for name, ids in splits.items()}
    return Manifest(
        path,
        str(raw.get("name", path.parent.name)),
        labels,
        label_sets,
        extra_channels,
        cases,
        splits,
        n_image,
    )


def split_cases(
    manifest: Manifest,
    train_splits: Sequence[str],
    val_split: str,
    val_fraction: float,
    seed: int,
    keep_in_train: Sequence[str] = (),
) -> tuple[list[str], list[str]]:
    """Training and validation case ids.

    Training cases are the union of ``train_splits`` (all labelled cases when the manifest has no splits).
    Validation is ``val_split`` when the manifest has it; otherwise a random ``val_fraction`` of the training
    cases (at least one when the fraction is positive), drawn with ``seed``: ensemble members use different
    seeds, hence different splits, as in the label-set paper. The cases of the ``keep_in_train`` splits are
    never drawn for that random validation (e.g. the one fully annotated volume of a partially annotated
    set, without which a member would see no label of the scarce tissues); with none given the draw is the
    same as before the option existed.
    """
    unknown = [s for s in keep_in_train if s not in manifest.splits]
    if unknown:
        raise DatasetError(
            f"data.keep_in_train names split(s) {unknown} that manifest {str(manifest.path)!r} does not have; "
            f"its splits are {sorted(manifest.splits)}"
        )
    if manifest.splits:
        missing = [s for s in train_splits if s not in manifest.splits]
        if missing:
            raise DatasetError(
                f"manifest {str(manifest.path)!r} has no split(s) {missing}; its splits are "
                f"{sorted(manifest.splits)}"
            )
        train = [c for s in train_splits for c in manifest.splits[s]]
    else:
        train = [c for c, case in manifest.cases.items() if case.label is not None]
    unlabelled = [c for c in train if manifest.cases[c].label is None]
    if unlabelled:
        raise DatasetError(f"training case(s) {unlabelled} have no 'label' in the manifest")
    if manifest.splits.get(val_split):
        val = list(manifest.splits[val_split])
    elif val_fraction > 0 and len(train) > 1:
        kept = {c for name in keep_in_train for c in manifest.splits[name]}
        eligible = [c for c in train if c not in kept]
        rng = np.random.default_rng(seed)
        order = [eligible[i] for i in rng.permutation(len(eligible))]
        n_val = min(max(1, round(val_fraction * len(train))), len(eligible))
        val, train = sorted(order[:n_val]), [c for c in train if c not in order[:n_val]]
    else:
        val = []
    if not train:
        raise DatasetError(f"no training cases in split(s) {list(train_splits)} of {str(manifest.path)!r}")
    return train, val


def normalize_intensity(image: np.ndarray | torch.Tensor, mode: str):
    """Normalise one intensity channel: ``zscore`` (mean 0, std 1), ``zscore_nonzero`` (mean 0, std 1 over
    the non-zero voxels, e.g. a brain-masked MRI; zero voxels stay 0), ``minmax`` ([0, 1]) or ``none``."""
    if mode == "none":
        return image
    if mode == "zscore":
        std = float(image.std())
        return (image - float(image.mean())) / (std if std > 0 else 1.0)
    if mode == "zscore_nonzero":
        inside = image != 0
        if not bool(inside.any()):
            return image
        values = image[inside]
        mean = float(values.mean())
        std = float(((values - mean) ** 2).mean()) ** 0.5  # population std, the same for numpy and torch
        return (image - mean) / (std if std > 0 else 1.0) * inside
    if mode == "minmax":
        lo, hi = float(image.min()), float(image.max())
        return (image - lo) / (hi - lo if hi > lo else 1.0)
    raise ValueError(f"normalize must be zscore, zscore_nonzero, minmax or none, got {mode!r}")


def check_cases(train_set: VolumeDataset, val_set: VolumeDataset) -> None:
    """Read every training and validation case once before training (and keep them when the sets cache):
    a NaN voxel, a bad label value or a wrong grid in any case stops the run at its start, naming the case,
    not epochs later or never (a random crop that misses it). Warns when every training label map is empty
    (background only): the network could only learn background."""
    import warnings

    foreground = False
    for dataset in (train_set, val_set):
        for i in range(len(dataset)):
            sample = dataset[i]
            if dataset is train_set and "label" in sample:
                foreground = foreground or bool((sample["label"] != 0).any())
    if len(train_set) and not foreground:
        warnings.warn(
            f"every training label map of {str(train_set.manifest.path)!r} is empty (background only): the "
            "model can only learn background; check the label files",
            stacklevel=2,
        )


class VolumeDataset:
    """Loads cases of a manifest as ``{"id", "image": float32 (C, *spatial), "label": int64 (*spatial)}``.

    Volumes are read on first use and kept in memory when ``cache`` is true.
    """

    def __init__(self, manifest: Manifest, case_ids: Sequence[str], normalize: str = "zscore", cache=True):
        self.manifest = manifest
        self.case_ids = list(case_ids)
        self.normalize = normalize
        self.cache = cache
        self._cache: dict[str, dict[str, Any]] = {}
        self._max_label = len(manifest.labels) - 1
        self._allowed = set(range(len(manifest.labels))) | set(manifest.label_sets)

    def __len__(self) -> int:
        return len(self.case_ids)

    def __getitem__(self, index: int) -> dict[str, Any]:
        cid = self.case_ids[index]
        if cid in self._cache:
            return self._cache[cid]
        sample = self.load(cid)
        if self.cache:
            self._cache[cid] = sample
        return sample

    def load(self, cid: str) -> dict[str, Any]:
        case = self.manifest.cases[cid]
        channels = []
        first: _io.Image | None = None
        for i, file in enumerate([*case.images, *case.extra]):
            image = _io.read_image(file, allow_vector=True)
            array = image.array
            if array.ndim not in (2, 3):
                raise DatasetError(
                    f"case {cid!r}: {str(file)!r} must be a scalar 2D or 3D image, got shape {array.shape}"
                )
            if first is None:
                first = image
            else:
                kind = "image channel" if i < len(case.images) else "extra channel"
                _same_grid(cid, first, image, kind)
            array = array.astype(np.float32)
            bad = int(np.count_nonzero(~np.isfinite(array)))
            if bad:  # a random crop may miss them for epochs; a validation loss would be NaN throughout
                raise DatasetError(
                    f"case {cid!r}: {str(file)!r} has {bad} NaN or infinite voxel(s); training needs finite "
                    "intensities: fill or mask them first"
                )
            if i < len(case.images):
                array = normalize_intensity(array, self.normalize)
            channels.append(array)
        sample: dict[str, Any] = {
            "id": cid,
            "image": torch.from_numpy(np.stack(channels)),
            "geometry": first.geometry,
        }
        if case.label is not None:
            label_image = _io.read_label_map(case.label, self.manifest.labels)
            _same_grid(cid, first, label_image, "label")
            label = label_image.array
            bad = sorted(set(np.unique(label).tolist()) - self._allowed)
            if bad:
                raise DatasetError(
                    f"case {cid!r}: label {str(case.label)!r} holds value(s) {bad[:10]}; expected labels "
                    f"0..{self._max_label}"
                    + (
                        f" or set labels {sorted(self.manifest.label_sets)}"
                        if self.manifest.label_sets
                        else ""
                    )
                )
            sample["label"] = torch.from_numpy(label)
        return sample


def _same_grid(cid: str, first: _io.Image, other: _io.Image, kind: str) -> None:
    """Refuse a channel or label whose voxel grid (shape, spacing, origin, direction) differs from the
    case's first image: training would pair voxels that are not at the same place."""
    try:
        _io.check_same_grid(first, other, names=("the first image", f"the {kind}"))
    except ValueError as exc:
        raise DatasetError(f"case {cid!r}: {exc}") from None


# ----------------------------------------------------------------------------------------- batches
def fit_to_size(
    image: torch.Tensor, label: torch.Tensor, size: Sequence[int], generator: torch.Generator | None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Crop (random offset from ``generator``; centred without one) and zero-pad to ``size``."""
    spatial = image.shape[1:]
    crop, pad = [], []
    for have, want in zip(spatial, size):
        if have > want:
            if generator is None:
                start = (have - want) // 2
            else:
                start = int(torch.randint(0, have - want + 1, (1,), generator=generator))
            crop.append(slice(start, start + want))
        else:
            crop.append(slice(None))
    image = image[(slice(None), *crop)]
    label = label[tuple(crop)]
    for have, want in zip(reversed(image.shape[1:]), reversed(list(size))):
        extra = max(0, want - have)
        pad += [extra // 2, extra - extra // 2]
    if any(pad):
        image = F.pad(image, pad)
        label = F.pad(label, pad)
    return image, label


def _uniform(generator: torch.Generator, low: float, high: float) -> float:
    return low + (high - low) * float(torch.rand((), generator=generator))


def augment(
    image: torch.Tensor,
    label: torch.Tensor,
    options: dict[str, Any],
    generator: torch.Generator,
    intensity_channels: int,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Random flip, scaling, gamma, contrast and Gaussian noise (label-set-losses-fidon2021, Sec. 4), and
    for generalisation across centres: affine and elastic deformation, bias field, blur, lower resolution
    and intensity standardisation (:mod:`.transforms`).

    ``image`` ``(C, *spatial)`` float, ``label`` ``(*spatial)`` int. Spatial transforms act on every channel
    and the label on the same sampling grid (label: nearest neighbour, so only values it held, set labels of
    partial annotations included; outside the volume: background); intensity transforms only on the first
    ``intensity_channels`` channels (extra channels such as an initial segmentation or a heatmap are left as
    they are). Every draw comes from ``generator``, so a sample's augmentation is reproducible; a transform
    whose probability is 0 draws nothing, so configs without the newer transforms augment exactly as before.

    Order: flip, scale, affine + elastic (one resampling), the foreground mask (the image zeroed outside
    the label's foreground, dilated by a random number of voxels: a region-of-interest mask such as a
    brain mask, which then also bounds the standardisation), then bias field, gamma, contrast, blur,
    resolution, noise, and standardize last.
    """
    from . import transforms as T

    def draw(prob: float) -> bool:
        return prob > 0 and float(torch.rand((), generator=generator)) < prob

    dims = image.ndim - 1
    flip = options["flip"]
    for axis in flip["axes"] if flip["axes"] is not None else [dims - 1]:  # None: the last axis (x)
        if axis < dims and draw(flip["prob"]):
            image = image.flip(axis + 1)
            label = label.flip(axis)
    if draw(options["scale"]["prob"]):
        factor = _uniform(generator, *options["scale"]["range"])
        theta = torch.zeros(1, dims, dims + 1, device=image.device)
        theta[0, :, :dims] = torch.eye(dims, device=image.device) / factor  # factor > 1 zooms in
        grid = F.affine_grid(theta, [1, 1, *image.shape[1:]], align_corners=False)
        flat = image.flatten(1)
        lo, hi = flat.min(1).values, flat.max(1).values
        image = F.grid_sample(image[None], grid, mode="bilinear", align_corners=False)[0]
        shape = (-1, *[1] * dims)  # stay within each channel's range (and 0, the padding): no overshoot
        image = torch.minimum(torch.maximum(image, lo.view(shape).clamp_max(0)), hi.view(shape).clamp_min(0))
        label = F.grid_sample(label[None, None].float(), grid, mode="nearest", align_corners=False)[0, 0]
        label = label.long()
    affine = options.get("affine", {"prob": 0.0})
    elastic = options.get("elastic", {"prob": 0.0})
    do_affine, do_elastic = draw(affine["prob"]), draw(elastic["prob"])
    if do_affine or do_elastic:
        grid = T.sampling_grid(
            image.shape[1:],
            generator,
            affine=affine if do_affine else None,
            elastic=elastic if do_elastic else None,
            device=image.device,
        )
        image, label = T.warp(image, label, grid)
    foreground = options.get("foreground_mask", {"prob": 0.0})
    if intensity_channels > 0 and draw(foreground["prob"]):  # as if masked by a region of interest
        low, high = foreground["dilate"]
        radius = int(torch.randint(low, high + 1, (1,), generator=generator))
        keep = T.dilate(label != 0, radius)
        image = torch.cat([image[:intensity_channels] * keep, image[intensity_channels:]])
    if intensity_channels > 0:
        image = image.clone()
        part = image[:intensity_channels]
        standard = options.get("standardize", {"enabled": False})
        support = None
        if standard["enabled"] and standard["over"] == "nonzero":  # the field of view / brain mask
            support = (part != 0).any(0)
        bias = options.get("bias_field", {"prob": 0.0})
        if draw(bias["prob"]):
            field = T.bias_field(part.shape[1:], generator, bias["coefficient"], bias["order"], part.device)
            part = T.apply_bias_field(part, field)
        if draw(options["gamma"]["prob"]):
            gamma = _uniform(generator, *options["gamma"]["range"])
            lo, hi = part.min(), part.max()
            span = (hi - lo).clamp_min(1e-8)
            part = ((part - lo) / span).pow(gamma) * span + lo
        if draw(options["contrast"]["prob"]):
            factor = _uniform(generator, *options["contrast"]["range"])
            lo, hi, mean = part.min(), part.max(), part.mean()
            part = ((part - mean) * factor + mean).clamp(lo, hi)
        blur = options.get("blur", {"prob": 0.0})
        if draw(blur["prob"]):
            part = T.gaussian_blur(part, [T.uniform(generator, *blur["sigma"]) for _ in range(dims)])
        resolution = options.get("resolution", {"prob": 0.0})
        if draw(resolution["prob"]):
            axes = resolution["axes"] if resolution["axes"] is not None else range(dims)
            factors = [1.0] * dims
            for axis in axes:
                factors[axis] = T.uniform(generator, *resolution["factor"])
            part = T.simulate_resolution(part, factors)
        if draw(options["noise"]["prob"]):
            std = options["noise"]["std"] * float(torch.rand((), generator=generator))
            part = part + std * torch.randn(part.shape, generator=generator).to(part.device)
        if standard["enabled"]:
            part = T.standardize(part, support)
        image[:intensity_channels] = part
    return image, label


def sample_generator(seed: int, epoch: int, index: int) -> torch.Generator:
    """The generator of one sample of one epoch: a function of (seed, epoch, position), nothing else, so
    a resumed run and every DDP rank draw the same augmentation for the same sample."""
    g = torch.Generator()
    g.manual_seed((seed * 1_000_003 + epoch * 10_007 + index) % (2**63 - 1))
    return g


def epoch_order(n: int, seed: int, epoch: int, multiple: int = 1) -> list[int]:
    """Shuffled case indices of an epoch, wrapped to a multiple of ``multiple`` (DDP global batch)."""
    g = torch.Generator()
    g.manual_seed((seed * 7_919 + epoch) % (2**63 - 1))
    order = torch.randperm(n, generator=g).tolist()
    total = math.ceil(n / multiple) * multiple
    while len(order) < total:
        order += order[: total - len(order)]
    return order


def training_batch(
    dataset: VolumeDataset,
    positions: Sequence[int],
    order: Sequence[int],
    size: Sequence[int],
    aug: dict[str, Any] | None,
    seed: int,
    epoch: int,
    device: torch.device | str = "cpu",
) -> tuple[torch.Tensor, torch.Tensor]:
    """Stack the samples at ``positions`` of the epoch ``order``, fitted to ``size`` and augmented.

    Cropping and augmentation run on ``device`` (the random draws come from CPU generators, so they do not
    depend on it); on a GPU this keeps the CPU from becoming the bottleneck.
    """
    images, labels = [], []
    for pos in positions:
        sample = dataset[order[pos]]
        g = sample_generator(seed, epoch, pos)
        image, label = fit_to_size(sample["image"].to(device), sample["label"].to(device), size, g)
        if aug is not None:
            image, label = augment(image, label, aug, g, dataset.manifest.n_image_channels)
        images.append(image)
        labels.append(label)
    return torch.stack(images), torch.stack(labels)
