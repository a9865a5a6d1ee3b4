"""``losslab models``: the model registry (list, show NAME, path NAME, verify NAME)."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

#: the task column of the table is cut to this many characters (``models show NAME`` prints it whole)
TASK_WIDTH = 48


def _size(n: float) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if n < 1024 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return str(n)


def _cut(text: str, width: int) -> str:
    return text if len(text) <= width else text[: width - 3].rstrip() + "..."


def _grid_text(card) -> str:
    spacing = card.spacing
    if not spacing:
        return "-"
    size = card.grid.get("size")
    sp = f"{spacing[0]:g} mm" if len(set(spacing)) == 1 else "x".join(f"{s:g}" for s in spacing) + " mm"
    if size and len(set(size)) == 1:
        return f"{size[0]}^3 x {sp}"
    return sp


def _metrics_text(metrics: dict) -> str:
    """One short line of the card's held-out metrics: the mean Dice / HD95 of a parcellation model (and across
    centres, with a mask and without), the held-out families' Dice of a segmentation model, the ideal user's
    Dice (start -> after the edits) and the Table 1 p95 of D of an editing model; the rest is in
    ``losslab models show NAME``."""
    if not isinstance(metrics, dict) or not metrics:
        return "-"
    parts = []
    summary = metrics.get("summary") if isinstance(metrics.get("summary"), dict) else {}
    dice = summary.get("mean_dice")
    if isinstance(dice, (int, float)):
        parts.append(f"Dice {dice:.1f}%")
    if isinstance(summary.get("mean_hd95"), (int, float)):
        parts.append(f"HD95 {summary['mean_hd95']:.1f} mm")
    cross = metrics.get("cross_centre")
    cross_dice = (cross.get("summary") or {}).get("mean_dice") if isinstance(cross, dict) else None
    if isinstance(cross_dice, (int, float)):
        text = f"other centres {cross_dice:.1f}%"
        found = (metrics.get("no_mask") or {}).get("model_finds_the_brain") or {}
        free = (found.get("summary") or {}).get("mean_dice") if isinstance(found, dict) else None
        if isinstance(free, (int, float)):
            text += f" ({free:.1f}% without a mask)"
        parts.append(text)
    held_out = summary.get("held_out_family_dice")
    if isinstance(held_out, dict):
        dices = [f"{f} {d:.3f}" for f, d in held_out.items() if isinstance(d, (int, float))]
        if dices:
            parts.append("held-out Dice " + ", ".join(dices))
    ideal = metrics.get("ideal_user")
    if isinstance(ideal, dict) and ideal:
        family = "real" if "real" in ideal else next(iter(ideal))
        row = (
            ideal[family].get("segmentation", {}).get("clean", {}) if isinstance(ideal[family], dict) else {}
        )
        if isinstance(row.get("start_dice"), (int, float)) and isinstance(
            row.get("final_dice"), (int, float)
        ):
            parts.append(f"ideal user ({family}): Dice {row['start_dice']:.3f} -> {row['final_dice']:.3f}")
    table1 = metrics.get("table1_p95_mm", metrics.get("table1_phantom_p95_mm"))
    if isinstance(table1, dict) and all(
        isinstance(table1.get(k), (int, float)) for k in ("overall", "near", "far")
    ):
        parts.append(
            f"D p95 {table1['overall']:.2f} / near {table1['near']:.2f} / far {table1['far']:.2f} mm"
        )
    return ", ".join(parts) or "see `losslab models show NAME`"


def _root(args: argparse.Namespace) -> Path:
    """The registry folder, which must exist (``--root /nonexistent`` is an error, not an empty list)."""
    import os

    from .. import models

    root = models.registry_root(args.root)
    if not root.is_dir():
        where = (
            "--root"
            if args.root is not None
            else f"${models.ENV_ROOT}"
            if os.environ.get(models.ENV_ROOT)
            else "registry"
        )
        raise FileNotFoundError(
            f"{where} {root}: no such folder (a model registry holds one folder per model)"
        )
    return root


def cmd_list(args: argparse.Namespace) -> int:
    from .. import models

    root = _root(args)
    cards = models.list_models(root)
    if args.json:
        print(
            json.dumps([{**c.raw, "path": str(c.path), "size_bytes": c.size_bytes} for c in cards], indent=2)
        )
        return 0
    if not cards:
        print(f"no models registered in {root}")
        return 0
    header = ("name", "task", "grid", "brain mask", "size", "held-out metrics")
    rows = [
        (
            c.name,
            _cut(c.task, TASK_WIDTH),
            _grid_text(c),
            "required" if c.mask_policy == "required" else "-",
            _size(c.size_bytes),
            _metrics_text(c.metrics),
        )
        for c in cards
    ]
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    for r in [header, *rows]:
        print("  ".join(v.ljust(w) for v, w in zip(r, widths)).rstrip())
    return 0


def cmd_show(args: argparse.Namespace) -> int:
    from .. import models

    card = models.get_card(args.name, _root(args))
    print(json.dumps({**card.raw, "path": str(card.path), "size_bytes": card.size_bytes}, indent=2))
    return 0


def cmd_path(args: argparse.Namespace) -> int:
    from .. import models

    print(models.model_path(args.name, _root(args), verify=not args.no_verify))
    return 0


def cmd_verify(args: argparse.Namespace) -> int:
    from .. import models

    card = models.get_card(args.name, _root(args))
    models.verify_model(card)
    print(f"{card.name}: {len(card.files)} file(s) match their sha256")
    return 0


def register_commands(subparsers: argparse._SubParsersAction) -> None:
    env = "LOSSLAB_MODELS_DIR"  # losslab.models.ENV_ROOT (not imported for --help)
    root_help = f"registry folder (default: ${env}, else the installed package's)"
    parser = subparsers.add_parser(
        "models",
        help="registered trained models: list, show NAME, path NAME, verify NAME",
        description="The model registry (losslab.models). Without a sub-command: a table of the models "
        "(name, task, grid, whether it needs a brain mask (--mask), size, held-out metrics); `show NAME` or "
        "--json gives the whole card. "
        f"The registry folder is --root, else ${env}, else the installed package's.",
    )
    parser.add_argument("--root", default=None, type=Path, help=root_help)
    parser.add_argument("--json", action="store_true", help="every model's whole card, as JSON")
    parser.set_defaults(func=cmd_list)
    sub = parser.add_subparsers(dest="models_command", metavar="SUBCOMMAND")
    p = sub.add_parser("list", help="name, task, grid, brain mask, size and held-out metrics of each model")
    p.add_argument("--root", default=argparse.SUPPRESS, type=Path, help=root_help)
    p.add_argument(
        "--json", action="store_true", default=argparse.SUPPRESS, help="every model's whole card, as JSON"
    )
    p.set_defaults(func=cmd_list)
    p = sub.add_parser("show", help="a model's whole card (task, grid, training, every metric), as JSON")
    p.add_argument("name", help="the model's name (see `losslab models`)")
    p.add_argument("--root", default=argparse.SUPPRESS, type=Path, help=root_help)
    p.set_defaults(func=cmd_show)
    p = sub.add_parser("path", help="the checkpoint / ensemble path of a model (checksums verified)")
    p.add_argument("name", help="the model's name (see `losslab models`)")
    p.add_argument("--root", default=argparse.SUPPRESS, type=Path, help=root_help)
    p.add_argument("--no-verify", action="store_true", help="skip the sha256 check")
    p.set_defaults(func=cmd_path)
    p = sub.add_parser("verify", help="check a model's files against the sha256 of its card")
    p.add_argument("name", help="the model's name (see `losslab models`)")
    p.add_argument("--root", default=argparse.SUPPRESS, type=Path, help=root_help)
    p.set_defaults(func=cmd_verify)
