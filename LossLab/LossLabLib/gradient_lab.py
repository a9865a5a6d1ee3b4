"""The gradient lab of the LossLab module: the gradient map of a loss as a volume, with its dynamic range.

dice-gradient-mime-kervadec Fig. 1 as a tool: for the current segmentation (the target ``y``) and a
prediction ``s`` (a model's probabilities, or a second segmentation), :func:`losslab.analysis.gradient_report`
gives ``dL/ds`` (probabilities as free variables, eq. 5) or ``dL/dz`` (logits) of any registry loss and its
dynamic range per class; one class of the map is written to a scalar volume, the summary rows to a table.
This module only translates MRML nodes to arrays and back: every computation is in :mod:`losslab.analysis`. The Dice loss gives two values per class (eq. 6: a small dynamic range), cross-entropy many.

Conventions:

- Classes: label 0 is background; target segment ``n`` (in the order given) is label ``n + 1``. Where target
  segments overlap, the later one wins.
- Logits: the lab works from probabilities ``s`` and uses ``z = log s`` as logits (``softmax(z) = s``): for
  a model, ``s`` is its (ensemble mean) probability; for a prediction segmentation, the one-hot map smoothed
  as ``(1 - smoothing) * onehot + smoothing / K`` (so that ``log s`` is finite).
- Grid: the volume's when one is given (the model's input), else the target segmentation's reference
  geometry. Segments on another lattice are an error (no silent resampling).
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from . import mrml_io
from .mrml_io import Grid

__all__ = ["GradientLabLogic", "GradientLabResult"]

ProgressCallback = Callable[[float, str], None]
WRT = ("probabilities", "logits")  # as losslab.analysis.WRT (not imported here: that needs torch)


@dataclass
class GradientLabResult:
    """What :meth:`GradientLabLogic.compute` produced.

    Attributes:
        maps: :class:`losslab.analysis.GradientMaps` (arrays ``(1, K, k, j, i)``).
        gradient: the map written to the volume, ``(k, j, i)`` float32 (class ``class_index``).
        wrt: "probabilities" or "logits".
        class_index, class_names: the class shown; names of all classes (background first).
        dynamic_range_db: over all classes; ``per_class_db``: by class name (NaN where the map is all zero).
        loss_value: the loss.
        volume_node, table_node: the outputs.
        target: the target label map (int64, ``(k, j, i)``); ``probabilities``: ``(K, k, j, i)``.
    """

    maps: Any
    gradient: np.ndarray
    wrt: str
    class_index: int
    class_names: list[str]
    dynamic_range_db: float
    per_class_db: dict[str, float]
    loss_value: float
    volume_node: object
    table_node: object
    grid: Grid
    target: np.ndarray
    probabilities: np.ndarray
    rows: list[tuple] = field(default_factory=list)


def _node_text(node) -> str:
    return f"'{node.GetName()}'" if node is not None else "None"


def _segment_name(node, segment_id: str) -> str:
    return node.GetSegmentation().GetSegment(segment_id).GetName()


def _match_by_name(node, names: Sequence[str], role: str) -> list[str]:
    """Segment IDs of ``node`` whose names are ``names`` (case-insensitive), in that order."""
    ids = mrml_io.segment_ids(node)
    by_name = {_segment_name(node, sid).lower(): sid for sid in ids}
    missing = [n for n in names if n.lower() not in by_name]
    if missing:
        available = [_segment_name(node, sid) for sid in ids]
        raise ValueError(
            f"{role} {_node_text(node)} has no segment named {missing}; it has {available}. Name the "
            f"segments {list(names)} or pass the segment IDs in class order"
        )
    return [by_name[n.lower()] for n in names]


class GradientLabLogic:
    """Compute loss gradient maps for segmentations of ``scene``.

    Args:
        scene: the vtkMRMLScene holding the inputs; outputs are added to it.
        progress: optional ``progress(fraction, message)`` callback.
        device: device for model predictions (``auto``, ``cpu``...).

    Example (Slicer's Python console)::

        from LossLabLib.gradient_lab import GradientLabLogic
        lab = GradientLabLogic(slicer.mrmlScene)
        result = lab.compute(seg, loss="dice", volume=vol, model_path="/runs/blobs/model.pt")
        print(result.dynamic_range_db, result.per_class_db)
    """

    def __init__(self, scene, progress: ProgressCallback | None = None, device: str = "auto"):
        if scene is None:
            raise ValueError("GradientLabLogic needs the MRML scene (e.g. slicer.mrmlScene)")
        self.scene = scene
        self.progress = progress
        self.device = device
        self._inference = None

    def _report(self, fraction: float, message: str) -> None:
        if self.progress is not None:
            self.progress(float(fraction), message)

    # Inputs ------------------------------------------------------------------------------------------------

    def labels_from_segments(
        self, segmentation_node, segment_ids: Sequence[str], grid: Grid, role: str = "target"
    ) -> np.ndarray:
        """A label map (int64 ``(k, j, i)``): segment ``n`` -> label ``n + 1``, background 0; later wins."""
        labels = np.zeros(grid.shape, dtype=np.int64)
        for index, segment_id in enumerate(segment_ids, start=1):
            mask = mrml_io.segment_mask(
                segmentation_node, segment_id, grid, role=f"{role} segment {segment_id!r}"
            )
            labels[mask] = index
        return labels

    def loss(self, name: str, options: str | Mapping[str, Any] | None = None):
        """The registry loss ``name`` with ``options`` (dict or JSON text).

        Raises:
            ValueError: unknown loss or option (the message lists the valid ones), or a bad value.
        """
        from losslab.losses import get_loss

        from .training import parse_loss_options

        return get_loss(name, **parse_loss_options(options))

    # Computation -------------------------------------------------------------------------------------------

    def compute(
        self,
        target_segmentation,
        target_segment_ids: Sequence[str] | None = None,
        *,
        loss: str = "dice",
        loss_options: str | Mapping[str, Any] | None = None,
        volume=None,
        model_path: str | os.PathLike | None = None,
        prediction_segmentation=None,
        prediction_segment_ids: Sequence[str] | None = None,
        probabilities: np.ndarray | None = None,
        smoothing: float = 0.05,
        wrt: str = "probabilities",
        class_index: int = 1,
        output_volume=None,
        output_table=None,
    ) -> GradientLabResult:
        """The gradient map of ``loss`` for the target segments and a prediction.

        Args:
            target_segmentation: the segmentation whose segments are the target ``y`` (never modified).
            target_segment_ids: the target segments, in class order (class 1, 2, ...). Default: with a model,
                the segments named like the model's labels; otherwise every segment, in order.
            loss, loss_options: registry name and options (dict or JSON text) of the loss.
            volume: the image (the model's input); its grid is the lab's grid.
            model_path: a checkpoint / ensemble folder whose prediction on ``volume`` is ``s``; or
            prediction_segmentation, prediction_segment_ids: a segmentation as the prediction (segments
                matched by name to the targets by default), one-hot smoothed by ``smoothing``; or
            probabilities: ``(K, k, j, i)`` array on the grid.
            wrt: "probabilities" (``dL/ds``, the paper's Fig. 1) or "logits" (``dL/dz``).
            class_index: the class whose map is written to the volume (1 = first target segment).
            output_volume, output_table: nodes to overwrite (created when ``None``).

        Raises:
            ValueError: no or several predictions given, unknown loss / option, a loss needing inputs the lab
                does not have (editing), segments on another grid than the volume, class counts that
                disagree, ``class_index`` out of range, or outputs of the wrong class.
        """
        from losslab.analysis import gradient_report, smoothed_one_hot

        if wrt not in WRT:
            raise ValueError(f"wrt must be one of {WRT}, got {wrt!r}")
        given = [
            n
            for n, v in (
                ("model_path", model_path),
                ("prediction_segmentation", prediction_segmentation),
                ("probabilities", probabilities),
            )
            if v is not None and not (isinstance(v, str) and not v.strip())
        ]
        if len(given) != 1:
            raise ValueError(
                "give exactly one prediction: a model (with a volume), a prediction segmentation, or a "
                f"probability array; got {given or 'none'}"
            )
        if target_segmentation is None or not target_segmentation.IsA("vtkMRMLSegmentationNode"):
            raise ValueError(f"the target must be a segmentation node, got {_node_text(target_segmentation)}")
        if not 0.0 < float(smoothing) < 1.0:
            raise ValueError(f"smoothing must be in (0, 1), got {smoothing!r}")
        for what, node, cls in (
            ("output_volume", output_volume, "vtkMRMLScalarVolumeNode"),
            ("output_table", output_table, "vtkMRMLTableNode"),
        ):
            if node is not None and (not node.IsA(cls) or node.IsA("vtkMRMLLabelMapVolumeNode")):
                raise ValueError(f"{what} must be a {cls}, got {node.GetClassName()} {_node_text(node)}")
            if node is not None and node is volume:
                raise ValueError(f"{what} is the input volume {_node_text(volume)}: choose another node")
        loss_module = self.loss(loss, loss_options)

        self._report(0.0, "Reading the target segments")
        grid = Grid.from_volume(volume) if volume is not None else Grid.from_segmentation(target_segmentation)
        label_names = None
        if model_path is not None:
            if volume is None:
                raise ValueError("a model prediction needs the input volume: choose a volume")
            from .inference import InferenceLogic

            if self._inference is None:
                self._inference = InferenceLogic(self.scene, device=self.device)
            self._report(0.1, "Predicting with the model")
            prediction, _, predictor = self._inference.predict(model_path, volume)
            probs = np.asarray(prediction.probabilities, dtype=np.float64)
            label_names = list(predictor.info.labels)
            if target_segment_ids is None:
                target_segment_ids = _match_by_name(
                    target_segmentation, label_names[1:], "target segmentation"
                )
        if target_segment_ids is None:
            target_segment_ids = mrml_io.segment_ids(target_segmentation)
        target_segment_ids = list(target_segment_ids)
        if not target_segment_ids:
            raise ValueError(f"target segmentation {_node_text(target_segmentation)} has no segment")
        target = self.labels_from_segments(target_segmentation, target_segment_ids, grid)
        n_classes = len(target_segment_ids) + 1
        class_names = ["background"] + [_segment_name(target_segmentation, s) for s in target_segment_ids]

        if prediction_segmentation is not None:
            if prediction_segment_ids is None:
                try:
                    prediction_segment_ids = _match_by_name(
                        prediction_segmentation, class_names[1:], "prediction segmentation"
                    )
                except ValueError:
                    prediction_segment_ids = mrml_io.segment_ids(prediction_segmentation)
            prediction_segment_ids = list(prediction_segment_ids)
            if len(prediction_segment_ids) != n_classes - 1:
                raise ValueError(
                    f"the prediction has {len(prediction_segment_ids)} segment(s), the target "
                    f"{n_classes - 1} ({class_names[1:]}): choose as many prediction segments, in the same order"
                )
            hard = self.labels_from_segments(
                prediction_segmentation, prediction_segment_ids, grid, "prediction"
            )
            probs = smoothed_one_hot(hard, n_classes, smoothing)
        elif probabilities is not None:
            probs = np.asarray(probabilities, dtype=np.float64)
        if probs.shape != (n_classes, *grid.shape):
            raise ValueError(
                f"the prediction has shape {probs.shape} (classes, k, j, i); the target needs "
                f"{(n_classes, *grid.shape)}: {n_classes} classes {class_names} on the grid ({grid.describe()})"
                + (f"; the model's labels are {label_names}" if label_names else "")
            )
        if not 0 <= int(class_index) < n_classes:
            raise ValueError(
                f"class_index must be in 0..{n_classes - 1} ({class_names}), got {class_index!r}"
            )
        class_index = int(class_index)

        self._report(0.5, f"Gradient of {loss}")
        report = gradient_report(
            loss_module, probs, target, wrt=wrt, class_names=class_names, loss_name=str(loss)
        )
        gradient = report.gradient[class_index]
        per_class = report.per_class_db

        self._report(0.8, "Writing the gradient volume")
        name = f"{loss} gradient d/d{'s' if wrt == 'probabilities' else 'z'} {class_names[class_index]}"
        volume_node = self._write_volume(gradient, grid, output_volume, name)
        volume_node.SetAttribute("LossLab.GradientLoss", str(loss))
        volume_node.SetAttribute("LossLab.GradientWrt", wrt)
        volume_node.SetAttribute("LossLab.GradientClass", class_names[class_index])
        volume_node.SetAttribute("LossLab.DynamicRangeDb", f"{per_class[class_names[class_index]]:.6g}")
        table_node = mrml_io.table_from_rows(
            self.scene, report.rows, node=output_table, name=f"{loss} gradient lab"
        )
        self._report(1.0, "Done")
        return GradientLabResult(
            maps=report.maps,
            gradient=gradient,
            wrt=wrt,
            class_index=class_index,
            class_names=class_names,
            dynamic_range_db=report.dynamic_range_db,
            per_class_db=per_class,
            loss_value=float(report.loss),
            volume_node=volume_node,
            table_node=table_node,
            grid=grid,
            target=target,
            probabilities=probs.astype(np.float32),
            rows=report.rows,
        )

    def _write_volume(self, gradient: np.ndarray, grid: Grid, node, name: str):
        node = mrml_io.array_to_volume(self.scene, gradient.astype(np.float32), grid, node=node, name=name)
        display = node.GetDisplayNode()
        high = float(np.max(np.abs(gradient))) if gradient.size else 0.0
        high = high if high > 0 and math.isfinite(high) else 1.0
        color = mrml_io.find_color_node(self.scene, ("DivergingBlueRed", "ColdToHotRainbow"))
        color = color or mrml_io.continuous_color_node(self.scene)
        was_modifying = display.StartModify()
        display.SetAndObserveColorNodeID(color.GetID())
        display.AutoWindowLevelOff()
        display.SetWindowLevelMinMax(-high, high)  # symmetric: zero in the middle of the colour map
        display.EndModify(was_modifying)
        return node
