"""Summary of configs/fetal/cross_centre_eval.sh over the centres it evaluated (issue 19).

Usage: python configs/fetal/cross_centre_summary.py OUT   (OUT: the script's output folder)

Reads, per centre folder of OUT, ``table.json`` (``losslab fetal evaluate``), ``brain_masks/*.json``
(``losslab metrics`` of the extracted mask against the given one), ``times.tsv`` (wall seconds of each
command) and ``segment.log`` (the seconds ``segment`` reports, Python start excluded); writes
``OUT/summary.json`` and ``OUT/summary.md``: per centre and over all cases, per tissue mean Dice (%) and HD95
(mm) with the given mask, without a mask (when the model ran without one) and with the extracted one, the
mean over the 8 tissues, the gap of each condition to the given mask's result (``gap_mean_dice``), the
brain-mask Dice and the time per volume.
"""

from __future__ import annotations

import csv
import json
import re
import statistics
import sys
from pathlib import Path

CONDITIONS = ("with_mask", "no_mask", "extracted_mask")  # those a table.json holds, in this order


def _mean(values):
    values = [v for v in values if v is not None and v == v]  # NaN: a tissue absent from a reference
    return statistics.mean(values) if values else float("nan")


def _fmt(value) -> str:
    return "n/a" if value is None else f"{value:.1f}"


def _block(per_case: dict, tissues: list[str]) -> dict:
    per_tissue = {
        t: {k: _mean([per_case[c][t][k] for c in per_case]) for k in ("dice", "hd95")} for t in tissues
    }
    return {
        "per_tissue": per_tissue,
        "mean_dice": _mean([per_tissue[t]["dice"] for t in tissues]),
        "mean_hd95": _mean([per_tissue[t]["hd95"] for t in tissues]),
    }


def main(out: Path) -> dict:
    centres = sorted(p.parent.name for p in out.glob("*/table.json"))
    if not centres:
        raise SystemExit(f"no centre with a table.json under {out}")
    summary: dict = {"centres": {}}
    first = json.loads((out / centres[0] / "table.json").read_text())
    conditions = [c for c in CONDITIONS if c in first["methods"]]
    pooled = {c: {} for c in conditions}
    masks_all, seconds_all = [], {c: [] for c in (*conditions, "brain_mask")}
    seconds_inner: dict = {c: [] for c in conditions}
    for centre in centres:
        o = out / centre
        table = json.loads((o / "table.json").read_text())
        tissues = table["tissues"]
        row: dict = {"cases": table["cases"]}
        missing = [c for c in conditions if c not in table["methods"]]
        if missing:
            raise SystemExit(f"{o / 'table.json'} lacks the condition(s) {missing} of {centres[0]}")
        for cond in conditions:
            per_case = table["methods"][cond]["per_case"]
            row[cond] = _block(per_case, tissues)
            pooled[cond].update({f"{centre}/{c}": v for c, v in per_case.items()})
        row["gap_mean_dice"] = {
            c: row["with_mask"]["mean_dice"] - row[c]["mean_dice"] for c in conditions[1:]
        }
        masks = [
            json.loads(p.read_text())["rows"][0]["dice"] for p in sorted((o / "brain_masks").glob("*.json"))
        ]
        masks_all += masks
        row["brain_mask_dice"] = {"mean": _mean(masks), "min": min(masks), "max": max(masks)}
        with open(o / "times.tsv") as handle:
            times = list(csv.DictReader(handle, delimiter="\t"))
        row["wall_seconds"] = {}
        for cond in seconds_all:
            values = [float(t["seconds"]) for t in times if t["condition"] == cond]
            seconds_all[cond] += values
            row["wall_seconds"][cond] = _mean(values)
        log = (o / "segment.log").read_text() if (o / "segment.log").is_file() else ""
        row["segment_seconds"] = {}
        for cond in conditions:  # segment's own seconds (no Python start), from its "... mm, 1.9 s)" line
            inner = [float(s) for s in re.findall(rf"/{cond}/.* mm, ([0-9.]+) s\)", log)]
            seconds_inner[cond] += inner
            row["segment_seconds"][cond] = _mean(inner) if inner else None
        summary["centres"][centre] = row
    all_row: dict = {"cases": sorted(pooled["with_mask"])}
    for cond in conditions:
        all_row[cond] = _block(pooled[cond], tissues)
    all_row["gap_mean_dice"] = {
        c: all_row["with_mask"]["mean_dice"] - all_row[c]["mean_dice"] for c in conditions[1:]
    }
    all_row["brain_mask_dice"] = {"mean": _mean(masks_all), "min": min(masks_all), "max": max(masks_all)}
    all_row["wall_seconds"] = {c: _mean(v) for c, v in seconds_all.items()}
    all_row["segment_seconds"] = {c: (_mean(v) if v else None) for c, v in seconds_inner.items()}
    summary["all"] = all_row
    (out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")

    rows = [*summary["centres"].items(), ("all", all_row)]
    others = conditions[1:]
    lines = [
        "| centre | cases | mean Dice, given mask (%) | "
        + " | ".join(f"{c.replace('_', ' ')} (%) | gap" for c in others)
        + " | brain-mask Dice | s / volume (segment; command) |",
        "| --- | --- | --- | " + " | ".join("--- | ---" for _ in others) + " | --- | --- |",
    ]
    for name, r in rows:
        bm = r["brain_mask_dice"]
        cells = " | ".join(f"{r[c]['mean_dice']:.1f} | {r['gap_mean_dice'][c]:.1f}" for c in others)
        lines.append(
            f"| {name} | {len(r['cases'])} | {r['with_mask']['mean_dice']:.1f} | {cells} | "
            f"{bm['mean']:.3f} ({bm['min']:.3f}-{bm['max']:.3f}) | {_fmt(r['segment_seconds']['with_mask'])}; "
            f"{r['wall_seconds']['with_mask']:.1f} |"
        )
    lines += ["", "| centre | mask | metric | " + " | ".join(tissues) + " | mean |"]
    lines.append("| --- | --- | --- | " + " | ".join("---" for _ in tissues) + " | --- |")
    for name, r in rows:
        for cond in conditions:
            b = r[cond]
            for k, title, mean in (("dice", "DSC", b["mean_dice"]), ("hd95", "HD95", b["mean_hd95"])):
                cells = " | ".join(f"{b['per_tissue'][t][k]:.1f}" for t in tissues)
                lines.append(f"| {name} | {cond} | {title} | {cells} | {mean:.1f} |")
    (out / "summary.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return summary


if __name__ == "__main__":
    if len(sys.argv) != 2:
        raise SystemExit(__doc__)
    main(Path(sys.argv[1]))
