"""``losslab demo`` and ``losslab sample-data``: the ICE editing demo (a simulated case segmented and edited 10
times by the shipped models, :mod:`losslab.ice.demo`) and the metrics sample case's files.

``write_demo_report`` (every metric of the bundled sample case) stays available for ``losslab metrics`` users;
the demo command itself runs the editing models."""

from __future__ import annotations

import argparse
from pathlib import Path

from . import CommandError, check_device, seed

#: The files ``losslab demo`` writes into its output folder.
DEMO_FILES = ("report.json", "report.md", "report.png")

#: sigma of the demo's attention map: the paper's 20 voxels of 1.1024 mm, on the sample's 2.2048 mm grid.
DEMO_SIGMA_VOXELS = 10.0


def _markdown(report: dict) -> str:
    lines = [
        "# LossLab demo: metrics of the sample ICE-editing case",
        "",
        f"Reference `{report['reference']}` vs edited segmentation `{report['compared']}`, "
        f"spacing {report['spacing_mm']} mm.",
        "",
        "| label | Dice | IoU | HD (mm) | HD95 (mm) | ASSD (mm) |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    for r in report["rows"]:
        lines.append(
            f"| {r['name']} | {r['dice']:.4f} | {r['iou']:.4f} | {r['hd']:.3f} | {r['hd95']:.3f} | {r['assd']:.3f} |"
        )
    if "initial_rows" in report:
        r = report["initial_rows"][0]
        lines.append(
            f"| initial (before the edit) | {r['dice']:.4f} | {r['iou']:.4f} | {r['hd']:.3f} | "
            f"{r['hd95']:.3f} | {r['assd']:.3f} |"
        )
    ed = report["editing"]
    lines += [
        "",
        f"Editing metric D (ice-editing-shahin2023 eqs. 4-6; sigma {ed['sigma']}; near: A >= 0.5):",
        "",
        "| region | p95 (mm) | mean (mm) | contour voxels |",
        "| --- | --- | --- | --- |",
    ]
    for region in ("overall", "near", "far", "no_editing", "cas_to_prediction"):
        s = ed[region]
        lines.append(f"| {region} | {s['p95']:.3f} | {s['mean']:.3f} | {s['count']} |")
    if report.get("warnings"):
        lines += ["", "Warnings:", ""] + [f"- {w}" for w in report["warnings"]]
    return "\n".join(lines) + "\n"


def _figure(paths: dict[str, Path], report: dict):
    import matplotlib
    import numpy as np

    from ..io import read_image

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    arrays = {role: read_image(p).array for role, p in paths.items()}
    frame = int(np.argmax(arrays["scribble"].sum(axis=(1, 2))))
    result = report["_editing_result"]
    fig, axes = plt.subplots(1, 3, figsize=(13, 4.9))
    ax = axes[0]
    ax.imshow(arrays["image"][frame], cmap="gray")
    for role, colour in (("reference", "lime"), ("initial", "cyan"), ("compared", "magenta")):
        ax.contour(arrays[role][frame], levels=[0.5], colors=colour, linewidths=1.2)
    ys, xs = np.nonzero(arrays["scribble"][frame])
    ax.scatter(xs, ys, s=4, c="yellow")
    ax.set_title(f"frame {frame}: reference (green), initial (cyan),\nedited (magenta), scribble (yellow)")
    im = axes[1].imshow(result.d_map.max(axis=0, initial=0, where=~np.isnan(result.d_map)), cmap="inferno")
    axes[1].set_title("D map (max over frames, mm)")
    fig.colorbar(im, ax=axes[1], fraction=0.046)
    axes[2].imshow(np.where(result.near[frame], 1, 2), cmap="coolwarm", vmin=1, vmax=2)
    axes[2].set_title("near (A >= 0.5, blue) / far (red) in the frame")
    for a in axes:
        a.axis("off")
    fig.tight_layout()
    return fig


def write_demo_report(out_dir: str | Path) -> dict[str, Path]:
    """Compute the metrics of the bundled sample case and write report.json, report.md and report.png."""
    from ..io import read_image, save_figure, write_text
    from ..sample import sample_paths
    from .metrics import compute_metrics, to_json

    out_dir = Path(out_dir)
    paths = sample_paths()
    images = {role: read_image(p) for role, p in paths.items()}
    report = compute_metrics(
        images["reference"],
        images["compared"],
        initial=images["initial"],
        scribble=images["scribble"],
        cas=images["cas"],
        sigma=DEMO_SIGMA_VOXELS,
    )
    report["initial_rows"] = compute_metrics(images["reference"], images["initial"])["rows"]
    json_name, markdown_name, figure_name = DEMO_FILES
    out = {
        "json": write_text(out_dir / json_name, to_json(report)),
        "markdown": write_text(out_dir / markdown_name, _markdown(report)),
    }
    fig = _figure(paths, report)
    out["figure"] = save_figure(fig, out_dir / figure_name, dpi=110)
    return out


def register_commands(subparsers: argparse._SubParsersAction) -> None:
    d = subparsers.add_parser(
        "demo",
        help="ICE editing by the shipped models: segment a simulated case, edit it 10 times, write a report",
        description="Simulates a sparse ICE case (64^3 x 2.2048 mm), segments it with the shipped model "
        "ice-segmentation-64, then makes 10 sequential edits from its CAS contours with ice-editing-64 (editing "
        "loss) and, side by side, ice-editing-ce-64 (CE); writes report.json, report.md and report.png (D per "
        "edit overall / near / far, the case's Fig. 3 curves, the first edit on its frame).",
    )
    d.add_argument(
        "-o",
        "--output",
        type=Path,
        default=Path("losslab-output/demo"),
        help="output folder: new or empty, unless --overwrite (default losslab-output/demo)",
    )
    d.add_argument(
        "--overwrite",
        action="store_true",
        help="write into a folder that holds files, an earlier demo's too (the report files are replaced, the "
        "rest left alone)",
    )
    d.add_argument("--edits", type=int, default=10, help="sequential edits (default 10)")
    d.add_argument("--seed", type=seed, default=1000, help="the simulated case's seed (default 1000)")
    d.add_argument("--device", default="cpu", help="cpu | cuda | auto (default cpu)")
    d.set_defaults(func=run_demo)

    s = subparsers.add_parser(
        "sample-data",
        help="write the synthetic sample case (NIfTI files)",
        description="Writes the sample case's NIfTI files into OUTPUT: a new or empty folder, unless "
        "--overwrite.",
    )
    s.add_argument("output", type=Path, help="folder to write into")
    s.add_argument("--seed", type=seed, default=0, help="seed of the synthetic case (default 0)")
    s.add_argument(
        "--overwrite",
        action="store_true",
        help="write into a folder that holds files (the sample files are replaced, the rest left alone)",
    )
    s.set_defaults(func=run_sample_data)


def run_sample_data(args: argparse.Namespace) -> int:
    from ..io import check_output_folder
    from ..sample import write_sample_case

    check_output_folder(args.output, overwrite=args.overwrite)
    paths = write_sample_case(args.output, seed=args.seed)
    for role, path in paths.items():
        print(f"{role}\t{path}")
    return 0


def run_demo(args: argparse.Namespace) -> int:
    import sys

    from ..ice.demo import run_demo as ice_demo
    from ..io import check_output_folder

    if args.edits < 1:
        raise CommandError(f"--edits must be at least 1, got {args.edits}")
    # before the simulation and the models: the folder (also a read-only one) and the device
    check_output_folder(args.output, overwrite=args.overwrite)
    check_device(args.device)
    tty = sys.stderr.isatty()
    paths = ice_demo(
        args.output,
        edits=args.edits,
        seed=args.seed,
        device=args.device,
        progress=tty,
        log=None if tty else lambda line: print(line, file=sys.stderr, flush=True),
    )
    print(paths["markdown"].read_text())
    print(f"report written to {args.output}/ ({', '.join(p.name for p in paths.values())})")
    return 0
