"""Speed of the ICE editing network: inference latency (3 x 128^3) and training throughput, beside the paper.

ice-editing-shahin2023 (Sec. 3.3) reports about 20 ms per volume for inference and about 3 minutes per
epoch of about 480 volumes (2.7 volumes/s) on one NVIDIA V100. Goals: on an H100 at most 5 ms per volume
(4x) and 3x the training throughput; on 2 CPU cores one edit in under 1.5 s.

Sliding windows (``--tiling``): the engine's MONAI ``sliding_window_inference`` with Gaussian blending against
our former hand-written uniform average (kept here, ``uniform_sliding_window``) and MONAI's constant mode, on a
model trained for a few epochs on 32^3 blobs and a 48^3 blobs volume (windows of 24^3): time per volume and agreement with the
whole-volume prediction (the reference a tiling approximates: mean absolute probability difference, share
of labels that differ) and Dice to the ground truth.

Usage::

    python benchmarks/engine.py             # CPU (--threads, default 2), and CUDA when present
    python benchmarks/engine.py --tiling --skip-training --device cpu   # the sliding-window comparison
    python benchmarks/engine.py --device cpu --threads 2 --json out.json
    python benchmarks/engine.py --device cuda --train-batch 4

Inference is measured as the editor runs it: :func:`losslab.engine.load_predictor`'s path (eval mode, batch
norm folded, channels-last 3D, ``torch.inference_mode``, bf16/fp16 autocast on CUDA), input already on the
device, synchronised timing, median of the runs after warm-up. Training is the engine's step (forward,
EditingLoss built by ``get_loss``, backward, Adam) on random tensors, so data loading is not counted.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "LossLab"))

from losslab.engine.device import amp_dtype, autocast  # noqa: E402
from losslab.losses import get_loss  # noqa: E402
from losslab.nets import build_network, count_parameters, fuse_batch_norm  # noqa: E402

PAPER_INFERENCE_MS = 20.0
PAPER_TRAIN_VOLUMES_PER_S = 480 / 180


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def bench_inference(device: torch.device, size: int, runs: int, fast: bool = True) -> dict:
    torch.manual_seed(0)
    model = build_network({"preset": "ice_editing"}).eval().to(device)
    x = torch.rand(1, 3, size, size, size, device=device)
    dtype = amp_dtype(device) if fast else None
    if fast:
        fuse_batch_norm(model)
        model = model.to(memory_format=torch.channels_last_3d)
        x = x.contiguous(memory_format=torch.channels_last_3d)
    times = []
    with torch.inference_mode():
        for i in range(runs + 2):
            _sync(device)
            t = time.perf_counter()
            with autocast(device, dtype):
                out = model(x)
            probs = torch.softmax(out.float(), 1)
            _sync(device)
            if i >= 2:
                times.append(time.perf_counter() - t)
    assert probs.shape == (1, 2, size, size, size)
    return {
        "median_ms": 1000 * statistics.median(times),
        "min_ms": 1000 * min(times),
        "runs": runs,
        "mixed_precision": str(dtype).replace("torch.", "") if dtype else "float32",
        "optimised": fast,
    }


def bench_predictor(device: torch.device, size: int, runs: int, folder: Path) -> dict:
    """End to end as the editor calls it: ``Predictor.predict(numpy (3, D, H, W))`` -> numpy probabilities and
    labels (normalisation, host/device copies, softmax and argmax included)."""
    import numpy as np

    from losslab.engine.checkpoint import save_checkpoint
    from losslab.engine.inference import load_predictor
    from losslab.nets import network_spec

    torch.manual_seed(0)
    spec = network_spec({"preset": "ice_editing"})
    model = build_network(spec)
    info = {
        "network": spec,
        "labels": ["background", "left atrium"],
        "label_sets": {},
        "channel_names": ["image", "initial", "heatmap"],
        "n_image_channels": 1,
        "normalize": "zscore",
        "window": None,
        "overlap": 0.5,
        "patch_size": [size] * 3,
    }
    path = save_checkpoint(folder / "ice_editing.pt", {"model": model.state_dict(), "model_info": info})
    predictor = load_predictor(path, device=device)
    x = np.random.default_rng(0).random((3, size, size, size), dtype=np.float32)
    times = []
    for i in range(runs + 1):
        t = time.perf_counter()
        out = predictor.predict(x)
        if i >= 1:
            times.append(time.perf_counter() - t)
    assert out.labels.shape == (size, size, size)
    return {"median_ms": 1000 * statistics.median(times), "min_ms": 1000 * min(times), "runs": runs}


def bench_training(device: torch.device, size: int, batch: int, steps: int) -> dict:
    torch.manual_seed(0)
    model = build_network({"preset": "ice_editing", "out_channels": 1}).to(device)
    model = model.to(memory_format=torch.channels_last_3d)
    optimizer = torch.optim.Adam(model.parameters(), lr=5e-3)  # the paper's optimizer and rate
    loss_fn = get_loss("editing")
    dtype = amp_dtype(device)
    scaler = torch.amp.GradScaler("cuda") if dtype == torch.float16 else None
    x = torch.rand(batch, 3, size, size, size, device=device).contiguous(memory_format=torch.channels_last_3d)
    y = (torch.rand(batch, size, size, size, device=device) > 0.5).float()
    times = []
    for i in range(steps + 1):
        _sync(device)
        t = time.perf_counter()
        optimizer.zero_grad(set_to_none=True)
        with autocast(device, dtype):
            logits = model(x)
        loss = loss_fn(logits.float(), y, x[:, 1], x[:, 2])
        if scaler is not None:
            scaler.scale(loss).backward()
            scaler.step(optimizer)
            scaler.update()
        else:
            loss.backward()
            optimizer.step()
        _sync(device)
        if i >= 1:
            times.append(time.perf_counter() - t)
    per_step = statistics.median(times)
    return {
        "batch": batch,
        "step_s": per_step,
        "volumes_per_s": batch / per_step,
        "epoch_of_480_min": 480 / (batch / per_step) / 60,
        "steps": steps,
    }


def uniform_sliding_window(model, image, window, overlap, dtype=None):
    """LossLab's former hand-written tiling (before issue 7): windows at a stride of ``window * (1 -
    overlap)``, the last flush with the end, logits averaged with uniform weights."""
    import itertools

    def starts(size, w, step):
        return [0] if size <= w else sorted(set(range(0, size - w, step)) | {size - w})

    spatial = image.shape[2:]
    window = [min(int(w), s) for w, s in zip(window, spatial)]
    steps = [max(1, int(w * (1 - overlap))) for w in window]
    out, count = None, torch.zeros((1, 1, *spatial), device=image.device)
    for corner in itertools.product(*[starts(s, w, st) for s, w, st in zip(spatial, window, steps)]):
        region = tuple(slice(c, c + w) for c, w in zip(corner, window))
        with autocast(image.device, dtype):
            logits = model(image[(slice(None), slice(None), *region)]).float()
        if out is None:
            out = torch.zeros((image.shape[0], logits.shape[1], *spatial), device=image.device)
        out[(slice(None), slice(None), *region)] += logits
        count[(slice(None), slice(None), *region)] += 1
    return out / count


def bench_tiling(
    device: torch.device, folder: Path, runs: int, size: int = 48, norm: str = "instance"
) -> dict:
    """Sliding-window blending: the engine's (MONAI, Gaussian) vs our former uniform average vs MONAI
    constant, against the whole-volume prediction of a trained model."""
    import numpy as np
    from monai.inferers import sliding_window_inference

    from losslab import io as _io
    from losslab.engine import load_predictor, train
    from losslab.engine.inference import logits_to_probabilities, predict_logits
    from losslab.engine.synthetic import make_blobs_dataset

    manifest = make_blobs_dataset(folder / "train", n_cases=8, shape=(32, 32, 32), seed=0, n_val=1)
    t = time.perf_counter()
    result = train(
        {
            "data": {"manifest": str(manifest)},
            "network": {"features": [8, 16, 32], "norm": norm},
            "optimizer": {"lr": 0.01},
            "epochs": 6,
            "batch_size": 2,
            "device": "cpu",
            "output_dir": str(folder / "run"),
        }
    )
    train_s = time.perf_counter() - t
    test = make_blobs_dataset(folder / "test", n_cases=1, shape=(size,) * 3, seed=11, n_val=0)
    image = _io.read_image(test.parent / "images" / "case00.nii.gz").array
    truth = torch.from_numpy(_io.read_image(test.parent / "labels" / "case00.nii.gz").array.astype(np.int64))
    predictor = load_predictor(result.model_path, device=device)
    model = predictor.models[0]
    x = predictor.preprocess(image)[None]
    if predictor.channels_last:
        x = x.contiguous(memory_format=torch.channels_last_3d)
    dtype = predictor.dtype

    def dice(labels):
        out = []
        for c in range(1, int(truth.max()) + 1):
            a, b = labels.cpu() == c, truth == c
            out.append(float(2 * (a & b).sum() / max(1, int(a.sum() + b.sum()))))
        return sum(out) / len(out)

    def timed(fn):
        times = []
        with torch.inference_mode():
            for _ in range(runs):
                _sync(device)
                start = time.perf_counter()
                logits = fn()
                _sync(device)
                times.append(time.perf_counter() - start)
        return logits, statistics.median(times)

    with torch.inference_mode():  # warm-up: threads, MONAI's import, the allocator
        predict_logits(model, x, [size // 2] * 3, 0.5, dtype)

    whole, whole_s = timed(lambda: predict_logits(model, x, None, 0.5, dtype))
    p_whole = logits_to_probabilities(whole)
    l_whole = p_whole.argmax(1)[0]
    report = {
        "train_s": train_s,
        "volume": f"{size}^3",
        "norm": norm,
        "whole": {"s": whole_s, "dice": dice(l_whole)},
        "tiled": [],
    }

    def monai_constant(window, overlap):
        def run(patch):
            with autocast(device, dtype):
                return model(patch).float()

        return sliding_window_inference(x, window, 1, run, overlap=overlap, mode="constant")

    methods = {
        "engine: MONAI gaussian": lambda w, o: predict_logits(model, x, w, o, dtype),
        "former: ours uniform": lambda w, o: uniform_sliding_window(model, x, w, o, dtype),
        "MONAI constant": monai_constant,
    }
    for window in ([size // 2] * 3,):
        for overlap in (0.25, 0.5):
            for name, fn in methods.items():
                logits, seconds = timed(lambda fn=fn: fn(window, overlap))
                p = logits_to_probabilities(logits)
                labels = p.argmax(1)[0]
                report["tiled"].append(
                    {
                        "method": name,
                        "window": window[0],
                        "overlap": overlap,
                        "s": seconds,
                        "mean_abs_prob_diff": float((p - p_whole).abs().mean()),
                        "max_abs_prob_diff": float((p - p_whole).abs().max()),
                        "labels_differing_pct": 100 * float((labels != l_whole).float().mean()),
                        "dice": dice(labels),
                    }
                )
    return report


def print_tiling(name: str, report: dict) -> None:
    print(
        f"\n== sliding windows, {name}: trained 32^3 blobs model ({report['norm']} norm) on a "
        f"{report['volume']} volume =="
    )
    w = report["whole"]
    print(f"whole volume at once: {w['s'] * 1000:8.1f} ms, Dice to truth {w['dice']:.4f}")
    print(
        f"{'method':24s} {'win':>4s} {'ovl':>5s} {'ms':>9s} {'x whole':>8s} {'mean|dp|':>9s} {'max|dp|':>8s} "
        f"{'labels!=':>9s} {'Dice':>7s}"
    )
    for r in report["tiled"]:
        print(
            f"{r['method']:24s} {r['window']:4d} {r['overlap']:5.2f} {r['s'] * 1000:9.1f} "
            f"{r['s'] / w['s']:8.2f} {r['mean_abs_prob_diff']:9.5f} {r['max_abs_prob_diff']:8.4f} "
            f"{r['labels_differing_pct']:8.3f}% {r['dice']:7.4f}"
        )
    by = {}
    for r in report["tiled"]:
        by.setdefault((r["window"], r["overlap"]), {})[r["method"]] = r
    for (win, ovl), rows in by.items():
        g, u = rows["engine: MONAI gaussian"], rows["former: ours uniform"]
        print(
            f"window {win}, overlap {ovl}: gaussian / former uniform: time x{g['s'] / u['s']:.2f}, "
            f"mean |p - p_whole| x{g['mean_abs_prob_diff'] / max(u['mean_abs_prob_diff'], 1e-12):.2f}, "
            f"labels differing {g['labels_differing_pct']:.3f}% vs {u['labels_differing_pct']:.3f}%"
        )


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--device", choices=["auto", "cpu", "cuda", "mps"], default="auto")
    parser.add_argument(
        "--threads", type=int, default=2, help="CPU threads (default 2, the CPU goal's setting)"
    )
    parser.add_argument("--size", type=int, default=128)
    parser.add_argument("--runs", type=int, default=None, help="timed inference runs")
    parser.add_argument(
        "--train-batch", type=int, default=None, help="default: 4 (the paper's) on GPU, 1 on CPU"
    )
    parser.add_argument("--train-steps", type=int, default=None)
    parser.add_argument("--skip-training", action="store_true")
    parser.add_argument(
        "--tiling",
        action="store_true",
        help="only the sliding-window comparison (Gaussian vs uniform vs whole)",
    )
    parser.add_argument(
        "--tiling-norm",
        choices=["instance", "batch", "none"],
        default="instance",
        help="normalisation of the model --tiling trains (instance: the fetal preset's; batch: the ICE ones')",
    )
    parser.add_argument("--json", help="also write the results here")
    args = parser.parse_args(argv)

    devices = []
    if args.device in ("auto", "cpu"):
        devices.append(torch.device("cpu"))
    if args.device in ("auto", "cuda") and torch.cuda.is_available():
        devices.append(torch.device("cuda"))
    if args.device == "mps":
        devices.append(torch.device("mps"))
    torch.set_num_threads(args.threads)
    net = build_network({"preset": "ice_editing"})
    report = {
        "network": "ice_editing (3 inputs, filters 8-16-32-64, batch norm, ReLU)",
        "parameters": count_parameters(net),
        "input": f"3 x {args.size}^3",
        "torch": str(torch.__version__),
        "cpu_threads": args.threads,
        "cpu_count": os.cpu_count(),
        "paper": {"inference_ms": PAPER_INFERENCE_MS, "train_volumes_per_s": PAPER_TRAIN_VOLUMES_PER_S},
        "results": {},
    }
    if args.tiling:
        for device in devices:
            name = (
                torch.cuda.get_device_name(device)
                if device.type == "cuda"
                else f"cpu x{args.threads} threads"
            )
            with tempfile.TemporaryDirectory() as folder:
                runs = args.runs or (20 if device.type == "cuda" else 2)
                entry = bench_tiling(device, Path(folder), runs, norm=args.tiling_norm)
            report["results"][device.type] = {"device": name, "tiling": entry}
            print_tiling(name, entry)
        if args.json:
            Path(args.json).write_text(json.dumps(report, indent=2))
        return 0
    for device in devices:
        name = torch.cuda.get_device_name(device) if device.type == "cuda" else f"cpu x{args.threads} threads"
        gpu = device.type != "cpu"
        runs = args.runs or (50 if gpu else 5)
        entry = {"device": name}
        entry["inference"] = bench_inference(device, args.size, runs, fast=True)
        entry["inference_plain"] = bench_inference(device, args.size, max(2, runs // 2), fast=False)
        with tempfile.TemporaryDirectory() as folder:
            entry["edit_end_to_end"] = bench_predictor(device, args.size, max(3, runs // 2), Path(folder))
        if not args.skip_training:
            batch = args.train_batch or (4 if gpu else 1)
            steps = args.train_steps or (20 if gpu else 2)
            entry["training"] = bench_training(device, args.size, batch, steps)
        report["results"][device.type] = entry

        inf = entry["inference"]["median_ms"]
        goal = 5.0 if gpu else 1500.0
        print(f"\n== {name} ==")
        print(
            f"inference, 3x{args.size}^3, optimised ({entry['inference']['mixed_precision']}): {inf:9.1f} ms "
            f"per volume (min {entry['inference']['min_ms']:.1f}) | paper (V100) {PAPER_INFERENCE_MS:.0f} ms "
            f"| speed-up x{PAPER_INFERENCE_MS / inf:.2f} "
            f"| goal <= {goal:g} ms: {'met' if inf <= goal else 'NOT met'}"
        )
        plain = entry["inference_plain"]["median_ms"]
        print(f"inference, plain float32 eval (no fusion, default layout): {plain:9.1f} ms per volume")
        e2e = entry["edit_end_to_end"]
        print(
            f"one edit end to end (Predictor.predict, numpy in/out): {e2e['median_ms']:9.1f} ms "
            f"(min {e2e['min_ms']:.1f})"
        )
        if "training" in entry:
            tr = entry["training"]
            ratio = tr["volumes_per_s"] / PAPER_TRAIN_VOLUMES_PER_S
            print(
                f"training, batch {tr['batch']}: {tr['volumes_per_s']:.3f} volumes/s "
                f"({tr['step_s']:.3f} s/step; an epoch of 480 volumes: {tr['epoch_of_480_min']:.1f} min) "
                f"| paper (V100) "
                f"{PAPER_TRAIN_VOLUMES_PER_S:.2f} volumes/s | ratio x{ratio:.2f}"
                + (f" | goal x3: {'met' if ratio >= 3 else 'NOT met'}" if gpu else "")
            )
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
