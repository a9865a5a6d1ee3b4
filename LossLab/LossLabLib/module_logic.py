"""What the LossLab module's buttons do, on a parameter node: the body of ``LossLabLogic``.

``LossLab/LossLab.py`` keeps the Slicer names (``LossLabLogic`` subclasses :class:`LossLabModuleLogic` and
``ScriptedLoadableModuleLogic``) and supplies what only desktop Slicer has, through hooks:
:meth:`~LossLabModuleLogic.ensureDependencies` (the first-use install), :meth:`~LossLabModuleLogic.temporaryFolder`
(where runs without an output folder go) and the scene. ``p`` is the module's parameter node, or any object
with its fields.

:class:`ModuleLogicBase` (the scene and those hooks) and :func:`panel_path` serve the other modules' Lib logics
too (``ICEEditingLib.module_logic``, ``FetalParcellationLib.module_logic``).

No Qt, no ``slicer.app``: it runs on slicer-core (Testing/mrml/test_losslab_module_glue.py). Imports of torch
and the core are deferred to the methods, so that the module file imports this before torch is installed.
"""

from __future__ import annotations

import logging
from pathlib import Path


def panel_path(value) -> str:
    """A path field of a parameter node as text; "" when unset (``None``, ``""`` or ``Path(".")``)."""
    text = str(value) if value is not None else ""
    return "" if text in ("", ".") else text


class ModuleLogicBase:
    """What the Lib logics of the modules share: the scene, and the hooks that the module files override in
    Slicer (:meth:`mrmlScene`, :meth:`ensureDependencies`, :meth:`temporaryFolder`) or may
    (:meth:`pythonExecutable`)."""

    #: what cannot be done without PythonSlicer (the message of :meth:`pythonExecutable`)
    backgroundTask = "run in the background"

    def __init__(self, scene=None) -> None:
        self.scene = scene

    def mrmlScene(self):
        if self.scene is None:
            raise ValueError("no MRML scene: pass one to the Logic")
        return self.scene

    def ensureDependencies(self) -> None:
        """Install what is missing on first use (Slicer: torch and requirements.txt); nothing here."""

    def temporaryFolder(self) -> str:
        """Where a run without an output folder goes (Slicer: its temporary folder)."""
        import tempfile

        return tempfile.gettempdir()

    def pythonExecutable(self) -> str:
        """The Python of the background jobs: PythonSlicer."""
        from LossLabLib.jobs import slicer_python

        return slicer_python(self.backgroundTask)


class LossLabModuleLogic(ModuleLogicBase):
    """Training in a background process (with its curves), inference and the gradient lab, on ``scene``."""

    backgroundTask = "train in the background"

    # The panel's sections ----------------------------------------------------------------------------------

    def choices(self):
        """(network presets, loss names) from the registries; ImportError without torch."""
        from LossLabLib import dependencies, training

        if not dependencies.torch_available():
            raise ImportError("torch is not installed yet")

        return training.network_presets(), training.loss_names()

    def lossHelp(self, name: str) -> str:
        try:
            from LossLabLib import training

            return training.loss_options_text(name)
        except (ImportError, ValueError):
            return ""

    def startTraining(self, p, pythonExecutable=None):
        """Start a LossLabLib.TrainingJob from the Train fields; without an output folder, each run gets a
        new one in the temporary folder (LossLab/run-<time>, named in the log), never next to the data."""
        self.ensureDependencies()
        import LossLabLib

        output = panel_path(p.outputFolder) or str(
            LossLabLib.training.new_run_folder(Path(self.temporaryFolder()) / "LossLab")
        )
        job = LossLabLib.TrainingJob.create(
            panel_path(p.datasetFolder),
            output,
            preset=p.networkPreset,
            loss=p.trainLoss,
            loss_options=p.trainLossOptions,
            epochs=p.epochs,
            device=p.device,
            python_executable=pythonExecutable or self.pythonExecutable(),
        )
        logging.info("LossLab: training in %s", output)
        return job.start()

    def pollTraining(self, p, job):
        """One tick of the training timer: the job's update (LossLabLib.jobs.JobUpdate: new log lines,
        progress, status, finished, error) and the curves chart when new epochs arrived (else None); once
        training is done, the model goes into the Infer section's model path."""
        update = job.update()
        chart = self.updateCurves(p, job) if p is not None and update.new_epochs else None
        if p is not None and update.finished and job.model_path is not None:
            p.modelPath = job.model_path
        return update, chart

    def stopTraining(self, job, timeout=None) -> str:
        """Stop button: a clean stop after the current batch, or (second press) end it now; with ``timeout``,
        stop and wait that long (then kill). Returns the job's status line."""
        if timeout is None:
            return job.stop_or_kill()
        if job.is_running:
            job.stop(timeout=timeout)
        return job.status()

    def updateCurves(self, p, job):
        """Write the job's per-epoch curves into the parameter node's table and chart (created once)."""
        p.trainingTable, p.trainingChart = job.fill_curves(self.mrmlScene(), p.trainingTable, p.trainingChart)
        return p.trainingChart

    def infer(self, p, progress=None):
        self.ensureDependencies()
        import LossLabLib

        logic = LossLabLib.InferenceLogic(self.mrmlScene(), progress, device=p.device)
        result = logic.run(panel_path(p.modelPath), p.inputVolume, output_segmentation=p.outputSegmentation)
        p.outputSegmentation = result.segmentation_node
        return result

    def gradientLab(self, p, progress=None):
        self.ensureDependencies()
        import LossLabLib

        fromSegmentation = p.labPredictionSegmentation is not None
        result = LossLabLib.GradientLabLogic(self.mrmlScene(), progress, device=p.device).compute(
            p.targetSegmentation,
            loss=p.labLoss,
            loss_options=p.labLossOptions,
            volume=p.inputVolume,
            model_path=None if fromSegmentation else panel_path(p.modelPath),
            prediction_segmentation=p.labPredictionSegmentation,
            wrt=p.labWrt,
            class_index=p.labClassIndex,
            output_volume=p.labOutputVolume,
            output_table=p.labOutputTable,
        )
        p.labOutputVolume, p.labOutputTable = result.volume_node, result.table_node
        return result
