"""What the "ICE Edit" Segment Editor effect does, Qt-free, so that it is tested headless.

The effect (``SegmentEditorICEEditLib/SegmentEditorEffect.py``) only forwards events: a left-button press
starts a stroke, mouse moves add points, the release ends it; each position is converted with the effect's
``xyToRas`` (any slice orientation, oblique frame-aligned views included). On release it calls
:meth:`StrokeCollector.finish` and :func:`apply_stroke`, which runs the edit of
:class:`~ICEEditingLib.session.ICEEditingSession` on the selected segment and writes it through a
:class:`CallbackWriter` made from the effect's ``saveStateForUndo`` / ``modifySelectedSegmentByLabelmap``
(masking, editable area and overwrite mode honoured, one undo step per stroke in the Segment Editor's own
undo stack). :class:`SessionCache` keeps one session per (segmentation, segment, volume), so that the
edit history and undo levels last across strokes.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from LossLabLib import mrml_io
from LossLabLib.mrml_io import Grid

from .scene import frame_of_stroke
from .session import ICEEditingSession, _extent, _oriented_labelmap

__all__ = [
    "CallbackWriter",
    "SessionCache",
    "StrokeCollector",
    "apply_stroke",
    "editable_from_editor_node",
    "frame_of_stroke",
]


class StrokeCollector:
    """The RAS points of one stroke: ``press`` / ``move`` / ``finish`` from the effect's mouse events."""

    def __init__(self):
        self.points: list[np.ndarray] = []
        self.view = None

    @property
    def active(self) -> bool:
        return self.view is not None

    def press(self, ras, view=None) -> None:
        self.points = [np.asarray(ras, float).reshape(3)]
        self.view = view if view is not None else "view"

    def move(self, ras) -> None:
        if self.active:
            point = np.asarray(ras, float).reshape(3)
            if not np.allclose(point, self.points[-1]):
                self.points.append(point)

    def finish(self, ras=None) -> np.ndarray:
        """End the stroke; returns its ``(N, 3)`` RAS points (empty when no stroke was started)."""
        if ras is not None:
            self.move(ras)
        points = np.array(self.points, float).reshape(-1, 3)
        self.points, self.view = [], None
        return points

    def cancel(self) -> None:
        self.points, self.view = [], None


class CallbackWriter:
    """A session writer made of the Segment Editor effect's own calls (desktop Slicer).

    Args:
        save_state: ``scriptedEffect.saveStateForUndo``.
        modify_selected: ``f(labelmap, mode, extent)`` with ``mode`` ``"add"`` / ``"remove"`` / ``"set"``,
            calling ``scriptedEffect.modifySelectedSegmentByLabelmap`` with Slicer's mode constant.
        undo, redo, can_undo, can_redo: the Segment Editor widget's undo stack.
        set_undo_levels: sets its maximum number of undo states (``levels + 1``).
        segmentation_node: the edited segmentation (for its parent transform).
    """

    def __init__(
        self,
        *,
        save_state: Callable,
        modify_selected: Callable,
        undo: Callable,
        redo: Callable,
        can_undo: Callable,
        can_redo: Callable,
        set_undo_levels: Callable,
        segmentation_node,
        editor_node=None,
        source_volume_node=None,
    ):
        self._save, self._modify = save_state, modify_selected
        self.editor_node, self.source_volume_node = editor_node, source_volume_node
        self.undo, self.redo = undo, redo
        self.can_undo, self.can_redo = can_undo, can_redo
        self._set_levels = set_undo_levels
        self.segmentation_node = segmentation_node
        self.levels = None

    def set_undo_levels(self, levels: int) -> None:
        levels = int(levels)
        if levels < 1:
            raise ValueError(f"undo levels must be at least 1, got {levels}")
        self._set_levels(levels + 1)
        self.levels = levels

    def save_state(self) -> None:
        self._save()

    def editable(self, grid: Grid) -> np.ndarray:
        """The voxels the editor node's masking lets an edit change (all, without an editor node)."""
        if self.editor_node is None:
            return np.ones(grid.shape, dtype=bool)
        return editable_from_editor_node(
            self.segmentation_node.GetScene(),
            self.segmentation_node,
            self.source_volume_node,
            self.editor_node,
            grid,
        )

    def modify(self, segment_id: str, mask: np.ndarray, grid: Grid, mode: str) -> None:
        mask = np.asarray(mask, bool)
        if not mask.any() and mode != "set":
            return
        image = _oriented_labelmap(mask, grid, self.segmentation_node)
        extent = _extent(mask) if mask.any() else list(image.GetExtent())
        self._modify(image, mode, extent)


def editable_from_editor_node(
    scene, segmentation_node, source_volume_node, editor_node, grid: Grid
) -> np.ndarray:
    """:func:`~ICEEditingLib.session.editable_mask` of a segment editor node (the effect's parameter set
    node), through a temporary ``vtkSlicerSegmentEditorLogic`` (Slicer >= 5.9 and slicer-core). Older
    Slicer: only the intensity range is applied here (``modifySelectedSegmentByLabelmap`` applies the
    editable area itself)."""
    import slicer

    from .session import editable_mask

    if not hasattr(slicer, "vtkSlicerSegmentEditorLogic"):
        only_intensity = np.ones(grid.shape, dtype=bool)
        if editor_node.GetSourceVolumeIntensityMask() and source_volume_node is not None:
            lo, hi = editor_node.GetSourceVolumeIntensityMaskRange()
            values = mrml_io.volume_array(source_volume_node)
            only_intensity &= mrml_io.mask_on_grid(
                (values >= lo) & (values <= hi),
                Grid.from_volume(source_volume_node),
                grid,
                allow_resample=True,
            )
        return only_intensity
    logic = slicer.vtkSlicerSegmentEditorLogic()
    logic.SetMRMLScene(scene)
    logic.SetSegmentEditorNode(editor_node)
    logic.SetSegmentationNode(segmentation_node)
    if source_volume_node is not None:
        logic.SetSourceVolumeNode(source_volume_node)
    return editable_mask(logic, editor_node, source_volume_node, grid)


class SessionCache:
    """One :class:`ICEEditingSession` per (segmentation, segment, volume, model): the effect's strokes on
    the same segment share its history and undo levels. ``make(**kwargs)`` creates a session."""

    def __init__(self):
        self._sessions: dict[tuple, ICEEditingSession] = {}

    @staticmethod
    def _key(segmentation_node, segment_id, volume_node, model, device) -> tuple:
        return (segmentation_node.GetID(), segment_id, volume_node.GetID(), str(model), device)

    def has(self, segmentation_node, segment_id, volume_node, model, device=None) -> bool:
        return self._key(segmentation_node, segment_id, volume_node, model, device) in self._sessions

    def get(self, scene, segmentation_node, segment_id, volume_node, model, **kwargs) -> ICEEditingSession:
        key = self._key(segmentation_node, segment_id, volume_node, model, kwargs.get("device"))
        session = self._sessions.get(key)
        stale = session is not None and (
            session.scene is not scene
            or session.segmentation_node is not segmentation_node  # a new node reusing a closed scene's ID
            or session.volume_node is not volume_node
        )
        if session is None or stale:
            if session is not None:
                session.close()
            session = ICEEditingSession(scene, segmentation_node, segment_id, volume_node, model, **kwargs)
            self._sessions[key] = session
        return session

    def clear(self) -> None:
        """Forget every session (and stop them following their segments)."""
        for session in self._sessions.values():
            session.close()
        self._sessions.clear()


def apply_stroke(
    session: ICEEditingSession,
    points_ras,
    *,
    frame: int | None = None,
    sigma_mm: float | None = None,
    strict_threshold: float | None = None,
):
    """The effect's release: the stroke's RAS points -> an edit of the session's segment.

    ``frame`` defaults to the frame whose plane holds the stroke (:func:`frame_of_stroke`); ``sigma_mm`` and
    ``strict_threshold`` (the effect's options) override the session's for this stroke. Returns the
    :class:`~ICEEditingLib.session.EditRecord`.
    """
    points = np.asarray(points_ras, float).reshape(-1, 3)
    if frame is None:
        frame = frame_of_stroke(session.scene, points)
    saved = session.sigma_mm, session.strict_threshold
    try:
        if sigma_mm is not None:
            session.sigma_mm = float(sigma_mm)
        session.strict_threshold = strict_threshold
        return session.edit_from_points(points, frame=frame, description="ICE Edit stroke")
    finally:
        session.sigma_mm, session.strict_threshold = saved


def segment_voxels(session: ICEEditingSession) -> int:
    """Voxels of the session's segment now (for status lines)."""
    return int(
        np.count_nonzero(mrml_io.segment_mask(session.segmentation_node, session.segment_id, session.grid))
    )
