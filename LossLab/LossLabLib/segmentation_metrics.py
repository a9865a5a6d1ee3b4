"""Logic of the SegmentationMetrics module: compare two segments, and score an edit with the editing metric.

Qt-free (MRML, VTK, numpy and :mod:`losslab.metrics`): it runs in desktop Slicer and on ``slicer-core``.
All computation is :mod:`losslab.metrics`; this layer reads the segments onto one voxel grid, calls it and
writes the results back as MRML nodes. The input segmentations and the scribble are never modified.

Editing metric (ice-editing-shahin2023, Sec. 2.3): the *reference* segment plays the CAS ground truth (its
contour, :func:`losslab.metrics.boundary`, is ``y_cas``, unless a separate CAS segment of contour voxels is
given: the paper's CAS contours are sparse, a few frames), the *compared* segment the edited prediction
``y_hat``, the *initial* segment ``y_init``, and the scribble (a markups curve, or a segment / labelmap of
scribble voxels) gives the attention map ``A`` (:func:`losslab.metrics.attention_map`, ``sigma`` in mm).
Outputs, all added to the scene:

- a table node (columns Metric, Value, Unit): Dice, IoU, HD, HD95, ASSD, voxel counts, then the editing rows
  (``D`` overall / near / far, No Editing, CAS to prediction: p95 and mean in mm, voxel counts);
- a scalar volume "D map" (float32, mm): ``D`` on the contour voxels and **NaN elsewhere**, as
  :func:`losslab.metrics.editing_metric` returns it. Its display node uses a continuous colour map, a fixed
  window over the finite values and a threshold [0, max] so that off-contour voxels (NaN, outside any
  threshold) are transparent when the map is shown as foreground or label outline. Scripts get the NaNs
  back with ``slicer.util.arrayFromVolume`` and can use ``numpy.nanpercentile``;
- a labelmap "regions" on the same contour voxels: 1 where ``A >= 0.5`` (near the scribble), 2 elsewhere
  (far), 0 off the contours; colours "near" (orange) and "far" (blue).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from losslab.metrics import PAPER_SIGMA_MM, attention_map, boundary, compare_masks, editing_metric

from . import mrml_io
from .mrml_io import Grid

__all__ = ["SegmentationMetricsLogic", "SegmentationMetricsResult", "ProgressCallback"]

ProgressCallback = Callable[[float, str], None]

#: table rows of :func:`losslab.metrics.compare_masks`: key -> (row label, unit)
OVERLAP_ROWS = {
    "dice": ("Dice", ""),
    "iou": ("IoU", ""),
    "hd": ("Hausdorff distance", "mm"),
    "hd95": ("HD95", "mm"),
    "assd": ("ASSD", "mm"),
    "reference_voxels": ("Reference voxels", "voxels"),
    "compared_voxels": ("Compared voxels", "voxels"),
}
REGION_LABELS = (("near", (1.0, 0.55, 0.0)), ("far", (0.1, 0.45, 1.0)))
NEAR, FAR = 1, 2


@dataclass
class SegmentationMetricsResult:
    """What :meth:`SegmentationMetricsLogic.compute` produced.

    Attributes:
        metrics: :func:`losslab.metrics.compare_masks` of compared vs reference (mm for distances).
        editing: :class:`losslab.metrics.EditingResult`, or ``None`` without initial segment and scribble.
        rows: the table rows ``(metric, value, unit)``.
        grid: the voxel grid the masks were compared on (world RAS).
        table_node, distance_map_node, regions_node: the output nodes (the last two ``None`` without editing).
        resampled: names of the inputs that were resampled (nearest neighbour) onto ``grid``.
    """

    metrics: dict[str, float]
    editing: object | None
    rows: list[tuple[str, float, str]]
    grid: Grid
    table_node: object
    distance_map_node: object | None = None
    regions_node: object | None = None
    resampled: list[str] = field(default_factory=list)


def _split_unit(name: str) -> tuple[str, str]:
    """'D near p95 (mm)' -> ('D near p95', 'mm'); 'D near voxels' -> ('D near voxels', 'voxels')."""
    if name.endswith(")") and " (" in name:
        label, unit = name[:-1].rsplit(" (", 1)
        return label, unit
    if name.endswith(" voxels"):
        return name, "voxels"
    return name, ""


def _node_text(node) -> str:
    return f"'{node.GetName()}'" if node is not None else "None"


class SegmentationMetricsLogic:
    """Compare segments and compute the editing metric on MRML nodes of ``scene``.

    Args:
        scene: the vtkMRMLScene holding the inputs; outputs are added to it.
        progress: optional ``progress(fraction, message)`` callback (fraction in [0, 1]).

    Example (Slicer's Python console)::

        from LossLabLib import SegmentationMetricsLogic
        result = SegmentationMetricsLogic(slicer.mrmlScene).compute(refSeg, "Segment_1", predSeg, "Segment_1")
        print(result.metrics["hd95"])
    """

    def __init__(self, scene, progress: ProgressCallback | None = None):
        if scene is None:
            raise ValueError("SegmentationMetricsLogic needs the MRML scene (e.g. slicer.mrmlScene)")
        self.scene = scene
        self.progress = progress

    def _report(self, fraction: float, message: str) -> None:
        if self.progress is not None:
            self.progress(float(fraction), message)

    # Inputs ------------------------------------------------------------------------------------------------

    def comparison_grid(self, reference_node, reference_volume=None) -> Grid:
        """The grid to compare on: ``reference_volume``'s if given, else the reference segmentation's."""
        if reference_volume is not None:
            return Grid.from_volume(reference_volume)
        return Grid.from_segmentation(reference_node)

    def read_mask(self, role: str, node, segment_id: str, grid: Grid, allow_resample: bool) -> np.ndarray:
        """A segment as a (k, j, i) mask on ``grid``; errors name the ``role`` ("reference segment"...)."""
        return mrml_io.segment_mask(node, segment_id, grid, allow_resample=allow_resample, role=role)

    def _check_outputs(self, reference_volume, **outputs) -> None:
        expected = {
            "output_table": "vtkMRMLTableNode",
            "output_distance_map": "vtkMRMLScalarVolumeNode",
            "output_regions": "vtkMRMLLabelMapVolumeNode",
        }
        for name, node in outputs.items():
            if node is None:
                continue
            if not node.IsA(expected[name]) or (
                name == "output_distance_map" and node.IsA("vtkMRMLLabelMapVolumeNode")
            ):
                raise ValueError(
                    f"{name} must be a {expected[name]}, got {node.GetClassName()} {_node_text(node)}"
                )
            if reference_volume is not None and node is reference_volume:
                raise ValueError(
                    f"{name} is the reference volume {_node_text(node)}: choose another output node"
                )

    # Computation -------------------------------------------------------------------------------------------

    def compute(
        self,
        reference_node,
        reference_segment_id: str,
        compared_node,
        compared_segment_id: str,
        *,
        initial_node=None,
        initial_segment_id: str | None = None,
        scribble=None,
        scribble_segment_id: str | None = None,
        cas_node=None,
        cas_segment_id: str | None = None,
        sigma_mm: float = PAPER_SIGMA_MM,
        reference_volume=None,
        output_table=None,
        output_distance_map=None,
        output_regions=None,
    ) -> SegmentationMetricsResult:
        """Compare the compared segment with the reference one and, given an initial segment and a
        scribble, compute the editing metric ``D``.

        Args:
            reference_node, reference_segment_id: the reference (ground truth; CAS contour for ``D``).
            compared_node, compared_segment_id: the segment to score (the edited prediction for ``D``).
            initial_node, initial_segment_id: the segmentation before the edit (``y_init``); optional.
            scribble: the user's edit: a markups curve (or line / point list) in RAS, a segmentation node
                (with ``scribble_segment_id``) or a labelmap volume of scribble voxels; needed with
                ``initial_node`` for ``D``.
            scribble_segment_id: the scribble's segment when ``scribble`` is a segmentation node.
            cas_node, cas_segment_id: optional segment of CAS contour voxels ``y_cas``; by default the
                contour (boundary voxels) of the reference segment.
            sigma_mm: standard deviation of the attention map ``A`` in mm (default: the paper's 20 voxels of 1.1024 mm, 22.048 mm).
            reference_volume: a volume whose voxel grid to compare on; every segment is resampled onto it
                (nearest neighbour) when its own grid differs. Without it the grid is the reference
                segmentation's geometry, and segments on another lattice are an error.
            output_table, output_distance_map, output_regions: existing nodes to overwrite; new nodes are
                created when ``None``.

        Returns:
            :class:`SegmentationMetricsResult`.

        Raises:
            ValueError: a node or segment is missing or of the wrong kind, grids are incompatible, only one of
                initial segment / scribble is given, the scribble has no voxel on the grid, ``sigma_mm`` is
                not positive, or an output node is of the wrong class.
        """
        for role, node, segment_id in (
            ("reference segment", reference_node, reference_segment_id),
            ("compared segment", compared_node, compared_segment_id),
        ):
            if node is None or not segment_id:
                raise ValueError(
                    f"{role}: choose a segmentation and a segment (got {_node_text(node)}, {segment_id!r})"
                )
        editing = initial_node is not None or scribble is not None
        if editing and (initial_node is None or not initial_segment_id or scribble is None):
            raise ValueError(
                "the editing metric needs both the initial segment and the scribble; got initial "
                f"{_node_text(initial_node)} / {initial_segment_id!r} and scribble {_node_text(scribble)}. "
                "Leave both empty to compute Dice, IoU and surface distances only."
            )
        sigma_mm = float(sigma_mm)
        if editing and not (math.isfinite(sigma_mm) and sigma_mm > 0):
            raise ValueError(f"sigma_mm must be a positive number of millimetres, got {sigma_mm}")
        self._check_outputs(
            reference_volume,
            output_table=output_table,
            output_distance_map=output_distance_map,
            output_regions=output_regions,
        )

        self._report(0.0, "Reading segments")
        allow_resample = reference_volume is not None
        grid = self.comparison_grid(reference_node, reference_volume)
        inputs = [("reference segment", reference_node, reference_segment_id)]
        inputs.append(("compared segment", compared_node, compared_segment_id))
        if editing:
            inputs.append(("initial segment", initial_node, initial_segment_id))
            if cas_node is not None:
                inputs.append(("CAS segment", cas_node, cas_segment_id))
        masks, resampled = {}, []
        for role, node, segment_id in inputs:
            masks[role] = self.read_mask(role, node, segment_id, grid, allow_resample)
            if allow_resample and not self._aligned(node, segment_id, grid):
                resampled.append(f"{node.GetName()} / {segment_id}")
        reference, compared = masks["reference segment"], masks["compared segment"]

        self._report(0.25, "Dice, IoU and surface distances")
        metrics = compare_masks(compared, reference, spacing=grid.array_spacing)
        rows = [(label, float(metrics[key]), unit) for key, (label, unit) in OVERLAP_ROWS.items()]

        result_editing = None
        distance_map_node = regions_node = None
        if editing:
            self._report(0.5, "Editing metric")
            scribble_mask = mrml_io.node_mask(
                scribble, grid, scribble_segment_id, allow_resample=allow_resample, role="scribble"
            )
            if not scribble_mask.any():
                raise ValueError(
                    f"the scribble {_node_text(scribble)} has no voxel on the comparison grid "
                    f"({grid.describe()}): draw it over the segmentation"
                )
            attention = attention_map(scribble_mask, sigma=sigma_mm, spacing=grid.array_spacing)
            cas = masks["CAS segment"] if cas_node is not None else boundary(reference)
            result_editing = editing_metric(
                cas, masks["initial segment"], compared, attention, spacing=grid.array_spacing
            )
            rows.append(("Attention sigma", sigma_mm, "mm"))
            rows.append(("Scribble voxels", float(scribble_mask.sum()), "voxels"))
            rows.append(("CAS contour voxels", float(cas.sum()), "voxels"))
            for name, value in result_editing.rows():
                label, unit = _split_unit(name)
                rows.append((label, float(value), unit))

            self._report(0.8, "Writing the distance map")
            distance_map_node = self._write_distance_map(
                result_editing.d_map, grid, compared_node, output_distance_map
            )
            regions_node = self._write_regions(result_editing, grid, compared_node, output_regions)

        self._report(0.9, "Writing the table")
        table_node = mrml_io.table_from_rows(
            self.scene, rows, node=output_table, name=f"{compared_node.GetName()} metrics"
        )
        self._report(1.0, "Done")
        return SegmentationMetricsResult(
            metrics=metrics,
            editing=result_editing,
            rows=rows,
            grid=grid,
            table_node=table_node,
            distance_map_node=distance_map_node,
            regions_node=regions_node,
            resampled=resampled,
        )

    def compute_from_parameters(self, parameters) -> SegmentationMetricsResult:
        """:meth:`compute` with the fields of the module's parameter node; stores the outputs back into it.

        ``parameters`` is the ``@parameterNodeWrapper`` of SegmentationMetrics.py, or any object with its
        attributes (``referenceSegmentation``, ``referenceSegmentId``, ``comparedSegmentation``,
        ``comparedSegmentId``, ``referenceVolume``, ``initialSegmentation``, ``initialSegmentId``,
        ``scribble``, ``sigmaMm``, ``outputTable``, ``outputDistanceMap``, ``outputRegions``, and optionally
        ``casSegmentation`` / ``casSegmentId``). The editing metric runs when an initial segmentation or a
        scribble is set.
        """
        p = parameters
        editing = p.initialSegmentation is not None or p.scribble is not None
        result = self.compute(
            p.referenceSegmentation,
            p.referenceSegmentId,
            p.comparedSegmentation,
            p.comparedSegmentId,
            initial_node=p.initialSegmentation if editing else None,
            initial_segment_id=p.initialSegmentId if editing else None,
            scribble=p.scribble,
            cas_node=getattr(p, "casSegmentation", None) if editing else None,
            cas_segment_id=getattr(p, "casSegmentId", None) if editing else None,
            sigma_mm=p.sigmaMm,
            reference_volume=p.referenceVolume,
            output_table=p.outputTable,
            output_distance_map=p.outputDistanceMap,
            output_regions=p.outputRegions,
        )
        p.outputTable = result.table_node
        if result.distance_map_node is not None:
            p.outputDistanceMap = result.distance_map_node
            p.outputRegions = result.regions_node
        return result

    @staticmethod
    def _aligned(node, segment_id, grid: Grid) -> bool:
        segment = node.GetSegmentation().GetSegment(segment_id)
        labelmap = segment.GetRepresentation(mrml_io.BINARY_LABELMAP) if segment is not None else None
        if labelmap is None:
            return False
        extent = labelmap.GetExtent()
        if extent[1] < extent[0]:
            return True
        local = Grid.from_oriented_image(labelmap)
        world = Grid(local.shape, mrml_io.parent_to_world(node) @ local.ijk_to_ras)
        return world.is_aligned_with(grid)

    # Outputs -----------------------------------------------------------------------------------------------

    def _write_distance_map(self, d_map: np.ndarray, grid: Grid, compared_node, node):
        node = mrml_io.array_to_volume(
            self.scene, d_map.astype(np.float32), grid, node=node, name=f"{compared_node.GetName()} D map"
        )
        display = node.GetDisplayNode()
        finite = d_map[np.isfinite(d_map)]
        high = float(finite.max()) if finite.size else 1.0
        high = high if high > 0 else 1.0
        was_modifying = display.StartModify()
        display.SetAndObserveColorNodeID(mrml_io.continuous_color_node(self.scene).GetID())
        display.AutoWindowLevelOff()
        display.SetWindowLevelMinMax(0.0, high)
        display.AutoThresholdOff()
        display.SetLowerThreshold(0.0)
        display.SetUpperThreshold(high)
        display.ApplyThresholdOn()
        display.EndModify(was_modifying)
        node.SetAttribute("LossLab.Unit", "mm")
        node.SetAttribute("LossLab.OffContourValue", "nan")
        return node

    def _write_regions(self, editing, grid: Grid, compared_node, node):
        defined = ~np.isnan(editing.d_map)
        labels = np.zeros(grid.shape, dtype=np.uint8)
        labels[defined & editing.near] = NEAR
        labels[defined & ~editing.near] = FAR
        node = mrml_io.array_to_volume(
            self.scene, labels, grid, node=node, name=f"{compared_node.GetName()} near-far", labelmap=True
        )
        colors = mrml_io.labels_color_node(self.scene, "nearFar", REGION_LABELS)
        node.GetDisplayNode().SetAndObserveColorNodeID(colors.GetID())
        return node
