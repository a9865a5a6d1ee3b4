"""Forward + backward time of every loss of losslab.losses, relative to the cross-entropy.

Usage::

    python benchmarks/losses.py                      # (2, 9, 96, 96, 96) on CPU, and on CUDA if available
    python benchmarks/losses.py --size 48 --repeats 5
    python benchmarks/losses.py --devices cpu --only dice,lovasz_softmax

For each loss: random logits ``(B, C, S, S, S)`` (``requires_grad``) and a matching target; one warm-up
call, then the median of ``--repeats`` timed calls of ``loss(logits, target).backward()``. The goal of the
issue: no loss slower than 2x the cross-entropy. Prints a table per device (loss, fwd+bwd ms, ratio to CE).
Runs with PyTorch's default number of threads.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "LossLab"))

from losslab.losses import count_labels, get_loss  # noqa: E402

Case = tuple[torch.nn.Module, int, Callable[[torch.Tensor], tuple[Any, ...]]]


def _cases(b: int, c: int, size: int, device: torch.device) -> dict[str, Case]:
    g = torch.Generator(device="cpu").manual_seed(0)
    shape = (size, size, size)
    label = torch.randint(0, c, (b, *shape), generator=g).to(device)
    # Label-set target: in each image the last three leaves are not annotated (set label c).
    sets = {c: [c - 3, c - 2, c - 1]}
    partial = torch.where(label >= c - 3, torch.full_like(label, c), label)
    counts = count_labels([label.cpu()], c)
    binary = (label % 2).float()
    initial = torch.rand(b, *shape, generator=g).to(device)
    scribble = torch.zeros(b, *shape, dtype=torch.bool)
    scribble[:, size // 2, size // 2, size // 4 : size // 2] = True
    editing = get_loss("editing")
    attention = editing.attention(scribble).to(device)

    def plain(_: torch.Tensor) -> tuple[Any, ...]:
        return (label,)

    def with_sets(_: torch.Tensor) -> tuple[Any, ...]:
        return (partial,)

    def edit(_: torch.Tensor) -> tuple[Any, ...]:
        return (binary, initial, attention)

    cases: dict[str, Case] = {
        "cross_entropy": (get_loss("cross_entropy"), c, plain),
        "focal": (get_loss("focal"), c, plain),
        "dice": (get_loss("dice"), c, plain),
        "dice (alpha=2)": (get_loss("dice", alpha=2), c, plain),
        "generalized_dice": (get_loss("generalized_dice"), c, plain),
        "tversky": (get_loss("tversky"), c, plain),
        "lovasz_softmax": (get_loss("lovasz_softmax"), c, plain),
        "mime": (get_loss("mime"), c, plain),
        "negative_mime": (get_loss("negative_mime"), c, plain),
        "margin_calibration": (get_loss("margin_calibration", class_counts=counts), c, plain),
        "margin_calibration (released)": (
            get_loss("margin_calibration", class_counts=counts, variant="released"),
            c,
            plain,
        ),
        "leaf_dice": (get_loss("leaf_dice", label_sets=sets), c, with_sets),
        "marginal_dice": (get_loss("marginal_dice", label_sets=sets), c, with_sets),
        "marginal_cross_entropy": (get_loss("marginal_cross_entropy", label_sets=sets), c, with_sets),
        "soft_target_dice": (get_loss("soft_target_dice", label_sets=sets), c, with_sets),
        "compound (dice + ce)": (
            get_loss("compound", terms=[{"name": "dice"}, {"name": "cross_entropy"}]),
            c,
            plain,
        ),
        "editing (B, 1, ...)": (editing, 1, edit),
    }
    return {name: (loss.to(device), ch, make) for name, (loss, ch, make) in cases.items()}


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_case(case: Case, b: int, size: int, device: torch.device, repeats: int) -> float:
    """Median fwd+bwd time in ms."""
    loss, channels, make = case
    g = torch.Generator(device="cpu").manual_seed(1)
    logits = torch.randn(b, channels, size, size, size, generator=g).to(device).requires_grad_(True)
    extra = make(logits)
    times = []
    for i in range(repeats + 1):
        logits.grad = None
        _sync(device)
        start = time.perf_counter()
        loss(logits, *extra).backward()
        _sync(device)
        if i > 0:  # the first call is a warm-up
            times.append((time.perf_counter() - start) * 1000.0)
    return statistics.median(times)


def run(b: int, c: int, size: int, devices: list[str], repeats: int, only: set[str] | None) -> None:
    for name in devices:
        device = torch.device(name)
        cases = _cases(b, c, size, device)
        names = [n for n in cases if only is None or n == "cross_entropy" or n.split(" ")[0] in only]
        label = (
            torch.cuda.get_device_name(device)
            if device.type == "cuda"
            else f"{torch.get_num_threads()} threads"
        )
        print(f"\n## {device.type} ({label}): input ({b}, {c}, {size}, {size}, {size}), median of {repeats}")
        print(f"{'loss':34s} {'fwd+bwd ms':>11s} {'x CE':>6s}")
        ce = None
        for n in names:
            ms = time_case(cases[n], b, size, device, repeats)
            if ce is None:
                ce = ms
            flag = "" if ms <= 2 * ce else "  > 2x"
            print(f"{n:34s} {ms:11.1f} {ms / ce:6.2f}{flag}", flush=True)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--batch", type=int, default=2)
    parser.add_argument("--classes", type=int, default=9)
    parser.add_argument("--size", type=int, default=96, help="edge of the cubic volume (default 96)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--devices", default=None, help="comma list, default: cpu (+ cuda if available)")
    parser.add_argument("--only", default=None, help="comma list of registry names (CE is always timed)")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: PyTorch's)")
    args = parser.parse_args(argv)
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    if args.classes < 4:
        parser.error("--classes must be >= 4 (the label-set cases leave 3 leaves unannotated)")
    devices = (
        args.devices.split(",") if args.devices else ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
    )
    only = set(args.only.split(",")) if args.only else None
    run(args.batch, args.classes, args.size, devices, args.repeats, only)


if __name__ == "__main__":
    main()
