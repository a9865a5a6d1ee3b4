"""Fetal parcellation inference time per volume (``losslab fetal segment``), beside the label-set paper.

label-set-losses-fidon2021 (Sec. 4, Hardware): "The inference for a 3D MRI takes between one and two minutes"
with an ensemble of 10 3D U-Nets at 0.8 mm on an NVIDIA GTX 1070, i.e. about 6-12 s per member.

This measures the whole ``segment`` call on an atlas volume (135 x 189 x 155 at 0.8 mm): reading, brain-mask
crop, resampling to the model grid, every member, resampling the probabilities back, writing; with the brain
mask, and without one for a model whose card allows it (then the classical extraction's box and the largest
connected piece are in the time too). The model is a
registry name (default: the shipped ``fetal-leafdice-1.6mm`` when present) or a checkpoint / ensemble folder
with ``--spacing``. Prints seconds per volume and per member, and the ratio to the paper's 6-12 s per member.

Usage::

    python benchmarks/fetal.py                                  # CPU, 2 threads; CUDA too when present
    python benchmarks/fetal.py --model runs/fetal/leaf_dice --spacing 0.8 --device cuda
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "LossLab"))

from losslab import models  # noqa: E402
from losslab.labelsets.segment import segment  # noqa: E402

ATLAS = ROOT.parent / "shared" / "data" / "fetal-sb-atlas"
PAPER_S_PER_MEMBER = (6.0, 12.0)  # 1-2 min for 10 members, GTX 1070


def run(model: str, case: Path, device: str, spacing, repeats: int, with_mask: bool = True) -> dict:
    times = []
    info = {}
    with tempfile.TemporaryDirectory() as tmp:
        for _ in range(repeats + 1):  # the first call warms up (and loads the models)
            start = time.perf_counter()
            mask = case / "mask.nii.gz" if with_mask else None
            info = segment(model, case / "srr.nii.gz", Path(tmp) / "seg.nii.gz", mask=mask,
                           spacing=spacing, device=device, progress=False)  # fmt: skip
            if device.startswith("cuda"):
                torch.cuda.synchronize()
            times.append(time.perf_counter() - start)
    median = statistics.median(times[1:])
    per_member = median / info["members"]
    return {
        "device": device,
        "mask": "given" if with_mask else "none (found by the model)",
        "threads": torch.get_num_threads(),
        "members": info["members"],
        "model_grid": info["model_grid_size"],
        "spacing_mm": info["spacing"],
        "seconds_per_volume_median": median,
        "seconds_per_volume_min": min(times[1:]),
        "seconds_per_member": per_member,
        "paper_seconds_per_member": PAPER_S_PER_MEMBER,
        "speedup_vs_paper": [PAPER_S_PER_MEMBER[0] / per_member, PAPER_S_PER_MEMBER[1] / per_member],
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="fetal-leafdice-1.6mm")
    parser.add_argument("--spacing", type=float, nargs="+", default=None)
    parser.add_argument("--case", default=str(ATLAS / "GA30_operated"))
    parser.add_argument("--device", default=None, help="cpu, cuda (default: cpu, and cuda when present)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--json", default=None)
    args = parser.parse_args()
    if not (Path(args.case) / "srr.nii.gz").is_file():
        print(f"no atlas case at {args.case} (shared/data/fetal-sb-atlas)", file=sys.stderr)
        return 2
    if not Path(args.model).exists() and args.model not in {c.name for c in models.list_models()}:
        print(
            f"no model {args.model!r}: registered: {[c.name for c in models.list_models()]}", file=sys.stderr
        )
        return 2
    torch.set_num_threads(args.threads)
    devices = [args.device] if args.device else ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
    card = models.find_card(args.model)
    conditions = [True] + ([False] if card is None or card.mask_policy == "optional" else [])
    results = [
        run(args.model, Path(args.case), d, args.spacing, args.repeats, with_mask=m)
        for d in devices
        for m in conditions
    ]
    for r in results:
        print(
            f"{r['device']:>5} ({r['threads']} threads), mask {r['mask']}: "
            f"{r['seconds_per_volume_median']:.2f} s per volume "
            f"(min {r['seconds_per_volume_min']:.2f}), {r['members']} members on a {r['model_grid']} grid at "
            f"{r['spacing_mm']} mm: {r['seconds_per_member']:.2f} s per member; paper 6-12 s per member "
            f"(GTX 1070, 0.8 mm): {r['speedup_vs_paper'][0]:.1f}-{r['speedup_vs_paper'][1]:.1f}x"
        )
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
