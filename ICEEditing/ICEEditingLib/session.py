"""An ICE editing session on a segment: scribble -> the editing model -> the segment, through the Segment
Editor's write path, with an edit history and multi-level undo / redo.

Qt-free: MRML, VTK, numpy and :mod:`losslab` (the editing step itself is
:meth:`losslab.ice.EditingModel.edit`, never re-implemented here).

What one edit does (:meth:`ICEEditingSession.edit_from_mask`, and the curve / stroke forms that rasterise
first, :mod:`ICEEditingLib.scribble`):

1. ``y_init`` is the segment **as it is now** (so earlier model edits and any manual change are its input:
   sequential edits, ``y_init := y_hat``);
2. ``EditingModel.edit(x, y_init, scribble, spacing, sigma_mm=..., strict_threshold=...)`` gives ``y_hat``;
3. the undo state is saved, then only the voxels that change are written: the added ones with the Segment
   Editor's *add* and the removed ones with its *remove* modification, **not bypassing masking**, so the
   editable area, the source-volume intensity range and the overwrite mode of the segment editor node hold
   (``vtkSlicerSegmentEditorLogic.ModifySegmentByLabelmap``; in desktop Slicer the effect writes with the
   equivalent ``modifySelectedSegmentByLabelmap``): an edit never changes another segment unless the user's
   overwrite mode says so, nor a voxel the mask protects;
4. the change actually written (near: ``A >= 0.5``; far; and beyond two sigma: ``A < exp(-2)``) and, with
   CAS contours, the editing metric ``D`` of the edit (:func:`losslab.metrics.editing_metric`) go into the
   history (:attr:`ICEEditingSession.records`, and a table node).

Undo / redo go through the segmentation history (``vtkSegmentationHistory``, attached before the
segmentation node is set, with ``undo_levels`` + 1 states kept so that ``undo_levels`` steps can be undone):
an undo restores the segment bit for bit. A manual change made through the session
(:meth:`ICEEditingSession.apply_manual`) is one undo step like a model edit.

Options beyond the paper, off by default:

- **strict local** (``strict_threshold=t``): voxels where the attention map ``A < t`` keep ``y_init``
  exactly (``EditingModel.edit``'s ``strict_threshold``);
- **adapted sigma** (``adapt_sigma=True``): ``sigma_edit`` follows the size of the error region
  (:func:`adapted_sigma_mm`) instead of the model's fixed sigma (the paper's future work).
"""

from __future__ import annotations

import contextlib
import hashlib
import math
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import slicer
import vtk
from vtk.util import numpy_support
from vtkmodules.util.misc import calldata_type

from LossLabLib import mrml_io
from LossLabLib.mrml_io import Grid

from . import scribble as _scribble
from .scene import DEFAULT_EDITING_MODEL, ICESceneCase, check_model, frame_of_node, frame_of_stroke

__all__ = [
    "DEFAULT_UNDO_LEVELS",
    "HISTORY_COLUMNS",
    "METRIC_REGIONS",
    "EditRecord",
    "ICEEditingSession",
    "SegmentEditorLogicWriter",
    "adapted_sigma_mm",
    "editable_mask",
]

ProgressCallback = Callable[[float, str], None]
DEFAULT_UNDO_LEVELS = 20
#: A below this is "beyond two sigma" (A = exp(-d^2 / 2 sigma^2), d = 2 sigma)
BEYOND_TWO_SIGMA = math.exp(-2.0)
HISTORY_COLUMNS = (
    "Edit",
    "Time",
    "Kind",
    "Frame",
    "Added near",
    "Removed near",
    "Added far",
    "Removed far",
    "Changed beyond 2 sigma",
    "Sigma (mm)",
    "D near p95 (mm)",
    "D far p95 (mm)",
    "CAS to segment p95 (mm)",
    "State",
    "Summary",
)
_MODES = ("add", "remove", "set")
#: the editing metric's statistics kept per edit: D of the edit (overall, near and far from its scribble);
#: the distance from every CAS contour to the segment before the edit ("no_editing") and after it
#: ("cas_to_prediction": comparable from edit to edit, whatever the scribble)
METRIC_REGIONS = ("overall", "near", "far", "no_editing", "cas_to_prediction")


def _oriented_labelmap(mask: np.ndarray, grid: Grid, segmentation_node):
    """A vtkOrientedImageData of ``mask`` in the segmentation's own coordinates (its parent transform
    undone, as :func:`LossLabLib.mrml_io.set_segment_from_mask`)."""
    local = Grid(grid.shape, np.linalg.inv(mrml_io.parent_to_world(segmentation_node)) @ grid.ijk_to_ras)
    image = local.to_oriented_image()
    numpy_support.vtk_to_numpy(image.GetPointData().GetScalars())[:] = mask.astype(np.uint8).ravel()
    return image


def _digest(mask: np.ndarray) -> str:
    """A fingerprint of a boolean mask (its shape and bits), to recognise a segment state again."""
    mask = np.asarray(mask, bool)
    return hashlib.sha1(repr(mask.shape).encode() + np.packbits(mask).tobytes()).hexdigest()


def _extent(mask: np.ndarray) -> list[int]:
    """VTK extent (i0, i1, j0, j1, k0, k1) of the mask's bounding box."""
    k, j, i = (np.flatnonzero(np.any(mask, axis=axes)) for axes in ((1, 2), (0, 2), (0, 1)))
    return [int(i[0]), int(i[-1]), int(j[0]), int(j[-1]), int(k[0]), int(k[-1])]


class SegmentEditorLogicWriter:
    """Writes to a segment as the Segment Editor does, headless: ``vtkSlicerSegmentEditorLogic`` with a
    ``vtkSegmentationHistory`` (attached before the segmentation node: otherwise undo silently does nothing).

    Args:
        scene: the scene; segmentation_node: the segmentation edited; source_volume_node: the volume whose
            intensities the editor's intensity mask reads.
        editor_node: the ``vtkMRMLSegmentEditorNode`` holding the user's masking settings (mask mode and
            segment, overwrite mode, intensity range); a new one (Slicer's defaults) when ``None``.
        undo_levels: how many edits can be undone.
    """

    def __init__(
        self,
        scene,
        segmentation_node,
        source_volume_node,
        *,
        editor_node=None,
        undo_levels: int = DEFAULT_UNDO_LEVELS,
    ):
        self.logic = slicer.vtkSlicerSegmentEditorLogic()
        self.logic.SetMRMLScene(scene)
        self.history = slicer.vtkSegmentationHistory()
        self.logic.SetSegmentationHistory(self.history)  # before SetSegmentationNode (CONVENTIONS.md)
        if editor_node is None:
            editor_node = scene.AddNewNodeByClass(
                "vtkMRMLSegmentEditorNode", scene.GenerateUniqueName("ICEEditing editor")
            )
        self.editor_node = editor_node
        self.logic.SetSegmentEditorNode(editor_node)
        self.logic.SetSegmentationNode(segmentation_node)
        self.logic.SetSourceVolumeNode(source_volume_node)
        self.segmentation_node = segmentation_node
        self.set_undo_levels(undo_levels)

    def set_undo_levels(self, levels: int) -> None:
        levels = int(levels)
        if levels < 1:
            raise ValueError(f"undo levels must be at least 1, got {levels}")
        # one state more than the levels: undoing the last change first saves the present for redo
        self.logic.SetMaximumNumberOfUndoStates(levels + 1)
        self.levels = levels

    def save_state(self) -> None:
        if not self.logic.SaveStateForUndo():
            raise RuntimeError("the Segment Editor could not save the undo state of the segmentation")

    def modify(self, segment_id: str, mask: np.ndarray, grid: Grid, mode: str) -> None:
        """Add / remove / set ``mask``'s voxels in the segment, honouring the editor node's masking."""
        mask = np.asarray(mask, bool)
        if not mask.any() and mode != "set":
            return
        enum = {
            "add": self.logic.ModificationModeAdd,
            "remove": self.logic.ModificationModeRemove,
            "set": self.logic.ModificationModeSet,
        }[mode]
        image = _oriented_labelmap(mask, grid, self.segmentation_node)
        if mode == "set":
            self.logic.ModifySegmentByLabelmap(self.segmentation_node, segment_id, image, enum, False, False)
        else:
            self.logic.ModifySegmentByLabelmap(
                self.segmentation_node, segment_id, image, enum, _extent(mask), False, False
            )

    def copy_masking_from(self, editor_node) -> None:
        """Use the masking settings of another segment editor node (the Segment Editor module's, in desktop
        Slicer): mask mode and segment, overwrite mode, intensity mask and range. Its segmentation and
        source volume selections are left alone (this writer keeps its own node)."""
        if editor_node is None:
            return
        own = self.editor_node
        own.SetMaskMode(editor_node.GetMaskMode())
        own.SetMaskSegmentID(editor_node.GetMaskSegmentID())
        own.SetOverwriteMode(editor_node.GetOverwriteMode())
        own.SetSourceVolumeIntensityMask(editor_node.GetSourceVolumeIntensityMask())
        own.SetSourceVolumeIntensityMaskRange(*editor_node.GetSourceVolumeIntensityMaskRange())

    def editable(self, grid: Grid) -> np.ndarray:
        """The voxels an edit may change now (:func:`editable_mask` of the editor node's settings)."""
        return editable_mask(self.logic, self.editor_node, self.logic.GetSourceVolumeNode(), grid)

    def can_undo(self) -> bool:
        return bool(self.history.IsRestorePreviousStateAvailable())

    def can_redo(self) -> bool:
        return bool(self.history.IsRestoreNextStateAvailable())

    def undo(self) -> None:
        self.logic.Undo()

    def redo(self) -> None:
        self.logic.Redo()


def editable_mask(logic, editor_node, source_volume_node, grid: Grid) -> np.ndarray:
    """Boolean ``(k, j, i)`` mask on ``grid`` of the voxels the Segment Editor lets an edit change: inside the
    editable area (the editor node's mask mode and mask segment) and, when the intensity mask is on, where
    the source volume lies in its range. ``logic`` is a ``vtkSlicerSegmentEditorLogic`` set up on the
    segmentation and the editor node.

    The writes honour the same settings; the session also restricts its added and removed voxels to this
    mask first, because Slicer's *remove* lets an erase reach the selected segment outside an
    "inside one segment" editable area (``vtkSlicerSegmentEditorLogic::ModifySegmentByLabelmap``): a model
    edit must not.
    """
    out = np.ones(grid.shape, dtype=bool)
    if editor_node.GetMaskMode() != slicer.vtkMRMLSegmentationNode.EditAllowedEverywhere:
        if not (logic.ResetModifierLabelmapToDefault() and logic.UpdateMaskLabelmap()):
            raise RuntimeError("the Segment Editor could not compute the editable area (mask labelmap)")
        image = logic.GetMaskLabelmap()
        protected = mrml_io.mask_on_grid(
            mrml_io._image_array(image) > 0,
            Grid.from_oriented_image(image),
            grid,
            allow_resample=True,
            what="the editable-area mask",
        )
        out &= ~protected
    if editor_node.GetSourceVolumeIntensityMask():
        lo, hi = editor_node.GetSourceVolumeIntensityMaskRange()
        values = mrml_io.volume_array(source_volume_node)
        inside = (values >= lo) & (values <= hi)
        out &= mrml_io.mask_on_grid(
            inside, Grid.from_volume(source_volume_node), grid, allow_resample=True, what="the intensity mask"
        )
    return out


def adapted_sigma_mm(
    scribble: np.ndarray,
    initial: np.ndarray,
    spacing: Sequence[float],
    max_sigma_mm: float,
    min_sigma_mm: float | None = None,
) -> float:
    """``sigma_edit`` adapted to the size of the error region a scribble corrects (beyond the paper).

    The region the model must change reaches along the scribble and out to y_init's boundary, so the sigma
    is the larger of half the scribble's extent (the diagonal of its bounding box in mm, halved) and twice
    the 95th percentile of the distance from the scribble's voxels to y_init's boundary (how far the
    boundary must move), kept within ``[min_sigma_mm, max_sigma_mm]`` (``min``: two voxels' largest size).
    A short scribble near the boundary gets a small sigma (a local fix); a long one, the model's.
    """
    from scipy import ndimage

    from losslab.metrics import boundary

    scribble = np.asarray(scribble, bool)
    initial = np.asarray(initial, bool)
    spacing = np.asarray(spacing, float)
    lo = 2.0 * float(spacing.max()) if min_sigma_mm is None else float(min_sigma_mm)
    idx = np.argwhere(scribble)
    extent = float(np.linalg.norm((idx.max(0) - idx.min(0)) * spacing)) if len(idx) else 0.0
    edge = boundary(initial)
    if edge.any():
        distance = ndimage.distance_transform_edt(~edge, sampling=spacing)[scribble]
        reach = 2.0 * float(np.percentile(distance, 95))
    else:
        reach = float(max_sigma_mm)
    return float(np.clip(max(extent / 2.0, reach), lo, max(lo, float(max_sigma_mm))))


@dataclass
class EditRecord:
    """One row of the edit history.

    Attributes:
        index: 1, 2, ... in the order made; time: ISO time; kind: ``"model"``, ``"manual"`` or
            ``"replace"`` (the whole segment replaced, e.g. by a new initial segmentation).
        frame: the frame drawn on (``None``: unknown or a manual change).
        changes: voxels actually written ``{added_near, removed_near, added_far, removed_far}``, near being
            ``A >= 0.5`` (after masking: what the segment gained and lost).
        proposed: the model's own change before masking (``EditResult.changes``); equal to ``changes``
            when nothing is masked.
        beyond_two_sigma: voxels changed where ``A < exp(-2)`` (further than two sigma from the scribble).
        sigma_mm: the sigma of ``u`` and ``A``; strict_threshold: the strict-local threshold or ``None``.
        metric: with CAS contours, ``{"overall", "near", "far"}`` -> ``{"p95", "mean", "count"}`` of the
            editing metric D of this edit (mm), and ``"no_editing"`` / ``"cas_to_prediction"``: the distance
            from every CAS contour to the segment's contour before / after the edit (:data:`METRIC_REGIONS`;
            unlike D near / far, which follow each scribble, the latter compares from row to row); else
            ``None``.
        state: ``"applied"``, ``"undone"``, ``"no change"`` (nothing to write), or ``"discarded"`` (undone,
            then replaced by a new change).
        description: free text (the scribble's source).
    """

    index: int
    time: str
    kind: str
    frame: int | None
    changes: dict[str, int]
    proposed: dict[str, int] = field(default_factory=dict)
    beyond_two_sigma: int = 0
    sigma_mm: float | None = None
    strict_threshold: float | None = None
    metric: dict | None = None
    state: str = "applied"
    description: str = ""
    digest_before: str = field(default="", repr=False)
    digest_after: str = field(default="", repr=False)

    @property
    def changed(self) -> int:
        return sum(self.changes.values())

    def summary(self) -> str:
        c = self.changes
        if self.kind == "replace":
            added = c.get("added_near", 0) + c.get("added_far", 0)
            removed = c.get("removed_near", 0) + c.get("removed_far", 0)
            return f"{self.description}: the segment replaced (+{added}/-{removed} voxels)"
        if self.kind == "manual":
            added = c.get("added_near", 0) + c.get("added_far", 0)
            removed = c.get("removed_near", 0) + c.get("removed_far", 0)
            return f"manual ({self.description}): +{added}/-{removed} voxels"
        where = f"frame {self.frame}" if self.frame is not None else self.kind
        return (
            f"{where}: +{c.get('added_near', 0)}/-{c.get('removed_near', 0)} voxels near the scribble, "
            f"+{c.get('added_far', 0)}/-{c.get('removed_far', 0)} far; "
            f"{self.beyond_two_sigma} voxels changed beyond 2 sigma"
        )

    def row(self) -> tuple:
        c = self.changes
        metric = self.metric or {}
        return (
            self.index,
            self.time,
            self.kind,
            self.frame,
            c.get("added_near", 0),
            c.get("removed_near", 0),
            c.get("added_far", 0),
            c.get("removed_far", 0),
            self.beyond_two_sigma,
            self.sigma_mm,
            metric.get("near", {}).get("p95"),
            metric.get("far", {}).get("p95"),
            metric.get("cas_to_prediction", {}).get("p95"),
            self.state,
            self.summary(),
        )


class ICEEditingSession:
    """Edit one segment of a segmentation with an ICE editing model, edit after edit.

    Args:
        scene: the scene holding the nodes.
        segmentation_node, segment_id: the segment edited (``y_init`` at the first edit).
        volume_node: the sparse ICE volume ``x`` (its grid is the editing grid; the segment must lie on an
            aligned lattice).
        model: an :class:`losslab.ice.EditingModel`, a registered model's name (default
            :data:`~ICEEditingLib.scene.DEFAULT_EDITING_MODEL`; checksums verified) or a checkpoint path;
            loaded on the first edit.
        root: the model registry folder (default ``$LOSSLAB_MODELS_DIR`` or the shipped models).
        device: ``auto`` | ``cpu`` | ``cuda`` ...
        cas: CAS contour voxels for the editing metric: an :class:`ICESceneCase`, a boolean ``(k, j, i)``
            mask, or ``None`` (no metric).
        writer: how the segment is written and undone; default a :class:`SegmentEditorLogicWriter` with
            ``editor_node``. The Segment Editor effect passes its own
            (:class:`ICEEditingLib.effect.CallbackWriter`, on ``modifySelectedSegmentByLabelmap``). A writer
            has ``save_state()``, ``modify(segment_id, mask, grid, mode)`` (mode ``add`` / ``remove`` /
            ``set``, masking honoured), ``editable(grid)`` (the voxels masking lets change), ``undo()``,
            ``redo()``, ``can_undo()``, ``can_redo()`` and ``set_undo_levels(levels)``.
        undo_levels: how many changes can be undone (default 20).
        sigma_mm: the sigma of ``u`` and ``A`` (default: the model's card).
        strict_threshold: "strict local" (see the module docstring); ``None``: off.
        adapt_sigma: adapt sigma to the error region (:func:`adapted_sigma_mm`); off by default.
        history_table: a table node for the history (one is created on the first edit if ``None``).
        follow_undo: observe the segment so that an undo or redo made outside the session (Ctrl+Z in the
            Segment Editor, whose stack the effect's strokes share) updates the history's states at once
            (:meth:`sync`); :meth:`close` stops it.
        progress: ``progress(fraction, message)``, called while the model loads and during the first
            inference (the slow ones), and at each edit.
    """

    def __init__(
        self,
        scene,
        segmentation_node,
        segment_id: str,
        volume_node,
        model=DEFAULT_EDITING_MODEL,
        *,
        root: str | os.PathLike | None = None,
        device: str = "auto",
        cas=None,
        writer=None,
        editor_node=None,
        undo_levels: int = DEFAULT_UNDO_LEVELS,
        sigma_mm: float | None = None,
        strict_threshold: float | None = None,
        adapt_sigma: bool = False,
        history_table=None,
        follow_undo: bool = True,
        progress: ProgressCallback | None = None,
    ):
        if scene is None:
            raise ValueError("ICEEditingSession needs the MRML scene (e.g. slicer.mrmlScene)")
        if segmentation_node is None or not segmentation_node.IsA("vtkMRMLSegmentationNode"):
            raise ValueError(f"the edited segmentation must be a segmentation node, got {segmentation_node}")
        mrml_io.check_segment(segmentation_node, segment_id, "edited segment")
        if strict_threshold is not None and not 0.0 < float(strict_threshold) <= 1.0:
            raise ValueError(f"strict_threshold must be in (0, 1] or None (off), got {strict_threshold}")
        self.scene = scene
        self.segmentation_node = segmentation_node
        self.segment_id = segment_id
        self.volume_node = volume_node
        self.grid = Grid.from_volume(volume_node)
        self.image = mrml_io.volume_array(volume_node).astype(np.float32)
        self.model_spec = model
        self.root = root
        self.device = device
        self.progress = progress
        self.sigma_mm = sigma_mm
        self.strict_threshold = strict_threshold
        self.adapt_sigma = bool(adapt_sigma)
        if isinstance(cas, ICESceneCase):
            cas = cas.cas_mask
        if cas is not None and np.shape(cas) != self.grid.shape:
            raise ValueError(f"the CAS mask has shape {np.shape(cas)}, the volume's grid {self.grid.shape}")
        self.cas = None if cas is None else np.asarray(cas, bool)
        self.writer = writer or SegmentEditorLogicWriter(
            scene, segmentation_node, volume_node, editor_node=editor_node, undo_levels=undo_levels
        )
        if writer is not None:
            writer.set_undo_levels(undo_levels)
        self.undo_levels = int(undo_levels)
        self.history_table = history_table
        self.records: list[EditRecord] = []
        self._stack: list[EditRecord] = []  # changes that can be undone, oldest first
        self._position = 0  # changes of _stack now applied
        self._model = None
        self._warm = False
        self._busy = False
        self._observer = None
        if follow_undo:
            self._observer = segmentation_node.GetSegmentation().AddObserver(
                slicer.vtkSegmentation.SegmentModified, self._on_segment_modified
            )

    def close(self) -> None:
        """Stop following the segment (see ``follow_undo``)."""
        if self._observer is not None:
            self.segmentation_node.GetSegmentation().RemoveObserver(self._observer)
            self._observer = None

    @calldata_type(vtk.VTK_STRING)
    def _on_segment_modified(self, caller, event, segment_id=None) -> None:
        # another segment painted: nothing to do (the call data names the modified segment, when known)
        if not self._busy and (not segment_id or segment_id == self.segment_id):
            self.sync()

    @contextlib.contextmanager
    def _working(self):
        busy, self._busy = self._busy, True
        try:
            yield
        finally:
            self._busy = busy

    # Model ---------------------------------------------------------------------------------------------

    def _report(self, fraction: float, message: str) -> None:
        if self.progress is not None:
            self.progress(float(fraction), message)

    @property
    def model(self):
        """The :class:`losslab.ice.EditingModel` (loaded on first use, with progress)."""
        if self._model is None:
            from losslab.ice import EditingModel

            if isinstance(self.model_spec, EditingModel):
                self._model = self.model_spec
            else:
                check_model(self.model_spec, "editing", self.root)  # an editing model, not any model
                self._report(0.0, f"Loading editing model {self.model_spec}")
                self._model = EditingModel.load(
                    self.model_spec,
                    root=self.root,
                    device=self.device,
                    progress=lambda message: self._report(0.05, message),
                )
                self._report(0.1, f"Loaded {self._model.name} on {self._model.predictor.device}")
        return self._model

    def prepare(self, initial: np.ndarray | None = None) -> None:
        """Load the editing model and run it once (the first inference sets the network up and is the slow
        one), so that the user's first edit is as fast as the next ones. Arrays only, no MRML: it may run in a
        worker thread while the scene stays with the caller's thread (the web app does, right after the
        initial segmentation). ``initial``: y_init to warm up on (default: an empty mask)."""
        model = self.model
        if self._warm:
            return
        self._report(0.5, f"First inference of {model.name} (setting up the network)")
        initial = np.zeros(self.grid.shape, bool) if initial is None else np.asarray(initial, bool)
        scribble = np.zeros(self.grid.shape, bool)
        scribble[tuple(n // 2 for n in self.grid.shape)] = True
        model.edit(
            self.image, initial, scribble, self.grid.array_spacing, strict_threshold=self.strict_threshold
        )
        self._warm = True
        self._report(1.0, f"{model.name} is ready")

    @property
    def editor_node(self):
        """The segment editor node whose masking settings the writes honour (headless writer)."""
        return getattr(self.writer, "editor_node", None)

    # Edits ---------------------------------------------------------------------------------------------

    def current_mask(self) -> np.ndarray:
        """The edited segment now, boolean ``(k, j, i)`` on the volume's grid.

        Raises:
            ValueError: the segment lies on another voxel lattice than the ICE volume (the message says how
                to bring it onto the volume's grid).
        """
        try:
            return mrml_io.segment_mask(
                self.segmentation_node, self.segment_id, self.grid, role="edited segment"
            )
        except ValueError as exc:
            if "different voxel grid" not in str(exc):
                raise
            raise ValueError(
                f"{exc}. ICE edits run on the ICE volume's grid: copy the segment onto it first with "
                "ICEEditingLib.initial_from_segmentation(scene, case, segmentation, segment_id)"
            ) from None

    def edit_from_curve(self, curve_node, frame: int | None = None) -> EditRecord:
        """An edit from a markups curve (RAS; any slice it was drawn in). ``frame`` defaults to the curve's
        :data:`~ICEEditingLib.scene.FRAME_ATTRIBUTE` (a CAS curve), else to the frame whose plane holds the
        curve's control points (:func:`~ICEEditingLib.scene.frame_of_stroke`), else ``None``."""
        mask = _scribble.curve_to_voxels(curve_node, self.grid)
        if frame is None:
            frame = frame_of_node(curve_node)
        if frame is None:  # a curve drawn by the user: the frame whose plane holds it, if any
            frame = frame_of_stroke(self.scene, mrml_io._control_points_world(curve_node))
        return self.edit_from_mask(mask, frame=frame, description=f"curve {curve_node.GetName()}")

    def edit_from_points(
        self, points_ras, frame: int | None = None, *, closed: bool = False, description: str = "stroke"
    ) -> EditRecord:
        """An edit from the RAS points of a stroke (``(N, 3)``, in drawing order)."""
        mask = _scribble.stroke_to_voxels(points_ras, self.grid, closed=closed)
        return self.edit_from_mask(mask, frame=frame, description=description)

    def edit_from_mask(
        self, scribble: np.ndarray, frame: int | None = None, *, description: str = "scribble"
    ) -> EditRecord:
        """The edit of the module docstring from a boolean ``(k, j, i)`` scribble mask on the volume's grid.

        Raises:
            ValueError: empty scribble or wrong shape (from ``EditingModel.edit``), unaligned segment.
        """
        scribble = np.asarray(scribble, bool)
        if scribble.shape != self.grid.shape:
            raise ValueError(f"the scribble has shape {scribble.shape}, the volume's grid {self.grid.shape}")
        self.sync()
        with self._working():
            return self._edit(scribble, frame, description)

    def _edit(self, scribble: np.ndarray, frame: int | None, description: str) -> EditRecord:
        model = self.model
        before = self.current_mask()
        sigma = self.sigma_mm if self.sigma_mm is not None else model.sigma_mm
        if self.adapt_sigma and scribble.any():
            sigma = adapted_sigma_mm(scribble, before, self.grid.array_spacing, sigma)
        if not self._warm:
            self._report(0.5, f"First inference of {model.name} (setting up the network)")
        t0 = time.perf_counter()
        result = model.edit(
            self.image,
            before,
            scribble,
            self.grid.array_spacing,
            sigma_mm=sigma,
            strict_threshold=self.strict_threshold,
        )
        self._warm = True
        editable = self.writer.editable(self.grid)
        added, removed = result.mask & ~before & editable, before & ~result.mask & editable
        record = EditRecord(
            index=len(self.records) + 1,
            time=time.strftime("%Y-%m-%dT%H:%M:%S"),
            kind="model",
            frame=None if frame is None else int(frame),
            changes={},
            proposed=dict(result.changes),
            sigma_mm=float(sigma),
            strict_threshold=self.strict_threshold,
            description=description,
        )
        if added.any() or removed.any():
            self.writer.save_state()
            # one batch of the node's events (views redraw and 3D surfaces are rebuilt once, not twice)
            node = self.writer.segmentation_node
            was_modifying = node.StartModify()
            try:
                self.writer.modify(self.segment_id, added, self.grid, "add")
                self.writer.modify(self.segment_id, removed, self.grid, "remove")
            finally:
                node.EndModify(was_modifying)
        after = self.current_mask()
        self._finish(record, before, after, result.attention)
        if self.cas is not None and self.cas.any():
            from losslab.metrics import editing_metric

            d = editing_metric(self.cas, before, after, result.attention, self.grid.array_spacing)
            record.metric = {k: dict(d.stats[k]) for k in METRIC_REGIONS}
        self._report(1.0, f"Edit {record.index}: {record.summary()} ({time.perf_counter() - t0:.2f} s)")
        self._update_table()
        return record

    def apply_manual(
        self, mask: np.ndarray, mode: str = "add", *, description: str = "manual", kind: str = "manual"
    ) -> EditRecord:
        """A manual change (paint / erase / set a mask) through the same Segment Editor path and history:
        one undo step, masking honoured, and the next model edit starts from it."""
        if mode not in _MODES:
            raise ValueError(f"mode must be one of {_MODES}, got {mode!r}")
        if kind not in ("manual", "replace"):
            raise ValueError(f"kind must be 'manual' or 'replace', got {kind!r}")
        mask = np.asarray(mask, bool)
        if mask.shape != self.grid.shape:
            raise ValueError(f"the mask has shape {mask.shape}, the volume's grid {self.grid.shape}")
        self.sync()
        with self._working():
            return self._manual(mask, mode, description, kind)

    def replace_segment(self, mask: np.ndarray, *, description: str = "replaced") -> EditRecord:
        """Replace the whole segment with ``mask`` (a new initial segmentation, a loaded one) as one change of
        the history: undo brings back the segment as it was, with every edit before it (nothing is lost).
        Masking is honoured as for any write. The record's kind is ``"replace"``."""
        return self.apply_manual(mask, "set", description=description, kind="replace")

    def _manual(self, mask: np.ndarray, mode: str, description: str, kind: str = "manual") -> EditRecord:
        before = self.current_mask()
        if mode == "remove":  # an erase stays inside the editable area too (see editable_mask)
            mask = mask & self.writer.editable(self.grid)
        self.writer.save_state()
        self.writer.modify(self.segment_id, mask, self.grid, mode)
        after = self.current_mask()
        record = EditRecord(
            index=len(self.records) + 1,
            time=time.strftime("%Y-%m-%dT%H:%M:%S"),
            kind=kind,
            frame=None,
            changes={},
            description=description,
        )
        self._finish(record, before, after, None, force_push=True)
        if self.cas is not None and self.cas.any():
            from losslab.metrics import contour_distance

            spacing = self.grid.array_spacing
            record.metric = {
                "no_editing": contour_distance(self.cas, before, spacing),
                "cas_to_prediction": contour_distance(self.cas, after, spacing),
            }
        self._update_table()
        return record

    def _finish(self, record: EditRecord, before, after, attention, force_push: bool = False) -> None:
        from losslab.ice import edit_changes

        near = attention if attention is not None else np.ones(self.grid.shape, np.float32)
        record.changes = edit_changes(before, after, near)
        record.digest_before, record.digest_after = _digest(before), _digest(after)
        if attention is not None:
            record.beyond_two_sigma = int(
                np.count_nonzero((before != after) & (attention < BEYOND_TWO_SIGMA))
            )
        self.records.append(record)
        if record.changed == 0 and not force_push:
            record.state = "no change"  # nothing written, no undo step
            return
        for dropped in self._stack[self._position :]:
            dropped.state = "discarded"
        del self._stack[self._position :]
        self._stack.append(record)
        if len(self._stack) > self.undo_levels:  # the oldest change can no longer be undone
            del self._stack[0]
        self._position = len(self._stack)

    # Undo / redo ---------------------------------------------------------------------------------------

    @property
    def can_undo(self) -> bool:
        return self._position > 0 and self.writer.can_undo()

    @property
    def can_redo(self) -> bool:
        return self._position < len(self._stack) and self.writer.can_redo()

    def set_undo_levels(self, levels: int) -> None:
        """How many changes can be undone from now on (the oldest beyond it are forgotten)."""
        self.writer.set_undo_levels(levels)
        self.undo_levels = int(levels)
        excess = max(0, self._position - self.undo_levels)
        del self._stack[:excess]
        self._position -= excess

    def undo(self) -> EditRecord:
        """Undo the last change (model edit or manual); returns its record (now ``"undone"``).

        Raises:
            ValueError: nothing left to undo (the message says how many levels are kept).
        """
        self.sync()
        if not self.can_undo:
            raise ValueError(
                f"nothing to undo ({self.undo_levels} undo levels are kept; change it with set_undo_levels)"
            )
        with self._working():
            self.writer.undo()
        self._position -= 1
        record = self._stack[self._position]
        record.state = "undone"
        self._update_table()
        return record

    def redo(self) -> EditRecord:
        """Redo the last undone change; returns its record (``"applied"`` again).

        Raises:
            ValueError: nothing to redo.
        """
        self.sync()
        if not self.can_redo:
            raise ValueError("nothing to redo: no change was undone since the last edit")
        with self._working():
            self.writer.redo()
        record = self._stack[self._position]
        self._position += 1
        record.state = "applied"
        self._update_table()
        return record

    def sync(self) -> bool:
        """Align the history with the segment as it is now, after an undo or redo made outside the session
        (Ctrl+Z in the Segment Editor): the changes up to the latest one whose result is the segment now
        are "applied", the later ones "undone". A segment the session did not produce (a manual change
        made elsewhere) leaves the states as they are. Returns whether anything moved."""
        if not self._stack or self._busy:
            return False
        now = _digest(self.current_mask())
        if self._position > 0 and self._stack[self._position - 1].digest_after == now:
            return False
        if self._position == 0 and self._stack[0].digest_before == now:
            return False
        matches = [j + 1 for j, r in enumerate(self._stack) if r.digest_after == now]
        if matches:
            position = matches[-1]
        elif self._stack[0].digest_before == now:
            position = 0
        else:
            return False
        for k, record in enumerate(self._stack):
            record.state = "applied" if k < position else "undone"
        moved = position != self._position
        self._position = position
        self._update_table()
        return moved

    # Saving ----------------------------------------------------------------------------------------------

    def save(self, path) -> Path:
        """Write the segmentation (every segment, with its name and colour) as a ``.seg.nrrd`` on the ICE
        volume's grid (slicerio; atomic: written next to ``path``, read back and checked, then renamed, so a
        failed write leaves a previous file whole). Returns the path.

        Raises:
            ValueError: the name does not end with ``.seg.nrrd``. FileNotFoundError: no such folder.
        """
        import slicerio

        from losslab import io as _io

        path = Path(str(path)).expanduser()
        if not path.name.lower().endswith(".seg.nrrd"):
            raise ValueError(f"the segmentation file {path.name} must end with .seg.nrrd")
        if not path.parent.is_dir():
            raise FileNotFoundError(f"the folder {path.parent} does not exist")
        node, grid = self.segmentation_node, self.grid
        segmentation = node.GetSegmentation()
        segments = []
        for sid in mrml_io.segment_ids(node):
            segment = segmentation.GetSegment(sid)
            mask = mrml_io.segment_mask(node, sid, grid, allow_resample=True, role=f"segment {sid}")
            segments.append((sid, segment.GetName(), list(segment.GetColor()), np.asarray(mask, bool)))
        ijk_to_lps = np.diag([-1.0, -1.0, 1.0, 1.0]) @ grid.ijk_to_ras
        names = [s[1] for s in segments]

        def write(tmp: Path) -> None:
            seg = slicerio.create_segmentation(tuple(reversed(grid.shape)), ijk_to_lps)  # (i, j, k)
            for sid, name, color, mask in segments:
                voxels = np.ascontiguousarray(mask.transpose())  # (k, j, i) -> (i, j, k)
                slicerio.add_segment(seg, voxels, {"id": sid, "name": name, "color": color})
            slicerio.write_segmentation(str(tmp), seg)

        def verify(tmp: Path) -> None:
            back = [s["name"] for s in slicerio.read_segmentation(str(tmp))["segments"]]
            if back != names:
                raise OSError(f"{path}: wrote segments {back}, expected {names}")

        return _io.atomic_write(path, write, verify=verify)

    # History ---------------------------------------------------------------------------------------------

    def history_rows(self) -> list[tuple]:
        return [r.row() for r in self.records]

    def _update_table(self) -> None:
        self.history_table = mrml_io.table_from_rows(
            self.scene,
            self.history_rows(),
            columns=HISTORY_COLUMNS,
            node=self.history_table,
            name="ICE edit history",
        )
