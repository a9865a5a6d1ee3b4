"""The editing metric ``D`` of ice-editing-shahin2023 (Sec. 2.3, eqs. 4-6), on CPU or GPU.

``D = D_edit + D_preserve`` is a distance map defined only on contour voxels:

- ``D_edit`` (eq. 5), on the CAS contour voxels ``y_cas``: ``A * d(y_cas -> contour(y_hat))``;
- ``D_preserve`` (eq. 6), on the contours of ``y_init`` and ``y_hat``:
  ``(1 - A) / 2 * d(contour(y_init) -> contour(y_hat))`` on ``y_init``'s contour plus
  ``(1 - A) / 2 * d(contour(y_hat) -> contour(y_init))`` on ``y_hat``'s contour;

where ``d`` is the minimum Manhattan distance in mm (spacing-weighted L1 between voxel centres) and ``A`` the
Gaussian attention map of the scribble (:func:`losslab.metrics.attention_map`). Where two contours share a
voxel their terms add up. A mask's contour is its boundary (:func:`losslab.metrics.boundary`: foreground
voxels with a face-neighbour in the background). ``y_cas`` is taken as given: it already is a set of contour
voxels (the CAS annotations projected on the grid).

Statistics, as in the paper's Table 1: the 95th percentile (linear interpolation) and the mean of ``D`` over
the voxels where it is defined, overall, near the scribble (``A >= 0.5``) and far from it (``A < 0.5``).
"No Editing" is the paper's upper-bound baseline: the plain (unweighted) minimum Manhattan distance from the
CAS contour voxels to the contour of ``y_init``. ``cas_to_prediction`` is the same for ``y_hat`` (the
quantity of the paper's Fig. 3, tracked over sequential edits).
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import torch

from ._distance import NearestIndex, boundary, bounding_box, nearest_distances, voxel_indices

ArrayLike = np.ndarray | torch.Tensor
NEAR_THRESHOLD = 0.5
REGIONS = ("overall", "near", "far", "no_editing", "cas_to_prediction")


@dataclass
class EditingResult:
    """Output of :func:`editing_metric`. Maps are float32 numpy arrays (NaN where undefined)."""

    d_map: np.ndarray
    d_edit: np.ndarray
    d_preserve: np.ndarray
    near: np.ndarray
    stats: dict[str, dict[str, float]] = field(default_factory=dict)

    def rows(self) -> list[tuple[str, float]]:
        """Flat ``(name, value)`` pairs for a table: ``D overall p95 (mm)``, ``D near mean (mm)``, ..."""
        out = []
        labels = {
            "overall": "D overall",
            "near": "D near",
            "far": "D far",
            "no_editing": "No Editing",
            "cas_to_prediction": "CAS to prediction",
        }
        for region in REGIONS:
            s = self.stats[region]
            out.append((f"{labels[region]} p95 (mm)", s["p95"]))
            out.append((f"{labels[region]} mean (mm)", s["mean"]))
            out.append((f"{labels[region]} voxels", float(s["count"])))
        return out


def _stats(values: np.ndarray) -> dict[str, float]:
    values = values[~np.isnan(values)]
    if values.size == 0:
        return {"p95": float("nan"), "mean": float("nan"), "count": 0}
    if np.isinf(values).any():
        # A contour had nothing to measure to (an empty mask): the distance is infinite, as for HD.
        return {"p95": float("inf"), "mean": float("inf"), "count": int(values.size)}
    return {"p95": float(np.percentile(values, 95)), "mean": float(values.mean()), "count": int(values.size)}


def _weighted(weight: np.ndarray, distance: np.ndarray) -> np.ndarray:
    # A zero weight zeroes the term even when the distance is infinite (an empty contour).
    with np.errstate(invalid="ignore"):
        return np.where(weight == 0, 0.0, weight * distance)


def _to_numpy(x: ArrayLike) -> np.ndarray:
    return x.detach().cpu().numpy() if isinstance(x, torch.Tensor) else np.asarray(x)


def editing_metric(
    cas: ArrayLike,
    initial: ArrayLike,
    prediction: ArrayLike,
    attention: ArrayLike,
    spacing: float | Sequence[float] | None = None,
) -> EditingResult:
    """The editing distance map ``D`` and its statistics (ice-editing-shahin2023, eqs. 4-6).

    Args:
        cas: boolean mask of the CAS contour voxels ``y_cas`` ``(*spatial)``.
        initial: binary mask of the initial segmentation ``y_init``.
        prediction: binary mask of the edited segmentation ``y_hat``.
        attention: the Gaussian attention map ``A`` of the scribble, values in ``[0, 1]``
            (:func:`losslab.metrics.attention_map`).
        spacing: voxel size in mm per array axis (or one number); ``None``: voxel units.
        All inputs may be numpy arrays or torch tensors; with a tensor, contours and distances are computed
        on its device (GPU when it is a CUDA tensor); the returned maps are numpy either way.

    Returns:
        :class:`EditingResult` with ``d_map``, ``d_edit``, ``d_preserve`` (float32, NaN off their contours),
        ``near`` (``A >= 0.5``) and ``stats[region] = {"p95", "mean", "count"}`` for the regions
        ``overall``, ``near``, ``far``, ``no_editing`` and ``cas_to_prediction``. Undefined statistics are
        NaN with count 0: every region when the CAS contour is empty (D needs D_edit; a warning says so),
        a region without voxels otherwise.

    Raises:
        ValueError: shapes differ, or ``attention`` has values outside ``[0, 1]``.
    """
    use_torch = any(isinstance(x, torch.Tensor) for x in (cas, initial, prediction, attention))
    if use_torch:
        device = next(x.device for x in (cas, initial, prediction, attention) if isinstance(x, torch.Tensor))
        cas_m, init_m, pred_m = (torch.as_tensor(x).to(device).bool() for x in (cas, initial, prediction))
    else:
        cas_m, init_m, pred_m = (np.asarray(x).astype(bool, copy=False) for x in (cas, initial, prediction))
    att = _to_numpy(attention).astype(np.float32, copy=False)
    shapes = {tuple(x.shape) for x in (cas_m, init_m, pred_m, att)}
    if len(shapes) != 1:
        raise ValueError(
            "cas, initial, prediction and attention must have the same shape, got "
            f"{[tuple(x.shape) for x in (cas_m, init_m, pred_m, att)]}"
        )
    if att.size and (float(att.min()) < 0 or float(att.max()) > 1):
        raise ValueError(
            f"attention must hold values in [0, 1] (a Gaussian map A), got [{att.min()}, {att.max()}]"
        )
    if not bool(cas_m.any()):
        warnings.warn("editing metric: the CAS contour is empty: D_edit is undefined", UserWarning, 2)

    shape = att.shape
    d_edit = np.full(shape, np.nan, dtype=np.float32)
    d_preserve = np.full(shape, np.nan, dtype=np.float32)
    union = cas_m | init_m | pred_m
    # Work inside the bounding box of everything (plus one voxel): contours and distances are unchanged
    # and the cost follows the structure, not the grid.
    box = bounding_box(union, margin=1) if bool(union.any()) else tuple(slice(0, n) for n in shape)
    cas_c = cas_m[box]
    c_init, c_hat = boundary(init_m[box]), boundary(pred_m[box])
    for name, contour in (("initial", c_init), ("prediction", c_hat)):
        if not bool(contour.any()):
            warnings.warn(
                f"editing metric: the {name} mask is empty: distances to it are inf", UserWarning, 2
            )
    p_cas, p_init, p_hat = voxel_indices(cas_c), voxel_indices(c_init), voxel_indices(c_hat)
    to_hat = NearestIndex.from_mask(c_hat, spacing, "manhattan", indices=p_hat)
    to_init = NearestIndex.from_mask(c_init, spacing, "manhattan", indices=p_init)
    d_cas_hat = _to_numpy(to_hat.query(p_cas))
    d_cas_init = _to_numpy(to_init.query(p_cas))
    d_init_hat = _to_numpy(to_hat.query(p_init))
    d_hat_init = _to_numpy(to_init.query(p_hat))
    # Everything below touches only contour voxels, through their indices (C order, as the queries).
    i_cas, i_init, i_hat = (tuple(_to_numpy(pts).T) for pts in (p_cas, p_init, p_hat))
    att_box = att[box]
    edit_box = d_edit[box]  # views: writing into them fills the full maps
    pres_box = d_preserve[box]
    edit_box[i_cas] = _weighted(att_box[i_cas], d_cas_hat)
    pres_box[i_init] = _weighted(0.5 * (1.0 - att_box[i_init]), d_init_hat)
    on_hat = _weighted(0.5 * (1.0 - att_box[i_hat]), d_hat_init)
    pres_box[i_hat] = np.where(np.isnan(pres_box[i_hat]), on_hat, pres_box[i_hat] + on_hat)
    # D: the sum of the parts defined at each voxel; NaN where neither is.
    d_map = np.full(shape, np.nan, dtype=np.float32)
    map_box = d_map[box]
    for index in (i_cas, i_init, i_hat):
        e, q = edit_box[index], pres_box[index]
        map_box[index] = np.where(np.isnan(e), q, np.where(np.isnan(q), e, e + q))

    near = att >= NEAR_THRESHOLD
    on_contour = np.zeros(map_box.shape, dtype=bool)
    for index in (i_cas, i_init, i_hat):
        on_contour[index] = True
    flat = np.flatnonzero(on_contour)
    values = map_box.ravel()[flat]
    is_near = att_box.ravel()[flat] >= NEAR_THRESHOLD
    if bool(cas_m.any()):
        stats = {
            "overall": _stats(values),
            "near": _stats(values[is_near]),
            "far": _stats(values[~is_near]),
        }
    else:
        # D = D_edit + D_preserve needs D_edit, which is measured on the CAS contour: without one, D and its
        # statistics are undefined (the maps keep D_preserve where it is defined).
        stats = {region: _stats(np.empty(0)) for region in ("overall", "near", "far")}
    stats["no_editing"] = _stats(d_cas_init)
    stats["cas_to_prediction"] = _stats(d_cas_hat)
    return EditingResult(d_map=d_map, d_edit=d_edit, d_preserve=d_preserve, near=near, stats=stats)


def contour_distance(
    contour: ArrayLike, mask: ArrayLike, spacing: float | Sequence[float] | None = None
) -> dict[str, float]:
    """Minimum Manhattan distance (mm) from given contour voxels to the contour of ``mask``: p95, mean, count.

    The paper's "No Editing" baseline (``mask = y_init``) and Fig. 3 (``mask = y_hat``) in one call.
    """
    d = nearest_distances(contour, boundary(mask), spacing, "manhattan")
    return _stats(_to_numpy(d))
