"""Inference for the LossLab module: a checkpoint or ensemble folder on a volume -> a segmentation node.

Qt-free (MRML, VTK, numpy, :mod:`losslab.engine`). The volume's voxels are read as a (k, j, i) array
(:func:`LossLabLib.mrml_io.volume_array`), predicted by :class:`losslab.engine.Predictor` (ensembles average
their probabilities), and each foreground label becomes a segment named after the checkpoint's label names,
coloured from :data:`LABEL_COLORS`, on the volume's geometry. The input volume is never modified.

Example (Slicer's Python console)::

    from LossLabLib.inference import InferenceLogic
    result = InferenceLogic(slicer.mrmlScene).run("/runs/blobs/model.pt", slicer.util.getNode("MRHead"))
    result.segmentation_node, result.label_names, result.probabilities.shape  # (K, k, j, i)
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import slicer

from . import mrml_io
from .mrml_io import Grid

__all__ = ["LABEL_COLORS", "InferenceLogic", "InferenceResult", "label_color"]

ProgressCallback = Callable[[float, str], None]

#: segment colours by label index 1, 2, ... (background 0 gets no segment); cycled past the end
LABEL_COLORS = (
    (0.90, 0.35, 0.25),
    (0.30, 0.70, 0.35),
    (0.25, 0.50, 0.90),
    (0.95, 0.80, 0.20),
    (0.70, 0.40, 0.85),
    (0.20, 0.80, 0.80),
    (0.95, 0.55, 0.10),
    (0.85, 0.45, 0.65),
    (0.55, 0.75, 0.20),
    (0.60, 0.45, 0.30),
)


def label_color(index: int) -> tuple[float, float, float]:
    """RGB in [0, 1] of foreground label ``index`` (1-based)."""
    return LABEL_COLORS[(int(index) - 1) % len(LABEL_COLORS)]


@dataclass
class InferenceResult:
    """What :meth:`InferenceLogic.run` produced.

    Attributes:
        segmentation_node: the output segmentation (one segment per foreground label, IDs = label names).
        labels: the predicted label map, int64 ``(k, j, i)``.
        probabilities: float32 ``(K, k, j, i)`` (mean over ensemble members).
        label_names: the checkpoint's label names, background first.
        segment_ids: segment ID of each foreground label, in label order.
        grid: the volume's grid (world RAS).
        members: the checkpoint files used.
    """

    segmentation_node: object
    labels: np.ndarray
    probabilities: np.ndarray
    label_names: list[str]
    segment_ids: list[str]
    grid: Grid
    members: list[Path]


def _node_text(node) -> str:
    return f"'{node.GetName()}'" if node is not None else "None"


class InferenceLogic:
    """Run a LossLab model on volume nodes of ``scene``.

    Args:
        scene: the vtkMRMLScene holding the inputs; outputs are added to it.
        progress: optional ``progress(fraction, message)`` callback.
        device: ``auto`` | ``cpu`` | ``cuda`` | ``cuda:N`` | ``mps``.
    """

    def __init__(self, scene, progress: ProgressCallback | None = None, device: str = "auto"):
        if scene is None:
            raise ValueError("InferenceLogic needs the MRML scene (e.g. slicer.mrmlScene)")
        self.scene = scene
        self.progress = progress
        self.device = device
        self._cache: dict = {}

    def _report(self, fraction: float, message: str) -> None:
        if self.progress is not None:
            self.progress(float(fraction), message)

    def load(self, model_path: str | os.PathLike):
        """The :class:`losslab.engine.Predictor` of a checkpoint file or ensemble folder (cached while the
        files are unchanged).

        Raises:
            FileNotFoundError: no model there. ValueError: not a LossLab checkpoint.
        """
        from losslab.engine import ensemble_members, load_predictor

        if model_path is None or not str(model_path).strip() or str(model_path).strip() == ".":
            raise FileNotFoundError(
                "no model chosen: pick a model.pt checkpoint or an ensemble folder (with ensemble.json)"
            )
        members = ensemble_members(Path(model_path).expanduser())
        key = (
            str(Path(model_path).expanduser().resolve()),
            str(self.device),
            tuple((str(m), m.stat().st_mtime_ns) for m in members),
        )
        if key not in self._cache:
            self._cache = {key: load_predictor(Path(model_path).expanduser(), device=self.device)}
        return self._cache[key]

    def input_array(self, predictor, volume_node, extra_volumes: Sequence = ()) -> tuple[np.ndarray, Grid]:
        """The network input ``(C, k, j, i)`` float32 from the volume (and extra channel volumes, which must
        share its grid) and the grid.

        Raises:
            ValueError: not a scalar volume, wrong number of channels, or extra volumes on another grid.
        """
        if volume_node is None or not volume_node.IsA("vtkMRMLScalarVolumeNode"):
            raise ValueError(f"the input must be a scalar volume node, got {_node_text(volume_node)}")
        grid = Grid.from_volume(volume_node)
        channels = [mrml_io.volume_array(volume_node).astype(np.float32)]
        for node in extra_volumes:
            other = Grid.from_volume(node)
            if not other.same_as(grid):
                raise ValueError(
                    f"extra input volume {_node_text(node)} lies on another voxel grid ({other.describe()}) "
                    f"than the input volume {_node_text(volume_node)} ({grid.describe()}); resample it first"
                )
            channels.append(mrml_io.volume_array(node).astype(np.float32))
        names = predictor.info.channel_names
        if len(channels) != len(names):
            raise ValueError(
                f"the model takes {len(names)} input channel(s) {names}; got {len(channels)} volume(s): "
                "give one volume per channel, in that order"
            )
        return np.stack(channels), grid

    def predict(self, model_path, volume_node, extra_volumes: Sequence = ()):
        """``(losslab.engine.Prediction, grid, predictor)`` of the model on the volume (no node written)."""
        self._report(0.0, "Loading the model")
        predictor = self.load(model_path)
        image, grid = self.input_array(predictor, volume_node, extra_volumes)
        self._report(0.2, f"Predicting ({len(predictor.models)} model(s) on {predictor.device})")
        return predictor.predict(image), grid, predictor

    def run(
        self,
        model_path: str | os.PathLike,
        volume_node,
        *,
        extra_volumes: Sequence = (),
        output_segmentation=None,
        name: str | None = None,
    ) -> InferenceResult:
        """Segment ``volume_node`` with the model into a segmentation node.

        Args:
            model_path: a ``model.pt`` checkpoint or an ensemble folder (``ensemble.json`` or ``*/model.pt``).
            volume_node: the scalar volume to segment (never modified).
            extra_volumes: volumes of the further input channels, when the model takes several.
            output_segmentation: a segmentation node to overwrite (its segments are replaced); a new one
                named ``name`` (default "<volume> segmentation") otherwise.

        Returns:
            :class:`InferenceResult`.

        Raises:
            FileNotFoundError: no model at ``model_path``.
            ValueError: not a LossLab checkpoint, wrong input volume(s), or an output of the wrong class.
        """
        if output_segmentation is not None and not output_segmentation.IsA("vtkMRMLSegmentationNode"):
            raise ValueError(
                f"the output must be a segmentation node, got {output_segmentation.GetClassName()} "
                f"{_node_text(output_segmentation)}"
            )
        prediction, grid, predictor = self.predict(model_path, volume_node, extra_volumes)
        self._report(0.7, "Writing the segments")
        label_names = list(predictor.info.labels)
        node = self.write_segmentation(
            prediction.labels,
            grid,
            label_names,
            volume_node=volume_node,
            node=output_segmentation,
            name=name or f"{volume_node.GetName()} segmentation",
        )
        segment_ids = [_segment_id(n, i) for i, n in enumerate(label_names) if i > 0]
        node.SetAttribute("LossLab.Model", str(model_path))
        self._report(1.0, "Done")
        return InferenceResult(
            segmentation_node=node,
            labels=prediction.labels,
            probabilities=prediction.probabilities,
            label_names=label_names,
            segment_ids=segment_ids,
            grid=grid,
            members=_members(predictor),
        )

    def write_segmentation(
        self,
        labels: np.ndarray,
        grid: Grid,
        label_names: Sequence[str],
        *,
        volume_node=None,
        node=None,
        name="",
    ):
        """A segmentation node with one segment per foreground label ``1..K-1`` of ``labels`` (empty
        segments included), named and coloured. Its reference geometry is ``grid`` (world RAS, so a volume
        under a linear transform is segmented where it is shown) and it has no parent transform."""
        if node is None:
            node = self.scene.AddNewNodeByClass(
                "vtkMRMLSegmentationNode", self.scene.GenerateUniqueName(name or "Segmentation")
            )
        elif node.GetScene() is None:
            self.scene.AddNode(node)
        if node.GetDisplayNode() is None:
            node.CreateDefaultDisplayNodes()
        if volume_node is not None:
            node.SetReferenceImageGeometryParameterFromVolumeNode(volume_node)  # also the reference role
        # the geometry itself from the world grid: right also when the volume is under a linear transform
        node.SetAndObserveTransformNodeID(None)
        segmentation = node.GetSegmentation()
        segmentation.SetConversionParameter(
            slicer.vtkSegmentationConverter.GetReferenceImageGeometryParameterName(),
            slicer.vtkSegmentationConverter.SerializeImageGeometry(grid.to_oriented_image(allocate=False)),
        )
        was_modifying = node.StartModify()
        segmentation.RemoveAllSegments()
        for index, label in enumerate(label_names):
            if index == 0:
                continue
            segment_id = _segment_id(label, index)
            mrml_io.set_segment_from_mask(node, segment_id, labels == index, grid)
            segment = segmentation.GetSegment(segment_id)
            segment.SetName(str(label))
            segment.SetColor(*label_color(index))
        node.EndModify(was_modifying)
        return node


def _segment_id(label: str, index: int) -> str:
    return str(label) if str(label).strip() else f"label{index}"


def _members(predictor) -> list[Path]:
    from losslab.engine import ensemble_members

    return ensemble_members(predictor.info.path)
