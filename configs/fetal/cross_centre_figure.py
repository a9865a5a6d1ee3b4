"""Picture of one cross-centre case: the MRI, its reference parcellation and the model's, with and without a
brain mask, on an axial, a coronal and a sagittal slice through the brain's centre (issue 19, docs/fetal.md).

Usage: python configs/fetal/cross_centre_figure.py CASE_DIR EVAL_CENTRE_DIR OUT.png [--title TEXT]

CASE_DIR: the case's folder (srr.nii.gz, parcellation.nii.gz); EVAL_CENTRE_DIR: its centre's folder of
``configs/fetal/cross_centre_eval.sh``'s output (with_mask/CASE.nii.gz, no_mask/CASE.nii.gz). The Dice of each
prediction (mean over the 8 tissues, in %) is written above its column.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from losslab import io  # noqa: E402
from losslab.labelsets import TISSUES  # noqa: E402
from losslab.metrics import mean_dice  # noqa: E402

LABELS = [t.label for t in TISSUES]


def _colours() -> np.ndarray:
    table = np.zeros((len(TISSUES) + 1, 4))
    for t in TISSUES:
        table[t.label, :3] = np.asarray(t.color) / 255.0
        table[t.label, 3] = 0.55
    return table


def main(argv: list[str] | None = None) -> Path:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("case_dir", type=Path)
    parser.add_argument("centre_dir", type=Path)
    parser.add_argument("out", type=Path)
    parser.add_argument("--title", default="")
    args = parser.parse_args(argv)
    case = args.case_dir.name
    image = io.read_image(args.case_dir / "srr.nii.gz")
    mri = image.array.astype(np.float32)
    ref = io.read_image(args.case_dir / "parcellation.nii.gz").array
    columns = [("reference", ref)]
    for condition, title in (("with_mask", "with its brain mask"), ("no_mask", "without a mask")):
        path = args.centre_dir / condition / f"{case}.nii.gz"
        if path.is_file():
            pred = io.read_image(path).array
            columns.append((f"model, {title}\nmean Dice {100 * mean_dice(pred, ref, LABELS):.1f} %", pred))
    inside = np.argwhere(ref > 0)
    box = tuple(
        slice(max(0, lo - 6), min(n, hi + 7)) for lo, hi, n in zip(inside.min(0), inside.max(0), ref.shape)
    )  # the brain and 6 voxels around it
    mri, ref = mri[box], ref[box]
    columns = [(title, labels[box]) for title, labels in columns]
    k, j, i = [int(round(c)) for c in np.argwhere(ref > 0).mean(0)]
    sk, sj, si = image.geometry.array_spacing
    # (k, j, i) arrays in the atlases' LPS direction diag(-1, -1, 1): k is inferior -> superior
    views = [
        ("axial", lambda a: a[k][::-1, ::-1], sj / si),
        ("coronal", lambda a: a[::-1, j, ::-1], sk / si),
        ("sagittal", lambda a: a[::-1, :, i], sk / sj),
    ]
    hi = float(np.percentile(mri[ref > 0], 99.5))
    colours = _colours()
    fig, axes = plt.subplots(
        len(views), len(columns) + 1, figsize=(3.0 * (len(columns) + 1), 3.0 * len(views))
    )
    for row, (view, cut, aspect) in enumerate(views):
        for col in range(len(columns) + 1):
            ax = axes[row, col]
            ax.imshow(cut(mri), cmap="gray", vmin=0, vmax=hi, aspect=aspect, interpolation="nearest")
            if col:
                ax.imshow(colours[cut(columns[col - 1][1])], aspect=aspect, interpolation="nearest")
            ax.set_xticks([])
            ax.set_yticks([])
            if row == 0:
                ax.set_title("T2w MRI" if col == 0 else columns[col - 1][0], fontsize=9)
            if col == 0:
                ax.set_ylabel(view, fontsize=9)
    handles = [plt.Rectangle((0, 0), 1, 1, color=colours[t.label, :3]) for t in TISSUES]
    fig.legend(handles, [t.abbreviation for t in TISSUES], loc="lower center", ncol=len(TISSUES), fontsize=8)
    if args.title:
        fig.suptitle(args.title, fontsize=10)
    fig.tight_layout(rect=(0, 0.05, 1, 0.95 if args.title else 1))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(args.out, dpi=80)
    plt.close(fig)
    print(f"wrote {args.out}")
    return args.out


if __name__ == "__main__":
    main()
