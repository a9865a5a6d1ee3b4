"""LossLab: train a segmentation network with any LossLab loss, segment volumes with it, and look at a
loss's gradient map (the Dice-gradient lab), in Slicer.

Thin module file: module description, parameter node, widget, logic glue and self-test. Every computation
is in LossLabLib (training.py, inference.py, gradient_lab.py) and losslab; see docs/slicer.md.
Training runs in a background PythonSlicer process that the widget polls with a QTimer.
"""

import shutil
from pathlib import Path
from typing import Annotated

import qt
import slicer
import vtk
from slicer import (
    vtkMRMLPlotChartNode,
    vtkMRMLScalarVolumeNode,
    vtkMRMLSegmentationNode,
    vtkMRMLTableNode,
)
from slicer.i18n import tr as _
from slicer.parameterNodeWrapper import Choice, WithinRange, parameterNodeWrapper
from slicer.ScriptedLoadableModule import (
    ScriptedLoadableModule,
    ScriptedLoadableModuleLogic,
    ScriptedLoadableModuleTest,
    ScriptedLoadableModuleWidget,
)
from slicer.util import VTKObservationMixin

from LossLabLib.module_logic import LossLabModuleLogic

# Combo boxes filled from the registries (no parameter-node connector: their text is kept in str fields)
COMBO_FIELDS = {
    "presetComboBox": "networkPreset",
    "trainLossComboBox": "trainLoss",
    "labLossComboBox": "labLoss",
}


class LossLab(ScriptedLoadableModule):
    def __init__(self, parent):
        ScriptedLoadableModule.__init__(self, parent)
        self.parent.title = _("LossLab")
        self.parent.categories = [_("Segmentation")]
        self.parent.dependencies = []
        self.parent.contributors = ["LossLab developers (LossLab)"]
        self.parent.helpText = _(
            "Train a segmentation network on a dataset folder with any LossLab loss (Dice, mime, label-set, "
            "margin calibration, editing...) in a background process; segment a volume with a model or an "
            "ensemble; and show the gradient map of a loss for a segmentation and a prediction, with its "
            "dynamic range (the Dice-gradient paper's Fig. 1). "
            'See <a href="https://github.com/losslab/SlicerLossLab/blob/main/docs/slicer.md">the documentation</a>.'
        )
        self.parent.acknowledgementText = _(
            "LossLab implements losses of Kervadec et al. (mime, Dice gradient), Fidon et al. (label-set "
            "losses), Li et al. (margin calibration) and Shahin et al. (ICE editing). Built on the 3D Slicer "
            "scripted module template."
        )


@parameterNodeWrapper
class LossLabParameterNode:
    # Train
    datasetFolder: Path
    outputFolder: Path
    networkPreset: str = "ice_segmentation"
    trainLoss: str = "dice"
    trainLossOptions: str = ""
    epochs: Annotated[int, WithinRange(1, 100000)] = 100
    device: Annotated[str, Choice(["auto", "cpu", "cuda", "mps"])] = "auto"
    trainingTable: vtkMRMLTableNode
    trainingChart: vtkMRMLPlotChartNode
    # Infer
    modelPath: Path
    inputVolume: vtkMRMLScalarVolumeNode
    outputSegmentation: vtkMRMLSegmentationNode
    # Gradient lab
    targetSegmentation: vtkMRMLSegmentationNode
    labPredictionSegmentation: vtkMRMLSegmentationNode
    labLoss: str = "dice"
    labLossOptions: str = ""
    labWrt: Annotated[str, Choice(["probabilities", "logits"])] = "probabilities"
    labClassIndex: Annotated[int, WithinRange(0, 255)] = 1
    labOutputVolume: vtkMRMLScalarVolumeNode
    labOutputTable: vtkMRMLTableNode


class LossLabWidget(ScriptedLoadableModuleWidget, VTKObservationMixin):
    """Binding only: the .ui and the parameter node, and buttons and a timer that call the Logic."""

    #: makes the Logic the Widget calls (``LossLabLogic`` when None): tests and the web app replace it
    #: (a class, or any callable taking no argument)
    logicFactory = None

    def __init__(self, parent=None) -> None:
        ScriptedLoadableModuleWidget.__init__(self, parent)
        VTKObservationMixin.__init__(self)
        self.logic = None
        self.job = None
        self._parameterNode = None
        self._parameterNodeGuiTag = None
        self._chartShown = False

    def setup(self) -> None:
        ScriptedLoadableModuleWidget.setup(self)
        uiWidget = slicer.util.loadUI(self.resourcePath("UI/LossLab.ui"))
        self.layout.addWidget(uiWidget)
        self.ui = slicer.util.childWidgetVariables(uiWidget)
        uiWidget.setMRMLScene(slicer.mrmlScene)
        self.logic = (type(self).logicFactory or LossLabLogic)()
        self.addObserver(slicer.mrmlScene, slicer.mrmlScene.StartCloseEvent, self.onSceneStartClose)
        self.addObserver(slicer.mrmlScene, slicer.mrmlScene.EndCloseEvent, self.onSceneEndClose)
        self._fillChoices()
        for comboName, field in COMBO_FIELDS.items():
            getattr(self.ui, comboName).connect(
                "currentTextChanged(QString)", lambda text, f=field: self._onComboChanged(f, text)
            )
        self.ui.trainButton.connect("clicked(bool)", self.onTrainButton)
        self.ui.stopButton.connect("clicked(bool)", self.onStopButton)
        self.ui.inferButton.connect("clicked(bool)", self.onInferButton)
        self.ui.gradientButton.connect("clicked(bool)", self.onGradientButton)
        self.timer = qt.QTimer()
        self.timer.setInterval(500)
        self.timer.connect("timeout()", self.onTimer)
        self.initializeParameterNode()

    def _fillChoices(self) -> None:
        """Presets and losses from the registries when torch is there (else the .ui's built-in lists)."""
        try:
            presets, losses = self.logic.choices()
        except ImportError:
            return
        for comboName, items in (
            ("presetComboBox", presets),
            ("trainLossComboBox", losses),
            ("labLossComboBox", losses),
        ):
            combo = getattr(self.ui, comboName)
            combo.blockSignals(True)
            combo.clear()
            combo.addItems(items)
            combo.blockSignals(False)

    def cleanup(self) -> None:
        self.removeObservers()
        self.timer.stop()
        if self.job is not None:
            self.logic.stopTraining(self.job, timeout=10)

    def enter(self) -> None:
        self.initializeParameterNode()

    def exit(self) -> None:
        self.setParameterNode(None)

    def onSceneStartClose(self, caller, event) -> None:
        self.setParameterNode(None)

    def onSceneEndClose(self, caller, event) -> None:
        if self.parent.isEntered:
            self.initializeParameterNode()

    def initializeParameterNode(self) -> None:
        self.setParameterNode(self.logic.getParameterNode())

    def setParameterNode(self, inputParameterNode) -> None:
        if self._parameterNode:
            self._parameterNode.disconnectGui(self._parameterNodeGuiTag)
            self.removeObserver(self._parameterNode, vtk.vtkCommand.ModifiedEvent, self._updateButtons)
        self._parameterNode = inputParameterNode
        if self._parameterNode:
            # Widgets in the .ui carry a "SlicerParameterName" dynamic property naming their field.
            self._parameterNodeGuiTag = self._parameterNode.connectGui(self.ui)
            for comboName, field in COMBO_FIELDS.items():
                getattr(self.ui, comboName).setCurrentText(getattr(self._parameterNode, field))
            self.addObserver(self._parameterNode, vtk.vtkCommand.ModifiedEvent, self._updateButtons)
            self._updateButtons()

    def _onComboChanged(self, field: str, text: str) -> None:
        if self._parameterNode and text:
            setattr(self._parameterNode, field, text)
        combo = {v: k for k, v in COMBO_FIELDS.items()}[field]
        if field != "networkPreset":
            getattr(self.ui, combo).toolTip = self.logic.lossHelp(text)

    def _updateButtons(self, caller=None, event=None) -> None:
        p = self._parameterNode
        running = self.job is not None and self.job.is_running
        self.ui.trainButton.enabled = bool(p) and not running
        self.ui.stopButton.enabled = running
        self.ui.inferButton.enabled = bool(p and p.inputVolume)
        self.ui.gradientButton.enabled = bool(p and p.targetSegmentation)

    def _onProgress(self, fraction: float, message: str) -> None:
        self.ui.progressBar.value = int(round(100 * fraction))
        self.ui.statusLabel.text = message
        slicer.app.processEvents()

    # Train ---------------------------------------------------------------------------------------------------

    def onTrainButton(self) -> None:
        with slicer.util.tryWithErrorDisplay(_("Failed to start training."), waitCursor=True):
            self.job = self.logic.startTraining(self._parameterNode)
            self._chartShown = False
            self.ui.logTextEdit.clear()
            self.ui.logTextEdit.appendPlainText(" ".join(self.job.command))
            self.ui.statusLabel.text = _("Training started")
            self.timer.start()
        self._updateButtons()

    def onStopButton(self) -> None:
        if self.job is None:
            return
        self.ui.statusLabel.text = self.logic.stopTraining(self.job)  # a second press ends it at once

    def onTimer(self) -> None:
        if self.job is None:
            self.timer.stop()
            return
        update, chart = self.logic.pollTraining(self._parameterNode, self.job)
        for line in update.log:
            self.ui.logTextEdit.appendPlainText(line)
        self.ui.progressBar.value = int(round(100 * update.progress))
        self.ui.statusLabel.text = update.status
        if chart is not None and not self._chartShown:
            slicer.modules.plots.logic().ShowChartInLayout(chart)
            self._chartShown = True
        if update.finished:
            self.timer.stop()
            if update.error:
                slicer.util.errorDisplay(_("Training failed: ") + update.error)
        self._updateButtons()

    # Infer and gradient lab ----------------------------------------------------------------------------------

    def onInferButton(self) -> None:
        with slicer.util.tryWithErrorDisplay(_("Failed to segment the volume."), waitCursor=True):
            result = self.logic.infer(self._parameterNode, progress=self._onProgress)
            slicer.util.setSliceViewerLayers(background=self._parameterNode.inputVolume)
            self.ui.statusLabel.text = _("Segments: ") + ", ".join(result.label_names[1:])

    def onGradientButton(self) -> None:
        with slicer.util.tryWithErrorDisplay(_("Failed to compute the gradient map."), waitCursor=True):
            result = self.logic.gradientLab(self._parameterNode, progress=self._onProgress)
            slicer.util.setSliceViewerLayers(foreground=result.volume_node, foregroundOpacity=0.7)
            self.ui.resultsTableView.setMRMLTableNode(result.table_node)
            self.ui.statusLabel.text = _("Dynamic range of {name}: {db:.2f} dB").format(
                name=result.class_names[result.class_index],
                db=result.per_class_db[result.class_names[result.class_index]],
            )


class LossLabLogic(ScriptedLoadableModuleLogic, LossLabModuleLogic):
    """Slicer's hooks for LossLabLib.module_logic.LossLabModuleLogic, which does the work: slicer.mrmlScene, the
    first-use install, Slicer's temporary folder for new training runs."""

    def __init__(self, scene=None) -> None:
        ScriptedLoadableModuleLogic.__init__(self)
        LossLabModuleLogic.__init__(self, scene)

    def getParameterNode(self):
        return LossLabParameterNode(super().getParameterNode())

    def mrmlScene(self):
        return self.scene if self.scene is not None else slicer.mrmlScene

    def ensureDependencies(self) -> None:
        """On first use: torch through SlicerPyTorch, then Resources/requirements.txt by pip; no prompt while
        Slicer's tests run (LossLabLib.dependencies)."""
        from LossLabLib import dependencies

        dependencies.ensure_dependencies(
            pip_install=slicer.util.pip_install,
            install_torch=dependencies.install_torch_with_slicer_pytorch,
            ask_confirmation=not slicer.app.testingEnabled(),
        )

    def temporaryFolder(self) -> str:
        return slicer.app.temporaryPath


class LossLabTest(ScriptedLoadableModuleTest):
    def setUp(self):
        slicer.mrmlScene.Clear()

    def runTest(self):
        self.setUp()
        self.test_LossLab1()

    def test_LossLab1(self):
        """Generated dataset: a 1-epoch background training run, inference, then the Dice gradient lab."""
        import LossLabLib
        from LossLabLib import training

        self.delayDisplay("Starting the test")
        folder = Path(slicer.app.temporaryPath) / "LossLabTest"
        shutil.rmtree(folder, ignore_errors=True)
        training.make_example_dataset(folder / "data")
        logic = LossLabLogic()
        p = logic.getParameterNode()
        p.datasetFolder, p.outputFolder = folder / "data", folder / "run"
        p.trainLoss, p.epochs, p.device = "dice", 1, "cpu"
        job = logic.startTraining(p)
        self.assertEqual(job.wait(600), 0, "\n".join(job.log))
        self.assertEqual(len(job.history), 1)
        logic.updateCurves(p, job)
        self.assertEqual(p.trainingTable.GetNumberOfRows(), 1)

        p.modelPath = job.model_path
        p.inputVolume = slicer.util.loadVolume(str(folder / "data" / "images" / "case00.nii.gz"))
        result = logic.infer(p)
        self.assertEqual(result.label_names, ["background", "class1", "class2"])
        self.assertEqual(len(LossLabLib.segment_ids(p.outputSegmentation)), 2)

        p.targetSegmentation = p.outputSegmentation
        lab = logic.gradientLab(p)
        self.assertIs(p.labOutputVolume, lab.volume_node)
        self.assertGreaterEqual(lab.dynamic_range_db, 0.0)
        self.delayDisplay("Test passed")
