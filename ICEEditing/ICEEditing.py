"""ICEEditing: scribble editing of sparse intracardiac echo (ICE) segmentations (ice-editing-shahin2023).

Thin module file: module description (and, at startup, the "ICE Edit" Segment Editor effect and the sample
data registered), parameter node, widget, logic glue and self-test. Every computation is in ICEEditingLib
(scene.py, scribble.py, session.py, effect.py) and losslab; see docs/ice-slicer.md.
"""

import os
from pathlib import Path
from typing import Annotated

import slicer
import vtk
from slicer import (
    vtkMRMLMarkupsCurveNode,
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

from ICEEditingLib.module_logic import ICEEditingModuleLogic

# Combo boxes filled from the model registry (their text is kept in str fields of the parameter node)
COMBO_FIELDS = {"segmentModelComboBox": "segmentModel", "editModelComboBox": "editModel"}
EFFECT_SOURCE = os.path.join(os.path.dirname(__file__), "SegmentEditorICEEditLib", "SegmentEditorEffect.py")


class ICEEditing(ScriptedLoadableModule):
    def __init__(self, parent):
        ScriptedLoadableModule.__init__(self, parent)
        self.parent.title = _("ICE Editing")
        self.parent.categories = [_("Segmentation")]
        self.parent.dependencies = []
        self.parent.contributors = ["LossLab developers (LossLab)"]
        self.parent.helpText = _(
            "Correct the segmentation of a sparse ICE volume by drawing scribbles on its frames: the editing "
            "model changes the segment near the scribble and keeps it elsewhere; edits accumulate, and each "
            "can be undone and redone. Draw with the 'ICE Edit' effect of the Segment Editor, or apply a "
            "markups curve here. "
            'See <a href="https://github.com/losslab/SlicerLossLab/blob/main/docs/ice-slicer.md">the documentation</a>.'
        )
        self.parent.acknowledgementText = _(
            "Implements the interactive editing of Shahin, Zhuang and El-Zehiry, 'From Sparse to Precise: A "
            "Practical Editing Approach for Intracardiac Echocardiography Segmentation' (2023). Built on the "
            "3D Slicer scripted module and scripted Segment Editor effect templates."
        )
        slicer.app.connect("startupCompleted()", registerEditorEffect)
        slicer.app.connect("startupCompleted()", registerSampleData)


def registerEditorEffect():
    """Register the 'ICE Edit' effect with the Segment Editor (qSlicerSegmentEditorScriptedEffect)."""
    import qSlicerSegmentationsEditorEffectsPythonQt as effects

    instance = effects.qSlicerSegmentEditorScriptedEffect(None)
    instance.setPythonSource(EFFECT_SOURCE.replace("\\", "/"))
    instance.self().register()


def registerSampleData():
    """The bundled ICE case in the Sample Data module (sparse volume, with its SHA-256)."""
    import SampleData

    from ICEEditingLib import sample_data

    icon = os.path.join(os.path.dirname(__file__), "Resources", "Icons", "ICEEditing.png")
    SampleData.SampleDataLogic.registerCustomSampleDataSource(**sample_data.sample_data_source(icon))


@parameterNodeWrapper
class ICEEditingParameterNode:
    # Case
    caseFolder: Path
    inputVolume: vtkMRMLScalarVolumeNode
    segmentModel: str = "ice-segmentation-64"
    device: Annotated[str, Choice(["auto", "cpu", "cuda", "mps"])] = "auto"
    # Frames
    frame: Annotated[int, WithinRange(0, 10000)] = 0
    # Edit
    segmentation: vtkMRMLSegmentationNode
    segmentId: str = ""
    editModel: str = "ice-editing-64"
    sigmaMm: Annotated[float, WithinRange(0.0, 500.0)] = 0.0
    strictLocal: bool = False
    strictThreshold: Annotated[float, WithinRange(0.01, 1.0)] = 0.5
    adaptSigma: bool = False
    undoLevels: Annotated[int, WithinRange(1, 1000)] = 20
    scribbleCurve: vtkMRMLMarkupsCurveNode
    historyTable: vtkMRMLTableNode


class ICEEditingWidget(ScriptedLoadableModuleWidget, VTKObservationMixin):
    """Binding only: the .ui and the parameter node, and buttons that call the Logic."""

    #: makes the Logic the Widget calls (``ICEEditingLogic`` when None): tests and the web app replace it
    logicFactory = None

    def __init__(self, parent=None) -> None:
        ScriptedLoadableModuleWidget.__init__(self, parent)
        VTKObservationMixin.__init__(self)
        self.logic = None
        self._parameterNode = None
        self._parameterNodeGuiTag = None

    def setup(self) -> None:
        ScriptedLoadableModuleWidget.setup(self)
        uiWidget = slicer.util.loadUI(self.resourcePath("UI/ICEEditing.ui"))
        self.layout.addWidget(uiWidget)
        self.ui = slicer.util.childWidgetVariables(uiWidget)
        uiWidget.setMRMLScene(slicer.mrmlScene)
        self.logic = (type(self).logicFactory or ICEEditingLogic)()
        self.addObserver(slicer.mrmlScene, slicer.mrmlScene.StartCloseEvent, self.onSceneStartClose)
        self.addObserver(slicer.mrmlScene, slicer.mrmlScene.EndCloseEvent, self.onSceneEndClose)
        for comboName, field in COMBO_FIELDS.items():
            combo = getattr(self.ui, comboName)
            combo.clear()
            combo.addItems(self.logic.modelNames(field))
            combo.connect("currentTextChanged(QString)", lambda text, f=field: self._onComboChanged(f, text))
        self.ui.loadSampleButton.connect("clicked(bool)", self.onLoadSampleButton)
        self.ui.loadCaseButton.connect("clicked(bool)", self.onLoadCaseButton)
        self.ui.segmentButton.connect("clicked(bool)", self.onSegmentButton)
        self.ui.previousFrameButton.connect("clicked(bool)", self.onPreviousFrameButton)
        self.ui.nextFrameButton.connect("clicked(bool)", self.onNextFrameButton)
        self.ui.showFrameButton.connect("clicked(bool)", self.onShowFrameButton)
        self.ui.applyCurveButton.connect("clicked(bool)", self.onApplyCurveButton)
        self.ui.undoButton.connect("clicked(bool)", self.onUndoButton)
        self.ui.redoButton.connect("clicked(bool)", self.onRedoButton)
        self.initializeParameterNode()

    def cleanup(self) -> None:
        self.removeObservers()

    def enter(self) -> None:
        self.initializeParameterNode()

    def exit(self) -> None:
        self.setParameterNode(None)

    def onSceneStartClose(self, caller, event) -> None:
        self.setParameterNode(None)

    def onSceneEndClose(self, caller, event) -> None:
        self.logic.sceneClosed()
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

    def _updateButtons(self, caller=None, event=None) -> None:
        for name, enabled in self.logic.buttonStates(self._parameterNode).items():
            getattr(self.ui, name).enabled = enabled

    def _onProgress(self, fraction: float, message: str) -> None:
        self.ui.progressBar.value = int(round(100 * fraction))
        self.ui.statusLabel.text = message
        slicer.app.processEvents()

    def _run(self, failure: str, method, *args, history: bool = False, **kwargs) -> None:
        """Call a Logic method on the parameter node and show the text it returns (errors in a dialog)."""
        with slicer.util.tryWithErrorDisplay(failure, waitCursor=True):
            text = method(self._parameterNode, *args, **kwargs)
            if history:
                self.ui.historyTableView.setMRMLTableNode(self._parameterNode.historyTable)
            self.ui.statusLabel.text = text
        self._updateButtons()

    def onLoadSampleButton(self) -> None:
        self._run(_("Failed to load the sample ICE case."), self.logic.loadSample, progress=self._onProgress)

    def onLoadCaseButton(self) -> None:
        self._run(_("Failed to load the ICE case."), self.logic.loadCase, progress=self._onProgress)

    def onSegmentButton(self) -> None:
        self._run(_("Failed to segment the ICE volume."), self.logic.segment, progress=self._onProgress)

    def onPreviousFrameButton(self) -> None:
        self._run(_("Failed to show the frame."), self.logic.stepFrame, -1)

    def onNextFrameButton(self) -> None:
        self._run(_("Failed to show the frame."), self.logic.stepFrame, 1)

    def onShowFrameButton(self) -> None:
        self._run(_("Failed to show the frame."), self.logic.stepFrame, 0)

    def onApplyCurveButton(self) -> None:
        self._run(
            _("Failed to apply the edit."), self.logic.applyCurve, history=True, progress=self._onProgress
        )

    def onUndoButton(self) -> None:
        self._run(_("Nothing to undo."), self.logic.undo, history=True)

    def onRedoButton(self) -> None:
        self._run(_("Nothing to redo."), self.logic.redo, history=True)


class ICEEditingLogic(ScriptedLoadableModuleLogic, ICEEditingModuleLogic):
    """Slicer's hooks for ICEEditingLib.module_logic.ICEEditingModuleLogic, which does the work: the scene
    (slicer.mrmlScene unless given: tests pass a headless one), the first-use install, the red view and the
    Segment Editor's masking settings."""

    def __init__(self, scene=None) -> None:
        ScriptedLoadableModuleLogic.__init__(self)
        ICEEditingModuleLogic.__init__(self, scene)

    def getParameterNode(self):
        return ICEEditingParameterNode(super().getParameterNode())

    def mrmlScene(self):
        return self.scene if self.scene is not None else slicer.mrmlScene

    def ensureDependencies(self) -> None:
        """On first use: torch through SlicerPyTorch, then LossLab's requirements by pip; no prompt while
        Slicer's tests run (LossLabLib.dependencies)."""
        from LossLabLib import dependencies

        dependencies.ensure_dependencies(
            pip_install=slicer.util.pip_install,
            install_torch=dependencies.install_torch_with_slicer_pytorch,
            ask_confirmation=not slicer.app.testingEnabled(),
        )

    def redSliceNodes(self):
        widget = slicer.app.layoutManager().sliceWidget("Red")
        return widget.mrmlSliceNode(), widget.sliceLogic().GetSliceCompositeNode()

    def editorNode(self):
        """The Segment Editor's parameter node, whose masking settings module edits honour (None headless)."""
        try:
            return slicer.modules.segmenteditor.widgetRepresentation().self().editor.mrmlSegmentEditorNode()
        except AttributeError:
            return None


class ICEEditingTest(ScriptedLoadableModuleTest):
    def setUp(self):
        slicer.mrmlScene.Clear()

    def runTest(self):
        self.setUp()
        self.test_ICEEditing1()

    def test_ICEEditing1(self):
        """The bundled sample: load, y_init from its label, an edit from a frame's CAS curve, undo, redo.

        A registered editing model is needed (``losslab models list``); without one the test says so."""
        import ICEEditingLib

        self.delayDisplay("Starting the test")
        logic = ICEEditingLogic()
        p = logic.getParameterNode()
        logic.loadSample(p)
        case = logic.sceneCase
        p.segmentation, p.segmentId = ICEEditingLib.initial_from_mask(slicer.mrmlScene, case, case.case.label)
        frame = logic.sceneCase.frames_with_contours()[0]
        p.scribbleCurve = logic.sceneCase.cas_curves[frame][0]
        p.frame = frame
        logic.stepFrame(p, 0)
        if not ICEEditingLib.model_installed(p.editModel):
            self.delayDisplay("No editing model installed: the edit is skipped (install the LossLab models)")
            return
        before = slicer.util.arrayFromSegmentBinaryLabelmap(p.segmentation, p.segmentId, p.inputVolume).copy()
        logic.applyCurve(p)
        self.assertEqual(p.historyTable.GetNumberOfRows(), 1)
        logic.undo(p)
        after = slicer.util.arrayFromSegmentBinaryLabelmap(p.segmentation, p.segmentId, p.inputVolume)
        self.assertTrue((before == after).all())
        logic.redo(p)
        self.delayDisplay("Test passed")
