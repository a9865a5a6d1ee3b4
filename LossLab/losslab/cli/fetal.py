"""``losslab fetal``: partial annotations, Table-1 training sets, Table-2 evaluation, segmentation."""

from __future__ import annotations

import argparse
import json
import sys


def cmd_tissues(args: argparse.Namespace) -> int:
    from ..labelsets import TISSUES

    if args.color_table:
        from ..labelsets.tissues import color_table_text

        sys.stdout.write(color_table_text())
        return 0
    print("label  abbr  name                   colour (RGB)")
    for t in TISSUES:
        print(f"{t.label:>5}  {t.abbreviation:<4}  {t.name:<21}  {t.color}")
    return 0


def cmd_label_set_map(args: argparse.Namespace) -> int:
    from ..io import check_outputs, image_suffix
    from ..labelsets import make_label_set_map_files
    from ..labelsets.partial import declaration_path

    if (args.annotated is None) == (args.declaration is None):
        raise ValueError("give the annotated tissues with exactly one of --annotated or --declaration")
    image_suffix(args.output)
    check_outputs(
        {"label-set map": args.output, "declaration": declaration_path(args.output)},
        {"partial": args.partial, "mask": args.mask, "--declaration": args.declaration},
        overwrite=args.overwrite,
    )
    annotated = args.declaration if args.declaration else [a for a in args.annotated.split(",") if a.strip()]
    out, decl = make_label_set_map_files(args.partial, args.mask, annotated, args.output)
    print(f"wrote {out} and {decl}")
    return 0


def cmd_build_dataset(args: argparse.Namespace) -> int:
    from ..io import check_output_folder
    from ..labelsets import build_dataset

    check_output_folder(args.out_dir, inputs=[args.cases_dir], overwrite=args.overwrite)
    print(build_dataset(args.cases_dir, args.out_dir, name=args.name, progress=sys.stderr.isatty()))
    return 0


def cmd_export_cases(args: argparse.Namespace) -> int:
    from pathlib import Path

    from ..io import check_output_folder
    from ..labelsets import export_cases

    check_output_folder(args.out_dir, inputs=[Path(args.manifest).parent], overwrite=args.overwrite)
    folders = export_cases(args.manifest, args.out_dir, progress=sys.stderr.isatty())
    print(f"wrote {len(folders)} case folder(s) to {args.out_dir}")
    return 0


def cmd_make_partial(args: argparse.Namespace) -> int:
    from ..io import check_output_folder
    from ..labelsets.atlas import PROTOCOL_TEST_CASES, make_partial_atlas

    check_output_folder(args.out_dir, inputs=[args.atlas_dir], overwrite=args.overwrite)
    exclude = () if args.include_test else PROTOCOL_TEST_CASES
    manifest = make_partial_atlas(
        args.atlas_dir,
        args.out_dir,
        seed=args.seed,
        cases=args.cases,
        exclude=exclude,
        spacing=args.spacing,
        min_full=args.min_full,
        crop_margin_mm=args.crop_margin,
        progress=sys.stderr.isatty(),
    )
    record = json.loads((manifest.parent / "patterns.json").read_text())
    for name, count in record["counts"].items():
        print(f"{name:<22} {count} volume(s)")
    print(manifest)
    return 0


def _parse_methods(items: list[str]) -> dict[str, str]:
    methods = {}
    for item in items:
        name, sep, folder = item.partition("=")
        if not sep or not name or not folder:
            raise ValueError(f"--method expects NAME=FOLDER, got {item!r}")
        if name in methods:
            raise ValueError(f"method {name!r} given twice")
        methods[name] = folder
    return methods


def _label_files(folders) -> list:
    """The image files a folder of label maps may hold (the files ``fetal evaluate`` reads): at its top
    and one level down (``<case>/parcellation.nii.gz``)."""
    from pathlib import Path

    from ..io import IMAGE_SUFFIXES, SEG_SUFFIX

    found = []
    for folder in map(Path, folders):
        if folder.is_dir():
            for path in [*folder.iterdir(), *folder.glob("*/*")]:
                if path.is_file() and path.name.lower().endswith((SEG_SUFFIX, *IMAGE_SUFFIXES)):
                    found.append(path)
    return found


def cmd_evaluate(args: argparse.Namespace) -> int:
    import math

    from ..io import check_outputs, write_text
    from ..labelsets.evaluate import evaluate_folders, json_ready, to_markdown

    methods = _parse_methods(args.method)
    baseline = args.baseline if args.baseline in methods else None
    leaf = args.leaf if args.leaf in methods else None
    if args.baseline not in methods and args.baseline != "fully_supervised":
        raise ValueError(f"--baseline {args.baseline!r} is not among the methods {sorted(methods)}")
    if args.leaf not in methods and args.leaf != "leaf_dice":
        raise ValueError(f"--leaf {args.leaf!r} is not among the methods {sorted(methods)}")
    if not (math.isfinite(args.alpha) and 0 < args.alpha < 1):
        raise ValueError(
            f"--alpha is a significance threshold in (0, 1) (the paper's: 0.01), got {args.alpha}"
        )
    check_outputs(
        {"-o": args.output, "--json": args.json},
        _label_files([args.reference, *methods.values()]),
        overwrite=args.overwrite,
    )
    result = evaluate_folders(
        args.reference, methods, args.cases, baseline, leaf, args.alpha, progress=sys.stderr.isatty()
    )
    text = to_markdown(result)
    if args.output:
        write_text(args.output, text)
    if args.json:
        write_text(args.json, json.dumps(json_ready(result), indent=2, allow_nan=False) + "\n")
    sys.stdout.write(text)
    return 0


def cmd_segment(args: argparse.Namespace) -> int:
    from .. import models
    from ..io import check_outputs, image_suffix
    from ..labelsets.segment import segment
    from . import check_device, check_model

    # the I/O rules and the model card's mask rule, before any work
    check_model(args.model)
    models.require_mask(models.find_card(args.model), args.mask is not None)
    for path in (args.output, args.uncertainty):
        if path is not None:
            image_suffix(path)
    check_outputs(
        {"label map": args.output, "uncertainty": args.uncertainty},
        {"image": args.image, "mask": args.mask, "model": args.model},
        overwrite=args.overwrite,
    )
    check_device(args.device)
    info = segment(
        args.model,
        args.image,
        args.output,
        mask=args.mask,
        uncertainty=args.uncertainty,
        spacing=args.spacing,
        direction=args.direction,
        margin_mm=args.margin,
        device=args.device,
        progress=sys.stderr.isatty(),
    )
    print(
        f"wrote {info['output']} ({info['members']} member(s), model grid {info['model_grid_size']} at "
        f"{info['spacing']} mm, {info['seconds']:.1f} s)"
    )
    return 0


def cmd_brain_mask(args: argparse.Namespace) -> int:
    from ..io import check_outputs, image_suffix
    from ..labelsets.brain import extract_brain_file

    image_suffix(args.output)
    check_outputs({"brain mask": args.output}, {"image": args.image}, overwrite=args.overwrite)
    info = extract_brain_file(args.image, args.output)
    print(
        f"wrote {info['output']} (classical brain extraction: {info['volume_ml']:.1f} mL, {info['voxels']} voxels)"
    )
    return 0


def cmd_package(args: argparse.Namespace) -> int:
    from ..io import check_output_folder
    from ..labelsets.shipping import package_ensemble

    check_output_folder(args.out_dir, inputs=[args.run_dir, args.atlas], overwrite=args.overwrite)
    training = json.loads(args.training) if args.training else {}
    if args.training_file:
        training.update(json.loads(open(args.training_file, encoding="utf-8").read()))
    more = {"task": args.task} if args.task else {}
    card = package_ensemble(
        args.run_dir, args.out_dir, args.name, args.spacing, args.atlas, args.test_cases, training, **more
    )
    metrics = json.loads(card.read_text())["metrics"]["summary"]
    print(
        f"wrote {card}: held-out mean Dice {metrics['mean_dice']:.1f} %, mean HD95 {metrics['mean_hd95']:.1f} mm"
    )
    return 0


def _overwrite(p: argparse.ArgumentParser, what: str) -> None:
    p.add_argument("--overwrite", action="store_true", help=f"replace {what} (never an input)")


def register_commands(subparsers: argparse._SubParsersAction) -> None:
    from . import group_help, seed

    parser = subparsers.add_parser(
        "fetal",
        help="fetal brain parcellation from partial annotations (label-set paper)",
        description="Label-set maps, Table-1 partial training sets, Table-2 evaluation and segmentation "
        "(docs/fetal.md).",
    )
    sub = parser.add_subparsers(dest="fetal_command", metavar="SUBCOMMAND")
    parser.set_defaults(func=lambda args: group_help(parser))

    p = sub.add_parser(
        "tissues",
        help="the 8 tissues: labels, abbreviations, names, colours",
        description="Print the 8 tissues of the fetal parcellation: label value, abbreviation, name and RGB "
        "colour (the order of every LossLab label map).",
    )
    p.add_argument("--color-table", action="store_true", help="print a Slicer-style colour table")
    p.set_defaults(func=cmd_tissues)

    p = sub.add_parser(
        "label-set-map",
        help="partial annotation + brain mask + declaration -> label-set map",
        description="Turn a partial annotation (the painted tissues), the brain mask and the list of annotated "
        "tissues into a label-set map (leaf labels 1..8, a set label for 'one of the unannotated tissues') and "
        "its JSON declaration beside it.",
    )
    p.add_argument("partial", help="label map of the painted tissues (1..8, 0 elsewhere)")
    p.add_argument("mask", help="brain mask")
    p.add_argument("--annotated", help="comma-separated annotated tissues, e.g. WM,Vent,Cer")
    p.add_argument("--declaration", help='annotation.json: {"annotated": ["WM", ...]}')
    p.add_argument(
        "-o", "--output", required=True, help="label-set map (a .json declaration is written beside)"
    )
    _overwrite(p, "an existing map and declaration")
    p.set_defaults(func=cmd_label_set_map)

    p = sub.add_parser(
        "build-dataset",
        help="folder of cases -> engine dataset.json with label_sets",
        description="Check every case folder of CASES_DIR (MRI, partial.nii.gz or parcellation.nii.gz, "
        "mask.nii.gz, annotation.json) and write an engine dataset to OUT_DIR: label-set maps under labels/ "
        "and dataset.json (every bad case is reported together).",
    )
    p.add_argument("cases_dir", help="folder with one sub-folder per case")
    p.add_argument("out_dir", help="output folder (new or empty, unless --overwrite; not CASES_DIR)")
    p.add_argument("--name", default="fetal-partial", help="the dataset's name (default fetal-partial)")
    _overwrite(p, "the files of a dataset OUT_DIR already holds")
    p.set_defaults(func=cmd_build_dataset)

    p = sub.add_parser(
        "export-cases",
        help="engine dataset.json -> folder of cases (the reverse, to inspect)",
        description="Write the case folders of an engine dataset back (MRI, partial.nii.gz, mask.nii.gz, "
        "annotation.json): building a dataset from them again gives the same label-set maps.",
    )
    p.add_argument("manifest", help="the dataset's dataset.json")
    p.add_argument("out_dir", help="output folder (new or empty, unless --overwrite; not the dataset's)")
    _overwrite(p, "case files OUT_DIR already holds")
    p.set_defaults(func=cmd_export_cases)

    p = sub.add_parser(
        "make-partial",
        help="apply Table 1's annotation patterns to atlas volumes: a partially annotated training set",
    )
    p.add_argument("atlas_dir", help="folder of atlas cases (srr, parcellation, mask .nii.gz)")
    p.add_argument("out_dir", help="output folder (new or empty, unless --overwrite; not ATLAS_DIR)")
    p.add_argument("--seed", type=seed, default=0, help="seed of the pattern assignment (default 0)")
    p.add_argument("--spacing", type=float, default=None, help="resample to this isotropic spacing (mm)")
    p.add_argument("--cases", nargs="+", default=None, help="atlas cases to use (default: all)")
    p.add_argument(
        "--include-test", action="store_true", help="keep the protocol's held-out test volumes in the set"
    )
    p.add_argument("--min-full", type=int, default=1, help="at least this many fully annotated volumes")
    p.add_argument(
        "--crop-margin",
        type=float,
        default=None,
        metavar="MM",
        help="crop each volume to its brain mask's bounding box plus this margin (mm)",
    )
    _overwrite(p, "the files of a set OUT_DIR already holds")
    p.set_defaults(func=cmd_make_partial)

    p = sub.add_parser(
        "evaluate",
        help="per-tissue Dice / HD95, Wilcoxon tests, Table 2's layout",
        description="Score each method's predictions against the reference label maps (tissue labels 0..8, "
        "same voxel grid): per tissue Dice (%%) and HD95 (mm), mean (std) over the cases, two-sided Wilcoxon "
        "signed-rank tests against the baseline and between leaf-Dice and each method; prints Table 2's "
        "layout. Files per case: CASE.nii.gz / .nii / .nrrd / .seg.nrrd, or CASE/parcellation.nii.gz.",
    )
    p.add_argument("--reference", required=True, help="folder of reference label maps")
    p.add_argument(
        "--method",
        action="append",
        required=True,
        metavar="NAME=FOLDER",
        help="a method's predictions (repeat for each method)",
    )
    p.add_argument(
        "--baseline",
        default="fully_supervised",
        help="the method every other is tested against (default fully_supervised)",
    )
    p.add_argument(
        "--leaf",
        default="leaf_dice",
        help="the leaf-Dice method's name for its own tests (default leaf_dice)",
    )
    p.add_argument("--cases", nargs="+", default=None, help="cases to score (default: every case all have)")
    p.add_argument(
        "--alpha", type=float, default=0.01, help="significance threshold in (0, 1) (default 0.01)"
    )
    p.add_argument("-o", "--output", help="also write the markdown table to this file")
    p.add_argument("--json", help="also write every value (per case, summaries, tests) to this JSON file")
    _overwrite(p, "existing -o / --json files")
    p.set_defaults(func=cmd_evaluate)

    p = sub.add_parser(
        "package",
        help="package a trained ensemble for the model registry (float16, held-out metrics, sha256)",
    )
    p.add_argument("run_dir", help="engine ensemble folder (ensemble.json, member*/model.pt)")
    p.add_argument("out_dir", help="registry folder of the model, e.g. LossLab/losslab/models/NAME")
    p.add_argument("--name", required=True, help="the model's registry name")
    p.add_argument(
        "--spacing", type=float, nargs=3, required=True, metavar="MM", help="the training grid (mm)"
    )
    p.add_argument("--atlas", required=True, help="atlas folder holding the held-out test cases")
    p.add_argument("--test-cases", nargs="+", required=True, help="the held-out cases scored on the card")
    p.add_argument("--training", help="JSON object describing the training (volumes, patterns, command)")
    p.add_argument("--training-file", help="JSON file merged into --training")
    p.add_argument("--task", help="the card's task line (default: leaf-Dice from partial annotations)")
    _overwrite(p, "a model OUT_DIR already holds")
    p.set_defaults(func=cmd_package)

    p = sub.add_parser(
        "segment",
        help="segment a fetal MRI of any size, spacing and orientation",
        description="Resample the MRI to the model's grid, predict with each ensemble member, and bring the "
        "tissue labels back to the MRI's own voxels.",
    )
    p.add_argument("model", help="registry name, model folder with a card, or checkpoint / ensemble path")
    p.add_argument("image", help="T2w MRI")
    p.add_argument(
        "-o", "--output", required=True, help="label map; .seg.nrrd keeps tissue names and colours"
    )
    p.add_argument("--mask", help="brain mask on the image's grid: crop to it, background outside")
    p.add_argument("--uncertainty", help="write the members' disagreement map here")
    p.add_argument(
        "--spacing", type=float, nargs="+", help="model grid spacing (mm) for a model without a card"
    )
    p.add_argument(
        "--direction",
        type=float,
        nargs=9,
        metavar=("D11", "D12", "D13", "D21", "D22", "D23", "D31", "D32", "D33"),
        help="model grid direction (3x3 row-major, LPS) for a model without a card (default: the atlas's)",
    )
    p.add_argument("--margin", type=float, default=8.0, help="margin around the mask (mm, default 8)")
    p.add_argument("--device", default="auto", help="auto (default), cpu, cuda, cuda:N or mps")
    _overwrite(p, "existing output files")
    p.set_defaults(func=cmd_segment)

    p = sub.add_parser(
        "brain-mask",
        help="classical brain extraction of a brain-extracted fetal T2w reconstruction (no model)",
        description="Otsu threshold, opening, largest component, closing, hole filling and a 1 mm erosion "
        "(losslab.labelsets.brain). For super-resolution reconstructions whose background around the brain is "
        "dark; a result touching the field of view's border or of no fetal brain's volume (30-1000 mL) is "
        "refused. Check the mask before parcellating with it (docs/fetal.md gives its measured accuracy).",
    )
    p.add_argument("image", help="T2w MRI (a super-resolution reconstruction)")
    p.add_argument("-o", "--output", required=True, help="brain mask (uint8, 1 inside), on the image's grid")
    _overwrite(p, "an existing output file")
    p.set_defaults(func=cmd_brain_mask)
