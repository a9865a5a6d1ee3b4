"""Interaction synthesis of ice-editing-shahin2023 (Sec. 3.2-3.3): where the user draws, and its encoding.

- **Training** (:func:`training_interaction`): the frame with the largest error between ``y_init`` and
  ``y`` in that frame's plane (pixels of the fan where the two masks, sampled at the frame's nominal pose,
  disagree), the connected region of error in it with the most pixels, and a scribble drawn on ``y``'s
  boundary in that region (the longest run of ``y``'s 2D contour that touches the region).
- **Testing** (:func:`furthest_cas_interaction`, :class:`CASEditSequence`): the CAS contour furthest from
  the current prediction (mean Manhattan distance, mm, from its voxels to the prediction's boundary, the
  distance of the editing metric ``D``); in a sequence of edits, the furthest contour not used before.
- **Encoding** (:func:`encode`): ``u`` (``sigma_enc``) and ``A`` (``sigma_edit``) are both
  :func:`losslab.metrics.attention_map` of the scribble voxels; the paper's 20 voxels of 1.1024 mm are
  22.048 mm, i.e. 10 voxels on a 64^3 x 2.2048 mm grid (sigmas here are in mm).
- **Perturbations** (the paper's future work on robustness, :func:`perturb_polyline`): a constant offset
  along the contour's outward normal (mm, positive = out of the LA), smooth jitter along the normal
  (its RMS in mm), and partial scribbles (a contiguous piece holding a fraction of each polyline's length).

Scribbles are polylines in frame pixel coordinates ``(u, v)``; they reach the grid as their nearest voxels
at the frame's nominal pose (:func:`losslab.ice.simulate.polylines_to_voxels`, a quarter-voxel step).
Everything random is drawn from the ``seed`` given (deterministic). Arrays are ``(k, j, i)`` with the case's
``spacing`` in the same order.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

import numpy as np
import torch
from contourpy import LineType, contour_generator
from scipy import ndimage

from ..metrics import PAPER_SIGMA_MM, attention_map, boundary, nearest_distances
from .simulate import ICECase, _orient, densify, polylines_to_voxels

#: training scribbles: the paper's piece of y's contour at the error, or y's whole contour on that frame
SCRIBBLES = ("piece", "contour")

__all__ = [
    "PAPER_SIGMA_MM",
    "SCRIBBLES",
    "CASEditSequence",
    "Interaction",
    "cas_contour_distances",
    "editing_batch",
    "encode",
    "frame_errors",
    "furthest_cas_interaction",
    "perturb_polyline",
    "sample_on_frames",
    "training_interaction",
]


@dataclass
class Interaction:
    """A scribble on one frame.

    Attributes:
        frame: index of the frame drawn on.
        polylines: the scribble in frame pixel coordinates ``(u, v)``, each ``(n, 2)``.
        voxels: boolean ``(k, j, i)`` mask of the scribble's voxels on the case's grid.
        kind: ``"training"`` (synthesised on y) or ``"cas"`` (a CAS contour).
        region: for training, the ``(rows, cols)`` boolean mask of the region of maximum error in the frame.
        error: the frame's error (training: mm^2 of disagreement in the plane; cas: mean distance in mm).
    """

    frame: int
    polylines: list[np.ndarray]
    voxels: np.ndarray
    kind: str
    region: np.ndarray | None = None
    error: float = 0.0
    perturbation: dict = field(default_factory=dict)

    def encode(self, spacing: Sequence[float], sigma_mm: float = PAPER_SIGMA_MM) -> np.ndarray:
        """The Gaussian map of the scribble (``u`` or ``A``), see :func:`encode`."""
        return encode(self.voxels, spacing, sigma_mm)


def encode(scribble: np.ndarray, spacing: Sequence[float], sigma_mm: float = PAPER_SIGMA_MM) -> np.ndarray:
    """``u`` / ``A``: :func:`losslab.metrics.attention_map` of the scribble voxels with ``sigma_mm`` in mm.

    The paper's sigma of 20 voxels at 1.1024 mm is :data:`PAPER_SIGMA_MM` = 22.048 mm (10 voxels at 2.2048 mm).
    """
    return attention_map(scribble, sigma=sigma_mm, spacing=spacing)


def _pixel_voxels(case: ICECase) -> np.ndarray:
    """``(frames, fan pixels)`` flat voxel index of each fan pixel at its frame's nominal pose (-1: outside).

    The same nearest-voxel rounding as the sparse volume; cached on the case."""
    cached = case.cache.get("pixel_voxels")
    if cached is not None:
        return cached
    fan = case.sector.mask()
    uv = np.argwhere(fan)[:, ::-1].astype(np.float64)
    out = np.full((len(case.frames), len(uv)), -1, dtype=np.int64)
    shape = np.asarray(case.grid.shape)
    for f, frame in enumerate(case.frames):
        m = frame.pixel_to_index_matrix(case.grid)
        idx = np.rint(uv @ m[:3, :2].T + m[:3, 3]).astype(np.int64)
        inside = np.all((idx >= 0) & (idx < shape), axis=1)
        out[f, inside] = np.ravel_multi_index(tuple(idx[inside].T), case.grid.shape)
    case.cache["pixel_voxels"] = out
    return out


def sample_on_frames(case: ICECase, volume: np.ndarray, frames: Iterable[int] | None = None) -> np.ndarray:
    """A grid volume seen on the frames: ``(n, rows, cols)``, each fan pixel takes its nearest voxel's value
    at the frame's nominal pose (0 outside the fan and outside the grid)."""
    volume = np.asarray(volume)
    if volume.shape != case.grid.shape:
        raise ValueError(f"the volume has shape {volume.shape}, the case's grid {case.grid.shape}")
    frames = list(range(len(case.frames))) if frames is None else list(frames)
    fan = case.sector.mask()
    pix = _pixel_voxels(case)[frames]
    flat = volume.ravel()
    values = np.where(pix >= 0, flat[np.maximum(pix, 0)], 0).astype(volume.dtype)
    out = np.zeros((len(frames), *fan.shape), dtype=volume.dtype)
    out[:, fan] = values
    return out


def frame_errors(case: ICECase, initial: np.ndarray, label: np.ndarray | None = None) -> np.ndarray:
    """Per frame, the area (mm^2) of the fan where ``initial`` and ``label`` (default ``case.label``)
    disagree, both sampled at the frame's nominal pose."""
    label = case.label if label is None else label
    pix = _pixel_voxels(case)
    ok = pix >= 0
    safe = np.maximum(pix, 0)
    disagree = (np.asarray(label).ravel()[safe] != 0) != (np.asarray(initial).ravel()[safe] != 0)
    return (disagree & ok).sum(axis=1) * case.sector.pixel_mm**2


def _contours_2d(mask2d: np.ndarray, fan: np.ndarray) -> list[np.ndarray]:
    """Oriented polylines of the 0.5 level of a 2D mask inside the fan (outward normal ``(t_v, -t_u)``)."""
    z = np.ma.masked_array(mask2d.astype(np.float64), mask=~fan)
    lines = contour_generator(z=z, line_type=LineType.Separate).lines(0.5)
    outside = np.where(fan, 0.5 - mask2d.astype(np.float64), np.nan)
    return [_orient(np.asarray(line, np.float64), outside) for line in lines if len(line) >= 2]


def _runs(inside: np.ndarray) -> list[tuple[int, int]]:
    """``[start, stop)`` index ranges of the True runs of a boolean vector."""
    padded = np.concatenate([[False], inside, [False]]).astype(np.int8)
    edges = np.flatnonzero(np.diff(padded))
    return list(zip(edges[::2], edges[1::2]))


def training_interaction(
    case: ICECase,
    initial: np.ndarray,
    label: np.ndarray | None = None,
    seed: int = 0,
    offset_mm: float = 0.0,
    jitter_mm: float = 0.0,
    fraction: float = 1.0,
    scribble: str = "piece",
) -> Interaction | None:
    """The paper's training interaction (Sec. 3.2): a scribble on y's boundary where ``initial`` is worst.

    Frames are ranked by :func:`frame_errors`; in the worst frame, the error pixels are split into
    8-connected regions and the largest is the region of maximum error; y's 2D contour in the frame
    (0.5 level of y sampled on the fan) is cut to the points within 1.5 pixels of that region and the longest
    such run is the scribble. If the region touches no part of y's boundary (an error blob of ``initial``
    away from y), the next frame in the ranking is tried.

    Args:
        case: the simulated case (its frames' nominal poses place the scribble).
        initial: ``y_init``, binary ``(k, j, i)`` on the case's grid.
        label: ``y`` (default ``case.label``).
        seed, offset_mm, jitter_mm, fraction: perturbations, see :func:`perturb_polyline`.
        scribble: ``"piece"`` (the paper's: the longest run of y's contour along the region of maximum
            error) or ``"contour"`` (every polyline of y's contour on that frame, the shape of a test-time CAS
            contour, which covers its whole frame).

    Returns:
        The :class:`Interaction`, or ``None`` when ``initial`` agrees with ``y`` on every frame.
    """
    if scribble not in SCRIBBLES:
        raise ValueError(f"scribble must be one of {SCRIBBLES}, got {scribble!r}")
    label = case.label if label is None else np.asarray(label)
    initial = np.asarray(initial)
    if initial.shape != case.grid.shape or label.shape != case.grid.shape:
        raise ValueError(
            f"initial {initial.shape} and label {label.shape} must be on the case's grid {case.grid.shape}"
        )
    errors = frame_errors(case, initial, label)
    fan = case.sector.mask()
    for f in np.argsort(-errors, kind="stable"):
        if errors[f] <= 0:
            return None
        y2d = sample_on_frames(case, label != 0, [f])[0]
        i2d = sample_on_frames(case, initial != 0, [f])[0]
        regions, n = ndimage.label((y2d != i2d) & fan, structure=np.ones((3, 3), bool))
        sizes = np.bincount(regions.ravel())[1:]
        region = regions == (int(np.argmax(sizes)) + 1)
        near = ndimage.distance_transform_edt(~region) <= 1.5
        pieces, lines = [], _contours_2d(y2d, fan)
        for line in lines:
            uv = np.clip(np.rint(line).astype(int), 0, np.array(fan.shape[::-1]) - 1)
            touching = near[uv[:, 1], uv[:, 0]]
            pieces += [line[a:b] for a, b in _runs(touching) if b - a >= 2]
        if not pieces:
            continue
        if scribble == "contour":
            drawn = [line for line in lines if len(line) >= 2]
        else:
            drawn = [max(pieces, key=lambda p: float(np.linalg.norm(np.diff(p, axis=0), axis=1).sum()))]
        return _finish(
            case, int(f), drawn, "training", seed, offset_mm, jitter_mm, fraction, region, errors[f]
        )
    return None


def _finish(case, frame, lines, kind, seed, offset_mm, jitter_mm, fraction, region, error) -> Interaction:
    rng = np.random.default_rng(seed)
    px = case.sector.pixel_mm
    lines = [perturb_polyline(line, rng, offset_mm / px, jitter_mm / px, fraction) for line in lines]
    step = 0.25 * min(case.grid.spacing) / px
    flat = polylines_to_voxels(
        lines, case.frames[frame].pixel_to_index_matrix(case.grid), case.grid.shape, step
    )
    voxels = np.zeros(case.grid.shape, dtype=bool)
    voxels.ravel()[flat] = True
    return Interaction(
        frame=frame,
        polylines=lines,
        voxels=voxels,
        kind=kind,
        region=region,
        error=float(error),
        perturbation={"offset_mm": offset_mm, "jitter_mm": jitter_mm, "fraction": fraction, "seed": seed},
    )


def perturb_polyline(
    line: np.ndarray,
    rng: np.random.Generator,
    offset: float = 0.0,
    jitter: float = 0.0,
    fraction: float = 1.0,
    smooth: float = 4.0,
) -> np.ndarray:
    """A perturbed copy of an oriented polyline (units: frame pixels).

    Args:
        line: ``(n, 2)`` ``(u, v)`` points, oriented so that ``(t_v, -t_u)`` is the outward normal.
        rng: the random generator (jitter and the partial piece's start).
        offset: constant displacement along the outward normal (negative: inwards).
        jitter: RMS of a smooth random displacement along the normal (white noise smoothed with a Gaussian of
            ``smooth`` pixels along the line, then scaled to this RMS).
        fraction: keep a contiguous piece with this fraction of the length, at a random start (in (0, 1]).

    Returns:
        The new ``(m, 2)`` polyline, resampled every pixel (or less); an unchanged copy when nothing is asked.
    """
    if not 0 < fraction <= 1:
        raise ValueError(f"fraction must be in (0, 1], got {fraction}")
    for name, value in (("offset", offset), ("jitter", jitter)):
        if not np.isfinite(value):
            raise ValueError(f"{name} must be finite, got {value}")
    if jitter < 0:
        raise ValueError(f"jitter must be >= 0 (an RMS), got {jitter}")
    if offset == 0 and jitter == 0 and fraction == 1:
        return np.array(line, dtype=np.float64)
    pts = densify(line, 1.0)
    if len(pts) < 2:
        return pts
    if fraction < 1:
        seg = np.linalg.norm(np.diff(pts, axis=0), axis=1)
        s = np.concatenate([[0.0], np.cumsum(seg)])
        keep = fraction * s[-1]
        start = rng.uniform(0.0, s[-1] - keep)
        t = np.linspace(start, start + keep, max(2, int(np.ceil(keep)) + 1))
        pts = np.stack([np.interp(t, s, pts[:, 0]), np.interp(t, s, pts[:, 1])], axis=1)
    if offset == 0 and jitter == 0:
        return pts
    tangent = np.gradient(pts, axis=0)
    normal = np.stack([tangent[:, 1], -tangent[:, 0]], axis=1)
    normal /= np.maximum(np.linalg.norm(normal, axis=1, keepdims=True), 1e-9)
    shift = np.full(len(pts), float(offset))
    if jitter > 0:
        noise = ndimage.gaussian_filter1d(rng.standard_normal(len(pts)), smooth, mode="nearest")
        noise -= noise.mean()
        rms = float(np.sqrt(np.mean(noise**2)))
        shift += noise * (jitter / rms if rms > 0 else 0.0)
    return pts + shift[:, None] * normal


def cas_contour_distances(case: ICECase, prediction: np.ndarray, statistic: str = "mean") -> np.ndarray:
    """Per frame, the distance (mm) from its CAS contour voxels to the boundary of ``prediction``.

    Minimum Manhattan distance per voxel (spacing-weighted, as the editing metric ``D``), then ``statistic``
    over the frame's voxels: ``"mean"``, ``"max"`` or ``"p95"``. NaN for a frame without CAS voxels.
    """
    reducers = {"mean": np.mean, "max": np.max, "p95": lambda d: np.percentile(d, 95)}
    if statistic not in reducers:
        raise ValueError(f"statistic must be one of {sorted(reducers)}, got {statistic!r}")
    prediction = np.asarray(prediction) != 0
    if prediction.shape != case.grid.shape:
        raise ValueError(f"the prediction has shape {prediction.shape}, the case's grid {case.grid.shape}")
    union = case.cas_mask()
    out = np.full(len(case.frames), np.nan)
    if not union.any():
        return out
    d = nearest_distances(union, boundary(prediction), case.spacing, "manhattan")
    flat = np.flatnonzero(union)
    for f, frame in enumerate(case.frames):
        if len(frame.cas_voxels):
            out[f] = float(reducers[statistic](d[np.searchsorted(flat, frame.cas_voxels)]))
    return out


def furthest_cas_interaction(
    case: ICECase,
    prediction: np.ndarray,
    used: Iterable[int] = (),
    statistic: str = "mean",
    seed: int = 0,
    offset_mm: float = 0.0,
    jitter_mm: float = 0.0,
    fraction: float = 1.0,
) -> Interaction | None:
    """The test-time interaction (Sec. 3.2-3.3): the CAS contour furthest from ``prediction``, skipping the
    frames in ``used``; its polylines (perturbed as asked) become the scribble. ``None`` when no unused frame
    has a contour."""
    distances = cas_contour_distances(case, prediction, statistic)
    for f in used:
        distances[int(f)] = np.nan
    if np.all(np.isnan(distances)):
        return None
    f = int(np.nanargmax(distances))
    lines = [c for c in case.frames[f].contours if len(c) >= 2]
    return _finish(case, f, lines, "cas", seed, offset_mm, jitter_mm, fraction, None, distances[f])


class CASEditSequence:
    """Sequential test-time edits (the paper's Fig. 3): each call to :meth:`next` picks the furthest CAS
    contour from the current prediction among the frames not used yet.

    Example::

        seq = CASEditSequence(case)
        for _ in range(10):
            edit = seq.next(prediction)
            if edit is None:
                break
            prediction = model(x, prediction, edit.encode(case.spacing))
    """

    def __init__(self, case: ICECase, statistic: str = "mean", seed: int = 0, **perturbation) -> None:
        self.case = case
        self.statistic = statistic
        self.seed = int(seed)
        self.perturbation = perturbation
        self.used: list[int] = []

    def next(self, prediction: np.ndarray) -> Interaction | None:
        edit = furthest_cas_interaction(
            self.case, prediction, self.used, self.statistic, self.seed + len(self.used), **self.perturbation
        )
        if edit is not None:
            self.used.append(edit.frame)
        return edit


def editing_batch(
    samples: Sequence[tuple[ICECase, np.ndarray]],
    seed: int = 0,
    sigma_enc_mm: float = PAPER_SIGMA_MM,
    sigma_edit_mm: float = PAPER_SIGMA_MM,
    device: str | torch.device | None = None,
    **perturbation,
) -> dict:
    """A training batch for an editing model, interactions synthesised on the fly (Sec. 3.2).

    Args:
        samples: ``(case, y_init)`` pairs on the same grid shape.
        seed: sample ``b`` uses ``seed + b`` for its perturbations.
        sigma_enc_mm, sigma_edit_mm: sigmas of ``u`` and ``A`` in mm (paper: 20 voxels of 1.1024 mm).
        device: torch device of the tensors.
        perturbation: ``offset_mm``, ``jitter_mm``, ``fraction`` for :func:`training_interaction`.

    Returns:
        ``{"x", "y", "initial", "u", "attention"}``: float32 tensors ``(B, 1, k, j, i)``, and
        ``"interactions"``: the list of :class:`Interaction` (``None`` where y_init had no error: then u
        and A are zero and the sample only asks the model to keep y_init).
    """
    xs, ys, inits, us, attns, inters = [], [], [], [], [], []
    for b, (case, initial) in enumerate(samples):
        edit = training_interaction(case, initial, seed=seed + b, **perturbation)
        zeros = np.zeros(case.grid.shape, np.float32)
        u = edit.encode(case.spacing, sigma_enc_mm) if edit is not None else zeros
        a = u if (edit is None or sigma_edit_mm == sigma_enc_mm) else edit.encode(case.spacing, sigma_edit_mm)
        xs.append(case.image)
        ys.append(case.label)
        inits.append(np.asarray(initial))
        us.append(u)
        attns.append(a)
        inters.append(edit)

    def stack(arrays):
        return torch.from_numpy(np.stack([np.asarray(a, np.float32) for a in arrays])[:, None]).to(device)

    return {
        "x": stack(xs),
        "y": stack(ys),
        "initial": stack(inits),
        "u": stack(us),
        "attention": stack(attns),
        "interactions": inters,
    }
