"""Write a fetal model's cross-centre figures onto its card, and its brain-mask rule (issue 19).

Usage: python configs/fetal/cross_centre_card.py MODEL_DIR EVAL_OUT DATA_DIR [--source TEXT]

MODEL_DIR: the packaged model (``losslab fetal package``); EVAL_OUT: what ``configs/fetal/cross_centre_eval.sh
DATA_DIR MODEL_DIR`` wrote (per centre ``table.json``, ``brain_masks/``, ``segment.log``, ``summary.json``);
DATA_DIR: the same data (the brain masks score the brain the model found without one).

The card gets ``metrics.cross_centre`` (with each volume's own mask: per tissue Dice / HD95, mean and std over
the volumes (sample std, as the held-out figures), per centre, seconds per volume) and ``metrics.no_mask`` (the model finding the brain itself, and
the classical extraction's mask, each with its gap to the with-mask result per centre, and the brain Dice),
and ``input.mask`` by the rule: ``"optional"`` when the no-mask result is within 5 Dice points (0.05) of the
with-mask one on every centre, else ``"required"``. Written through ``losslab.models.register_model`` with the
card's own file list: every sha256 is recomputed and must be unchanged.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path

from losslab import io, models
from losslab.labelsets.evaluate import summary_stats
from losslab.metrics import dice_score

RULE_POINTS = models.NO_MASK_RULE_POINTS  # issue 19: "within 0.05 mean Dice of the with-mask result"


def _block(per_case: dict, tissues: list[str]) -> dict:
    per_tissue = {
        t: {k: summary_stats([c[t][k] for c in per_case.values()]) for k in ("dice", "hd95")} for t in tissues
    }
    return {
        "per_tissue": per_tissue,
        "summary": {
            "mean_dice": statistics.mean(per_tissue[t]["dice"]["mean"] for t in tissues),
            "mean_hd95": statistics.mean(per_tissue[t]["hd95"]["mean"] for t in tissues),
        },
    }


def _brain_dice(prediction: Path, mask: Path) -> float:
    return dice_score(io.read_image(prediction).array > 0, io.read_image(mask).array > 0)


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model_dir", type=Path)
    parser.add_argument("eval_out", type=Path)
    parser.add_argument("data_dir", type=Path)
    parser.add_argument("--source", default="", help="where the cross-centre volumes come from")
    args = parser.parse_args(argv)
    card = models.read_card(args.model_dir)
    summary = json.loads((args.eval_out / "summary.json").read_text())
    centres = sorted(summary["centres"])
    conditions = [c for c in ("with_mask", "no_mask", "extracted_mask") if c in summary["all"]]
    pooled: dict = {c: {} for c in conditions}
    per_centre: dict = {}
    brain_no_mask: dict = {}
    tissues: list[str] = []
    for centre in centres:
        table = json.loads((args.eval_out / centre / "table.json").read_text())
        tissues = table["tissues"]
        row = summary["centres"][centre]
        per_centre[centre] = {
            "cases": table["cases"],
            **{f"mean_dice_{c}": row[c]["mean_dice"] for c in conditions},
            "mean_hd95_with_mask": row["with_mask"]["mean_hd95"],
            "gap_mean_dice": row["gap_mean_dice"],
            "extracted_brain_mask_dice": row["brain_mask_dice"],
        }
        for c in conditions:
            pooled[c].update({f"{centre}/{k}": v for k, v in table["methods"][c]["per_case"].items()})
        if "no_mask" in conditions:
            dice = [
                _brain_dice(
                    args.eval_out / centre / "no_mask" / f"{case}.nii.gz",
                    args.data_dir / centre / case / "mask.nii.gz",
                )
                for case in table["cases"]
            ]
            brain_no_mask[centre] = dice
            per_centre[centre]["no_mask_brain_dice"] = {"mean": statistics.mean(dice), "min": min(dice)}
    blocks = {c: _block(pooled[c], tissues) for c in conditions}
    everything = summary["all"]
    cross = {
        "note": "Dice in %, HD95 in mm, mean (std) over the volumes, at their native grid, with each volume's own "
        "brain mask; atlases of centres other than the training atlas's, never trained on (evaluation only); "
        "configs/fetal/cross_centre_eval.sh DATA_DIR MODEL",
        "source": args.source,
        "cases": sorted(pooled["with_mask"]),
        **blocks["with_mask"],
        "per_centre": per_centre,
        "seconds_per_volume": {
            "segment": everything["segment_seconds"]["with_mask"],
            "command": everything["wall_seconds"]["with_mask"],
            "note": "segment: the parcellation itself (read, resample, every member, write); command: the whole "
            "`losslab fetal segment` call, Python's start included; on the machine that measured it",
        },
    }
    gaps = {
        c: {**{k: per_centre[k]["gap_mean_dice"][c] for k in centres}, "all": everything["gap_mean_dice"][c]}
        for c in conditions[1:]
    }
    no_mask: dict = {
        "rule": f"a brain mask is optional when the no-mask result is within {RULE_POINTS:g} Dice points (0.05) "
        "of the with-mask one on every centre",
        "classical_brain_extraction": {
            "how": "losslab fetal brain-mask (Otsu, opening, largest component, closing, hole filling, erosion)",
            "brain_mask_dice": everything["brain_mask_dice"],
            **{k: v for k, v in blocks["extracted_mask"].items()},
            "gap_mean_dice": gaps["extracted_mask"],
        },
    }
    if "no_mask" in conditions:
        all_dice = [d for k in centres for d in brain_no_mask[k]]
        no_mask["model_finds_the_brain"] = {
            "how": "losslab fetal segment without --mask: the unmasked image on the classical extraction's box "
            "plus 8 mm, the model's own background, its largest connected piece",
            **blocks["no_mask"],
            "gap_mean_dice": gaps["no_mask"],
            "brain_dice": {"mean": statistics.mean(all_dice), "min": min(all_dice)},
            "seconds_per_volume": everything["segment_seconds"]["no_mask"],
        }
        policy = models.measured_mask_policy({k: gaps["no_mask"][k] for k in centres})
        worst = max(gaps["no_mask"][k] for k in centres)
        note = (
            f"without a mask the model finds the brain itself: mean Dice {blocks['no_mask']['summary']['mean_dice']:.1f} "
            f"against {blocks['with_mask']['summary']['mean_dice']:.1f} with the given masks on "
            f"{len(pooled['with_mask'])} volumes of {len(centres)} other centres (largest gap on a centre "
            f"{worst:.1f} points; metrics.no_mask)"
        )
    else:
        policy, note = "required", "the model was not measured without a mask"
    raw = dict(card.raw)
    raw["input"] = {"mask": policy, "note": note}
    raw["metrics"] = {**raw.get("metrics", {}), "cross_centre": cross, "no_mask": no_mask}
    files = sorted(card.files)
    before = dict(card.files)
    for key in ("files", "size_bytes"):
        raw.pop(key, None)
    models.register_model(args.model_dir, raw, files=files)
    after = models.read_card(args.model_dir)
    if after.files != before:
        raise SystemExit(f"{args.model_dir}: a model file changed while its card was rewritten")
    models.verify_model(after)
    print(json.dumps({"mask": policy, "note": note, "gap_mean_dice": gaps}, indent=2))
    return raw


if __name__ == "__main__":
    sys.exit(0 if main() else 1)
