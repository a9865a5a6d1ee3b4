"""Qt-free MRML logic of the LossLab Slicer modules (SegmentationMetrics and LossLab).

It translates between MRML nodes (volumes, segmentations, markups curves, tables) and numpy arrays, and
calls :mod:`losslab` for every computation. It takes the scene as an argument, never touches Qt,
``slicer.app`` or ``slicer.mrmlScene``, reports progress through a callback, and so runs unchanged in
desktop Slicer and on the ``slicer-core`` wheel (how the tests run it).

The LossLab module's parts: :class:`SubprocessJob` (any long job in a background Python process,
streaming JSON-lines events), :class:`TrainingJob` (training through it, curves as a table and a plot
chart), :class:`InferenceLogic` (a model on a volume -> a segmentation node) and :class:`GradientLabLogic`
(a loss's gradient map as a volume, with its dynamic range); :mod:`LossLabLib.module_logic` what the LossLab
module's buttons do (and the base of the other modules' Lib logics); :mod:`LossLabLib.dependencies` installs
what the modules need on the first Apply. They import torch only when they run, so importing this package needs
no torch. Its parts load lazily, on first use of a name (``LossLabLib.TrainingJob``...), so that
:mod:`LossLabLib.dependencies` can be imported, and install the rest, before scipy or torch are there.
"""

from __future__ import annotations

import importlib

# name -> the submodule that defines it (loaded on first use: see the module docstring)
_EXPORTS = {
    "GradientLabLogic": "gradient_lab",
    "GradientLabResult": "gradient_lab",
    "InferenceLogic": "inference",
    "InferenceResult": "inference",
    "SubprocessJob": "jobs",
    "Grid": "mrml_io",
    "array_to_volume": "mrml_io",
    "continuous_color_node": "mrml_io",
    "curve_to_mask": "mrml_io",
    "labels_color_node": "mrml_io",
    "markups_to_mask": "mrml_io",
    "mask_on_grid": "mrml_io",
    "node_mask": "mrml_io",
    "polyline_to_mask": "mrml_io",
    "segment_ids": "mrml_io",
    "segment_mask": "mrml_io",
    "set_segment_from_mask": "mrml_io",
    "table_from_rows": "mrml_io",
    "table_rows": "mrml_io",
    "volume_array": "mrml_io",
    "volume_mask": "mrml_io",
    "create_editing_example": "sample_data",
    "SegmentationMetricsLogic": "segmentation_metrics",
    "SegmentationMetricsResult": "segmentation_metrics",
    "TrainingJob": "training",
    "build_training_config": "training",
    "curves_chart": "training",
    "curves_table": "training",
}


_SUBMODULES = (
    "dependencies",
    "gradient_lab",
    "inference",
    "jobs",
    "module_logic",
    "mrml_io",
    "sample_data",
    "segmentation_metrics",
    "training",
)


def __getattr__(name: str):
    if name in _SUBMODULES:  # LossLabLib.training etc. without importing it first
        return importlib.import_module(f".{name}", __name__)
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'LossLabLib' has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{module}", __name__), name)
    globals()[name] = value  # later lookups skip __getattr__
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_EXPORTS) | set(_SUBMODULES))


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
