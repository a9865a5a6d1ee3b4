"""The ICE editor's actions on a trame-slicer ``SlicerApp``, without a server (:class:`ICEController`).

Each action is a call into :mod:`ICEEditingLib` (load a case, the initial segmentation by model name, the
editing session with its history and undo / redo, frame alignment, stroke -> voxels) or into trame-slicer
(views). The page (:mod:`.ice_page`) binds buttons and the axial view's mouse to these methods; tests drive the
same methods, and the same interactor events, on views from ``DirectViewFactory``.
"""

from __future__ import annotations

import math
import os
import sys
from pathlib import Path

import numpy as np

_ICE_FOLDER = Path(__file__).resolve().parents[2] / "ICEEditing"  # the checkout's ICEEditing/ (ICEEditingLib)
if _ICE_FOLDER.is_dir() and str(_ICE_FOLDER) not in sys.path:
    sys.path.append(str(_ICE_FOLDER))

import ICEEditingLib  # noqa: E402
from LossLabLib import mrml_io  # noqa: E402
from LossLabLib.inference import label_color  # noqa: E402

#: Elevation of the 3D view's camera above the anterior view (degrees).
THREED_ELEVATION_DEG = 30.0

#: Opacity of the edited segment's fill in the slice view (the frame's image stays visible under it).
FILL_OPACITY = 0.35

#: The slice view's interactor actions switched off while scribbling (a left drag is window / level else).
_SCRIBBLE_OFF = ("AdjustWindowLevelBackground", "AdjustWindowLevelForeground", "Translate", "BrowseSlice")

#: The stroke drawn over the slice view while the mouse moves, until its edit lands (RGB in [0, 1], pixels):
#: drawn by the browser (:data:`LossLabWeb.ice_page.STROKE_JS`), so that drawing costs the server nothing.
STROKE_COLOR = (0.0, 1.0, 1.0)
STROKE_WIDTH = 3.0

#: The segment's name (its colour: the first label's of LossLabLib.inference, as a model's segmentation).
SEGMENT_NAME = "left atrium"
_SURFACE = "Closed surface"  # vtkSegmentationConverter's closed surface representation


def sample_folder() -> Path:
    """The bundled ICE sample case folder, checked against its SHA-256 (``losslab app --sample ice``)."""
    return ICEEditingLib.sample_data.verify_sample()


def _round(value, digits: int = 2):
    if value is None or not math.isfinite(float(value)):  # inf: an empty y_init (no distance to it)
        return None
    return round(float(value), digits)


class ICEController:
    """The ICE page's behaviour on ``slicer_app`` (a ``trame_slicer.core.SlicerApp`` with its views).

    Args:
        slicer_app: the application (scene, views).
        device: torch device of the models (``cpu`` by default: the page's machine may share a GPU).
        root: the model registry folder (default ``$LOSSLAB_MODELS_DIR`` or the shipped models).
        progress: ``progress(fraction, message)`` for the slow steps (loading, the models).
        strict_threshold: the session's "strict local" threshold (``None``: off, as in the paper; 0.5: no
            voxel beyond the near region changes). The page's *Strict local* switch sets 0.5.
    """

    def __init__(self, slicer_app, *, device: str = "cpu", root=None, progress=None, strict_threshold=None):
        self.app = slicer_app
        self.device = device
        self.strict_threshold = strict_threshold
        self.root = root
        self.progress = progress
        self.case = None  # ICEEditingLib.ICESceneCase
        self.segmentation_node = None
        self.segment_id: str | None = None
        self.session = None  # ICEEditingLib.ICEEditingSession
        self.frame: int | None = None
        self.scribbling = False
        self._stroke: list[np.ndarray] | None = None
        self._stroke_xy: list[tuple] = []
        self._observers: list[tuple] = []
        self._saved_actions: dict = {}
        self._app_nodes: set[str] | None = None  # nodes of the app itself (never removed with a case)
        self._surface_pending = False
        self.on_edit = None  # called with a stroke's RAS points (the page runs the edit and refreshes)
        self.on_click = None  # called when a press and release were a click, not a stroke

    @property
    def scene(self):
        return self.app.scene

    def _report(self, fraction: float, message: str) -> None:
        if self.progress is not None:
            self.progress(float(fraction), message)

    @property
    def slice_view(self):
        views = self.app.view_manager.get_slice_views()
        if not views:
            raise ValueError("the page has no slice view")
        return views[0]

    # Loading ---------------------------------------------------------------------------------------------

    def _node_ids(self) -> set[str]:
        return {self.scene.GetNthNode(i).GetID() for i in range(self.scene.GetNumberOfNodes())}

    def read_case(self, folder=None, progress=None):
        """The case of a folder written by ``losslab ice simulate`` (``None``: the bundled sample, checked
        against its SHA-256) as a :class:`losslab.ice.ICECase`, with the folder. Files only, no MRML: it may
        run in a worker thread (the page does)."""
        from losslab import ice

        report = progress or self._report
        if folder is None:
            report(0.0, "Checking the sample case")
            source = ICEEditingLib.sample_data.verify_sample()
        else:
            source = Path(str(folder)).expanduser()
            if not str(folder).strip():
                raise ValueError("give the case folder (written by `losslab ice simulate`)")
            if not source.is_dir():
                raise FileNotFoundError(f"the case folder {source} does not exist")
        report(0.05, f"Reading {source.name}")
        return ice.read_case(source), source

    def show_case(self, case, folder=None):
        """Put a read case (:meth:`read_case`) into the scene and show it, replacing the current case. A case
        that fails to load leaves the current case (and the scene) as it was."""
        before = self._node_ids()
        try:
            scene_case = ICEEditingLib.load_case(self.scene, case, progress=self.progress)
        except BaseException:
            added = [self.scene.GetNthNode(i) for i in range(self.scene.GetNumberOfNodes())]
            for node in reversed([n for n in added if n.GetID() not in before]):  # the scene as it was
                if self.scene.IsNodePresent(node):
                    self.scene.RemoveNode(node)
            raise
        scene_case.folder = None if folder is None else Path(folder)
        self.close()
        self.segmentation_node = self.segment_id = None
        if self._app_nodes is None:  # what the app made before any case: views' slice models, cameras...
            self._app_nodes = before
        for node_id in before - self._app_nodes:  # the previous case's nodes, and its segmentation's
            node = self.scene.GetNodeByID(node_id)
            if node is not None and (node.IsA("vtkMRMLDisplayableNode") or node.IsA("vtkMRMLTableNode")):
                self.scene.RemoveNode(node)
        self.case = scene_case
        self.frame = None
        for curves in scene_case.cas_curves:  # shown per frame by show_frame; no name labels over the image
            for curve in curves:
                curve.GetDisplayNode().SetVisibility(False)
                curve.GetDisplayNode().SetPropertiesLabelVisibility(False)
        if scene_case.cas_segmentation is not None:
            scene_case.cas_segmentation.GetDisplayNode().SetVisibility(False)
        self.show_volume()
        self._report(1.0, f"Loaded {scene_case.n_frames} frames")
        return scene_case

    def load_case(self, folder=None):
        """Load an ICE case folder written by ``losslab ice simulate`` (``None``: the bundled sample) and show
        it (:meth:`read_case`, then :meth:`show_case`). A folder that cannot be read leaves the current case
        as it was."""
        case, source = self.read_case(folder)
        return self.show_case(case, source)

    def _need_case(self):
        if self.case is None:
            raise ValueError("load a case first (the sample, or a folder of `losslab ice simulate`)")
        return self.case

    def _need_session(self):
        if self.session is None:
            raise ValueError("segment the case first (Segment: the initial segmentation by the model)")
        return self.session

    def show_volume(self) -> None:
        """The sparse volume in the slice view (axial) and the 3D view."""
        case = self._need_case()
        display = self.app.display_manager
        display.show_volume_in_slice_background(case.volume_node)
        view = self.slice_view
        view.set_orientation("Axial")
        view.set_visible_in_3d(True)
        display.reset_views()
        self._reset_3d()

    def refit(self) -> None:
        """Fit the views again to what they show (the frame, else the volume) at their present size."""
        if self.case is None:
            return
        if self.frame is not None:
            self.show_frame(self.frame)
        else:
            self.slice_view.fit_view_to_content()
        self._reset_3d()
        for view in self.app.view_manager.get_views():
            view.schedule_render()

    def _reset_3d(self) -> None:
        for view in self.app.view_manager.get_threed_views():
            camera = view.get_camera_node()
            if camera is not None:
                camera.RotateTo(camera.Anterior)
                camera.GetCamera().Elevation(THREED_ELEVATION_DEG)
                camera.GetCamera().OrthogonalizeViewUp()
                view.reset_camera()

    # Segmentation and frames -----------------------------------------------------------------------------

    @staticmethod
    def models(kind: str) -> list[str]:
        """The registered ICE models of ``kind`` (``segmentation`` / ``editing``)."""
        return ICEEditingLib.available_models(kind, os.environ.get("LOSSLAB_MODELS_DIR") or None)

    def segment_input(self) -> np.ndarray:
        """The sparse volume as an array (a copy: the worker thread that segments it never reads MRML)."""
        return np.array(mrml_io.volume_array(self._need_case().volume_node), np.float32)

    def predict(self, image: np.ndarray, model: str, progress=None) -> np.ndarray:
        """y_init by the segmentation model (a registered ICE segmentation model or a file), arrays only
        (:func:`ICEEditingLib.predict_initial`; it may run in a worker thread)."""
        if not str(model).strip():
            raise ValueError("choose a segmentation model (a registered name or a model file)")
        return ICEEditingLib.predict_initial(
            image, str(model).strip(), root=self.root, device=self.device, progress=progress or self._report
        )

    def apply_segmentation(self, mask: np.ndarray, model: str, editing_model=None):
        """Make ``mask`` the segment being edited. The first time, a segmentation node and an editing session
        on it (the editing model: a registered name, a path or a ``losslab.ice.EditingModel``; default the
        shipped one); after that, the segment is replaced as one change of the session's history
        (:meth:`ICEEditingLib.ICEEditingSession.replace_segment`): Undo brings back the edits. Returns the
        session's record of the replacement, or ``None`` for a new session."""
        case = self._need_case()
        if self.session is not None and self.scene.IsNodePresent(self.segmentation_node):
            return self.session.replace_segment(mask, description=f"Segment with {model}")
        editing = editing_model or ICEEditingLib.DEFAULT_EDITING_MODEL
        if isinstance(editing, str):
            editing = editing.strip() or ICEEditingLib.DEFAULT_EDITING_MODEL
        segmentation, segment_id = ICEEditingLib.initial_from_mask(
            self.scene, case, mask, segment_id=SEGMENT_NAME, name="ICE segmentation"
        )
        segmentation.GetSegmentation().GetSegment(segment_id).SetColor(*label_color(1))
        segmentation.SetAttribute("LossLab.Model", str(model))
        self.close()
        self.segmentation_node, self.segment_id = segmentation, segment_id
        display = segmentation.GetDisplayNode()
        if display is not None:
            display.SetOpacity2DFill(FILL_OPACITY)
        segmentation.CreateClosedSurfaceRepresentation()  # the segment in the 3D view (kept up to date)
        has_contours = bool(case.frames_with_contours())
        self.session = ICEEditingLib.ICEEditingSession(
            self.scene,
            segmentation,
            segment_id,
            case.volume_node,
            editing,
            root=self.root,
            device=self.device,
            cas=case if has_contours else None,
            strict_threshold=self.strict_threshold,
            progress=self.progress,
        )
        return None

    def prepare_editing(self, initial: np.ndarray | None = None, progress=None) -> bool:
        """Load the editing model and run it once (arrays only: a worker thread may do it), so that the first
        edit is as fast as the next ones."""
        session = self._need_session()
        if progress is not None:
            session.progress = progress
        try:
            session.prepare(initial)
        finally:
            session.progress = self.progress
        return True

    def segment(self, model: str = ICEEditingLib.DEFAULT_SEGMENTATION_MODEL, editing_model=None):
        """y_init from the segmentation model (a registered name or a path), then an editing session on it,
        its editing model loaded and ready (:meth:`predict`, :meth:`apply_segmentation`,
        :meth:`prepare_editing` in one go; the page runs the first and the last in a worker thread)."""
        mask = self.predict(self.segment_input(), model)
        self.apply_segmentation(mask, str(model).strip(), editing_model)
        self.prepare_editing(mask)
        return self.session

    def grid_note(self, model: str) -> str | None:
        """A warning when the case's voxels are not the size the model was trained on (or ``None``)."""
        case = self._need_case()
        return ICEEditingLib.model_grid_note(str(model).strip(), case.grid, self.root)

    def set_strict_local(self, on: bool) -> None:
        """Strict local (threshold 0.5) for the next edits, or off."""
        self.strict_threshold = 0.5 if on else None
        if self.session is not None:
            self.session.strict_threshold = self.strict_threshold

    def show_frame(self, frame: int) -> int:
        """Align the slice view with frame ``frame`` (its image as the background, its CAS contours shown)."""
        case = self._need_case()
        frame = int(frame)
        if not 0 <= frame < case.n_frames:
            raise ValueError(f"frame {frame} is out of range: the case has frames 0..{case.n_frames - 1}")
        view = self.slice_view
        ICEEditingLib.align_slice_node(view.get_view_node(), case, frame)
        background = case.frame_volumes[frame] if case.frame_volumes else case.volume_node
        view.set_background_volume_id(background.GetID())
        self.frame = frame
        view.schedule_render()
        return frame

    # Scribbles -------------------------------------------------------------------------------------------

    def edit_stroke(self, points_ras, *, surface_later: bool = False):
        """An edit from a stroke's RAS points (in drawing order), on the frame shown (if any).

        ``surface_later``: leave the segment's 3D surface out of the edit and rebuild it with
        :meth:`update_surface` afterwards (the page does, once the edit's row is on its way to the browser)."""
        session = self._need_session()
        points = np.asarray(points_ras, float).reshape(-1, 3)
        if len(points) == 0:
            raise ValueError("the stroke has no points")
        if surface_later:
            self._surface_pending = True
            self.segmentation_node.GetSegmentation().RemoveRepresentation(_SURFACE)
        try:
            return session.edit_from_points(points, frame=self.frame, description="stroke")
        finally:
            if not surface_later:
                self.update_surface()

    def update_surface(self) -> None:
        """Rebuild the segment's 3D surface if an edit left it out (:meth:`edit_stroke`)."""
        if self._surface_pending and self.segmentation_node is not None:
            self._surface_pending = False
            self.segmentation_node.CreateClosedSurfaceRepresentation()

    def set_scribbling(self, on: bool) -> None:
        """Left-button strokes on the slice view become edits (``on``); else the view's usual mouse."""
        on = bool(on)
        if on == self.scribbling:
            return
        view = self.slice_view
        interactor = view.interactor()
        style = getattr(view, "_interactor_observer", None)  # trame-slicer's vtkMRMLSliceViewInteractorStyle
        if on:
            self._need_session()
            if style is not None and hasattr(style, "SetActionEnabled"):
                for name in _SCRIBBLE_OFF:
                    action = getattr(style, name, None)
                    if action is not None:
                        self._saved_actions[action] = style.GetActionEnabled(action)
                        style.SetActionEnabled(action, False)
            self._observers = [
                (interactor, interactor.AddObserver("LeftButtonPressEvent", self._on_press, 10.0)),
                (interactor, interactor.AddObserver("MouseMoveEvent", self._on_move, 10.0)),
                (interactor, interactor.AddObserver("LeftButtonReleaseEvent", self._on_release, 10.0)),
            ]
        else:
            for obj, tag in self._observers:
                obj.RemoveObserver(tag)
            self._observers = []
            if style is not None:
                for action, enabled in self._saved_actions.items():
                    style.SetActionEnabled(action, enabled)
            self._saved_actions = {}
            self._clear_stroke()
        self.scribbling = on

    def _event_ras(self, interactor) -> np.ndarray:
        xy = interactor.GetEventPosition()
        return ICEEditingLib.slice_xy_to_ras(self.slice_view.get_view_node(), xy)

    def _on_press(self, interactor, _event):
        self._stroke = [self._event_ras(interactor)]
        self._stroke_xy = [tuple(interactor.GetEventPosition())]

    def _on_move(self, interactor, _event):
        if self._stroke is not None:
            self._stroke.append(self._event_ras(interactor))
            self._stroke_xy.append(tuple(interactor.GetEventPosition()))

    def _on_release(self, interactor, _event):
        if self._stroke is None:
            return
        points, self._stroke = self._stroke + [self._event_ras(interactor)], None
        xy = self._stroke_xy + [tuple(interactor.GetEventPosition())]
        try:
            if ICEEditingLib.is_click(xy):
                if self.on_click is not None:
                    self.on_click()
                return
            callback = self.on_edit
            if callback is not None:  # the page runs the edit (its errors become a message)
                callback(points)
            else:
                self.edit_stroke(points)
        finally:
            self._clear_stroke()

    def _clear_stroke(self) -> None:
        self._stroke, self._stroke_xy = None, []

    # Undo, history, metrics, save ------------------------------------------------------------------------

    def undo(self):
        return self._need_session().undo()

    def redo(self):
        return self._need_session().redo()

    def history(self) -> list[dict]:
        """One row per change: number, frame (or what replaced the segment), voxels added / removed near and
        far, D near / far (p95, mm; D of that edit, around its scribble), the distance from every CAS contour
        to the segment after it (p95, mm; comparable from row to row), the state."""
        if self.session is None:
            return []
        rows = []
        for r in self.session.records:
            c, metric = r.changes, r.metric or {}
            rows.append(
                {
                    "index": r.index,
                    "frame": r.frame if r.frame is not None else ("new" if r.kind == "replace" else ""),
                    "near": f"+{c.get('added_near', 0)}/-{c.get('removed_near', 0)}",
                    "far": f"+{c.get('added_far', 0)}/-{c.get('removed_far', 0)}",
                    "d_near": _round(metric.get("near", {}).get("p95")),
                    "d_far": _round(metric.get("far", {}).get("p95")),
                    "to_cas": _round(metric.get("cas_to_prediction", {}).get("p95")),
                    "state": r.state,
                    "kind": r.kind,
                    "summary": r.summary(),
                }
            )
        return rows

    def initial_to_cas(self):
        """p95 distance (mm) from every CAS contour to the segment before the first change (``None``: no
        change yet, or no contours)."""
        if self.session is None or not self.session.records:
            return None
        return _round((self.session.records[0].metric or {}).get("no_editing", {}).get("p95"))

    def segment_voxels(self) -> int:
        return 0 if self.session is None else int(self.session.current_mask().sum())

    def save(self, path) -> Path:
        """Write the segmentation (every segment, with its name and colour) as a ``.seg.nrrd``
        (:meth:`ICEEditingLib.ICEEditingSession.save`: atomic, read back before it replaces ``path``)."""
        session = self._need_session()
        text = str(path or "").strip()
        if not text:
            raise ValueError("give the file to save the segmentation to (a .seg.nrrd)")
        return session.save(text)

    def close(self) -> None:
        """Stop scribbling and close the session (a new case or segmentation replaces it)."""
        if self.scribbling:
            self.set_scribbling(False)
        if self.session is not None:
            self.session.close()
            self.session = None
