"""Fetal brain parcellation from partial annotations (label-set-losses-fidon2021): tissues, label-set maps,
datasets, the paper's Table 1 patterns, evaluation (Table 2) and segmentation on any grid.

- :mod:`.tissues`: the 8 tissues (labels, abbreviations, names, colours).
- :mod:`.partial`: partial annotation + brain mask + declaration -> label-set map (released code's encoding),
  with validation.
- :mod:`.dataset`: case folders <-> engine ``dataset.json`` with ``label_sets``.
- :mod:`.patterns`, :mod:`.atlas`: Table 1's annotation patterns applied to the atlas.
- :mod:`.evaluate`: per-tissue Dice / HD95, Wilcoxon tests, Table 2's layout.
- :mod:`.segment`: a model (or registry name) on an MRI of any size, spacing and orientation.
- :mod:`.brain`: classical brain extraction (threshold, morphology, largest component) of a reconstruction
  whose background is dark; measured, not a default (docs/fetal.md).
"""

from __future__ import annotations

from .dataset import build_dataset, export_cases
from .partial import (
    PAPER_LABEL_SETS,
    Declaration,
    LabelSetNumbering,
    PartialAnnotationError,
    check_partial_annotation,
    make_label_set_map,
    make_label_set_map_files,
    read_annotated,
    split_label_set_map,
)
from .patterns import TABLE1_PATTERNS, Pattern, apply_pattern, assign_patterns, pattern_counts
from .tissues import ABBREVIATIONS, LABEL_NAMES, NUM_CLASSES, TISSUES, Tissue, tissue, tissue_labels

__all__ = [
    "ABBREVIATIONS",
    "LABEL_NAMES",
    "NUM_CLASSES",
    "PAPER_LABEL_SETS",
    "TABLE1_PATTERNS",
    "TISSUES",
    "Declaration",
    "LabelSetNumbering",
    "PartialAnnotationError",
    "Pattern",
    "Tissue",
    "apply_pattern",
    "assign_patterns",
    "build_dataset",
    "check_partial_annotation",
    "export_cases",
    "make_label_set_map",
    "make_label_set_map_files",
    "pattern_counts",
    "read_annotated",
    "split_label_set_map",
    "tissue",
    "tissue_labels",
]
