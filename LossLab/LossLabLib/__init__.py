"""Qt-free MRML logic of the LossLab Slicer modules (SegmentationMetrics and LossLab).

It translates between MRML nodes (volumes, segmentations, markups curves, tables) and numpy arrays, and
calls :mod:`losslab` for every computation. It takes the scene as an argument, never touches Qt,
``slicer.app`` or ``slicer.mrmlScene``, reports progress through a callback, and so runs unchanged in
desktop Slicer and on the ``slicer-core`` wheel (how the tests run it).

The LossLab module's parts: :class:`SubprocessJob` (any long job in a background Python process, streaming
JSON-lines events), :class:`TrainingJob` (training through it, curves as a table and a plot chart), :class:`InferenceLogic` (a model on a volume -> a segmentation node) and
:class:`GradientLabLogic` (a loss's gradient map as a volume, with its dynamic range). They import torch
only when they run, so importing this package needs no torch.
"""

from .gradient_lab import GradientLabLogic, GradientLabResult
from .inference import InferenceLogic, InferenceResult
from .jobs import SubprocessJob
from .mrml_io import (
    Grid,
    array_to_volume,
    continuous_color_node,
    curve_to_mask,
    labels_color_node,
    markups_to_mask,
    mask_on_grid,
    node_mask,
    polyline_to_mask,
    segment_ids,
    segment_mask,
    set_segment_from_mask,
    table_from_rows,
    table_rows,
    volume_array,
    volume_mask,
)
from .sample_data import create_editing_example
from .segmentation_metrics import SegmentationMetricsLogic, SegmentationMetricsResult
from .training import TrainingJob, build_training_config, curves_chart, curves_table

__all__ = [
    "GradientLabLogic",
    "GradientLabResult",
    "Grid",
    "InferenceLogic",
    "InferenceResult",
    "SegmentationMetricsLogic",
    "SegmentationMetricsResult",
    "SubprocessJob",
    "TrainingJob",
    "array_to_volume",
    "build_training_config",
    "continuous_color_node",
    "create_editing_example",
    "curve_to_mask",
    "curves_chart",
    "curves_table",
    "labels_color_node",
    "markups_to_mask",
    "mask_on_grid",
    "node_mask",
    "polyline_to_mask",
    "segment_ids",
    "segment_mask",
    "set_segment_from_mask",
    "table_from_rows",
    "table_rows",
    "volume_array",
    "volume_mask",
]
