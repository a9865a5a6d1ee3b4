"""Random transforms for training augmentation across centres and scanners (torch, 2D and 3D, any device).

Each function takes a ``torch.Generator`` (CPU) and draws every random number from it, so an augmentation is a
function of the generator's seed (:func:`losslab.engine.data.sample_generator`) whatever the device.
:func:`losslab.engine.data.augment` calls them in this order, each with its own probability
(``augmentation.<name>.prob``):

spatial (one resampling of every channel, bilinear, and of the label map, nearest neighbour, on the SAME grid)
    :func:`sampling_grid`: ``affine`` (rotation about each axis, scaling per axis, translation) and ``elastic``
    (a smooth random displacement: Gaussian control-point offsets on a coarse grid, interpolated linearly to
    every voxel), composed into one grid so the image is interpolated once.
intensity (image channels only; labels untouched)
    :func:`bias_field` (a smooth multiplicative field, the exponential of a random polynomial, as MRI's coil
    inhomogeneity), gamma and contrast (in :mod:`.data`), :func:`gaussian_blur` (per-axis sigma),
    :func:`simulate_resolution` (downsample then upsample: thicker slices, lower in-plane resolution),
    Gaussian noise (in :mod:`.data`), and last :func:`standardize` (z-score over the voxels inside the field
    of view or brain mask, zero outside: what ``data.normalize = "zscore_nonzero"`` gives at inference).

Written here rather than taken from MONAI (a dependency, used for sliding windows): MONAI's random transforms
draw from NumPy ``RandomState`` objects held by each transform instance, which does not fit the engine's
contract that a sample's augmentation is a function of ``(seed, epoch, position)`` alone (a resumed run and
every DDP rank draw the same augmentation) without re-seeding a transform per sample; and they work on
dictionaries of arrays where the engine holds one ``(C, *spatial)`` tensor and one label map. The maths is
the usual one (TorchIO's ``RandomBiasField`` polynomial, ``RandomElasticDeformation`` control points;
nnU-Net's ``SimulateLowResolution``).

Conventions: arrays are ``(C, *spatial)`` with spatial axes in array order (``(z, y, x)`` for 3D); lengths
(translations, displacements, blur sigmas) are in voxels of the training grid; angles in degrees.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F


def uniform(generator: torch.Generator, low: float, high: float) -> float:
    """One draw from U(low, high)."""
    return low + (high - low) * float(torch.rand((), generator=generator))


def _rotation(dims: int, angles_deg: Sequence[float]) -> torch.Tensor:
    """Rotation matrix (array axis order) from one angle per plane: 2D one, 3D three (about z, y, x)."""
    planes = [(0, 1)] if dims == 2 else [(1, 2), (0, 2), (0, 1)]
    out = torch.eye(dims, dtype=torch.float64)
    for (a, b), deg in zip(planes, angles_deg):
        r = torch.eye(dims, dtype=torch.float64)
        c, s = math.cos(math.radians(deg)), math.sin(math.radians(deg))
        r[a, a], r[a, b], r[b, a], r[b, b] = c, -s, s, c
        out = r @ out
    return out


def sampling_grid(
    shape: Sequence[int],
    generator: torch.Generator,
    affine: dict | None = None,
    elastic: dict | None = None,
    device: torch.device | str = "cpu",
) -> torch.Tensor:
    """A random sampling grid for ``F.grid_sample(..., align_corners=False)``: ``(1, *shape, dims)``.

    Args:
        shape: spatial shape in array order.
        affine: ``{"rotate": deg, "scale": [low, high], "translate": fraction}`` or None. Each plane's angle
            is drawn in ``[-rotate, rotate]``, each axis's scale in ``scale`` (> 1 zooms in), each axis's shift
            in ``[-translate, translate]`` times its length. Built in voxel units, so rotations of a
            non-cubic volume stay rotations (no shear).
        elastic: ``{"magnitude": voxels, "points": n}`` or None: control-point offsets ``N(0, m^2)`` with
            ``m`` drawn in ``[0, magnitude]``, on an ``n``-point grid per axis, interpolated to every voxel.
        device: where the grid is built (the draws come from ``generator`` on the CPU).

    The identity (neither given) samples every voxel at its own centre.
    """
    dims = len(shape)
    half = torch.tensor([n / 2.0 for n in shape], dtype=torch.float64)
    matrix = torch.eye(dims, dtype=torch.float64)
    shift = torch.zeros(dims, dtype=torch.float64)
    if affine is not None:
        n_angles = 1 if dims == 2 else 3
        angles = [uniform(generator, -affine["rotate"], affine["rotate"]) for _ in range(n_angles)]
        scales = [uniform(generator, *affine["scale"]) for _ in range(dims)]
        shifts = [uniform(generator, -affine["translate"], affine["translate"]) for _ in range(dims)]
        # input offset (voxels from the centre) = R S^-1 (output offset) + t
        matrix = _rotation(dims, angles) @ torch.diag(
            torch.tensor([1.0 / s for s in scales], dtype=torch.float64)
        )
        shift = torch.tensor([f * n for f, n in zip(shifts, shape)], dtype=torch.float64)
    # normalised coordinates u = offset / (n / 2); grid_sample's last grid axis is (x, y, z): reversed order
    norm = torch.diag(1.0 / half) @ matrix @ torch.diag(half)
    theta = torch.cat([norm.flip(0).flip(1), (shift / half).flip(0)[:, None]], dim=1)
    grid = F.affine_grid(theta[None].float().to(device), [1, 1, *shape], align_corners=False)
    if elastic is not None:
        points = int(elastic["points"])
        sigma = elastic["magnitude"] * float(torch.rand((), generator=generator))
        coarse = torch.randn((1, dims, *[points] * dims), generator=generator) * sigma
        mode = "bilinear" if dims == 2 else "trilinear"
        field = F.interpolate(coarse.to(device), size=list(shape), mode=mode, align_corners=True)[0]
        field = field / half.float().to(device).view(-1, *[1] * dims)  # voxels -> normalised, per axis
        grid = grid + field.flip(0).permute(*range(1, dims + 1), 0)[None]  # components in (x, y, z) order
    return grid


def warp(
    image: torch.Tensor, label: torch.Tensor | None, grid: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Resample ``image`` ``(C, *spatial)`` (bilinear, each channel kept within its own range and 0, so no
    overshoot) and ``label`` ``(*spatial)`` (nearest neighbour: only values it holds, set labels included)
    on the same ``grid``; outside the volume: 0 (background)."""
    dims = image.ndim - 1
    flat = image.flatten(1)
    lo, hi = flat.min(1).values, flat.max(1).values
    out = F.grid_sample(image[None], grid.to(image.dtype), mode="bilinear", align_corners=False)[0]
    view = (-1, *[1] * dims)
    out = torch.minimum(torch.maximum(out, lo.view(view).clamp_max(0)), hi.view(view).clamp_min(0))
    if label is not None:
        moved = F.grid_sample(label[None, None].float(), grid.float(), mode="nearest", align_corners=False)
        label = moved[0, 0].round().to(label.dtype)
    return out, label


def bias_field(
    shape: Sequence[int],
    generator: torch.Generator,
    coefficient: float,
    order: int,
    device: torch.device | str = "cpu",
) -> torch.Tensor:
    """A smooth multiplicative field ``exp(sum_k c_k * monomial_k)`` over normalised coordinates in [-1, 1],
    with every monomial of degree 1..``order`` and ``c_k`` drawn in ``[-coefficient, coefficient]``; shape
    ``(*shape)``, values around 1 (TorchIO's ``RandomBiasField``)."""
    dims = len(shape)
    axes = torch.meshgrid(
        *[
            torch.linspace(-1.0, 1.0, n, device=device) if n > 1 else torch.zeros(1, device=device)
            for n in shape
        ],
        indexing="ij",
    )
    log_field = torch.zeros(tuple(shape), device=device)
    for powers in itertools.product(range(order + 1), repeat=dims):
        if 0 < sum(powers) <= order:
            c = uniform(generator, -coefficient, coefficient)
            term = torch.ones(tuple(shape), device=device)
            for axis, p in zip(axes, powers):
                if p:
                    term = term * axis**p
            log_field = log_field + c * term
    return torch.exp(log_field)


def apply_bias_field(part: torch.Tensor, field: torch.Tensor) -> torch.Tensor:
    """Multiply each channel's intensities above its minimum (its background level) by ``field``."""
    dims = part.ndim - 1
    lo = part.flatten(1).min(1).values.view(-1, *[1] * dims)
    return (part - lo) * field + lo


def _blur_axis(x: torch.Tensor, axis: int, sigma: float) -> torch.Tensor:
    """Gaussian blur of ``x`` ``(C, *spatial)`` along spatial ``axis`` (edges replicated)."""
    if sigma <= 0:
        return x
    radius = max(1, math.ceil(3 * sigma))
    t = torch.arange(-radius, radius + 1, dtype=x.dtype, device=x.device)
    kernel = torch.exp(-0.5 * (t / sigma) ** 2)
    kernel = (kernel / kernel.sum()).view(1, 1, -1)
    moved = x.movedim(axis + 1, -1)
    flat = moved.reshape(-1, 1, moved.shape[-1])
    flat = F.conv1d(F.pad(flat, (radius, radius), mode="replicate"), kernel)
    return flat.reshape(moved.shape).movedim(-1, axis + 1)


def gaussian_blur(part: torch.Tensor, sigmas: Sequence[float]) -> torch.Tensor:
    """Separable Gaussian blur, one sigma (voxels) per spatial axis."""
    for axis, sigma in enumerate(sigmas):
        part = _blur_axis(part, axis, float(sigma))
    return part


def simulate_resolution(part: torch.Tensor, factors: Sequence[float]) -> torch.Tensor:
    """Downsample each spatial axis by its factor (averaging, as a thicker slice or a larger voxel does)
    and interpolate back to the original shape (linear): the detail a coarser acquisition loses."""
    spatial = list(part.shape[1:])
    small = [max(1, round(n / f)) for n, f in zip(spatial, factors)]
    if small == spatial:
        return part
    mode = "bilinear" if len(spatial) == 2 else "trilinear"
    low = F.interpolate(part[None], size=small, mode="area")
    return F.interpolate(low, size=spatial, mode=mode, align_corners=False)[0]


def dilate(mask: torch.Tensor, radius: int) -> torch.Tensor:
    """Dilate a bool ``(*spatial)`` mask by ``radius`` voxels, alternating face-connected and full
    neighbourhood steps (rounder than a cube)."""
    if radius <= 0:
        return mask
    out = mask[None, None].float()
    pool = F.max_pool3d if mask.ndim == 3 else F.max_pool2d
    for step in range(radius):
        if step % 2:
            out = pool(out, 3, stride=1, padding=1)
        else:  # face neighbours only: the maximum over a line along each axis
            grown = out
            for axis in range(mask.ndim):
                size = [1] * mask.ndim
                size[axis] = 3
                pad = [s // 2 for s in size]
                grown = torch.maximum(grown, pool(out, size, stride=1, padding=pad))
            out = grown
    return out[0, 0] > 0


def standardize(part: torch.Tensor, support: torch.Tensor | None) -> torch.Tensor:
    """Z-score each channel over ``support`` (bool ``(*spatial)``; None: every voxel) and set the voxels
    outside it to 0 -- ``data.normalize = "zscore_nonzero"`` applied after the intensity transforms."""
    out = torch.zeros_like(part)
    for c in range(part.shape[0]):
        values = part[c] if support is None else part[c][support]
        if values.numel() == 0:
            continue
        mean = float(values.mean())
        std = float(((values - mean) ** 2).mean()) ** 0.5  # as losslab.engine.data.normalize_intensity
        scaled = (part[c] - mean) / (std if std > 0 else 1.0)
        out[c] = scaled if support is None else torch.where(support, scaled, torch.zeros_like(scaled))
    return out


__all__ = [
    "apply_bias_field",
    "bias_field",
    "dilate",
    "gaussian_blur",
    "sampling_grid",
    "simulate_resolution",
    "standardize",
    "uniform",
    "warp",
]
