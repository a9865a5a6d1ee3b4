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
- :mod:`.sample_data`: the CC0 atlas case registered with SampleData.
"""

from .dataset import ExportResult, ImportResult, export_case, import_case, read_manifest
from .inference import ParcellationJob, ParcellationLogic, ParcellationResult, available_models
from .metrics import TissueMetricsResult, tissue_metrics
from .sample_data import sample_data_source
from .session import AnnotationSession
from .training import register_trained_model, start_training

__all__ = [
    "AnnotationSession",
    "ExportResult",
    "ImportResult",
    "ParcellationJob",
    "ParcellationLogic",
    "ParcellationResult",
    "TissueMetricsResult",
    "available_models",
    "export_case",
    "import_case",
    "read_manifest",
    "register_trained_model",
    "sample_data_source",
    "start_training",
    "tissue_metrics",
]
