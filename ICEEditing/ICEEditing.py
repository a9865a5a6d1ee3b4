"""ICEEditing: scribble editing of sparse intracardiac echo (ICE) segmentations (ice-editing-shahin2023).

Thin module file: module description (and, at startup, the "ICE Edit" Segment Editor effect and the sample
data registered), parameter node, widget, logic glue and self-test. Every computation is in ICEEditingLib
(scene.py, scribble.py, session.py, effect.py) and losslab; see docs/ice-slicer.md.
"""

import logging
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

# Combo boxes filled from the model registry (their text is kept in str fields of the parameter node)
COMBO_FIELDS = {
    "segmentModelComboBox": "segmentModel",
    "editModelComboBox": "editModel",
}
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
        p = self._parameterNode
        state = self.logic.state(p)
        self.ui.segmentButton.enabled = bool(p and p.inputVolume)
        for name in ("previousFrameButton", "nextFrameButton", "showFrameButton"):
            getattr(self.ui, name).enabled = state["frames"] > 0
        self.ui.applyCurveButton.enabled = bool(p and p.segmentation and p.scribbleCurve and p.inputVolume)
        self.ui.undoButton.enabled = state["canUndo"]
        self.ui.redoButton.enabled = state["canRedo"]

    def _onProgress(self, fraction: float, message: str) -> None:
        self.ui.progressBar.value = int(round(100 * fraction))
        self.ui.statusLabel.text = message
        slicer.app.processEvents()

    def _showHistory(self, text: str) -> None:
        self.ui.historyTableView.setMRMLTableNode(self._parameterNode.historyTable)
        self.ui.statusLabel.text = text
        self._updateButtons()

    def onLoadSampleButton(self) -> None:
        with slicer.util.tryWithErrorDisplay(_("Failed to load the sample ICE case."), waitCursor=True):
            self.ui.statusLabel.text = self.logic.loadSample(self._parameterNode, progress=self._onProgress)
        self._updateButtons()

    def onLoadCaseButton(self) -> None:
        with slicer.util.tryWithErrorDisplay(_("Failed to load the ICE case."), waitCursor=True):
            self.ui.statusLabel.text = self.logic.loadCase(self._parameterNode, progress=self._onProgress)
        self._updateButtons()

    def onSegmentButton(self) -> None:
        with slicer.util.tryWithErrorDisplay(_("Failed to segment the ICE volume."), waitCursor=True):
            self.ui.statusLabel.text = self.logic.segment(self._parameterNode, progress=self._onProgress)
        self._updateButtons()

    def onPreviousFrameButton(self) -> None:
        with slicer.util.tryWithErrorDisplay(_("Failed to show the frame."), waitCursor=True):
            self.ui.statusLabel.text = self.logic.stepFrame(self._parameterNode, -1)

    def onNextFrameButton(self) -> None:
        with slicer.util.tryWithErrorDisplay(_("Failed to show the frame."), waitCursor=True):
            self.ui.statusLabel.text = self.logic.stepFrame(self._parameterNode, 1)

    def onShowFrameButton(self) -> None:
        with slicer.util.tryWithErrorDisplay(_("Failed to show the frame."), waitCursor=True):
            self.ui.statusLabel.text = self.logic.stepFrame(self._parameterNode, 0)

    def onApplyCurveButton(self) -> None:
        with slicer.util.tryWithErrorDisplay(_("Failed to apply the edit."), waitCursor=True):
            self._showHistory(self.logic.applyCurve(self._parameterNode, progress=self._onProgress))

    def onUndoButton(self) -> None:
        with slicer.util.tryWithErrorDisplay(_("Nothing to undo."), waitCursor=True):
            self._showHistory(self.logic.undo(self._parameterNode))

    def onRedoButton(self) -> None:
        with slicer.util.tryWithErrorDisplay(_("Nothing to redo."), waitCursor=True):
            self._showHistory(self.logic.redo(self._parameterNode))


class ICEEditingLogic(ScriptedLoadableModuleLogic):
    """Slicer glue: installs dependencies on first use, then delegates to ICEEditingLib.

    ``scene`` is slicer.mrmlScene unless given (tests pass a headless scene); ``redSliceNodes`` gives the
    red view's slice and composite nodes (the layout manager's in Slicer).
    """

    def __init__(self, scene=None) -> None:
        ScriptedLoadableModuleLogic.__init__(self)
        self.scene = scene
        self.sceneCase = None
        self.sessions = None

    def getParameterNode(self):
        return ICEEditingParameterNode(super().getParameterNode())

    def sceneClosed(self) -> None:
        """Forget the loaded case and the editing sessions (their nodes are gone)."""
        self.sceneCase = None
        if self.sessions is not None:
            self.sessions.clear()

    def _scene(self):
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

    def modelNames(self, field: str) -> list:
        """Model names for a combo box ("segmentModel" or "editModel"); the defaults before torch is there."""
        import ICEEditingLib

        kind = "segmentation" if field == "segmentModel" else "editing"
        try:
            return ICEEditingLib.available_models(kind)
        except ImportError:
            default = "DEFAULT_SEGMENTATION_MODEL" if kind == "segmentation" else "DEFAULT_EDITING_MODEL"
            return [getattr(ICEEditingLib, default)]

    def state(self, p) -> dict:
        """What the buttons need: the number of frames loaded, and whether undo / redo are possible."""
        session = self._currentSession(p)
        return {
            "frames": self.sceneCase.n_frames if self.sceneCase is not None else 0,
            "canUndo": bool(session and session.can_undo),
            "canRedo": bool(session and session.can_redo),
        }

    def _loaded(self, p, sceneCase) -> str:
        self.sceneCase = sceneCase
        p.inputVolume = sceneCase.volume_node
        p.frame = 0
        return _("Loaded {n} frames").format(n=sceneCase.n_frames)

    def loadSample(self, p, progress=None) -> str:
        self.ensureDependencies()
        from ICEEditingLib import sample_data

        return self._loaded(p, sample_data.load_sample(self._scene(), progress=progress))

    def loadCase(self, p, progress=None) -> str:
        self.ensureDependencies()
        import ICEEditingLib

        folder = str(p.caseFolder) if p.caseFolder is not None else ""
        if folder in ("", "."):
            raise ValueError(_("Choose a case folder written by 'losslab ice simulate' (cases/<id>)."))
        return self._loaded(p, ICEEditingLib.load_case(self._scene(), folder, progress=progress))

    def segment(self, p, progress=None) -> str:
        """y_init: the segmentation model (by name) on the input volume -> a new segmentation to edit."""
        self.ensureDependencies()
        import ICEEditingLib

        source = self.sceneCase if self.sceneCase is not None else p.inputVolume
        p.segmentation, p.segmentId = ICEEditingLib.initial_segmentation(
            self._scene(),
            source,
            p.segmentModel,
            device=p.device,
            segmentation_node=p.segmentation,
            progress=progress,
        )
        return _("Segmented with {model}: segment '{segment}'").format(
            model=p.segmentModel, segment=p.segmentId
        )

    def redSliceNodes(self):
        widget = slicer.app.layoutManager().sliceWidget("Red")
        return widget.mrmlSliceNode(), widget.sliceLogic().GetSliceCompositeNode()

    def stepFrame(self, p, step: int) -> str:
        """Align the red view with frame ``p.frame + step`` (clamped to the frames)."""
        import ICEEditingLib

        if self.sceneCase is None:
            raise ValueError(_("Load an ICE case first: frames come with the case."))
        p.frame = min(max(0, p.frame + int(step)), self.sceneCase.n_frames - 1)
        sliceNode, compositeNode = self.redSliceNodes()
        ICEEditingLib.align_slice_node(sliceNode, self.sceneCase, p.frame, compositeNode)
        return _("Frame {k} of {n}").format(k=p.frame, n=self.sceneCase.n_frames)

    def editorNode(self):
        """The Segment Editor's parameter node, whose masking settings module edits honour (None headless)."""
        try:
            return slicer.modules.segmenteditor.widgetRepresentation().self().editor.mrmlSegmentEditorNode()
        except AttributeError:
            return None

    def _currentSession(self, p):
        if p is None or self.sessions is None or not (p.segmentation and p.inputVolume and p.segmentId):
            return None
        return (
            self.sessions.get(
                self._scene(), p.segmentation, p.segmentId, p.inputVolume, p.editModel, device=p.device
            )
            if self.sessions.has(p.segmentation, p.segmentId, p.inputVolume, p.editModel, p.device)
            else None
        )

    def session(self, p, progress=None):
        """The editing session of the parameter node's segment (one per segment; options from ``p``)."""
        import ICEEditingLib

        if self.sessions is None:
            self.sessions = ICEEditingLib.effect.SessionCache()
        session = self.sessions.get(
            self._scene(),
            p.segmentation,
            p.segmentId,
            p.inputVolume,
            p.editModel,
            device=p.device,
            cas=self.sceneCase
            if self.sceneCase is not None and self.sceneCase.volume_node is p.inputVolume
            else None,
            undo_levels=p.undoLevels,
            history_table=p.historyTable,
        )
        session.writer.copy_masking_from(self.editorNode())  # the Segment Editor's masking settings
        session.progress = progress
        session.sigma_mm = p.sigmaMm if p.sigmaMm > 0 else None
        session.strict_threshold = p.strictThreshold if p.strictLocal else None
        session.adapt_sigma = p.adaptSigma
        if session.undo_levels != p.undoLevels:
            session.set_undo_levels(p.undoLevels)
        return session

    def applyCurve(self, p, progress=None) -> str:
        """Edit the segment with the scribble curve (console: set p.scribbleCurve, then call this)."""
        self.ensureDependencies()
        session = self.session(p, progress)
        record = session.edit_from_curve(p.scribbleCurve)
        p.historyTable = session.history_table
        logging.info("ICEEditing: %s", record.summary())
        return record.summary()

    def undo(self, p) -> str:
        session = self.session(p)
        record = session.undo()
        return _("Undone: edit {index}").format(index=record.index)

    def redo(self, p) -> str:
        session = self.session(p)
        record = session.redo()
        return _("Redone: edit {index}").format(index=record.index)


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
        label = slicer.util.loadLabelVolume(str(logic.sceneCase.folder / "label.nii.gz"))
        p.segmentation = slicer.mrmlScene.AddNewNodeByClass("vtkMRMLSegmentationNode")
        slicer.modules.segmentations.logic().ImportLabelmapToSegmentationNode(label, p.segmentation)
        p.segmentId = p.segmentation.GetSegmentation().GetNthSegmentID(0)
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
