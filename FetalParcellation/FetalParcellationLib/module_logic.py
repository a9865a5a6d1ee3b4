"""What the FetalParcellation module's buttons do, on a parameter node: the body of ``FetalParcellationLogic``.

``FetalParcellation/FetalParcellation.py`` keeps the Slicer names (``FetalParcellationLogic`` subclasses
:class:`FetalParcellationModuleLogic` and ``ScriptedLoadableModuleLogic``) and supplies what only desktop
Slicer has, through hooks: :meth:`~FetalParcellationModuleLogic.ensureDependencies` (the first-use install),
:meth:`~FetalParcellationModuleLogic.temporaryFolder` (where runs without an output folder go) and the scene.
``p`` is the module's parameter node, or any object with its fields.

No Qt, no ``slicer.app``: it runs on slicer-core (Testing/mrml/test_fetal_module_glue.py). Imports of the core
are deferred to the methods, so that the module file imports this before torch is installed.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from pathlib import Path

from LossLabLib.module_logic import ModuleLogicBase, panel_path

#: the tissues' abbreviations, in label order (losslab.labelsets.ABBREVIATIONS); each has an
#: "annotated<abbr>" check box and parameter
TISSUE_KEYS = ("WM", "Vent", "Cer", "ECSF", "CGM", "DGM", "BS", "CC")


@dataclass
class JobsTick:
    """What one tick of the jobs' timer has to show (:meth:`FetalParcellationModuleLogic.pollJobs`)."""

    #: the running (or just finished) parcellation's progress in [0, 1] and status line; None: no job
    progress: float = 0.0
    status: str | None = None
    #: the training job's status line; None: no job
    trainingStatus: str | None = None
    #: a parcellation job that has just finished well: load it (:meth:`loadParcellation`)
    parcellated: object = None
    #: a training job that has just finished with a model: register it (:meth:`registerModel`)
    trained: object = None
    #: failures of jobs that have just ended, one message each, parcellation first
    errors: list = field(default_factory=list)
    #: whether a job is still running (the timer goes on)
    active: bool = False


class FetalParcellationModuleLogic(ModuleLogicBase):
    """Annotation sessions (create, declare, brain mask, summary, export / import), parcellation by a model or
    ensemble (background or in process), per-tissue metrics and leaf-Dice training, on ``scene``.

    It keeps the background jobs it started (:attr:`parcellationJob`, :attr:`trainingJob`) until
    :meth:`pollJobs` has reported them finished."""

    def __init__(self, scene=None) -> None:
        super().__init__(scene)
        self.parcellationJob = None
        self.trainingJob = None

    def modelNames(self):
        """Registered model names (empty until the dependencies are installed)."""
        try:
            from FetalParcellationLib import available_models

            return available_models()
        except ImportError:
            return []

    def buttonStates(self, p) -> dict:
        """{button name in the .ui: enabled}, for the parameter node and the jobs running."""
        running = self.parcellationJob is not None and self.parcellationJob.is_running
        training = self.trainingJob is not None and self.trainingJob.is_running
        hasSession = bool(p and p.annotationSegmentation)
        return {
            "createSessionButton": bool(p and p.inputVolume),
            "setMaskButton": hasSession,
            "validateButton": hasSession,
            "exportButton": hasSession,
            "runButton": bool(p and p.inputVolume and p.model) and not running,
            "stopButton": running,
            "metricsButton": bool(p and p.referenceSegmentation and p.parcellationSegmentation),
            "trainButton": bool(p and str(p.datasetFolder) not in ("", ".")) and not training,
            "trainStopButton": training,
        }

    # Annotation --------------------------------------------------------------------------------------------

    def session(self, p):
        """The chosen session, as it is (choosing a segmentation never adds segments to it: Create does)."""
        from FetalParcellationLib import AnnotationSession

        if p.annotationSegmentation is None:
            raise ValueError("Create or choose an annotation session (segmentation) first.")
        return AnnotationSession(self.mrmlScene(), p.annotationSegmentation, p.inputVolume)

    def createSession(self, p):
        self.ensureDependencies()
        from FetalParcellationLib import AnnotationSession

        session = AnnotationSession.create(
            self.mrmlScene(), p.inputVolume, segmentation_node=p.annotationSegmentation
        )
        session.prepare_segment_editor()  # the mask overlaps the tissues: the editor must allow overlap
        p.annotationSegmentation = session.segmentation_node
        self.readDeclaration(p)
        return session

    def readDeclaration(self, p) -> None:
        """Segment tags -> the "annotated" check boxes."""
        annotated = set(self.session(p).annotated())
        for label, key in enumerate(TISSUE_KEYS, start=1):
            setattr(p, f"annotated{key}", label in annotated)

    def writeDeclaration(self, p, annotated=None) -> None:
        """The "annotated" check boxes (or the ``annotated`` abbreviations) -> segment tags (saved with the
        .seg.nrrd)."""
        if annotated is None:
            annotated = [key for key in TISSUE_KEYS if getattr(p, f"annotated{key}")]
        self.session(p).set_declaration(annotated)

    def setBrainMask(self, p) -> int:
        session = self.session(p)
        if p.maskSegmentation is not None:
            import vtk

            ids = vtk.vtkStringArray()
            p.maskSegmentation.GetSegmentation().GetSegmentIDs(ids)
            if ids.GetNumberOfValues() == 0:
                raise ValueError("The mask segmentation has no segment.")
            return session.set_brain_mask(p.maskSegmentation, ids.GetValue(0))
        if p.maskLabelmap is not None:
            return session.set_brain_mask(p.maskLabelmap)
        raise ValueError(
            "Choose a brain mask (a segmentation or a labelmap), or paint the 'brain mask' segment."
        )

    def refreshSummary(self, p):
        """Fill the summary table (tissue, painted voxels, annotated) and return the validation problems."""
        from LossLabLib import mrml_io

        session = self.session(p)
        p.summaryTable = mrml_io.table_from_rows(
            self.mrmlScene(),
            session.summary_rows(),
            columns=("Tissue", "Name", "Painted voxels", "Annotated"),
            node=p.summaryTable,
            name="Fetal annotation summary",
        )
        return session.problems()

    def exportCase(self, p):
        from FetalParcellationLib import export_case

        folder = panel_path(p.datasetFolder)
        if not folder:
            raise ValueError("Choose the dataset folder to export to.")
        caseId = p.caseId.strip() or (p.inputVolume.GetName() if p.inputVolume else "")
        return export_case(self.session(p), folder, caseId, volume_node=p.inputVolume)

    def importCase(self, p):
        self.ensureDependencies()
        from FetalParcellationLib import import_case

        result = import_case(self.mrmlScene(), panel_path(p.datasetFolder), p.caseId.strip())
        result.session.prepare_segment_editor()
        p.inputVolume = result.volume_node
        p.annotationSegmentation = result.session.segmentation_node
        return result

    # Parcellation, metrics, training -----------------------------------------------------------------------

    def _mask(self, p):
        if p.annotationSegmentation is not None:
            session = self.session(p)
            if session.brain_mask().any():
                return p.annotationSegmentation, session.mask_segment_id
        return None, None

    def startParcellation(self, p, pythonExecutable=None):
        """The model (a registered name or a model folder / checkpoint) on the MRI, in a background process."""
        self.ensureDependencies()
        from FetalParcellationLib import ParcellationLogic

        mask, maskId = self._mask(p)
        self.parcellationJob = ParcellationLogic(self.mrmlScene(), device=p.device).start(
            p.model, p.inputVolume, mask=mask, mask_segment_id=maskId,
            python_executable=pythonExecutable or self.pythonExecutable(),
        )  # fmt: skip
        return self.parcellationJob

    def loadParcellation(self, p, job):
        from FetalParcellationLib import ParcellationLogic

        result = ParcellationLogic(self.mrmlScene()).load_job(
            job, p.parcellationSegmentation, p.disagreementVolume
        )
        p.parcellationSegmentation, p.disagreementVolume = result.segmentation_node, result.uncertainty_node
        return result

    def runParcellation(self, p, progress=None):
        """The same in this process (blocks; for one small model, scripts and the self-test)."""
        self.ensureDependencies()
        from FetalParcellationLib import ParcellationLogic

        mask, maskId = self._mask(p)
        result = ParcellationLogic(self.mrmlScene(), progress, device=p.device).run(
            p.model, p.inputVolume, mask=mask, mask_segment_id=maskId,
            output_segmentation=p.parcellationSegmentation, output_uncertainty=p.disagreementVolume,
        )  # fmt: skip
        p.parcellationSegmentation, p.disagreementVolume = result.segmentation_node, result.uncertainty_node
        return result

    def computeMetrics(self, p, progress=None):
        self.ensureDependencies()
        from FetalParcellationLib import tissue_metrics

        result = tissue_metrics(
            self.mrmlScene(), p.referenceSegmentation, p.parcellationSegmentation,
            reference_volume=p.inputVolume, output_table=p.metricsTable, progress=progress,
        )  # fmt: skip
        p.metricsTable = result.table_node
        return result

    def startTraining(self, p, pythonExecutable=None):
        """Leaf-Dice (by default) training on the dataset folder; without an output folder, each run gets a
        new one in the temporary folder (never next to the data)."""
        self.ensureDependencies()
        from FetalParcellationLib import start_training

        output = panel_path(p.trainingOutputFolder) or str(
            Path(self.temporaryFolder()) / "FetalParcellation" / time.strftime("fetal-%Y%m%d-%H%M%S")
        )
        logging.info("FetalParcellation: training in %s", output)
        self.trainingJob = start_training(
            panel_path(p.datasetFolder), output, loss=p.trainingLoss, epochs=p.epochs, members=p.members,
            device=p.device, python_executable=pythonExecutable or self.pythonExecutable(),
        )  # fmt: skip
        return self.trainingJob

    # The background jobs ------------------------------------------------------------------------------------

    def stopParcellation(self) -> str:
        """Stop button: ask the parcellation to stop; returns its status line ("" without a job)."""
        if self.parcellationJob is None:
            return ""
        self.parcellationJob.request_stop()
        return self.parcellationJob.status()

    def stopTraining(self) -> None:
        if self.trainingJob is not None:
            self.trainingJob.request_stop()

    def stopJobs(self, timeout: float = 10) -> None:
        """End the running jobs (the module panel is being destroyed): a clean stop, killed after ``timeout``."""
        for job in (self.parcellationJob, self.trainingJob):
            if job is not None and job.is_running:
                job.stop(timeout=timeout)

    def pollJobs(self) -> JobsTick:
        """One tick of the jobs' timer: poll the running jobs and say what to show; a job that has finished is
        reported once (to load, to register, or its failure) and then forgotten."""
        tick = JobsTick()
        for job in (self.parcellationJob, self.trainingJob):
            if job is not None and not job.finished:
                job.poll()
        job = self.parcellationJob
        if job is not None:
            tick.progress, tick.status = job.progress, job.status()
            if job.finished:
                self.parcellationJob = None
                if not job.error and not job.stopped:
                    tick.parcellated = job
                elif job.error:
                    tick.errors.append("Parcellation failed: " + str(job.error.get("message")))
        training = self.trainingJob
        if training is not None:
            tick.trainingStatus = training.status()
            if training.finished:
                self.trainingJob = None
                if training.error:
                    tick.errors.append("Training failed: " + str(training.error.get("message")))
                elif training.model_path is not None:
                    tick.trained = training
        tick.active = self.parcellationJob is not None or self.trainingJob is not None
        return tick

    def registerModel(self, p, job) -> str:
        """Write the finished run's model card; the model is then chosen by its folder path."""
        from FetalParcellationLib import register_trained_model

        register_trained_model(job, Path(job.output_dir).name)
        p.model = str(job.output_dir)
        return p.model
