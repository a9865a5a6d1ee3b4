"""The ICE editor page: trame widgets bound to an :class:`~.ice.ICEController`.

Layout (left drawer, views on the right): load the bundled sample or a case folder of ``losslab ice
simulate``; the initial segmentation by a segmentation model (default the shipped ``ice-segmentation-64``);
frame stepping (the axial view aligned with the frame); *Scribble* (a left-button stroke on the slice view is
an edit by the editing model), undo / redo; the edit history (near / far change per edit, D near / far when the
case has CAS contours); save the segmentation as a ``.seg.nrrd``. Every handler goes through
:meth:`ICEPage._act`, which turns an exception into a one-line message (the traceback goes to the server's
log). Slow steps (loading, the models) show a progress bar with the Lib's progress messages.

State names all start with ``ice_``.
"""

from __future__ import annotations

from .ice import ICEController, ICEEditingLib
from .page import Page


class ICEPage(Page):
    """The ICE page on ``server`` (a trame server) and ``slicer_app``; :meth:`build_drawer` puts its panel in
    a drawer. ``sample_loader()`` returns the sample case folder (``None``: the bundled sample)."""

    name = "ice"
    title = "LossLab: ICE scribble editing"

    def __init__(self, server, slicer_app, *, sample_loader=None, controller: ICEController | None = None):
        super().__init__(server, slicer_app, sample_loader=sample_loader)
        self.controller = controller or ICEController(slicer_app)
        self.controller.progress = self._progress
        self.controller.on_edit = self._on_stroke
        s = self.state
        s.setdefault("ice_folder", "")
        s.update(
            {
                "ice_loaded": False,
                "ice_segmented": False,
                "ice_message": "",
                "ice_message_type": "info",
                "ice_busy": False,
                "ice_progress": 0.0,
                "ice_status": "",
                "ice_model": ICEEditingLib.DEFAULT_SEGMENTATION_MODEL,
                "ice_models": [],
                "ice_editing_model": ICEEditingLib.DEFAULT_EDITING_MODEL,
                "ice_frame": 0,
                "ice_frames": 0,
                "ice_scribble": False,
                "ice_strict": self.controller.strict_threshold is not None,
                "ice_history": [],
                "ice_voxels": 0,
                "ice_can_undo": False,
                "ice_can_redo": False,
                "ice_save_path": "",
                "ice_has_contours": False,
            }
        )
        s.change("ice_scribble")(self._on_scribble)
        s.change("ice_strict")(self._on_strict)

    # Progress --------------------------------------------------------------------------

    def _progress(self, fraction: float, message: str) -> None:
        self.state.ice_progress, self.state.ice_status = float(fraction), str(message)
        try:  # push the bar to the browser while the work runs (no-op without a connected client)
            self.state.flush()
        except Exception:  # noqa: BLE001 (progress must never break the work)
            self.log.debug("progress flush failed", exc_info=True)

    def _refresh(self) -> None:
        c = self.controller
        s = self.state
        s.ice_loaded = c.case is not None
        s.ice_segmented = c.session is not None
        s.ice_frames = 0 if c.case is None else c.case.n_frames
        s.ice_has_contours = bool(c.case is not None and c.case.frames_with_contours())
        s.ice_history = c.history()
        s.ice_voxels = c.segment_voxels()
        s.ice_can_undo = bool(c.session is not None and c.session.can_undo)
        s.ice_can_redo = bool(c.session is not None and c.session.can_redo)
        s.ice_scribble = c.scribbling

    # Handlers --------------------------------------------------------------------------------------------

    def load(self, folder=None, _mask=None) -> bool:
        """Load a case folder (default: the page's field). ``_mask`` is the server's second case path
        (unused here)."""
        folder = self.state.ice_folder if folder is None else folder
        if not str(folder or "").strip():
            self._say(
                "Load: give the case folder (written by `losslab ice simulate`), or use Sample", "error"
            )
            return False
        case = self._act("Load", self.controller.load_case, str(folder))
        if case is None:
            return False
        self.state.ice_folder = str(folder)
        return self._loaded(case)

    def load_sample(self) -> bool:
        folder = None
        if self.sample_loader is not None:
            folder = self._act("Sample", self.sample_loader)
            if folder is None:
                return False
        case = self._act("Sample", self.controller.load_case, folder)
        return case is not None and self._loaded(case)

    def _loaded(self, case) -> bool:
        self.state.ice_frame = 0
        self.state.ice_models = self._act("Models", self.controller.models, "segmentation") or []
        self._refresh()
        name = case.folder.name if case.folder is not None else "the case"
        self._say(f"Loaded {name}: {case.n_frames} frames; Segment runs the initial segmentation")
        return True

    def segment(self) -> bool:
        session = self._act(
            "Segment", self.controller.segment, self.state.ice_model, self.state.ice_editing_model
        )
        if session is None:
            return False
        self._refresh()
        self.show_frame(self.state.ice_frame)
        self._say(
            f"Segmented with {self.state.ice_model}: {self.state.ice_voxels} voxels; turn on Scribble and "
            "draw on the slice view where the segment is wrong",
            "success",
        )
        return True

    def show_frame(self, frame=None) -> bool:
        frame = self.state.ice_frame if frame is None else frame
        try:
            frame = int(frame)
        except (TypeError, ValueError):
            self._say(f"Frame: {frame!r} is not a frame number", "error")
            return False
        if self._act("Frame", self.controller.show_frame, frame) is None:
            return False
        self.state.ice_frame = frame
        return True

    def next_frame(self) -> bool:
        return self.show_frame(min(int(self.state.ice_frame) + 1, max(self.state.ice_frames - 1, 0)))

    def previous_frame(self) -> bool:
        return self.show_frame(max(int(self.state.ice_frame) - 1, 0))

    def _on_scribble(self, ice_scribble=None, **_):
        if bool(ice_scribble) != self.controller.scribbling:
            self._act("Scribble", self.controller.set_scribbling, bool(ice_scribble))
            self.state.ice_scribble = self.controller.scribbling

    def _on_strict(self, ice_strict=None, **_):
        self.controller.set_strict_local(bool(ice_strict))

    def _on_stroke(self, points) -> None:
        """A stroke ended on the slice view (the controller's callback): edit, refresh, report."""
        record = self._act("Edit", self.controller.edit_stroke, points)
        if record is None:
            return
        self._refresh()
        self._say(f"Edit {record.index}: {record.summary()}", "success")

    def undo(self) -> bool:
        record = self._act("Undo", self.controller.undo)
        self._refresh()
        if record is not None:
            self._say(f"Undid edit {record.index}")
        return record is not None

    def redo(self) -> bool:
        record = self._act("Redo", self.controller.redo)
        self._refresh()
        if record is not None:
            self._say(f"Redid edit {record.index}")
        return record is not None

    def save(self):
        path = self._act("Save", self.controller.save, self.state.ice_save_path)
        if path is not None:
            self._say(f"Saved the segmentation to {path}", "success")
        return path

    # Layout ----------------------------------------------------------------------------------------------

    def build_drawer(self) -> None:
        """The page's panel (call inside the layout's drawer)."""
        from trame.widgets import html
        from trame.widgets import vuetify3 as v

        with html.Div(classes="pa-2", style="font-size: 0.85rem;"):
            self.message_alert()
            v.VProgressLinear(v_if="ice_busy", model_value=("ice_progress * 100",), height=6)
            html.Div("{{ ice_status }}", v_if="ice_busy", classes="text-caption ice-status")
            html.Div("Case", classes="text-subtitle-2")
            v.VTextField(
                v_model=("ice_folder",),
                label="case folder (losslab ice simulate)",
                density="compact",
                hide_details=True,
            )
            with html.Div(classes="d-flex ga-2 my-2"):
                v.VBtn("Load", click=self.load, size="small", classes="ice-load")
                v.VBtn("Sample", click=self.load_sample, size="small", classes="ice-sample")

            with html.Div(v_if="ice_loaded"):
                html.Div("Initial segmentation", classes="text-subtitle-2")
                v.VCombobox(
                    v_model=("ice_model",),
                    items=("ice_models",),
                    label="segmentation model (name or file)",
                    density="compact",
                    hide_details=True,
                )
                v.VBtn("Segment", click=self.segment, size="small", classes="my-2 ice-segment")

                html.Div("Frame", classes="text-subtitle-2")
                with html.Div(classes="d-flex ga-2 align-center my-1"):
                    v.VBtn("<", click=self.previous_frame, size="small", classes="ice-previous")
                    html.Span("{{ ice_frame }} / {{ ice_frames - 1 }}", classes="ice-frame")
                    v.VBtn(">", click=self.next_frame, size="small", classes="ice-next")

            with html.Div(v_if="ice_segmented"):
                html.Div("Edit", classes="text-subtitle-2 mt-2")
                v.VSwitch(
                    v_model=("ice_scribble",),
                    label="Scribble (draw on the slice view)",
                    density="compact",
                    hide_details=True,
                    color="primary",
                    classes="ice-scribble",
                )
                v.VSwitch(
                    v_model=("ice_strict",),
                    label="Strict local (nothing changes far from the scribble)",
                    density="compact",
                    hide_details=True,
                )
                with html.Div(classes="d-flex ga-2 mb-2"):
                    v.VBtn("Undo", click=self.undo, disabled=("!ice_can_undo",), size="small")
                    v.VBtn("Redo", click=self.redo, disabled=("!ice_can_redo",), size="small")
                html.Div("segment: {{ ice_voxels }} voxels", classes="text-caption ice-voxels")

                html.Div("Edit history", classes="text-subtitle-2 mt-2")
                with v.VTable(density="compact", classes="ice-history"):
                    with html.Thead():
                        with html.Tr():
                            for head in ("#", "frame", "near +/-", "far +/-"):
                                html.Th(head)
                            html.Th("D near", v_if="ice_has_contours")
                            html.Th("D far", v_if="ice_has_contours")
                            html.Th("state")
                    with html.Tbody():
                        with html.Tr(v_for="r in ice_history", key="r.index"):
                            html.Td("{{ r.index }}")
                            html.Td("{{ r.frame }}")
                            html.Td("{{ r.near }}")
                            html.Td("{{ r.far }}")
                            html.Td("{{ r.d_near }}", v_if="ice_has_contours")
                            html.Td("{{ r.d_far }}", v_if="ice_has_contours")
                            html.Td("{{ r.state }}")
                html.Div(
                    "D: the editing metric, p95 of the distance to the CAS contours (mm)",
                    v_if="ice_has_contours",
                    classes="text-caption",
                )

                html.Div("Save", classes="text-subtitle-2 mt-2")
                v.VTextField(
                    v_model=("ice_save_path",),
                    label="segmentation file (.seg.nrrd)",
                    density="compact",
                    hide_details=True,
                )
                v.VBtn("Save", click=self.save, size="small", classes="my-2 ice-save")
