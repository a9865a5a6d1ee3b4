"""Qt-free MRML logic of the ICEEditing module and the "ICE Edit" Segment Editor effect.

Scribble editing of sparse intracardiac echo (ICE) segmentations (ice-editing-shahin2023): load an ICE case
into a scene (:mod:`.scene`), turn a scribble drawn in any slice view into grid voxels (:mod:`.scribble`),
and edit a segment with an editing model through the Segment Editor's write path, with an edit history and
multi-level undo / redo (:mod:`.session`); :mod:`.effect` is what the effect calls on each stroke;
:mod:`.sample_data` the bundled sample case; :mod:`.module_logic` what the ICEEditing module's buttons do.
The editing step itself is :meth:`losslab.ice.EditingModel.edit`.

It takes the scene as an argument, never touches Qt, ``slicer.app`` or ``slicer.mrmlScene``, and so runs
unchanged in desktop Slicer and on the ``slicer-core`` wheel (how the tests run it). Names load lazily.
"""

from __future__ import annotations

import importlib

_EXPORTS = {
    "DEFAULT_EDITING_MODEL": "scene",
    "DEFAULT_SEGMENTATION_MODEL": "scene",
    "FRAME_ATTRIBUTE": "scene",
    "ICESceneCase": "scene",
    "align_slice_node": "scene",
    "MODEL_KINDS": "scene",
    "available_models": "scene",
    "check_model": "scene",
    "model_grid_note": "scene",
    "model_kind": "scene",
    "predict_initial": "scene",
    "frame_of_node": "scene",
    "frame_of_stroke": "scene",
    "frame_points_ras": "scene",
    "frame_slice_to_ras": "scene",
    "initial_from_mask": "scene",
    "initial_from_segmentation": "scene",
    "initial_segmentation": "scene",
    "load_case": "scene",
    "model_installed": "scene",
    "MIN_STROKE_PIXELS": "scribble",
    "curve_to_voxels": "scribble",
    "is_click": "scribble",
    "slice_xy_to_ras": "scribble",
    "stroke_to_voxels": "scribble",
    "DEFAULT_UNDO_LEVELS": "session",
    "METRIC_REGIONS": "session",
    "EditRecord": "session",
    "ICEEditingSession": "session",
    "SegmentEditorLogicWriter": "session",
    "adapted_sigma_mm": "session",
    "StrokeCollector": "effect",
    "SAMPLE_NAME": "sample_data",
    "sample_case_folder": "sample_data",
    "verify_sample": "sample_data",
}
_SUBMODULES = ("effect", "module_logic", "sample_data", "scene", "scribble", "session")


def __getattr__(name: str):
    if name in _SUBMODULES:
        return importlib.import_module(f".{name}", __name__)
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'ICEEditingLib' has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{module}", __name__), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_EXPORTS) | set(_SUBMODULES))


__all__ = sorted(_EXPORTS)
