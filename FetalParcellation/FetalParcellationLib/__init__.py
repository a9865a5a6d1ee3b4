"""Qt-free MRML logic of the FetalParcellation module (label-set-losses-fidon2021 in Slicer).

Like :mod:`LossLabLib`, it takes the scene as an argument, never touches Qt, ``slicer.app`` or
``slicer.mrmlScene``, reports progress through callbacks or :class:`LossLabLib.jobs.SubprocessJob` events, and
calls :mod:`losslab.labelsets` for every computation. Parts:

- :mod:`.segments`: the tissue segments' names, colours, terminology and tags (declarations);
- :class:`AnnotationSession` (:mod:`.session`): the 8 tissue segments + brain mask of one MRI, declarations,
  live voxel counts, validation and the label-set map;
- :func:`export_case` / :func:`import_case` (:mod:`.dataset`): a session <-> a case of a dataset folder;
- :class:`ParcellationLogic` (:mod:`.inference`): a model / ensemble on the MRI, in process or in a
  background job, into 8 tissue segments and a disagreement volume;
- :func:`tissue_metrics` (:mod:`.metrics`): per-tissue Dice / HD95 against a reference, as a table;
- :func:`start_training` (:mod:`.training`): leaf-Dice training on a dataset folder (a TrainingJob);
- :mod:`.sample_data`: the CC0 atlas case registered with SampleData;
- :mod:`.module_logic`: what the FetalParcellation module's buttons do (sessions, jobs, button states).

The package imports its parts lazily (on first use of a name), so that ``FetalParcellationLib.sample_data``,
which Slicer reads at startup to register the sample case, needs none of the Python dependencies that are
installed on first use (:mod:`losslab` needs tqdm, slicerio...).
"""

from __future__ import annotations

import importlib

_EXPORTS = {
    "AnnotationSession": "session",
    "ExportResult": "dataset",
    "ImportResult": "dataset",
    "ParcellationJob": "inference",
    "ParcellationLogic": "inference",
    "ParcellationResult": "inference",
    "TissueMetricsResult": "metrics",
    "available_models": "inference",
    "is_fetal_model": "inference",
    "save_parcellation": "inference",
    "export_case": "dataset",
    "import_case": "dataset",
    "read_manifest": "dataset",
    "register_trained_model": "training",
    "sample_data_source": "sample_data",
    "start_training": "training",
    "tissue_metrics": "metrics",
}
__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    if name in _EXPORTS:
        return getattr(importlib.import_module(f".{_EXPORTS[name]}", __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__():
    return sorted(list(globals()) + list(_EXPORTS))
