"""HD95 and the editing D map: LossLab against MONAI, surface-distance (DeepMind) and SimpleITK, side by side.

Run:  .venv/bin/python benchmarks/metrics.py [--sizes 128 256] [--repeats 3]

For each grid size (128^3, 256^3) and spacing (isotropic 1.1024 mm, anisotropic 1.1024 x 0.8 x 2.5 mm) it
builds a perturbed-ball pair (an LA-sized blob and a shifted, bumpy copy), times every implementation on the
same masks in this process, and prints the value each gives and its time relative to LossLab's CPU path
(ratio > 1: the peer is slower). The D map of the editing metric (Manhattan, spacing-weighted) is compared
with a scipy chamfer-transform implementation and with MONAI's surface distances (taxicab; MONAI ignores
the spacing there, so that peer runs on isotropic grids only). With CUDA, LossLab's torch path runs on GPU
too and its speed-up over MONAI on the CPU is printed.
"""

from __future__ import annotations

import argparse
import sys
import time
import warnings
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "LossLab"))

from losslab.metrics import attention_map, boundary, editing_metric, hd95  # noqa: E402


def timed(fn, repeats: int):
    best, value = float("inf"), None
    for _ in range(repeats):
        t0 = time.perf_counter()
        value = fn()
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        best = min(best, time.perf_counter() - t0)
    return value, best


def make_pair(n: int, spacing, seed: int = 0):
    rng = np.random.default_rng(seed)
    grids = np.meshgrid(*[(np.arange(n) - n / 2) * s for s in spacing], indexing="ij")
    r = np.sqrt(sum(g**2 for g in grids))
    theta = np.arctan2(grids[1], grids[0])
    radius = 0.3 * n * 1.1024
    a = r <= radius * (1 + 0.05 * np.sin(5 * theta))
    shifted = [g - 0.03 * n * 1.1024 for g in grids]
    r2 = np.sqrt(sum(g**2 for g in shifted))
    b = r2 <= radius * 0.9 * (1 + 0.08 * np.cos(3 * theta))
    b ^= rng.random(a.shape) > 0.9995  # a few specks: outliers that HD95 must handle
    return a, b


# ---- peers ----------------------------------------------------------------------------------------------


def monai_hd95(a, b, spacing):
    from monai.metrics import compute_hausdorff_distance

    def onehot(m):
        return torch.from_numpy(np.stack([~m, m])[None])

    return float(compute_hausdorff_distance(onehot(a), onehot(b), percentile=95, spacing=list(spacing))[0, 0])


def surface_distance_hd95(a, b, spacing):
    import surface_distance

    d = surface_distance.compute_surface_distances(b, a, spacing)
    return float(surface_distance.compute_robust_hausdorff(d, 95))


def sitk_hd95(a, b, spacing):
    import SimpleITK as sitk

    def image(m):
        img = sitk.GetImageFromArray(m.astype(np.uint8))
        img.SetSpacing(tuple(float(s) for s in reversed(spacing)))
        return img

    ia, ib = image(a), image(b)
    out = []
    for src, dst in ((ia, ib), (ib, ia)):
        contour = sitk.GetArrayViewFromImage(sitk.LabelContour(src, fullyConnected=False)) > 0
        dist = sitk.SignedMaurerDistanceMap(
            sitk.LabelContour(dst, fullyConnected=False),
            insideIsPositive=False,
            squaredDistance=False,
            useImageSpacing=True,
        )
        out.append(np.percentile(np.abs(sitk.GetArrayViewFromImage(dist)[contour]), 95))
    return float(max(out))


def scipy_dmap(cas, init, pred, att, spacing):
    """The D map with scipy's chamfer (taxicab) transforms over the whole grid, per contour."""
    from scipy import ndimage

    def dist_to(mask):
        # taxicab chamfer distance in voxels, scaled by the mean spacing (exact only for isotropic grids)
        return ndimage.distance_transform_cdt(~mask, metric="taxicab").astype(np.float32) * float(
            np.mean(spacing)
        )

    c_init, c_hat = boundary(init), boundary(pred)
    d_hat, d_init = dist_to(c_hat), dist_to(c_init)
    d = np.full(cas.shape, np.nan, np.float32)
    d[cas] = att[cas] * d_hat[cas]
    w = (1 - att) / 2
    d[c_init] = np.nan_to_num(d[c_init]) + w[c_init] * d_hat[c_init]
    d[c_hat] = np.nan_to_num(d[c_hat]) + w[c_hat] * d_init[c_hat]
    return float(np.nanpercentile(d, 95))


def monai_dmap(cas, init, pred, att, spacing):
    """The D map's distances with MONAI's taxicab surface distances (voxel units x spacing)."""
    from monai.metrics.utils import get_surface_distance

    c_init, c_hat = boundary(init), boundary(pred)
    s = float(np.mean(spacing))
    d_cas = get_surface_distance(cas, c_hat, "taxicab") * s
    d_ih = get_surface_distance(c_init, c_hat, "taxicab") * s
    d_hi = get_surface_distance(c_hat, c_init, "taxicab") * s
    vals = np.concatenate([att[cas] * d_cas, (1 - att[c_init]) / 2 * d_ih, (1 - att[c_hat]) / 2 * d_hi])
    return float(np.percentile(vals, 95))


# ---- main -----------------------------------------------------------------------------------------------


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[128, 256])
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    warnings.simplefilter("ignore")
    cuda = torch.cuda.is_available()
    print(f"torch {torch.__version__}, threads {torch.get_num_threads()}, CUDA: {cuda}")
    spacings = {"iso": (1.1024, 1.1024, 1.1024), "aniso": (2.5, 1.1024, 0.8)}
    for n in args.sizes:
        for sp_name, spacing in spacings.items():
            a, b = make_pair(n, spacing)
            print(f"\n## HD95, {n}^3, spacing {sp_name} {spacing} mm")
            print(f"{'implementation':28s} {'HD95 (mm)':>10s} {'time (s)':>9s} {'time / LossLab':>15s}")
            ours, t_ours = timed(lambda: hd95(a, b, spacing), args.repeats)
            rows = [("LossLab (CPU)", ours, t_ours)]
            peers = [
                ("MONAI 1.x (CPU)", lambda: monai_hd95(a, b, spacing)),
                ("surface-distance (CPU)", lambda: surface_distance_hd95(a, b, spacing)),
                ("SimpleITK Maurer (CPU)", lambda: sitk_hd95(a, b, spacing)),
            ]
            monai_time = None
            for name, fn in peers:
                value, t = timed(fn, args.repeats)
                rows.append((name, value, t))
                if name.startswith("MONAI"):
                    monai_time = t
            if cuda:
                ta, tb = torch.from_numpy(a).cuda(), torch.from_numpy(b).cuda()
                hd95(ta, tb, spacing)  # warm-up
                value, t = timed(lambda: hd95(ta, tb, spacing), args.repeats)
                rows.append(("LossLab (CUDA)", value, t))
            for name, value, t in rows:
                print(f"{name:28s} {value:10.4f} {t:9.3f} {t / t_ours:15.2f}")
            if cuda and monai_time:
                print(f"GPU speed-up over MONAI on CPU: {monai_time / rows[-1][2]:.1f}x")

            print(f"\n## Editing D map, {n}^3, spacing {sp_name}")
            cas = boundary(a) & (np.arange(n)[:, None, None] % 8 == 0)
            scribble = np.zeros_like(a)
            idx = np.argwhere(cas)
            scribble[tuple(idx[: max(1, len(idx) // 50)].T)] = True
            att = attention_map(scribble, 20.0)
            ours, t_ours = timed(
                lambda: editing_metric(cas, b, a, att, spacing).stats["overall"]["p95"], args.repeats
            )
            rows = [("LossLab (CPU)", ours, t_ours)]
            value, t = timed(lambda: scipy_dmap(cas, b, a, att, spacing), args.repeats)
            rows.append(("scipy chamfer (CPU)", value, t))
            if sp_name == "iso":
                value, t = timed(lambda: monai_dmap(cas, b, a, att, spacing), args.repeats)
                rows.append(("MONAI taxicab (CPU)", value, t))
            if cuda:
                tt = [torch.from_numpy(x).cuda() for x in (cas, b, a, att)]
                editing_metric(*tt, spacing)
                value, t = timed(lambda: editing_metric(*tt, spacing).stats["overall"]["p95"], args.repeats)
                rows.append(("LossLab (CUDA)", value, t))
            print(f"{'implementation':28s} {'D p95 (mm)':>10s} {'time (s)':>9s} {'time / LossLab':>15s}")
            for name, value, t in rows:
                print(f"{name:28s} {value:10.4f} {t:9.3f} {t / t_ours:15.2f}")


if __name__ == "__main__":
    main()
