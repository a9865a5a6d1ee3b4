"""The "ICE Edit" Segment Editor effect: draw a scribble on an ICE frame, the editing model corrects the
selected segment around it.

Thin, on Slicer's ScriptedSegmentEditorEffect template: it collects the stroke in a slice view (any
orientation, including a view aligned with an oblique frame by the ICEEditing module) through ``xyToRas``,
and on release hands the RAS points to ``ICEEditingLib.effect.apply_stroke``, which runs the editing model
and writes through this effect's ``saveStateForUndo`` and ``modifySelectedSegmentByLabelmap`` (one undo
step per stroke; editable area, intensity mask and overwrite mode honoured). Options: model, sigma, strict
local, undo levels.
"""

import os

import qt
import slicer
import vtk
from SegmentEditorEffects import AbstractScriptedSegmentEditorEffect

PARAMETERS = {  # effect parameter -> default
    "ICEEdit.Model": "ice-editing-64",
    "ICEEdit.SigmaMm": 0.0,
    "ICEEdit.StrictLocal": 0,
    "ICEEdit.StrictThreshold": 0.5,
    "ICEEdit.UndoLevels": 20,
}
_SESSIONS = None  # ICEEditingLib.effect.SessionCache shared by the effect's clones


class SegmentEditorEffect(AbstractScriptedSegmentEditorEffect):
    """Collect a stroke, call ICEEditingLib on release."""

    def __init__(self, scriptedEffect):
        scriptedEffect.name = "ICE Edit"
        scriptedEffect.perSegment = True
        scriptedEffect.requireSegments = True
        AbstractScriptedSegmentEditorEffect.__init__(self, scriptedEffect)
        self.stroke = None

    def clone(self):
        import qSlicerSegmentationsEditorEffectsPythonQt as effects

        clonedEffect = effects.qSlicerSegmentEditorScriptedEffect(None)
        clonedEffect.setPythonSource(__file__.replace("\\", "/"))
        return clonedEffect

    def icon(self):
        iconPath = os.path.join(os.path.dirname(__file__), "SegmentEditorEffect.png")
        return qt.QIcon(iconPath) if os.path.exists(iconPath) else qt.QIcon()

    def helpText(self):
        return (
            "<html>Draw a scribble on an ICE frame where the segment is wrong: the editing model corrects the "
            "segment near the scribble and keeps it elsewhere.<p>Left-click and drag in a slice view (align "
            "the red view with a frame in the ICE Editing module), release to edit. Each stroke is one undo "
            "step. Masking settings apply.</html>"
        )

    def setupOptionsFrame(self):
        import ICEEditingLib

        self.modelComboBox = qt.QComboBox()
        self.modelComboBox.addItems(ICEEditingLib.available_models("editing"))
        self.modelComboBox.toolTip = "Registered ICE editing model (losslab models list)"
        self.scriptedEffect.addLabeledOptionsWidget("Model:", self.modelComboBox)
        self.sigmaSpinBox = qt.QDoubleSpinBox()
        self.sigmaSpinBox.setRange(0.0, 500.0)
        self.sigmaSpinBox.toolTip = "Sigma of the scribble heatmap in mm; 0: the model card's"
        self.scriptedEffect.addLabeledOptionsWidget("Sigma (mm):", self.sigmaSpinBox)
        self.strictCheckBox = qt.QCheckBox("Strict local")
        self.strictCheckBox.toolTip = "Off by default: voxels where A is below the threshold keep the segment"
        self.strictThresholdSpinBox = qt.QDoubleSpinBox()
        self.strictThresholdSpinBox.setRange(0.01, 1.0)
        self.strictThresholdSpinBox.setSingleStep(0.05)
        self.strictThresholdSpinBox.toolTip = "Threshold of strict local: A below it keeps the segment"
        strictRow = qt.QHBoxLayout()
        strictRow.addWidget(self.strictCheckBox)
        strictRow.addWidget(self.strictThresholdSpinBox)
        self.scriptedEffect.addOptionsWidget(strictRow)
        self.undoLevelsSpinBox = qt.QSpinBox()
        self.undoLevelsSpinBox.setRange(1, 1000)
        self.scriptedEffect.addLabeledOptionsWidget("Undo levels:", self.undoLevelsSpinBox)
        self.statusLabel = qt.QLabel()
        self.scriptedEffect.addOptionsWidget(self.statusLabel)
        self.modelComboBox.connect("currentTextChanged(QString)", self.updateMRMLFromGUI)
        self.sigmaSpinBox.connect("valueChanged(double)", self.updateMRMLFromGUI)
        self.strictCheckBox.connect("toggled(bool)", self.updateMRMLFromGUI)
        self.strictThresholdSpinBox.connect("valueChanged(double)", self.updateMRMLFromGUI)
        self.undoLevelsSpinBox.connect("valueChanged(int)", self.updateMRMLFromGUI)

    def setMRMLDefaults(self):
        for name, value in PARAMETERS.items():
            self.scriptedEffect.setParameterDefault(name, value)

    def updateGUIFromMRML(self):
        widgets = (
            self.modelComboBox,
            self.sigmaSpinBox,
            self.strictCheckBox,
            self.strictThresholdSpinBox,
            self.undoLevelsSpinBox,
        )
        blocked = [w.blockSignals(True) for w in widgets]
        self.modelComboBox.setCurrentText(self.scriptedEffect.parameter("ICEEdit.Model"))
        self.sigmaSpinBox.value = self.scriptedEffect.doubleParameter("ICEEdit.SigmaMm")
        self.strictCheckBox.checked = self.scriptedEffect.integerParameter("ICEEdit.StrictLocal") != 0
        self.strictThresholdSpinBox.value = self.scriptedEffect.doubleParameter("ICEEdit.StrictThreshold")
        self.undoLevelsSpinBox.value = self.scriptedEffect.integerParameter("ICEEdit.UndoLevels")
        for widget, was in zip(widgets, blocked):
            widget.blockSignals(was)

    def updateMRMLFromGUI(self, *args):
        self.scriptedEffect.setParameter("ICEEdit.Model", self.modelComboBox.currentText)
        self.scriptedEffect.setParameter("ICEEdit.SigmaMm", self.sigmaSpinBox.value)
        self.scriptedEffect.setParameter("ICEEdit.StrictLocal", 1 if self.strictCheckBox.checked else 0)
        self.scriptedEffect.setParameter("ICEEdit.StrictThreshold", self.strictThresholdSpinBox.value)
        self.scriptedEffect.setParameter("ICEEdit.UndoLevels", self.undoLevelsSpinBox.value)

    def processInteractionEvents(self, callerInteractor, eventId, viewWidget):
        """Left-button press / move / release in a slice view: the stroke, in RAS through ``xyToRas``."""
        if viewWidget.className() != "qMRMLSliceWidget":
            return False
        if self.stroke is None:
            from ICEEditingLib.effect import StrokeCollector

            self.stroke = StrokeCollector()
        xy = callerInteractor.GetEventPosition()
        if eventId == vtk.vtkCommand.LeftButtonPressEvent:
            self.stroke.press(self.xyToRas(xy, viewWidget), view=viewWidget)
            return True
        if eventId == vtk.vtkCommand.MouseMoveEvent and self.stroke.active:
            self.stroke.move(self.xyToRas(xy, viewWidget))
            return True
        if eventId == vtk.vtkCommand.LeftButtonReleaseEvent and self.stroke.active:
            self.onStroke(self.stroke.finish(self.xyToRas(xy, viewWidget)))
            return True
        return False

    def _writer(self, segmentationNode, volumeNode):
        from ICEEditingLib.effect import CallbackWriter

        modes = {
            "add": slicer.qSlicerSegmentEditorAbstractEffect.ModificationModeAdd,
            "remove": slicer.qSlicerSegmentEditorAbstractEffect.ModificationModeRemove,
            "set": slicer.qSlicerSegmentEditorAbstractEffect.ModificationModeSet,
        }
        editor = slicer.modules.segmenteditor.widgetRepresentation().self().editor
        return CallbackWriter(
            save_state=self.scriptedEffect.saveStateForUndo,
            # the whole labelmap (the extent is an optimisation of the headless writer); masking applies
            modify_selected=lambda image, mode, extent: self.scriptedEffect.modifySelectedSegmentByLabelmap(
                image, modes[mode]
            ),
            undo=editor.undo,
            redo=editor.redo,
            can_undo=lambda: True,  # the Segment Editor's own stack; the session counts the steps
            can_redo=lambda: True,
            set_undo_levels=lambda states: setattr(editor, "maximumNumberOfUndoStates", states),
            segmentation_node=segmentationNode,
            editor_node=self.scriptedEffect.parameterSetNode(),
            source_volume_node=volumeNode,
        )

    def onStroke(self, points):
        """Release: the edit, through ICEEditingLib (model, masking, history, metric)."""
        global _SESSIONS
        import ICEEditingLib

        with slicer.util.tryWithErrorDisplay("ICE Edit failed.", waitCursor=True):
            slicer.util.getModuleLogic("ICEEditing").ensureDependencies()
            parameters = self.scriptedEffect.parameterSetNode()
            segmentationNode = parameters.GetSegmentationNode()
            volumeNode = parameters.GetSourceVolumeNode()
            if _SESSIONS is None:
                _SESSIONS = ICEEditingLib.effect.SessionCache()
            session = _SESSIONS.get(
                segmentationNode.GetScene(),
                segmentationNode,
                parameters.GetSelectedSegmentID(),
                volumeNode,
                self.scriptedEffect.parameter("ICEEdit.Model"),
                writer=self._writer(segmentationNode, volumeNode),
                undo_levels=self.scriptedEffect.integerParameter("ICEEdit.UndoLevels"),
                progress=lambda fraction, message: slicer.util.showStatusMessage(message),
            )
            sigma = self.scriptedEffect.doubleParameter("ICEEdit.SigmaMm")
            strict = self.scriptedEffect.integerParameter("ICEEdit.StrictLocal") != 0
            record = ICEEditingLib.effect.apply_stroke(
                session,
                points,
                sigma_mm=sigma if sigma > 0 else None,
                strict_threshold=self.scriptedEffect.doubleParameter("ICEEdit.StrictThreshold")
                if strict
                else None,
            )
            self.statusLabel.text = record.summary()
