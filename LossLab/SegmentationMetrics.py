"""SegmentationMetrics: Dice, IoU, Hausdorff distances and the ICE editing metric D of segments, in Slicer.

Thin module file: module description, parameter node, widget, logic glue and self-test. Every computation
is in LossLabLib (MRML <-> numpy) and losslab.metrics (the maths); see docs/slicer.md.
"""

import logging
from typing import Annotated

import slicer
import vtk
from slicer import (
    vtkMRMLLabelMapVolumeNode,
    vtkMRMLMarkupsCurveNode,
    vtkMRMLScalarVolumeNode,
    vtkMRMLSegmentationNode,
    vtkMRMLTableNode,
)
from slicer.i18n import tr as _
from slicer.parameterNodeWrapper import WithinRange, parameterNodeWrapper
from slicer.ScriptedLoadableModule import (
    ScriptedLoadableModule,
    ScriptedLoadableModuleLogic,
    ScriptedLoadableModuleTest,
    ScriptedLoadableModuleWidget,
)
from slicer.util import VTKObservationMixin

SEGMENT_ROLES = ("reference", "compared", "initial", "cas")


class SegmentationMetrics(ScriptedLoadableModule):
    def __init__(self, parent):
        ScriptedLoadableModule.__init__(self, parent)
        self.parent.title = _("Segmentation Metrics")
        self.parent.categories = [_("Segmentation")]
        self.parent.dependencies = []
        self.parent.contributors = ["LossLab developers (LossLab)"]
        self.parent.helpText = _(
            "Compare a segment with a reference: Dice, IoU, Hausdorff distance, HD95 and ASSD in mm. "
            "Given the segmentation before an edit and the scribble (a markups curve), also the editing "
            "metric D of Shahin et al. 2023 (distance map on the contours, near / far statistics). "
            "See docs/slicer.md in the LossLab repository."
        )
        self.parent.acknowledgementText = _(
            "The editing metric D follows A. H. Shahin, Y. Zhuang and N. El-Zehiry, 'From Sparse to Precise: "
            "A Practical Editing Approach for Intracardiac Echocardiography Segmentation' (MICCAI 2023). "
            "Built on the 3D Slicer scripted module template."
        )


@parameterNodeWrapper
class SegmentationMetricsParameterNode:
    referenceSegmentation: vtkMRMLSegmentationNode
    referenceSegmentId: str = ""
    comparedSegmentation: vtkMRMLSegmentationNode
    comparedSegmentId: str = ""
    referenceVolume: vtkMRMLScalarVolumeNode
    initialSegmentation: vtkMRMLSegmentationNode
    initialSegmentId: str = ""
    casSegmentation: vtkMRMLSegmentationNode
    casSegmentId: str = ""
    scribble: vtkMRMLMarkupsCurveNode
    # Default: the paper's sigma, 20 voxels of 1.1024 mm (losslab.metrics.PAPER_SIGMA_MM).
    sigmaMm: Annotated[float, WithinRange(0.1, 200.0)] = 22.048
    outputTable: vtkMRMLTableNode
    outputDistanceMap: vtkMRMLScalarVolumeNode
    outputRegions: vtkMRMLLabelMapVolumeNode


class SegmentationMetricsWidget(ScriptedLoadableModuleWidget, VTKObservationMixin):
    """Binding only: the .ui and the parameter node, and buttons that call the Logic."""

    #: makes the Logic the Widget calls (``SegmentationMetricsLogic`` when None): tests and the web app
    #: replace it (a class, or any callable taking no argument)
    logicFactory = None

    def __init__(self, parent=None) -> None:
        ScriptedLoadableModuleWidget.__init__(self, parent)
        VTKObservationMixin.__init__(self)
        self.logic = None
        self._parameterNode = None
        self._parameterNodeGuiTag = None

    def setup(self) -> None:
        ScriptedLoadableModuleWidget.setup(self)
        uiWidget = slicer.util.loadUI(self.resourcePath("UI/SegmentationMetrics.ui"))
        self.layout.addWidget(uiWidget)
        self.ui = slicer.util.childWidgetVariables(uiWidget)
        uiWidget.setMRMLScene(slicer.mrmlScene)
        self.logic = (type(self).logicFactory or SegmentationMetricsLogic)()
        self.addObserver(slicer.mrmlScene, slicer.mrmlScene.StartCloseEvent, self.onSceneStartClose)
        self.addObserver(slicer.mrmlScene, slicer.mrmlScene.EndCloseEvent, self.onSceneEndClose)
        # Segment selectors have no parameter-node connector: their segment IDs are kept in str fields.
        for role in SEGMENT_ROLES:
            getattr(self.ui, f"{role}SegmentSelector").connect(
                "currentSegmentChanged(QString)",
                lambda segmentId, r=role: self._onSegmentChanged(r, segmentId),
            )
        self.ui.applyButton.connect("clicked(bool)", self.onApplyButton)
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
        if self.parent.isEntered:
            self.initializeParameterNode()

    def initializeParameterNode(self) -> None:
        self.setParameterNode(self.logic.getParameterNode())

    def setParameterNode(self, inputParameterNode) -> None:
        if self._parameterNode:
            self._parameterNode.disconnectGui(self._parameterNodeGuiTag)
            self.removeObserver(self._parameterNode, vtk.vtkCommand.ModifiedEvent, self._checkCanApply)
        self._parameterNode = inputParameterNode
        if self._parameterNode:
            # Read the segment IDs first: connectGui sets the segmentations, which resets the selectors.
            segmentIds = {role: getattr(self._parameterNode, f"{role}SegmentId") for role in SEGMENT_ROLES}
            # Widgets in the .ui carry a "SlicerParameterName" dynamic property naming their field.
            self._parameterNodeGuiTag = self._parameterNode.connectGui(self.ui)
            for role, segmentId in segmentIds.items():
                getattr(self.ui, f"{role}SegmentSelector").setCurrentSegmentID(segmentId)
            self.addObserver(self._parameterNode, vtk.vtkCommand.ModifiedEvent, self._checkCanApply)
            self._checkCanApply()

    def _onSegmentChanged(self, role: str, segmentId: str) -> None:
        if self._parameterNode:
            setattr(self._parameterNode, f"{role}SegmentId", segmentId or "")

    def _checkCanApply(self, caller=None, event=None) -> None:
        p = self._parameterNode
        ready = bool(
            p
            and p.referenceSegmentation
            and p.referenceSegmentId
            and p.comparedSegmentation
            and p.comparedSegmentId
        )
        self.ui.applyButton.enabled = ready
        self.ui.applyButton.toolTip = (
            _("Compute the metrics") if ready else _("Select the reference and compared segments")
        )

    def _onProgress(self, fraction: float, message: str) -> None:
        self.ui.progressBar.value = int(round(100 * fraction))
        self.ui.statusLabel.text = message
        slicer.app.processEvents()

    def onApplyButton(self) -> None:
        with slicer.util.tryWithErrorDisplay(_("Failed to compute the metrics."), waitCursor=True):
            result = self.logic.run(self._parameterNode, progress=self._onProgress)
            self.ui.resultsTableView.setMRMLTableNode(result.table_node)
            if result.distance_map_node is not None:
                slicer.util.setSliceViewerLayers(foreground=result.distance_map_node, foregroundOpacity=1.0)


class SegmentationMetricsLogic(ScriptedLoadableModuleLogic):
    """Slicer glue: installs dependencies on first use, then delegates to LossLabLib."""

    def getParameterNode(self):
        return SegmentationMetricsParameterNode(super().getParameterNode())

    def ensureDependencies(self) -> None:
        """On first Apply: torch through SlicerPyTorch, then Resources/requirements.txt by pip; no prompt while
        Slicer's tests run (LossLabLib.dependencies, which LossLab's Logic calls too)."""
        from LossLabLib import dependencies

        dependencies.ensure_dependencies(
            pip_install=slicer.util.pip_install,
            install_torch=dependencies.install_torch_with_slicer_pytorch,
            ask_confirmation=not slicer.app.testingEnabled(),
        )

    def run(self, parameterNode, progress=None):
        """Compute with LossLabLib; the output nodes are stored back into the parameter node for re-runs."""
        self.ensureDependencies()
        import LossLabLib

        logic = LossLabLib.SegmentationMetricsLogic(slicer.mrmlScene, progress)
        result = logic.compute_from_parameters(parameterNode)
        logging.info("SegmentationMetrics: %s", ", ".join(f"{m}={v:.4g} {u}" for m, v, u in result.rows[:5]))
        return result


class SegmentationMetricsTest(ScriptedLoadableModuleTest):
    def setUp(self):
        slicer.mrmlScene.Clear()

    def runTest(self):
        self.setUp()
        self.test_SegmentationMetrics1()

    def test_SegmentationMetrics1(self):
        """Generated spheres and scribble: metrics, D map and near/far outputs, re-run in place."""
        import LossLabLib

        self.delayDisplay("Starting the test")
        example = LossLabLib.create_editing_example(slicer.mrmlScene)
        logic = SegmentationMetricsLogic()
        p = logic.getParameterNode()
        p.referenceSegmentation = p.comparedSegmentation = p.initialSegmentation = example["segmentation"]
        p.referenceSegmentId, p.comparedSegmentId, p.initialSegmentId = "truth", "edited", "initial"
        p.scribble, p.sigmaMm = example["scribble"], 5.0
        result = logic.run(p)
        self.assertTrue(0.5 < result.metrics["dice"] < 1.0)
        self.assertGreater(result.editing.stats["near"]["count"], 0)
        self.assertIs(p.outputTable, result.table_node)
        self.assertIs(logic.run(p).distance_map_node, p.outputDistanceMap)  # re-run updates in place
        self.delayDisplay("Test passed")
