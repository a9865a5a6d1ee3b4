"""Make the pictures of docs/ice.md from a simulated case (the paper's 128^3 x 1.1024 mm grid, phantom seed 0).

Run:  .venv/bin/python docs/make_ice_figures.py [--out docs/images] [--seed 0]

Writes ice-frames.png (frames of the sweep, raw and with the CAS contour and y's cross-section),
ice-sparse-volume.png (x in three views with y's outline), ice-cas-vs-y.png (CAS contour voxels against y,
and the distribution of their distance to y with the default realism and with it off) and
ice-interactions.png (a training interaction on the worst frame, its u, and the test-time choice), and
ice-atria.png (atria of the wide prior, make_atrium, beside the earlier phantom family), and prints the
figures it measured.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from scipy import ndimage  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "LossLab"))

from losslab.ice import (  # noqa: E402
    Grid,
    SimulationConfig,
    furthest_cas_interaction,
    make_atrium,
    make_phantom,
    sample_atrium,
    sample_on_frames,
    simulate_case,
    training_interaction,
)
from losslab.io import save_figure  # noqa: E402
from losslab.metrics import boundary, nearest_distances  # noqa: E402


def _views(volume: np.ndarray, centre) -> list[np.ndarray]:
    """Axial, coronal, sagittal slices (arrays are (k, j, i) = (S, P, L) on the simulated grid)."""
    k, j, i = (int(round(c)) for c in centre)
    return [volume[k], volume[:, j, :][::-1], volume[:, :, i][::-1]]


VIEW_NAMES = ["axial (A up, R left)", "coronal (S up, R left)", "sagittal (S up, A left)"]


def frames_figure(case, out: Path) -> Path:
    picks = [3, len(case.frames) // 2, len(case.frames) - 5]
    fig, axes = plt.subplots(2, 3, figsize=(13, 7.2), facecolor="black")
    y_frames = sample_on_frames(case, case.label, picks)
    for col, (f, y2d) in enumerate(zip(picks, y_frames)):
        frame = case.frames[f]
        for row in range(2):
            ax = axes[row, col]
            ax.imshow(frame.image, cmap="gray", vmin=0, vmax=1)
            ax.set_axis_off()
            if row == 1:
                ax.contour(y2d, [0.5], colors="cyan", linewidths=0.8)
                for line in frame.contours:
                    ax.plot(line[:, 0], line[:, 1], color="yellow", lw=1.0)
        axes[0, col].set_title(f"frame {f + 1} of {len(case.frames)}, phase {frame.phase:.2f}", color="white")
    axes[1, 0].text(
        2,
        case.sector.rows - 4,
        "yellow: CAS contour   cyan: y at the nominal pose",
        color="white",
        fontsize=9,
    )
    fig.tight_layout()
    path = save_figure(fig, out / "ice-frames.png", dpi=90, facecolor="black")
    plt.close(fig)
    return path


def volume_figure(case, out: Path) -> Path:
    centre = ndimage.center_of_mass(case.label)
    fig, axes = plt.subplots(2, 3, figsize=(13, 8.6))
    for col, (x, m, y, name) in enumerate(
        zip(
            _views(case.image, centre),
            _views(case.datamask, centre),
            _views(case.label, centre),
            VIEW_NAMES,
        )
    ):
        axes[0, col].imshow(x, cmap="gray", vmin=0, vmax=1)
        axes[0, col].contour(y, [0.5], colors="cyan", linewidths=0.8)
        axes[0, col].set_title(f"x, {name}")
        axes[1, col].imshow(m, cmap="gray", vmin=0, vmax=1)
        axes[1, col].set_title(f"data mask ({case.datamask.mean():.1%} of the grid)")
    for ax in axes.ravel():
        ax.set_axis_off()
    fig.tight_layout()
    path = save_figure(fig, out / "ice-sparse-volume.png", dpi=80)
    plt.close(fig)
    return path


def cas_figure(case, exact, out: Path) -> tuple[Path, float, float]:
    y = case.label.astype(bool)
    d_default = nearest_distances(case.cas > 0, boundary(y), case.spacing)
    d_exact = nearest_distances(exact.cas > 0, boundary(y), exact.spacing)
    centre = ndimage.center_of_mass(y)
    fig, axes = plt.subplots(1, 4, figsize=(17, 4.6))
    labels = np.where(case.cas > 0, case.cas, np.nan).astype(float)
    for ax, yv, name, axis in zip(axes[:3], _views(y, centre), VIEW_NAMES, range(3)):
        ax.contour(yv, [0.5], colors="cyan", linewidths=1.0)
        # CAS voxels within 4 mm of the slice, coloured by frame.
        k = int(round(centre[axis]))
        half = int(np.ceil(4.0 / case.spacing[axis]))
        slab = np.take(labels, range(k - half, k + half + 1), axis=axis)
        proj = np.nanmax(np.where(np.isnan(slab), -1, slab), axis=axis)
        proj = np.where(proj < 0, np.nan, proj)
        proj = proj if axis == 0 else proj[::-1]
        ax.imshow(proj, cmap="plasma", interpolation="nearest")
        ax.set_title(f"CAS voxels (colour: frame) vs y, {name.split(' ')[0]}")
        ax.set_axis_off()
        ax.set_aspect("equal")
    bins = np.linspace(0, 6, 31)
    axes[3].hist(d_exact, bins, alpha=0.6, label=f"realism off: mean {d_exact.mean():.2f} mm")
    axes[3].hist(d_default, bins, alpha=0.6, label=f"defaults: mean {d_default.mean():.2f} mm")
    axes[3].set_xlabel("distance from a CAS voxel to y's boundary (mm)")
    axes[3].set_ylabel("CAS voxels")
    axes[3].legend()
    fig.tight_layout()
    path = save_figure(fig, out / "ice-cas-vs-y.png", dpi=80)
    plt.close(fig)
    return path, float(d_default.mean()), float(d_exact.mean())


def interactions_figure(case, out: Path) -> Path:
    y = case.label.astype(bool)
    # A constructed y_init: y with a 12 mm bite out of the wall and a 7 mm bump on the opposite side.
    wall = np.argwhere(boundary(y))
    centre = np.asarray(ndimage.center_of_mass(y))
    bite = wall[len(wall) // 3]
    bump = wall[
        np.argmax(
            np.linalg.norm((wall - centre) * (centre - bite) / np.linalg.norm(centre - bite), axis=1)
            * np.sign((wall - centre) @ (centre - bite))
        )
    ]
    grid = np.ogrid[tuple(slice(0, n) for n in y.shape)]

    def ball(c, r):
        return sum((g - v) ** 2 for g, v in zip(grid, c)) * case.spacing[0] ** 2 <= r**2

    y_init = (y & ~ball(bite, 12.0)) | ball(bump, 7.0)
    edit = training_interaction(case, y_init, seed=0)
    moved = training_interaction(case, y_init, seed=0, offset_mm=3.0, jitter_mm=1.0, fraction=0.6)
    test = furthest_cas_interaction(case, y_init)
    u = edit.encode(case.spacing)
    y2d, i2d = sample_on_frames(case, y, [edit.frame])[0], sample_on_frames(case, y_init, [edit.frame])[0]
    fig, axes = plt.subplots(1, 3, figsize=(16, 5))
    ax = axes[0]
    ax.imshow(case.frames[edit.frame].image, cmap="gray", vmin=0, vmax=1)
    ax.imshow(np.ma.masked_where(~edit.region, edit.region), cmap="autumn", alpha=0.45)
    ax.contour(y2d, [0.5], colors="cyan", linewidths=0.8)
    ax.contour(i2d, [0.5], colors="red", linewidths=0.8)
    for line in edit.polylines:
        ax.plot(line[:, 0], line[:, 1], color="yellow", lw=2)
    for line in moved.polylines:
        ax.plot(line[:, 0], line[:, 1], color="lime", lw=1, ls="--")
    ax.set_title(f"training: worst frame {edit.frame + 1} (cyan y, red y_init, orange region)", fontsize=10)
    ax.set_axis_off()
    k = int(np.argwhere(edit.voxels)[:, 0].mean())
    axes[1].imshow(u[k], cmap="magma", vmin=0, vmax=1)
    axes[1].contour(y[k], [0.5], colors="cyan", linewidths=0.8)
    axes[1].contour(y_init[k], [0.5], colors="red", linewidths=0.8)
    axes[1].set_title(f"u = attention map, sigma {20 * 1.1024:.1f} mm, axial slice {k}", fontsize=10)
    axes[1].set_axis_off()
    frame = case.frames[test.frame]
    axes[2].imshow(frame.image, cmap="gray", vmin=0, vmax=1)
    axes[2].contour(sample_on_frames(case, y_init, [test.frame])[0], [0.5], colors="red", linewidths=0.8)
    for line in frame.contours:
        axes[2].plot(line[:, 0], line[:, 1], color="yellow", lw=1.5)
    axes[2].set_title(
        f"testing: furthest CAS contour, frame {test.frame + 1} ({test.error:.1f} mm)", fontsize=10
    )
    axes[2].set_axis_off()
    fig.text(
        0.01, 0.02, "yellow: scribble; green dashed: perturbed (+3 mm out, 1 mm jitter, 60 %)", fontsize=9
    )
    fig.tight_layout()
    path = save_figure(fig, out / "ice-interactions.png", dpi=80)
    plt.close(fig)
    return path


def _depth_shaded(mask: np.ndarray, axis: int, flip: bool) -> np.ndarray:
    """A projection of a mask along an array axis, each pixel shaded by the depth of the first voxel seen."""
    m = np.flip(mask, axis) if flip else mask
    hit = m.any(axis=axis)
    depth = np.argmax(m, axis=axis).astype(float)
    shade = 1.0 - 0.7 * depth / mask.shape[axis]
    return np.where(hit, shade, np.nan)


def atria_figure(out: Path, n: int = 10) -> Path:
    """Atria of the wide prior (seeds 0..n-1) and two phantoms, seen from anterior and from above (64^3)."""
    grid = Grid.cube(64, 2.2048)
    shapes = [(f"atrium seed {s}", make_atrium(grid, s), sample_atrium(s)) for s in range(n)]
    shapes += [(f"phantom seed {s}", make_phantom(grid, s), None) for s in (85, 86)]
    cols = 6
    rows = 2 * int(np.ceil(len(shapes) / cols))
    fig, axes = plt.subplots(rows, cols, figsize=(2.3 * cols, 2.4 * rows))
    for k, (name, mask, params) in enumerate(shapes):
        r, c = 2 * (k // cols), k % cols
        # arrays (k, j, i) = (S, P, L): from anterior look along +j (flip), from above along -k
        anterior = _depth_shaded(mask, 1, flip=False)[::-1, ::-1]
        above = _depth_shaded(mask, 0, flip=True)[:, ::-1]
        for row, view in ((r, anterior), (r + 1, above)):
            axes[row, c].imshow(view, cmap="bone", vmin=0, vmax=1)
            axes[row, c].set_axis_off()
        ml = mask.sum() * 2.2048**3 / 1000
        if params:
            veins = "common L trunk" if params["left_pattern"] == "common trunk" else "4 ostia"
            veins += " + R middle" if params["right_middle"] else ""
            title = f"{name}: {ml:.0f} ml\n{veins}, {params['laa']['type']}"
        else:
            title = f"{name} (held out): {ml:.0f} ml"
        axes[r, c].set_title(title, fontsize=7)
    for k in range(len(shapes), (rows // 2) * cols):
        axes[2 * (k // cols), k % cols].set_axis_off()
        axes[2 * (k // cols) + 1, k % cols].set_axis_off()
    fig.suptitle(
        "Left atria of the wide prior (make_atrium) and the earlier phantom family: from anterior "
        "(R on the left, S up) and from above (R on the left, A up)",
        fontsize=9,
    )
    fig.tight_layout()
    path = save_figure(fig, out / "ice-atria.png", dpi=80)
    plt.close(fig)
    return path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path(__file__).resolve().parent / "images")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    print(atria_figure(args.out))
    grid = Grid.cube()
    anatomy = make_phantom(grid, args.seed)
    case = simulate_case(anatomy, grid, SimulationConfig(), seed=args.seed)
    exact = simulate_case(anatomy, grid, SimulationConfig().without_realism(), seed=args.seed)
    print(frames_figure(case, args.out))
    print(volume_figure(case, args.out))
    path, d_default, d_exact = cas_figure(case, exact, args.out)
    print(path)
    print(interactions_figure(case, args.out))
    print(
        f"seed {args.seed}: {len(case.frames)} frames of {case.frames[0].image.shape}, data mask "
        f"{case.datamask.mean():.1%} of the grid, mean CAS-to-y distance {d_default:.2f} mm (defaults), "
        f"{d_exact:.2f} mm (realism off)"
    )


if __name__ == "__main__":
    main()
