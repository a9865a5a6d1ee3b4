"""``losslab models``: the model registry (list, path, verify)."""

from __future__ import annotations

import argparse
import json

from .. import models


def _size(n: int) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if n < 1024 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return str(n)


def _metrics_text(metrics: dict) -> str:
    """A short summary: the mean held-out Dice / HD95 over tissues, when the card has them."""
    summary = metrics.get("summary") if isinstance(metrics, dict) else None
    if not summary:
        return "-" if not metrics else json.dumps(metrics)[:60]
    parts = []
    if "mean_dice" in summary:
        parts.append(f"Dice {summary['mean_dice']:.1f}%")
    if "mean_hd95" in summary:
        parts.append(f"HD95 {summary['mean_hd95']:.1f} mm")
    return ", ".join(parts) or "-"


def cmd_list(args: argparse.Namespace) -> int:
    cards = models.list_models(args.root)
    if args.json:
        rows = [
            {
                "name": c.name,
                "task": c.task,
                "grid": c.grid,
                "size_bytes": c.size_bytes,
                "metrics": c.metrics,
                "path": str(c.path),
            }
            for c in cards
        ]
        print(json.dumps(rows, indent=2))
        return 0
    if not cards:
        print(f"no models registered in {models.registry_root(args.root)}")
        return 0
    header = ("name", "task", "grid", "size", "held-out metrics")
    rows = []
    for c in cards:
        grid = "x".join(f"{s:g}" for s in c.spacing) + " mm" if c.spacing else "-"
        rows.append((c.name, c.task, grid, _size(c.size_bytes), _metrics_text(c.metrics)))
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    for r in [header, *rows]:
        print("  ".join(v.ljust(w) for v, w in zip(r, widths)).rstrip())
    return 0


def cmd_path(args: argparse.Namespace) -> int:
    print(models.model_path(args.name, args.root, verify=not args.no_verify))
    return 0


def cmd_verify(args: argparse.Namespace) -> int:
    card = models.get_card(args.name, args.root)
    models.verify_model(card)
    print(f"{card.name}: {len(card.files)} file(s) match their sha256")
    return 0


def register_commands(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "models",
        help="registered trained models: list, path NAME, verify NAME",
        description="The model registry (losslab.models). Without a sub-command: list the models. "
        f"The registry folder is --root, else ${models.ENV_ROOT}, else the installed package's.",
    )
    parser.add_argument("--root", default=None, help="registry folder")
    parser.add_argument("--json", action="store_true", help="list as JSON")
    parser.set_defaults(func=cmd_list)
    sub = parser.add_subparsers(dest="models_command", metavar="SUBCOMMAND")
    p = sub.add_parser("list", help="name, task, grid, size and held-out metrics of each model")
    p.add_argument("--root", default=argparse.SUPPRESS)
    p.add_argument("--json", action="store_true", default=argparse.SUPPRESS)
    p.set_defaults(func=cmd_list)
    p = sub.add_parser("path", help="the checkpoint / ensemble path of a model (checksums verified)")
    p.add_argument("name")
    p.add_argument("--root", default=argparse.SUPPRESS)
    p.add_argument("--no-verify", action="store_true", help="skip the sha256 check")
    p.set_defaults(func=cmd_path)
    p = sub.add_parser("verify", help="check a model's files against the sha256 of its card")
    p.add_argument("name")
    p.add_argument("--root", default=argparse.SUPPRESS)
    p.set_defaults(func=cmd_verify)
