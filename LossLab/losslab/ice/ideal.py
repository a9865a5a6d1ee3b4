"""The ideal-user protocol: does a user who draws the true boundary get a better segmentation, edit after edit?

Table 1 and Fig. 3 of ice-editing-shahin2023 score edits against the CAS contours, which disagree with ``y``
by the pose error and the cardiac motion of each frame. This protocol asks the question a user asks instead:
after each correction, is the segmentation closer to the truth ``y``?

For each case and each of two **starts**:

- ``segmentation``: the segmentation model's prediction of ``x`` (the way the editing models are used);
- ``damaged``: ``y`` with seeded bites and bumps (:func:`damage_mask`: balls centred on y's boundary removed
  from or added to it; default one 10 mm bite and one 7 mm bump), a nearly right mask;

an ideal user makes ``edits`` corrections in sequence: at each step the scribble is y's own 2D contour on the
frame where the current mask is worst (:func:`losslab.ice.training_interaction` on the current mask, the
longest piece of y's contour along the largest error region there), the editing model edits, and its output is
the next step's mask. A mask that agrees with y on every frame ends the sequence (its values are carried to
the remaining steps). Three **conditions**:

- ``clean``: the scribble exactly on y's contour;
- ``noisy``: the same scribble perturbed by :func:`losslab.ice.perturb_polyline` (default: an offset of 1 mm
  along the contour's normal, its sign drawn per edit; 1 mm RMS jitter; a partial piece of 60 % of the length);
- ``strict``: clean scribbles and "strict local" editing (:meth:`EditingModel.edit`'s ``strict_threshold``,
  default 0.1): voxels where the scribble's ``A`` is below it keep the current mask.

Reported per start, model and condition (means over cases): Dice and HD95 to y after each edit (edit 0: the
start), the final Dice minus the start's (mean and worst case), the worst single-step Dice change over all
cases and steps (negative: an edit that made the mask worse), the number of edits that lowered Dice by more
than :data:`DROP_TOLERANCE`, and the voxels changed where ``A < 0.1`` (far from the scribble; ``A`` is the
model's heatmap of the scribble). The segmentation model's own Dice and HD95 to y are reported too.
Everything random is seeded; the same case gives the same result.
"""

from __future__ import annotations

import json
import math
import os
import warnings
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ..metrics import boundary, dice_score, hd95
from .interactions import training_interaction
from .simulate import ICECase

STARTS = ("segmentation", "damaged")
CONDITIONS = ("clean", "noisy", "strict")
#: the ``noisy`` condition's perturbation of the ideal scribble (mm, mm RMS, fraction of its length)
DEFAULT_NOISE = {"offset_mm": 1.0, "jitter_mm": 1.0, "fraction": 0.6}
#: "strict local" threshold of the ``strict`` condition, and the A below which a change counts as far
STRICT_THRESHOLD = 0.1
FAR_A = 0.1
#: a single edit that lowers Dice by more than this is counted as a harmful step
DROP_TOLERANCE = 0.005


def _finite(x: float) -> float | None:
    return float(x) if math.isfinite(x) else None


def damage_mask(
    label: np.ndarray,
    spacing: Sequence[float],
    seed: int,
    bites_mm: Sequence[float] = (10.0,),
    bumps_mm: Sequence[float] = (7.0,),
) -> np.ndarray:
    """``y`` damaged by balls centred on its boundary: removed (bites, radii ``bites_mm``) or added (bumps,
    radii ``bumps_mm``). Centres are drawn from ``seed`` among y's boundary voxels, each at least the sum of
    the radii away from the centres before it (the closest possible when none is that far)."""
    y = np.asarray(label) != 0
    if not y.any():
        raise ValueError("the label is empty: nothing to damage")
    sp = np.asarray(spacing, float)
    rng = np.random.default_rng(seed)
    edge = np.argwhere(boundary(y)) * sp
    out = y.copy()
    grid = np.indices(y.shape, sparse=True)
    centres: list[tuple[np.ndarray, float]] = []
    for radius, remove in [(r, True) for r in bites_mm] + [(r, False) for r in bumps_mm]:
        order = rng.permutation(len(edge))
        best, best_gap = edge[order[0]], -np.inf
        for i in order[: min(len(order), 200)]:
            gap = min((np.linalg.norm(edge[i] - c) - radius - r for c, r in centres), default=np.inf)
            if gap >= 0:
                best = edge[i]
                break
            if gap > best_gap:
                best, best_gap = edge[i], gap
        centres.append((best, float(radius)))
        ball = sum(((g * s) - c) ** 2 for g, s, c in zip(grid, sp, best)) <= radius**2
        out = out & ~ball if remove else out | ball
    return out


def ideal_edits(
    case: ICECase,
    start: np.ndarray,
    model: Any,
    edits: int = 10,
    seed: int = 0,
    noise: Mapping[str, float] | None = None,
    strict_threshold: float | None = None,
) -> dict[str, Any]:
    """``edits`` ideal-user corrections of ``start`` by ``model`` (see the module docstring).

    Args:
        noise: ``offset_mm`` (its sign drawn per edit), ``jitter_mm``, ``fraction`` for the scribble, or
            ``None`` for the exact contour.
        strict_threshold: passed to ``model.edit`` ("strict local"); ``None``: off.

    Returns:
        ``{"dice": [edit 0..edits], "hd95": [...] (mm; None for an empty mask), "changed": [per edit],
        "changed_far": [per edit: voxels changed where A < 0.1], "frames": [frame drawn on], "stopped_at":
        the edit at which the mask agreed with y on every frame (None)}``.
    """
    y = case.label != 0
    mask = np.asarray(start) != 0
    out: dict[str, Any] = {"dice": [], "hd95": [], "changed": [], "changed_far": [], "frames": []}
    out["stopped_at"] = None

    def score(m):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)
            out["dice"].append(float(dice_score(m, y)))
            out["hd95"].append(_finite(hd95(m, y, case.spacing)))

    score(mask)
    for step in range(edits):
        kwargs: dict[str, Any] = {}
        if noise:
            sign = 1.0 if np.random.default_rng([seed, step, 7]).random() < 0.5 else -1.0
            kwargs = {
                "offset_mm": sign * float(noise.get("offset_mm", 0.0)),
                "jitter_mm": float(noise.get("jitter_mm", 0.0)),
                "fraction": float(noise.get("fraction", 1.0)),
            }
        edit = training_interaction(case, mask, seed=seed + step, **kwargs)
        if edit is None or not edit.voxels.any():
            out["stopped_at"] = step
            for key in ("dice", "hd95"):
                out[key] += [out[key][-1]] * (edits - step)
            out["changed"] += [0] * (edits - step)
            out["changed_far"] += [0] * (edits - step)
            break
        result = model.edit(case.image, mask, edit.voxels, case.spacing, strict_threshold=strict_threshold)
        new = np.asarray(result.mask, bool)
        changed = new != mask
        out["changed"].append(int(changed.sum()))
        out["changed_far"].append(int((changed & (np.asarray(result.attention) < FAR_A)).sum()))
        out["frames"].append(int(edit.frame))
        mask = new
        score(mask)
    return out


def _runs(case, starts, models, edits, seed, noise, strict_threshold, conditions):
    settings = {"clean": {}, "noisy": {"noise": noise}, "strict": {"strict_threshold": strict_threshold}}
    runs: dict[str, Any] = {}
    for start_name, start in starts.items():
        runs[start_name] = {}
        for name, model in models.items():
            runs[start_name][name] = {
                c: ideal_edits(case, start, model, edits, seed, **settings[c]) for c in conditions
            }
    return runs


def _check_conditions(conditions: Sequence[str]) -> tuple[str, ...]:
    conditions = tuple(conditions)
    unknown = [c for c in conditions if c not in CONDITIONS]
    if not conditions or unknown:
        raise ValueError(f"conditions must be some of {list(CONDITIONS)}, got {list(conditions)}")
    return conditions


def evaluate_ideal_case(
    case: ICECase,
    initial: np.ndarray,
    models: Mapping[str, Any],
    *,
    edits: int = 10,
    seed: int = 0,
    noise: Mapping[str, float] | None = None,
    strict_threshold: float = STRICT_THRESHOLD,
    conditions: Sequence[str] = CONDITIONS,
) -> dict[str, Any]:
    """The protocol on one case: ``initial`` is the segmentation model's prediction (the first start); the
    damaged start is :func:`damage_mask` of y with ``seed``. Returns the per-case values (module docstring)."""
    conditions = _check_conditions(conditions)
    y = case.label != 0
    noise = DEFAULT_NOISE if noise is None else noise
    starts = {"segmentation": np.asarray(initial) != 0, "damaged": damage_mask(y, case.spacing, seed)}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        segmentation = {
            "dice": float(dice_score(starts["segmentation"], y)),
            "hd95": _finite(hd95(starts["segmentation"], y, case.spacing)),
        }
    return {
        "segmentation": segmentation,
        "runs": _runs(case, starts, models, edits, seed, noise, strict_threshold, conditions),
    }


def _mean_curve(curves: Sequence[Sequence[float | None]]) -> list[float | None]:
    out = []
    for k in range(max((len(c) for c in curves), default=0)):
        values = [c[k] for c in curves if len(c) > k and c[k] is not None]
        out.append(float(np.mean(values)) if values else None)
    return out


def summarize_ideal(cases: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """Means over cases per start, model and condition, and the segmentation model's Dice / HD95."""
    seg_dice = [c["segmentation"]["dice"] for c in cases]
    seg_hd = [c["segmentation"]["hd95"] for c in cases if c["segmentation"]["hd95"] is not None]
    out: dict[str, Any] = {
        "segmentation": {
            "dice_mean": float(np.mean(seg_dice)),
            "dice_min": float(np.min(seg_dice)),
            "hd95_mean": float(np.mean(seg_hd)) if seg_hd else None,
            "hd95_max": float(np.max(seg_hd)) if seg_hd else None,
            "cases": len(cases),
        },
        "starts": {},
    }
    for start in cases[0]["runs"]:
        out["starts"][start] = {}
        for name in cases[0]["runs"][start]:
            out["starts"][start][name] = {}
            for condition in cases[0]["runs"][start][name]:
                runs = [c["runs"][start][name][condition] for c in cases]
                steps = [np.diff(r["dice"]) for r in runs]
                gains = [r["dice"][-1] - r["dice"][0] for r in runs]
                out["starts"][start][name][condition] = {
                    "dice": _mean_curve([r["dice"] for r in runs]),
                    "hd95": _mean_curve([r["hd95"] for r in runs]),
                    "start_dice": float(np.mean([r["dice"][0] for r in runs])),
                    "final_dice": float(np.mean([r["dice"][-1] for r in runs])),
                    "final_dice_min": float(np.min([r["dice"][-1] for r in runs])),
                    "final_minus_start_mean": float(np.mean(gains)),
                    "final_minus_start_min": float(np.min(gains)),
                    "worst_step_dice_change": float(min((s.min() for s in steps if len(s)), default=0.0)),
                    "harmful_edits": int(sum(int((s < -DROP_TOLERANCE).sum()) for s in steps)),
                    "edits": int(sum(len(r["frames"]) for r in runs)),
                    "changed_far_total": int(sum(sum(r["changed_far"]) for r in runs)),
                    "changed_far_max": int(max((max(r["changed_far"], default=0) for r in runs), default=0)),
                }
    return out


def evaluate_ideal(
    dataset: str | os.PathLike,
    segmentation_model: Any,
    editing_models: Mapping[str, Any],
    *,
    edits: int = 10,
    split: str = "test",
    seed: int = 0,
    noise: Mapping[str, float] | None = None,
    strict_threshold: float = STRICT_THRESHOLD,
    conditions: Sequence[str] = CONDITIONS,
    device: str = "cpu",
    progress: bool = True,
    log: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    """The ideal-user protocol on the cases of ``split`` (``"all"``: every case) of a ``losslab ice simulate``
    dataset. Case ``i`` (in the manifest's order) uses seed ``seed + i``. Returns the JSON-ready result:
    ``summary`` (:func:`summarize_ideal`), ``cases`` and ``settings``."""
    from .dataset import read_case
    from .evaluate import protocol_inputs

    if edits < 1:
        raise ValueError(f"edits must be at least 1, got {edits}")
    if not editing_models:
        raise ValueError("give at least one editing model (NAME=PATH)")
    if not 0 < strict_threshold <= 1:
        raise ValueError(f"strict_threshold must be in (0, 1], got {strict_threshold}")
    noise = dict(DEFAULT_NOISE if noise is None else noise)
    conditions = _check_conditions(conditions)
    folders, segment, models = protocol_inputs(dataset, split, segmentation_model, editing_models, device)
    from tqdm.auto import tqdm

    per_case = []
    for i, (cid, folder) in enumerate(
        tqdm(list(folders.items()), desc="ideal user", unit="case", disable=not progress)
    ):
        case = read_case(folder)
        values = evaluate_ideal_case(
            case,
            segment(case.image),
            models,
            edits=edits,
            seed=seed + i,
            noise=noise,
            strict_threshold=strict_threshold,
            conditions=conditions,
        )
        per_case.append({"case": cid, **values})
        if log:
            log(f"{cid}: segmentation Dice {values['segmentation']['dice']:.3f}")
    return {
        "summary": summarize_ideal(per_case),
        "cases": per_case,
        "settings": {
            "protocol": "ideal",
            "dataset": str(dataset),
            "split": split,
            "edits": edits,
            "seed": seed,
            "noise": noise,
            "strict_threshold": strict_threshold,
            "conditions": list(conditions),
            "far_attention": FAR_A,
            "drop_tolerance": DROP_TOLERANCE,
            "damage": {"bites_mm": [10.0], "bumps_mm": [7.0]},
            "precision": "float32",
            "models": {n: str(editing_models[n]) for n in models},
        },
    }


def _f(v: float | None, digits: int = 3) -> str:
    return "n/a" if v is None else f"{v:.{digits}f}"


def ideal_markdown(result: Mapping[str, Any]) -> str:
    """The protocol's summary as markdown: one table per start (rows: model x condition)."""
    s = result["summary"]
    seg = s["segmentation"]
    cfg = result["settings"]
    lines = [
        f"Ideal user: {cfg['edits']} edits with y's own contour on the worst frame, {seg['cases']} case(s).",
        "",
        f"Segmentation model: Dice to y {seg['dice_mean']:.3f} mean, {seg['dice_min']:.3f} worst case; "
        f"HD95 {_f(seg['hd95_mean'], 2)} mm mean, {_f(seg['hd95_max'], 2)} mm worst.",
    ]
    for start, models in s["starts"].items():
        title = {
            "segmentation": "From the segmentation model's output",
            "damaged": "From y damaged by a 10 mm bite and a 7 mm bump",
        }.get(start, start)
        lines += [
            "",
            f"{title}:",
            "",
            "| model | condition | Dice start | Dice final | final - start (mean / worst) | worst single edit "
            "| edits lowering Dice > 0.005 | HD95 start -> final (mm) | voxels changed where A < 0.1 (total / max) |",
            "| --- | --- | --- | --- | --- | --- | --- | --- | --- |",
        ]
        for name, conditions in models.items():
            for condition, r in conditions.items():
                lines.append(
                    f"| {name} | {condition} | {r['start_dice']:.3f} | {r['final_dice']:.3f} | "
                    f"{r['final_minus_start_mean']:+.3f} / {r['final_minus_start_min']:+.3f} | "
                    f"{r['worst_step_dice_change']:+.3f} | {r['harmful_edits']} of {r['edits']} | "
                    f"{_f(r['hd95'][0], 2)} -> {_f(r['hd95'][-1], 2)} | "
                    f"{r['changed_far_total']} / {r['changed_far_max']} |"
                )
    noise = cfg["noise"]
    lines += [
        "",
        "Higher Dice and lower HD95 are better; a good editing model ends above its start, has no edit that "
        "lowers Dice by more than 0.005, and changes nothing far from the scribble.",
        f"Conditions: clean (the scribble on y's contour), noisy (offset +-{noise['offset_mm']:g} mm, jitter "
        f"{noise['jitter_mm']:g} mm RMS, {100 * noise['fraction']:g} % of the piece), strict (clean, voxels with "
        f"A < {cfg['strict_threshold']:g} keep the mask).",
    ]
    return "\n".join(lines) + "\n"


def plot_ideal(result: Mapping[str, Any], path: str | os.PathLike) -> Path:
    """Dice to y after each ideal edit: one panel per start, one line per model and condition."""
    from matplotlib.figure import Figure

    from ..io import save_figure

    starts = result["summary"]["starts"]
    fig = Figure(figsize=(5.2 * len(starts), 4))
    axes = np.atleast_1d(fig.subplots(1, len(starts)))
    styles = {"clean": "-", "noisy": "--", "strict": ":"}
    for ax, (start, models) in zip(axes, starts.items()):
        for k, (name, conditions) in enumerate(models.items()):
            for condition, r in conditions.items():
                ys = [np.nan if v is None else v for v in r["dice"]]
                ax.plot(
                    range(len(ys)),
                    ys,
                    styles.get(condition, "-"),
                    color=f"C{k}",
                    marker="o" if condition == "clean" else None,
                    label=f"{name} ({condition})",
                )
        ax.set_xlabel("ideal edit")
        ax.set_ylabel("Dice to y (higher is better)")
        ax.set_title(f"start: {start}", fontsize=10)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    fig.tight_layout()
    return save_figure(fig, path, dpi=110)


def write_ideal_outputs(
    result: Mapping[str, Any], outdir: str | os.PathLike, json_path: str | os.PathLike | None = None
) -> dict[str, Path]:
    """``ideal.md``, ``ideal.png`` and ``ideal.json`` (or ``json_path``) in ``outdir``."""
    from ..io import write_text

    outdir = Path(outdir)
    outdir.mkdir(parents=True, exist_ok=True)
    paths = {
        "markdown": write_text(outdir / "ideal.md", ideal_markdown(result)),
        "figure": plot_ideal(result, outdir / "ideal.png"),
    }
    path = Path(json_path) if json_path else outdir / "ideal.json"
    paths["json"] = write_text(path, json.dumps(result, indent=1, allow_nan=False) + "\n")
    return paths


__all__ = [
    "CONDITIONS",
    "DEFAULT_NOISE",
    "DROP_TOLERANCE",
    "STARTS",
    "STRICT_THRESHOLD",
    "damage_mask",
    "evaluate_ideal",
    "evaluate_ideal_case",
    "ideal_edits",
    "ideal_markdown",
    "plot_ideal",
    "summarize_ideal",
    "write_ideal_outputs",
]
