"""The ICE editor page: trame widgets bound to an :class:`~.ice.ICEController`.

Layout (left drawer, views on the right): load the bundled sample or a case folder of ``losslab ice
simulate``; the initial segmentation by a segmentation model (default the shipped ``ice-segmentation-64``);
the frame (slider, field, ``<`` / ``>``: the slice view aligned with it); *Scribble* (a left-button drag on the
slice view is an edit by the editing model; the stroke is drawn as it goes), undo / redo; the edit history
(near / far change per edit, D near / far and the distance from all CAS contours when the case has them); save
the segmentation as a ``.seg.nrrd``; a legend and how-to.

Slow steps (reading a case, the models) run in a worker thread (:meth:`Page._background`): the progress is
pushed as it comes and the buttons that cannot run meanwhile are disabled. Loading another case over edits
asks first; a second *Segment* replaces the segment as one undoable change. Every handler turns an exception
into a one-line message (the traceback goes to the server's log).

State names all start with ``ice_``.
"""

from __future__ import annotations

import asyncio

from .ice import FILL_OPACITY, STROKE_COLOR, STROKE_WIDTH, ICEController, ICEEditingLib
from .page import Page, Then


def _hex(rgb) -> str:
    return "#" + "".join(f"{round(255 * float(c)):02x}" for c in rgb[:3])


#: How scribbling works, shown under the Scribble switch.
SCRIBBLE_HELP = (
    "Press the left button on the slice view where the segment is wrong, drag along the right boundary, "
    "release: the editing model corrects the segment near the stroke. A click without a drag does nothing."
)


#: The stroke, drawn by the browser over the slice view's image while the mouse moves with Scribble on, and
#: kept until the server has handled it (``ice_strokes`` moves on: the edit's row, a click's message or an
#: error). Drawn in the browser, it costs the server no render: the mouse-up reaches an idle event loop.
STROKE_JS = """
(function () {
  if (window.__losslabStroke) return;
  window.__losslabStroke = true;
  const NS = 'http://www.w3.org/2000/svg';
  const get = (k) => (window.trame && window.trame.state ? window.trame.state.get(k) : undefined);
  let current = null;
  function view() { return document.querySelector('img.image-display-area'); }  // the slice view
  function inside(img, e) {
    const r = img.getBoundingClientRect();
    return e.clientX >= r.left && e.clientX <= r.right && e.clientY >= r.top && e.clientY <= r.bottom;
  }
  function start(img) {
    const parent = img.parentElement;
    if (getComputedStyle(parent).position === 'static') parent.style.position = 'relative';
    const svg = document.createElementNS(NS, 'svg');
    svg.setAttribute('class', 'ice-stroke');
    svg.style.cssText = 'position:absolute;pointer-events:none;z-index:5;left:' + img.offsetLeft + 'px;top:' +
      img.offsetTop + 'px;width:' + img.offsetWidth + 'px;height:' + img.offsetHeight + 'px';
    const line = document.createElementNS(NS, 'polyline');
    line.setAttribute('fill', 'none');
    line.setAttribute('stroke', '__COLOR__');
    line.setAttribute('stroke-width', '__WIDTH__');
    line.setAttribute('stroke-linecap', 'round');
    line.setAttribute('stroke-linejoin', 'round');
    svg.appendChild(line);
    parent.appendChild(svg);
    return {img: img, svg: svg, line: line, points: [], strokes: get('ice_strokes'), up: false};
  }
  function add(e) {
    const r = current.img.getBoundingClientRect();
    current.points.push((e.clientX - r.left).toFixed(1) + ',' + (e.clientY - r.top).toFixed(1));
    current.line.setAttribute('points', current.points.join(' '));
  }
  function watch(stroke, since) {
    if (get('ice_strokes') !== stroke.strokes || performance.now() - since > 120000) {
      stroke.svg.remove();
      return;
    }
    requestAnimationFrame(() => watch(stroke, since));
  }
  document.addEventListener('pointerdown', (e) => {
    const img = view();
    if (e.button !== 0 || !get('ice_scribble') || !img || !inside(img, e)) return;
    if (current && !current.up) current.svg.remove();
    current = start(img);
    add(e);
  }, true);
  document.addEventListener('pointermove', (e) => { if (current && !current.up) add(e); }, true);
  document.addEventListener('pointerup', (e) => {
    if (!current || current.up) return;
    add(e);
    current.up = true;
    watch(current, performance.now());
  }, true);
})();
""".replace("__COLOR__", "rgb(" + ", ".join(str(round(255 * c)) for c in STROKE_COLOR) + ")").replace(
    "__WIDTH__", str(STROKE_WIDTH)
)


#: How long after an edit's row has been queued for the browser the views render and the 3D surface is
#: rebuilt (their work would otherwise run before the row is sent).
AFTER_EDIT_S = 0.05


class ICEPage(Page):
    """The ICE page on ``server`` (a trame server) and ``slicer_app``; :meth:`build_drawer` puts its panel in
    a drawer. ``sample_loader()`` returns the sample case folder (``None``: the bundled sample)."""

    name = "ice"
    title = "LossLab: ICE scribble editing"

    def __init__(self, server, slicer_app, *, sample_loader=None, controller: ICEController | None = None):
        super().__init__(server, slicer_app, sample_loader=sample_loader)
        self.controller = controller or ICEController(slicer_app)
        self.controller.progress = self._progress_now
        self.controller.on_edit = self._on_stroke
        self.controller.on_click = self._on_click
        s = self.state
        s.setdefault("ice_folder", "")
        s.update(
            {
                "ice_loaded": False,
                "ice_segmented": False,
                "ice_case": "",
                "ice_model": ICEEditingLib.DEFAULT_SEGMENTATION_MODEL,
                "ice_models": [],
                "ice_editing_model": ICEEditingLib.DEFAULT_EDITING_MODEL,
                "ice_frame": 0,
                "ice_frames": 0,
                "ice_scribble": False,
                "ice_strict": self.controller.strict_threshold is not None,
                "ice_history": [],
                "ice_initial_to_cas": None,
                "ice_voxels": 0,
                "ice_can_undo": False,
                "ice_can_redo": False,
                "ice_save_path": "",
                "ice_has_contours": False,
                "ice_segment_color": _hex((0.9, 0.35, 0.25)),
                "ice_strokes": 0,
            }
        )
        s.change("ice_scribble")(self._on_scribble)
        s.change("ice_strict")(self._on_strict)

    def _refresh(self) -> None:
        c = self.controller
        s = self.state
        s.ice_loaded = c.case is not None
        s.ice_segmented = c.session is not None
        s.ice_frames = 0 if c.case is None else c.case.n_frames
        s.ice_has_contours = bool(c.case is not None and c.case.frames_with_contours())
        s.ice_history = c.history()
        s.ice_initial_to_cas = c.initial_to_cas()
        s.ice_voxels = c.segment_voxels()
        s.ice_can_undo = bool(c.session is not None and c.session.can_undo)
        s.ice_can_redo = bool(c.session is not None and c.session.can_redo)
        s.ice_scribble = c.scribbling
        if c.segmentation_node is not None and c.segment_id is not None:
            segment = c.segmentation_node.GetSegmentation().GetSegment(c.segment_id)
            s.ice_segment_color = _hex(segment.GetColor())

    def _lost(self) -> str | None:
        """The user's work a new case would replace: the edits of the session (``None``: none)."""
        session = self.controller.session
        if session is None or not session.records:
            return None
        n = len(session.records)
        return f"{n} edit{'s' if n != 1 else ''} of the segmentation"

    # Loading ---------------------------------------------------------------------------------------------

    def load(self, folder=None, _mask=None) -> bool:
        """Load a case folder (default: the page's field), after asking when the current case has edits.
        ``_mask`` is the server's second case path (unused here). Returns whether the case was loaded (or
        its loading started, in the server)."""
        folder = self.state.ice_folder if folder is None else folder
        if not str(folder or "").strip():
            self._say(
                "Load: give the case folder (written by `losslab ice simulate`), or use Sample", "error"
            )
            return False
        return bool(self._replace("Load", self._lost(), lambda: self._load(str(folder), "Load")))

    def load_sample(self) -> bool:
        def start():
            folder = None
            if self.sample_loader is not None:
                folder = self._act("Sample", self.sample_loader)
                if folder is None:
                    return False
            return self._load(folder, "Sample")

        return bool(self._replace("Sample", self._lost(), start))

    def _load(self, folder, what: str) -> bool:
        def finish(read):
            case = self.controller.show_case(*read)
            if what == "Load":
                self.state.ice_folder = str(folder)
            self._loaded(case)
            return True

        return self._background(what, lambda progress: self.controller.read_case(folder, progress), finish)

    def _loaded(self, case) -> None:
        self.state.ice_frame = 0
        self.state.ice_models = self._act("Models", self.controller.models, "segmentation") or []
        self.state.ice_case = case.folder.name if case.folder is not None else "the case"
        self._refresh()
        self._fit_when_sized()
        shape = "x".join(str(n) for n in reversed(case.grid.shape))
        self._say(
            f"Loaded {self.state.ice_case}: {case.n_frames} frames, {shape} voxels of "
            f"{min(case.grid.spacing_ijk):.2f} mm. Segment runs the initial segmentation."
        )

    def fit_views(self) -> None:
        self.controller.refit()

    # Segmentation ----------------------------------------------------------------------------------------

    def segment(self) -> bool:
        """The initial segmentation in a worker thread, then the editing model loaded and run once the same
        way (the first edit is then as fast as the next). A second Segment replaces the segment as one
        undoable change of the history. Returns whether it succeeded (or started, in the server)."""
        if self.controller.case is None:
            self._say("Segment: load a case first (Sample, or a folder of `losslab ice simulate`)", "error")
            return False
        model = str(self.state.ice_model or "").strip()
        image = self._act("Segment", self.controller.segment_input)
        if image is None:
            return False

        def finish(mask):
            record = self.controller.apply_segmentation(mask, model, self.state.ice_editing_model)
            self._refresh()
            self.show_frame(self.state.ice_frame)
            note = self.controller.grid_note(model)
            if record is not None:
                text = (
                    f"Segmented again with {model}: the segment replaced as change {record.index} "
                    "(Undo brings back the one before)"
                )
            else:
                text = f"Segmented with {model}: {self.state.ice_voxels} voxels"
            self._say(text + (f". Note: {note}" if note else ""), "warning" if note else "success")
            if self.controller.session._warm:
                return True

            def ready(_ok):
                self._say(
                    text
                    + ". Turn on Scribble and draw on the slice view where the segment is wrong"
                    + (f". Note: {note}" if note else ""),
                    "warning" if note else "success",
                )
                return True

            return Then(
                "Loading the editing model",
                lambda progress: self.controller.prepare_editing(mask.copy(), progress),
                ready,
            )

        return self._background(
            "Segment", lambda progress: self.controller.predict(image, model, progress), finish
        )

    # Frames ----------------------------------------------------------------------------------------------

    def show_frame(self, frame=None) -> bool:
        frame = self.state.ice_frame if frame is None else frame
        try:
            frame = int(float(frame))
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

    def _on_frame_input(self, value) -> None:
        """The slider or the field: show that frame (a value out of range is a message)."""
        if self.controller.case is not None and value not in (None, ""):
            self.show_frame(value)

    # Editing ---------------------------------------------------------------------------------------------

    def _on_scribble(self, ice_scribble=None, **_):
        if bool(ice_scribble) != self.controller.scribbling:
            self._act("Scribble", self.controller.set_scribbling, bool(ice_scribble))
            self.state.ice_scribble = self.controller.scribbling

    def _on_strict(self, ice_strict=None, **_):
        self.controller.set_strict_local(bool(ice_strict))

    def _stroke_handled(self) -> None:
        """The browser keeps drawing a stroke until this counter moves."""
        self.state.ice_strokes = int(self.state.ice_strokes or 0) + 1

    def _on_click(self) -> None:
        with self.state:
            self._say("A click is not a scribble: press, drag along the right boundary, then release", "info")
            self._stroke_handled()

    def _on_stroke(self, points) -> None:
        """A stroke ended on the slice view (the controller's callback): edit, refresh, report.

        The views do not render while the edit runs: the edit's row and message go to the browser first, then
        the 3D surface is rebuilt and the views render (their renders would otherwise run first in the event
        loop, the row waiting behind them)."""
        views = self.app.view_manager.get_views()
        blocked = [(view, view.set_render_blocked(True)) for view in views]
        try:
            with self.state:
                self._stroke_handled()
                if self.busy:
                    self._say(
                        f"Edit: wait until {self.state.ice_status or 'the page'} has finished", "warning"
                    )
                    return
                record = self._act("Edit", lambda: self.controller.edit_stroke(points, surface_later=True))
                if record is None:
                    return
                self._refresh()
                self._say(f"Edit {record.index}: {record.summary()}", "success")
        finally:
            try:  # after the state's push: wslink sends it from a timer due now, when the block above ended
                asyncio.get_running_loop().call_later(AFTER_EDIT_S, self._after_edit, blocked)
            except RuntimeError:
                self._after_edit(blocked)

    def _after_edit(self, blocked) -> None:
        self._act("Surface", self.controller.update_surface)
        for view, was_blocked in blocked:
            view.set_render_blocked(was_blocked)  # unblocking schedules the render

    def undo(self) -> bool:
        record = self._act("Undo", self.controller.undo)
        self._refresh()
        if record is not None:
            self._say(f"Undid change {record.index}")
        return record is not None

    def redo(self) -> bool:
        record = self._act("Redo", self.controller.redo)
        self._refresh()
        if record is not None:
            self._say(f"Redid change {record.index}")
        return record is not None

    def save(self):
        path = self._act("Save", self.controller.save, self.state.ice_save_path)
        if path is not None:
            self._say(f"Saved the segmentation to {path}", "success")
        return path

    # Layout ----------------------------------------------------------------------------------------------

    def build_drawer(self) -> None:
        """The page's panel (call inside the layout's drawer)."""
        from trame.widgets import client, html
        from trame.widgets import vuetify3 as v

        busy = "ice_busy"
        client.Script(STROKE_JS)
        with html.Div(classes="pa-2", style="font-size: 0.85rem;"):
            self.confirm_dialog()
            self.message_alert()
            self.progress_bar()
            html.Div("Case", classes="text-subtitle-2")
            v.VTextField(
                v_model=("ice_folder",),
                label="case folder (losslab ice simulate)",
                density="compact",
                hide_details=True,
            )
            with html.Div(classes="d-flex ga-2 my-2"):
                v.VBtn(
                    "Load",
                    click=self.button(self.load, "ice_folder"),
                    disabled=(busy,),
                    size="small",
                    classes="ice-load",
                )
                v.VBtn(
                    "Sample",
                    click=self.button(self.load_sample),
                    disabled=(busy,),
                    size="small",
                    classes="ice-sample",
                )

            with html.Div(v_if="ice_loaded"):
                html.Div("Initial segmentation", classes="text-subtitle-2")
                v.VCombobox(
                    v_model=("ice_model",),
                    items=("ice_models",),
                    label="segmentation model (name or file)",
                    density="compact",
                    hide_details=True,
                )
                v.VBtn(
                    "Segment",
                    click=self.button(self.segment, "ice_model"),
                    disabled=(busy,),
                    size="small",
                    classes="my-2 ice-segment",
                )

                html.Div("Frame", classes="text-subtitle-2")
                with html.Div(classes="d-flex ga-2 align-center my-1"):
                    v.VBtn(
                        "<",
                        click=self.button(self.previous_frame, once=False, while_busy=True),
                        size="small",
                        classes="ice-previous",
                    )
                    v.VTextField(
                        model_value=("ice_frame",),
                        update_modelValue=(self._on_frame_input, "[$event]"),
                        type="number",
                        min=0,
                        max=("ice_frames - 1",),
                        density="compact",
                        hide_details=True,
                        style="max-width: 5.5em",
                        classes="ice-frame-field",
                    )
                    html.Span("of {{ ice_frames - 1 }}", classes="ice-frame text-no-wrap")
                    v.VBtn(
                        ">",
                        click=self.button(self.next_frame, once=False, while_busy=True),
                        size="small",
                        classes="ice-next",
                    )
                v.VSlider(
                    model_value=("ice_frame",),
                    end=(self._on_frame_input, "[$event]"),
                    min=0,
                    max=("ice_frames - 1",),
                    step=1,
                    density="compact",
                    hide_details=True,
                    classes="ice-frame-slider",
                )

            with html.Div(v_if="ice_segmented"):
                html.Div("Edit", classes="text-subtitle-2 mt-2")
                v.VSwitch(
                    v_model=("ice_scribble",),
                    label=("ice_scribble ? 'Scribble: on (drag on the slice view)' : 'Scribble: off'",),
                    disabled=(busy,),
                    density="compact",
                    hide_details=True,
                    color="primary",
                    inset=True,
                    classes="ice-scribble",
                )
                html.Div(SCRIBBLE_HELP, classes="text-caption mb-1 ice-help")
                v.VSwitch(
                    v_model=("ice_strict",),
                    label=(
                        "ice_strict ? 'Strict local: on (nothing changes far from the stroke)' : "
                        "'Strict local: off (the model may change the segment further away)'",
                    ),
                    density="compact",
                    hide_details=True,
                    color="primary",
                    inset=True,
                    classes="ice-strict",
                )
                with html.Div(classes="d-flex ga-2 mb-2"):
                    v.VBtn(
                        "Undo",
                        click=self.button(self.undo, once=False),
                        disabled=("!ice_can_undo || " + busy,),
                        size="small",
                        classes="ice-undo",
                    )
                    v.VBtn(
                        "Redo",
                        click=self.button(self.redo, once=False),
                        disabled=("!ice_can_redo || " + busy,),
                        size="small",
                        classes="ice-redo",
                    )
                html.Div("segment: {{ ice_voxels }} voxels", classes="text-caption ice-voxels")
                self._legend()

                html.Div("Edit history", classes="text-subtitle-2 mt-2")
                with html.Div(style="overflow-x: auto; max-width: 100%;", classes="ice-history-box"):
                    with v.VTable(density="compact", classes="ice-history", style="font-size: 0.75rem;"):
                        with html.Thead():
                            with html.Tr():
                                for head, tip in (
                                    ("#", "change number"),
                                    ("frame", "the frame drawn on (new: a new initial segmentation)"),
                                    ("near", "voxels added / removed near the stroke"),
                                    ("far", "voxels added / removed far from it"),
                                ):
                                    html.Th(head, title=tip, classes="px-1")
                                html.Th(
                                    "D near",
                                    v_if="ice_has_contours",
                                    classes="px-1",
                                    title="editing metric D of this edit near its stroke, p95 mm",
                                )
                                html.Th(
                                    "D far",
                                    v_if="ice_has_contours",
                                    classes="px-1",
                                    title="editing metric D of this edit away from its stroke, p95 mm",
                                )
                                html.Th(
                                    "to CAS",
                                    v_if="ice_has_contours",
                                    classes="px-1",
                                    title="distance from all CAS contours to the segment after this change, p95 mm",
                                )
                                html.Th("state", classes="px-1")
                        with html.Tbody():
                            with html.Tr(v_for="r in ice_history", key="r.index", title=("r.summary",)):
                                html.Td("{{ r.index }}", classes="px-1")
                                html.Td("{{ r.frame }}", classes="px-1")
                                html.Td("{{ r.near }}", classes="px-1")
                                html.Td("{{ r.far }}", classes="px-1")
                                html.Td("{{ r.d_near ?? '' }}", v_if="ice_has_contours", classes="px-1")
                                html.Td("{{ r.d_far ?? '' }}", v_if="ice_has_contours", classes="px-1")
                                html.Td("{{ r.to_cas ?? '' }}", v_if="ice_has_contours", classes="px-1")
                                html.Td("{{ r.state }}", classes="px-1")
                html.Div(
                    "D near / far: the editing metric of each edit, around its own stroke (p95, mm; lower is "
                    "better), so rows with different strokes do not compare. To CAS: the distance from all "
                    "the CAS contours to the segment after the change (p95, mm), comparable from row to row"
                    "{{ ice_initial_to_cas != null ? '; before the first change: ' + ice_initial_to_cas : '' }}.",
                    v_if="ice_has_contours",
                    classes="text-caption ice-history-help",
                )

                html.Div("Save", classes="text-subtitle-2 mt-2")
                v.VTextField(
                    v_model=("ice_save_path",),
                    label="segmentation file (.seg.nrrd)",
                    density="compact",
                    hide_details=True,
                )
                v.VBtn(
                    "Save",
                    click=self.button(self.save, "ice_save_path"),
                    disabled=(busy,),
                    size="small",
                    classes="my-2 ice-save",
                )

    def _legend(self) -> None:
        """What the slice view's colours mean."""
        from trame.widgets import html

        line = "display: inline-block; width: 1.6em; height: 0; vertical-align: middle; margin-right: 0.3em;"
        with html.Div(classes="text-caption ice-legend"):
            with html.Div():
                html.Span(style=f"{line} border-top: 2px solid {_hex(ICEEditingLib.scene.CAS_COLOR)};")
                html.Span("CAS contour of the frame (the clinician's)")
            with html.Div():
                box = (
                    "display: inline-block; width: 1.6em; height: 0.8em; vertical-align: middle; "
                    f"margin-right: 0.3em; opacity: {max(FILL_OPACITY, 0.5)}; "
                )
                html.Span(
                    style=(
                        f"'{box}border: 2px solid ' + ice_segment_color + '; background: ' + ice_segment_color",
                    )
                )
                html.Span("the segment (outline and fill)")
            with html.Div():
                html.Span(style=f"{line} border-top: 3px solid {_hex(STROKE_COLOR)};")
                html.Span("your stroke, until its edit lands")


__all__ = ["SCRIBBLE_HELP", "STROKE_JS", "ICEPage"]
