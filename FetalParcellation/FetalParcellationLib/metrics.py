"""Per-tissue metrics of a parcellation against a reference segmentation, as a table node.

For each of the 8 tissues present in the reference (segments found by tag or name, :mod:`.segments`), the
SegmentationMetrics module's logic (:class:`LossLabLib.SegmentationMetricsLogic`, hence
:func:`losslab.metrics.compare_masks`) compares the compared segmentation's segment of that tissue with the
reference's, on the reference's grid (or on ``reference_volume``'s, resampling with nearest neighbour).
A tissue missing from the compared segmentation counts as an empty segment (Dice 0, distances NaN).

Table columns: Tissue, Name, Dice, HD95 (mm), Reference voxels, Compared voxels; a last row "mean" averages the
finite values of the tissues (as :func:`losslab.labelsets.evaluate` does per case).
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from losslab.labelsets import TISSUES
from LossLabLib import mrml_io
from LossLabLib.segmentation_metrics import SegmentationMetricsLogic

from . import segments as seg

__all__ = ["COLUMNS", "TissueMetricsResult", "tissue_metrics"]

COLUMNS = ("Tissue", "Name", "Dice", "HD95 (mm)", "Reference voxels", "Compared voxels")


@dataclass
class TissueMetricsResult:
    """``metrics``: ``{abbreviation: compare_masks dict}``; ``rows``: the table rows; ``table_node``."""

    metrics: dict[str, dict[str, float]]
    rows: list[tuple]
    table_node: object


def tissue_metrics(
    scene,
    reference_node,
    compared_node,
    *,
    reference_volume=None,
    output_table=None,
    progress: Callable[[float, str], None] | None = None,
) -> TissueMetricsResult:
    """Dice and HD95 per tissue of ``compared_node`` against ``reference_node`` (see the module docstring).

    Raises:
        ValueError: a node is not a segmentation, or the reference has no tissue segment.
    """
    for role, node in (("reference", reference_node), ("compared", compared_node)):
        if node is None or not node.IsA("vtkMRMLSegmentationNode"):
            raise ValueError(f"the {role} parcellation must be a segmentation node, got {node!r}")
    reference_ids = seg.tissue_segment_ids(reference_node)
    if not reference_ids:
        raise ValueError(
            f"the reference {reference_node.GetName()!r} has no tissue segment (expected segments named "
            f"{', '.join(t.abbreviation for t in TISSUES)} or labelled 1..8)"
        )
    compared_ids = seg.tissue_segment_ids(compared_node)
    logic = SegmentationMetricsLogic(scene)
    scratch = scene.AddNewNodeByClass("vtkMRMLTableNode", scene.GenerateUniqueName("scratch metrics"))
    empty_id = None
    metrics, rows = {}, []
    try:
        for index, t in enumerate(TISSUES):
            if t.label not in reference_ids:
                continue
            if progress is not None:
                progress(index / len(TISSUES), f"Comparing {t.abbreviation}")
            compared_id = compared_ids.get(t.label)
            if compared_id is None:  # an empty stand-in segment on the compared node, removed below
                empty_id = compared_node.GetSegmentation().AddEmptySegment("FetalParcellationEmpty")
                compared_id = empty_id
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # empty masks: NaN / inf by the metrics' convention
                result = logic.compute(
                    reference_node,
                    reference_ids[t.label],
                    compared_node,
                    compared_id,
                    reference_volume=reference_volume,
                    output_table=scratch,
                )
            if empty_id is not None:
                compared_node.GetSegmentation().RemoveSegment(empty_id)
                empty_id = None
            m = result.metrics
            metrics[t.abbreviation] = m
            rows.append(
                (
                    t.abbreviation,
                    t.name,
                    _finite(m["dice"]),
                    _finite(m["hd95"]),
                    float(m["reference_voxels"]),
                    float(m["compared_voxels"]),
                )  # fmt: skip
            )
    finally:
        if empty_id is not None:
            compared_node.GetSegmentation().RemoveSegment(empty_id)
        scene.RemoveNode(scratch)
    dice = [r[2] for r in rows if r[2] is not None]
    hd95 = [r[3] for r in rows if r[3] is not None]
    rows.append(("mean", f"{len(rows)} tissues", _mean(dice), _mean(hd95), None, None))
    table = mrml_io.table_from_rows(
        scene, rows, columns=COLUMNS, node=output_table, name=f"{compared_node.GetName()} tissue metrics"
    )
    if progress is not None:
        progress(1.0, "Done")
    return TissueMetricsResult(metrics, rows, table)


def _finite(value) -> float | None:
    value = float(value)
    return value if math.isfinite(value) else None


def _mean(values) -> float | None:
    return float(np.mean(values)) if values else None
