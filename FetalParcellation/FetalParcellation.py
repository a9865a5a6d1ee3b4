"""FetalParcellation: partial label-set annotation and parcellation of fetal brain MRI in Slicer.

Thin module file: module description (and the SampleData registration of a CC0 atlas case), parameter node,
widget, logic glue and self-test. Every computation is in FetalParcellationLib and losslab; see
docs/fetal-slicer.md. Painting is the Segment Editor's; parcellation by an ensemble and training run in
background PythonSlicer processes that the widget polls with a QTimer.
"""

import os
import shutil
from pathlib import Path
from typing import Annotated

import qt
import slicer
import vtk
from slicer import (
    vtkMRMLLabelMapVolumeNode,
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

from FetalParcellationLib.module_logic import TISSUE_KEYS, FetalParcellationModuleLogic


class FetalParcellation(ScriptedLoadableModule):
    def __init__(self, parent):
        ScriptedLoadableModule.__init__(self, parent)
        self.parent.title = _("Fetal Parcellation")
        self.parent.categories = [_("Segmentation")]
        self.parent.dependencies = []
        self.parent.contributors = ["LossLab developers (LossLab)"]
        self.parent.helpText = _(
            "Annotate some of the 8 fetal brain tissues of an MRI, declare which ones you annotated, and export "
            "the case as a label-set map to a dataset folder; train with leaf-Dice on such partial annotations; "
            "parcellate an MRI with a model or ensemble (8 tissue segments and the members' disagreement); "
            "compare with a reference (Dice, HD95 per tissue). "
            '<a href="https://github.com/losslab/SlicerLossLab/blob/main/docs/fetal-slicer.md">Documentation</a>.'
        )
        self.parent.acknowledgementText = _(
            "Label-set losses and partial annotations: Fidon et al., 'Label-set loss functions for partial "
            "supervision: application to fetal brain 3D MRI parcellation' (MICCAI 2021). Sample data: the "
            "spina bifida fetal brain atlas of Fidon et al. (Open Research Europe 2021), CC0 1.0."
        )
        slicer.app.connect("startupCompleted()", registerSampleData)


def registerSampleData():
    """Add the CC0 atlas case (MRI, parcellation, brain mask; SHA256-checked) to the SampleData module."""
    import SampleData

    from FetalParcellationLib.sample_data import sample_data_source

    icon = os.path.join(os.path.dirname(__file__), "Resources", "Icons", "FetalParcellation.png")
    SampleData.SampleDataLogic.registerCustomSampleDataSource(**sample_data_source(icon))


@parameterNodeWrapper
class FetalParcellationParameterNode:
    # Annotation
    inputVolume: vtkMRMLScalarVolumeNode
    annotationSegmentation: vtkMRMLSegmentationNode
    maskSegmentation: vtkMRMLSegmentationNode
    maskLabelmap: vtkMRMLLabelMapVolumeNode
    annotatedWM: bool = False
    annotatedVent: bool = False
    annotatedCer: bool = False
    annotatedECSF: bool = False
    annotatedCGM: bool = False
    annotatedDGM: bool = False
    annotatedBS: bool = False
    annotatedCC: bool = False
    datasetFolder: Path
    caseId: str = ""
    summaryTable: vtkMRMLTableNode
    # Parcellation
    model: str = ""
    device: Annotated[str, Choice(["auto", "cpu", "cuda", "mps"])] = "auto"
    parcellationSegmentation: vtkMRMLSegmentationNode
    disagreementVolume: vtkMRMLScalarVolumeNode
    # Metrics
    referenceSegmentation: vtkMRMLSegmentationNode
    metricsTable: vtkMRMLTableNode
    # Training
    trainingOutputFolder: Path
    trainingLoss: Annotated[str, Choice(["leaf_dice", "marginal_dice", "soft_target_dice", "dice"])] = (
        "leaf_dice"
    )
    epochs: Annotated[int, WithinRange(1, 100000)] = 60
    members: Annotated[int, WithinRange(1, 20)] = 1


class FetalParcellationWidget(ScriptedLoadableModuleWidget, VTKObservationMixin):
    #: the Logic class the Widget calls; tests and the web app replace it (None: FetalParcellationLogic)
    logicFactory = None

    def __init__(self, parent=None) -> None:
        ScriptedLoadableModuleWidget.__init__(self, parent)
        VTKObservationMixin.__init__(self)
        self.logic = None
        self._parameterNode = None
        self._parameterNodeGuiTag = None
        self._observedSegmentation = None
        self._updatingDeclaration = False  # the boxes follow a session's tags: do not write them back

    def setup(self) -> None:
        ScriptedLoadableModuleWidget.setup(self)
        uiWidget = slicer.util.loadUI(self.resourcePath("UI/FetalParcellation.ui"))
        self.layout.addWidget(uiWidget)
        self.ui = slicer.util.childWidgetVariables(uiWidget)
        uiWidget.setMRMLScene(slicer.mrmlScene)
        self.logic = (type(self).logicFactory or FetalParcellationLogic)()
        self.addObserver(slicer.mrmlScene, slicer.mrmlScene.StartCloseEvent, self.onSceneStartClose)
        self.addObserver(slicer.mrmlScene, slicer.mrmlScene.EndCloseEvent, self.onSceneEndClose)
        self.ui.createSessionButton.connect("clicked(bool)", self.onCreateSession)
        self.ui.setMaskButton.connect("clicked(bool)", self.onSetMask)
        self.ui.validateButton.connect("clicked(bool)", self.onValidate)
        self.ui.exportButton.connect("clicked(bool)", self.onExport)
        self.ui.importButton.connect("clicked(bool)", self.onImport)
        self.ui.runButton.connect("clicked(bool)", self.onRun)
        self.ui.stopButton.connect("clicked(bool)", self.onStop)
        self.ui.metricsButton.connect("clicked(bool)", self.onMetrics)
        self.ui.trainButton.connect("clicked(bool)", self.onTrain)
        self.ui.trainStopButton.connect("clicked(bool)", self.onTrainStop)
        for key in TISSUE_KEYS:
            getattr(self.ui, f"annotated{key}CheckBox").connect("toggled(bool)", self.onDeclarationChanged)
        self.ui.modelComboBox.connect("currentTextChanged(QString)", self.onModelChanged)
        self.ui.modelComboBox.addItems(self.logic.modelNames())
        self.timer = qt.QTimer()
        self.timer.setInterval(500)
        self.timer.connect("timeout()", self.onTimer)
        # live counts: recomputed once painting pauses (a stroke modifies the segmentation many times)
        self.summaryTimer = qt.QTimer()
        self.summaryTimer.setSingleShot(True)
        self.summaryTimer.setInterval(300)
        self.summaryTimer.connect("timeout()", self._refreshSummary)
        self.initializeParameterNode()

    def cleanup(self) -> None:
        self.removeObservers()
        self.timer.stop()
        self.summaryTimer.stop()
        self.logic.stopJobs(timeout=10)

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
            self.removeObserver(self._parameterNode, vtk.vtkCommand.ModifiedEvent, self._onParameters)
        self._parameterNode = inputParameterNode
        if self._parameterNode:
            # Widgets in the .ui carry a "SlicerParameterName" dynamic property naming their field.
            self._updatingDeclaration = True
            try:
                self._parameterNodeGuiTag = self._parameterNode.connectGui(self.ui)
            finally:
                self._updatingDeclaration = False
            self.ui.modelComboBox.setCurrentText(self._parameterNode.model)
            self.addObserver(self._parameterNode, vtk.vtkCommand.ModifiedEvent, self._onParameters)
            self._onParameters()

    def _onParameters(self, caller=None, event=None) -> None:
        """Follow the chosen session (its declarations, live counts) and enable the buttons."""
        p = self._parameterNode
        segmentation = p.annotationSegmentation if p else None
        if segmentation is not self._observedSegmentation:
            if self._observedSegmentation is not None:
                self.removeObserver(
                    self._observedSegmentation, vtk.vtkCommand.ModifiedEvent, self._onSegmentation
                )
            self._observedSegmentation = segmentation
            if segmentation is not None:
                self.addObserver(segmentation, vtk.vtkCommand.ModifiedEvent, self._onSegmentation)
                self._updatingDeclaration = True
                try:
                    self.logic.readDeclaration(p)
                finally:
                    self._updatingDeclaration = False
                self._onSegmentation()
        for name, enabled in self.logic.buttonStates(p).items():
            getattr(self.ui, name).enabled = enabled

    def _onSegmentation(self, caller=None, event=None) -> None:
        """The segments were painted or the tags changed: refresh the counts once the editing pauses."""
        self.summaryTimer.start()

    def _refreshSummary(self) -> None:
        """Live voxel counts and validation messages."""
        p = self._parameterNode
        if p is None or p.annotationSegmentation is None:
            return
        try:
            problems = self.logic.refreshSummary(p)
        except Exception as exc:  # a half-made session while the user edits: show why, do not pop up
            self.ui.problemsLabel.text = str(exc)
            return
        self.ui.summaryTableView.setMRMLTableNode(p.summaryTable)
        self.ui.problemsLabel.text = "\n".join(problems) if problems else _("Ready to export.")

    def _onProgress(self, fraction: float, message: str) -> None:
        self.ui.progressBar.value = int(round(100 * fraction))
        self.ui.statusLabel.text = message
        slicer.app.processEvents()

    # Annotation ----------------------------------------------------------------------------------------

    def onCreateSession(self) -> None:
        with slicer.util.tryWithErrorDisplay(_("Failed to create the annotation session."), waitCursor=True):
            self.logic.createSession(self._parameterNode)
            self.ui.statusLabel.text = _(
                "Session ready: paint the tissues and the brain mask in the Segment Editor, then tick the "
                "tissues you annotated."
            )

    def onSetMask(self) -> None:
        with slicer.util.tryWithErrorDisplay(_("Failed to set the brain mask."), waitCursor=True):
            voxels = self.logic.setBrainMask(self._parameterNode)
            self.ui.statusLabel.text = _("Brain mask: {n} voxels").format(n=voxels)

    def onDeclarationChanged(self, checked=None) -> None:
        if self._updatingDeclaration:
            return
        if self._parameterNode is not None and self._parameterNode.annotationSegmentation is not None:
            # read the boxes themselves: this slot may run before the parameter node follows them
            checked = [key for key in TISSUE_KEYS if getattr(self.ui, f"annotated{key}CheckBox").checked]
            self.logic.writeDeclaration(self._parameterNode, checked)

    def onValidate(self) -> None:
        self._refreshSummary()

    def onExport(self) -> None:
        with slicer.util.tryWithErrorDisplay(_("Failed to export the case."), waitCursor=True):
            result = self.logic.exportCase(self._parameterNode)
            self.ui.statusLabel.text = _("Exported {case} to {path}").format(
                case=result.case_id, path=result.manifest
            )

    def onImport(self) -> None:
        with slicer.util.tryWithErrorDisplay(_("Failed to import the case."), waitCursor=True):
            self.logic.importCase(self._parameterNode)
            slicer.util.setSliceViewerLayers(background=self._parameterNode.inputVolume)

    # Parcellation ---------------------------------------------------------------------------------------

    def onModelChanged(self, text: str) -> None:
        if self._parameterNode is not None:
            self._parameterNode.model = text

    def onRun(self) -> None:
        with slicer.util.tryWithErrorDisplay(_("Failed to start the parcellation."), waitCursor=True):
            self.logic.startParcellation(self._parameterNode)
            self.ui.statusLabel.text = _("Parcellation started")
            self.timer.start()
        self._onParameters()

    def onStop(self) -> None:
        self.ui.statusLabel.text = self.logic.stopParcellation()

    def onTimer(self) -> None:
        tick = self.logic.pollJobs()
        if tick.status is not None:
            self.ui.progressBar.value = int(round(100 * tick.progress))
            self.ui.statusLabel.text = tick.status
        if tick.parcellated is not None:
            with slicer.util.tryWithErrorDisplay(_("Failed to load the parcellation."), waitCursor=True):
                self.logic.loadParcellation(self._parameterNode, tick.parcellated)
                p = self._parameterNode
                slicer.util.setSliceViewerLayers(foreground=p.disagreementVolume, foregroundOpacity=0.5)
        if tick.trainingStatus is not None:
            self.ui.trainingStatusLabel.text = tick.trainingStatus
        if tick.trained is not None:
            with slicer.util.tryWithErrorDisplay(_("Failed to register the model."), waitCursor=True):
                self.ui.modelComboBox.addItem(self.logic.registerModel(self._parameterNode, tick.trained))
        for message in tick.errors:
            slicer.util.errorDisplay(message)
        if not tick.active:
            self.timer.stop()
        self._onParameters()

    # Metrics and training -------------------------------------------------------------------------------

    def onMetrics(self) -> None:
        with slicer.util.tryWithErrorDisplay(_("Failed to compute the metrics."), waitCursor=True):
            result = self.logic.computeMetrics(self._parameterNode, progress=self._onProgress)
            self.ui.metricsTableView.setMRMLTableNode(result.table_node)

    def onTrain(self) -> None:
        with slicer.util.tryWithErrorDisplay(_("Failed to start training."), waitCursor=True):
            job = self.logic.startTraining(self._parameterNode)
            self.ui.trainingStatusLabel.text = _("Training started in {path}").format(path=job.output_dir)
            self.timer.start()
        self._onParameters()

    def onTrainStop(self) -> None:
        self.logic.stopTraining()


class FetalParcellationLogic(ScriptedLoadableModuleLogic, FetalParcellationModuleLogic):
    """Slicer's hooks for FetalParcellationLib.module_logic.FetalParcellationModuleLogic, which does the work:
    slicer.mrmlScene, the first-use install, Slicer's temporary folder for new training runs."""

    def __init__(self, scene=None) -> None:
        ScriptedLoadableModuleLogic.__init__(self)
        FetalParcellationModuleLogic.__init__(self, scene)

    def getParameterNode(self):
        return FetalParcellationParameterNode(super().getParameterNode())

    def mrmlScene(self):
        return self.scene if self.scene is not None else slicer.mrmlScene

    def ensureDependencies(self) -> None:
        """On first use: torch through SlicerPyTorch, then LossLab's Resources/requirements.txt by pip; no
        prompt while Slicer's tests run (LossLabLib.dependencies)."""
        from LossLabLib import dependencies

        dependencies.ensure_dependencies(
            pip_install=slicer.util.pip_install,
            install_torch=dependencies.install_torch_with_slicer_pytorch,
            ask_confirmation=not slicer.app.testingEnabled(),
        )

    def temporaryFolder(self) -> str:
        return slicer.app.temporaryPath


class FetalParcellationTest(ScriptedLoadableModuleTest):
    def setUp(self):
        slicer.mrmlScene.Clear()

    def runTest(self):
        self.setUp()
        self.test_FetalParcellation1()

    def test_FetalParcellation1(self):
        """A generated MRI: session, paint two tissues and the mask, declare, export, import back."""
        import numpy as np

        self.delayDisplay("Starting the test")
        folder = Path(slicer.app.temporaryPath) / "FetalParcellationTest"
        shutil.rmtree(folder, ignore_errors=True)
        volume = slicer.mrmlScene.AddNewNodeByClass("vtkMRMLScalarVolumeNode", "fetal")
        kk, jj, ii = np.mgrid[:24, :24, :24]
        radius = np.sqrt((kk - 12) ** 2 + (jj - 12) ** 2 + (ii - 12) ** 2)
        slicer.util.updateVolumeFromArray(volume, (100 * (radius < 10)).astype(np.float32))
        logic = FetalParcellationLogic()
        p = logic.getParameterNode()
        p.inputVolume = volume
        session = logic.createSession(p)
        node = p.annotationSegmentation
        for name, region in (
            ("WM", radius < 4),
            ("Vent", (radius >= 4) & (radius < 6)),
            ("brain mask", radius < 10),
        ):
            segmentId = session.segment_id(name) if name != "brain mask" else session.mask_segment_id
            slicer.util.updateSegmentBinaryLabelmapFromArray(region.astype(np.uint8), node, segmentId, volume)
        p.annotatedWM, p.annotatedVent = True, True
        logic.writeDeclaration(p)
        self.assertEqual(logic.refreshSummary(p), [])
        p.datasetFolder, p.caseId = folder, "case01"
        result = logic.exportCase(p)
        self.assertEqual(result.declaration.set_label, 12)  # Cer, ECSF..CC: not a released-code set, so 12
        imported = logic.importCase(p)
        self.assertEqual(imported.session.annotated(), [1, 2])
        self.delayDisplay("Test passed")
