"""The fetal annotator page: trame widgets bound to a :class:`~.fetal.FetalController`.

Layout (left drawer, views on the right): load an MRI (and mask) by path, upload or the sample case; choose
the tissue and the effect (Paint, Erase, Draw, Scissors, with how each works; undo / redo); the
annotated-tissues checklist (the colour as shown, painted voxels per tissue, a tick per tissue, the validation
messages); export to a dataset; run a model or an ensemble with progress; the 8 segments and the members'
disagreement (with its colour scale) or the annotation in the views; the results table; save the result.
Loading another case over the user's work asks first. Every handler turns an exception into a one-line
message in the page (the traceback goes to the server's log).

State names all start with ``fetal_`` so another page can live beside this one.
"""

from __future__ import annotations

import asyncio
import math
import tempfile
from pathlib import Path

from losslab.labelsets import TISSUES

from .fetal import EFFECTS, FetalController, case_id_for
from .page import Page

#: Seconds between two reads of a running parcellation job's events.
POLL_S = 0.5

#: How each effect works on the slice view.
EFFECT_HELP = {
    "": "Choose an effect, then use the axial view; the slider under it moves through the slices.",
    "Paint": "Paint: drag on the axial view to paint the chosen segment with a round brush.",
    "Erase": "Erase: drag on the axial view to erase the chosen segment.",
    "Draw": "Draw: press, drag around the region and release: the inside of the outline is painted.",
    "Scissors": "Scissors: press, drag around the region and release: the chosen segment is cut inside it.",
}


def _swatch(color_expression: str) -> None:
    """A small square of a colour (a JS expression of the state, e.g. ``fetal_colors[row.tissue]``)."""
    from trame.widgets import html

    html.Span(
        style=(
            "'display: inline-block; width: 0.9em; height: 0.9em; margin-right: 0.4em; vertical-align: middle; "
            f"border: 1px solid #555; background: ' + ({color_expression} || '#fff')",
        ),
    )


def _colormap_css(color_node, stops: int = 6) -> str:
    """A CSS linear gradient of a colour node over [0, 1] (the disagreement overlay's legend)."""
    colors = []
    function = getattr(color_node, "GetColorTransferFunction", lambda: None)()
    table = None if function is not None else color_node.GetLookupTable()
    for k in range(stops):
        x = k / (stops - 1)
        if function is not None:
            rgb = function.GetColor(x)
        else:
            n = table.GetNumberOfTableValues()
            rgb = table.GetTableValue(min(n - 1, round(x * (n - 1))))[:3]
        colors.append("rgb(" + ", ".join(str(round(255 * c)) for c in rgb) + ")")
    return "linear-gradient(to right, " + ", ".join(colors) + ")"


class FetalPage(Page):
    """The fetal page on ``server`` (a trame server) and ``slicer_app``; :meth:`build_drawer` puts its panel
    in a drawer. ``sample_loader()`` returns ``(mri, mask)`` paths of the sample case."""

    name = "fetal"
    title = "LossLab: fetal brain annotation"

    def __init__(self, server, slicer_app, *, sample_loader=None, controller: FetalController | None = None):
        from undo_stack import UndoStack

        super().__init__(server, slicer_app, sample_loader=sample_loader)
        self.controller = controller or FetalController(slicer_app)
        editor = slicer_app.segmentation_editor
        if editor.undo_stack is None:
            editor.set_undo_stack(UndoStack(undo_limit=20))
        editor.segmentation_modified.connect(self._on_segmentation_modified)
        self._poll_task = None
        s = self.state
        s.setdefault("fetal_mri", "")
        s.setdefault("fetal_mask", "")
        s.update(
            {
                "fetal_loaded": False,
                "fetal_upload": None,
                "fetal_message": "",
                "fetal_message_type": "info",
                "fetal_rows": [],
                "fetal_problems": [],
                "fetal_tissue": TISSUES[0].abbreviation,
                "fetal_tissues": [t.abbreviation for t in TISSUES] + ["mask"],
                "fetal_effect": "",
                "fetal_effects": list(EFFECTS),
                "fetal_dataset": "",
                "fetal_case_id": "",
                "fetal_exported": "",
                "fetal_models": [],
                "fetal_model": "",
                "fetal_running": False,
                "fetal_results": [],
                "fetal_view": "annotation",
                "fetal_colors": {},
                "fetal_case_token": 0,
                "fetal_case_name": "",
                "fetal_result_path": "",
                "fetal_legend": "",
                "fetal_effect_help": EFFECT_HELP,
            }
        )
        s.change("fetal_upload")(self._on_upload)
        s.change("fetal_tissue")(self._on_tissue)
        s.change("fetal_effect")(self._on_effect)
        s.change("fetal_view")(self._on_view)
        self._auto_case_id = ""

    def _refresh(self) -> None:
        c = self.controller
        self.state.fetal_loaded = c.session is not None
        self.state.fetal_rows = c.checklist()
        self.state.fetal_problems = c.problems()
        self.state.fetal_colors = c.colors()

    # Handlers --------------------------------------------------------------------------------------------

    def load(self, mri=None, mask=None, *, remember: bool = True) -> bool:
        """Load a case (default: the paths in the page's fields), after asking when the current case holds
        the user's work; ``remember``: show the paths in the fields."""
        mri = self.state.fetal_mri if mri is None else mri
        mask = self.state.fetal_mask if mask is None else mask
        return bool(
            self._replace("Load", self.controller.work_summary(), lambda: self._load(mri, mask, remember))
        )

    def _load(self, mri, mask, remember: bool = True, name: str | None = None) -> bool:
        if self._act("Load", self.controller.load_case, mri, mask) is None:
            return False
        if remember:
            self.state.fetal_mri, self.state.fetal_mask = str(mri), str(mask or "")
        self.state.fetal_effect = ""
        self.state.fetal_results = []
        self.state.fetal_view = "annotation"
        self.state.fetal_result_path = ""
        self.state.fetal_case_token = int(self.state.fetal_case_token or 0) + 1
        self.state.fetal_case_name = name or Path(str(mri)).name
        case_id = case_id_for(name or mri)
        if not str(self.state.fetal_case_id or "").strip() or self.state.fetal_case_id == self._auto_case_id:
            self.state.fetal_case_id = self._auto_case_id = case_id  # a case id that follows the case
        self._on_tissue(self.state.fetal_tissue)
        self._refresh()
        self._fit_when_sized()
        self.state.fetal_models = self._act("Models", self.controller.models) or []
        if self.state.fetal_model not in self.state.fetal_models and self.state.fetal_models:
            self.state.fetal_model = self.state.fetal_models[0]  # the shipped ensemble, ready to run
        self._say(
            f"Loaded {self.state.fetal_case_name}: choose a tissue and an effect, paint on the axial view, "
            "tick the tissues you annotated completely"
        )
        return True

    def load_sample(self) -> bool:
        if self.sample_loader is None:
            self._say("Sample: no sample case is configured", "error")
            return False

        def start():
            paths = self._act("Sample", self.sample_loader)
            return paths is not None and self._load(*paths)

        return bool(self._replace("Sample", self.controller.work_summary(), start))

    def fit_views(self) -> None:
        if self.controller.volume_node is not None:
            if self.controller.showing == "parcellation" and self.controller.parcellation is not None:
                self.controller.show_parcellation()
            else:
                self.controller.show(self.controller.volume_node)

    def _on_upload(self, fetal_upload=None, **_):
        """Files chosen in the browser: the MRI, and a mask (the file whose name contains "mask"). They are
        written to a temporary folder, loaded, then deleted (the scene holds the data). Over the user's work,
        the page asks first."""
        if not fetal_upload:
            return
        files = fetal_upload if isinstance(fetal_upload, list) else [fetal_upload]
        self.state.fetal_upload = None
        self._replace(
            "Upload", self.controller.work_summary(), lambda: self._act("Upload", self._load_uploaded, files)
        )

    def _load_uploaded(self, files: list[dict]) -> bool:
        from trame.app.file_upload import ClientFile

        masks = [f for f in files if "mask" in str(f.get("name", "")).lower()]
        images = [f for f in files if f not in masks]
        if len(images) != 1 or len(masks) > 1:
            names = ", ".join(str(f.get("name")) for f in files)
            raise ValueError(f"choose one MRI and at most one mask (a name containing 'mask'), got: {names}")
        with tempfile.TemporaryDirectory(prefix="losslab-upload-") as folder:
            paths = []
            for f in (images[0], *masks):
                upload = ClientFile(f)
                path = Path(folder) / Path(upload.name).name
                path.write_bytes(upload.content)
                paths.append(path)
            loaded = self._load(
                str(paths[0]), str(paths[1]) if len(paths) > 1 else "", remember=False, name=paths[0].name
            )
            if loaded:
                self.state.fetal_mri = self.state.fetal_mask = ""
        return loaded

    def _on_tissue(self, fetal_tissue=None, **_):
        if self.controller.session is not None and fetal_tissue:
            self._act("Tissue", self.controller.select_tissue, fetal_tissue)

    def _on_effect(self, fetal_effect=None, **_):
        if self.controller.session is None:
            return
        if fetal_effect and self.controller.showing != "annotation":  # painting shows what it paints
            self._act("View", self.controller.show_annotation)
            self.state.fetal_view = "annotation"
            self._say("Showing the annotation (what the effects change); switch View to see the parcellation")
        self._act("Effect", self.controller.set_effect, fetal_effect or "")

    def _on_view(self, fetal_view=None, **_):
        """The View toggle: the annotation, or the last parcellation with its disagreement overlay."""
        if self.controller.session is None or fetal_view == self.controller.showing:
            return
        if fetal_view == "parcellation":
            if self._act("View", self.controller.show_parcellation):
                self.state.fetal_effect = ""  # the effects paint the annotation, which is hidden now
        else:
            self._act("View", self.controller.show_annotation)
        self.state.fetal_view = self.controller.showing

    def undo(self):
        stack = self.app.segmentation_editor.undo_stack
        if stack is not None and stack.can_undo():
            stack.undo()
        self._refresh()

    def redo(self):
        stack = self.app.segmentation_editor.undo_stack
        if stack is not None and stack.can_redo():
            stack.redo()
        self._refresh()

    def _on_segmentation_modified(self, *_):
        if self.controller.session is not None:
            self._act("Update", self._refresh)

    def toggle(self, tissue: str, annotated: bool):
        self._act("Checklist", self.controller.set_annotated, tissue, bool(annotated))
        self._refresh()

    def export(self, case_token=None):
        """Export the case (dataset folder and case id from the fields). ``case_token``: the case the browser
        showed when Export was clicked; if another case has been loaded since (a quick Export after Sample),
        nothing is written and the page says so."""
        if case_token is not None and int(case_token) != int(self.state.fetal_case_token or 0):
            self._say(
                f"Export: the case changed to {self.state.fetal_case_name} since you clicked; check the "
                "dataset folder and case id, then export again",
                "warning",
            )
            return None
        result = self._act(
            "Export", self.controller.export, self.state.fetal_dataset, self.state.fetal_case_id
        )
        if result is None:
            return None
        d = result.declaration
        self.state.fetal_exported = str(result.label)
        self._say(
            f"Exported {result.case_id}: label-set map {result.label} (set label {d.set_label} for the "
            "tissues not annotated)"
            if d.set_label is not None
            else f"Exported {result.case_id}: {result.label}",
            "success",
        )
        return result

    def _export_click(self, epoch=None, dataset=None, case_id=None, case_token=None):
        """The Export button: what the browser showed (fields and case) at the click."""
        callback, _ = self.button(lambda: self.export(case_token), "fetal_dataset", "fetal_case_id")
        callback(epoch, dataset, case_id)

    def run_model(self):
        job = self._act("Parcellation", self.controller.start_parcellation, self.state.fetal_model)
        if job is None:
            return None
        self.state.fetal_running, self.state.fetal_progress = True, 0.0
        self.state.fetal_status = "starting..."
        self._say(f"Running {self.state.fetal_model}...")
        try:  # in the server: poll in its event loop; without one (tests, scripts) the caller polls step_job()
            self._poll_task = asyncio.get_running_loop().create_task(self._watch())
        except RuntimeError:
            self._poll_task = None
        return job

    def stop_model(self):
        """Stop: the first press asks the job to stop between members, a second one kills it; the poller
        reports the end."""
        status = self._act("Stop", self.controller.request_stop)
        if status is not None:
            self._say(f"Parcellation: {status}", "warning")

    def save_result(self):
        """Save the last parcellation (the path in the field) as a .seg.nrrd."""
        path = self._act("Save", self.controller.save_parcellation, self.state.fetal_result_path)
        if path is not None:
            self._say(f"Saved the parcellation to {path}", "success")
        return path

    async def _watch(self):
        while True:
            await asyncio.sleep(POLL_S)
            with self.state:
                if not self.step_job():
                    return

    def step_job(self) -> bool:
        """Read the running job once; ``True`` while it runs (the page's poller calls this)."""
        if self.controller.job is None:
            self.state.fetal_running = False
            return False
        job = self._act("Parcellation", self.controller.poll)
        if job is None:
            self.state.fetal_running = False
            return False
        self.state.fetal_progress, self.state.fetal_status = job.progress, job.status
        if not job.finished:
            return True
        self.state.fetal_running = False
        if job.error:
            self._say(f"Parcellation: {job.error}", "error")
        else:
            self.state.fetal_results = [
                {
                    **r,
                    "ml": None if math.isnan(r["ml"]) else round(r["ml"], 2),
                    "disagreement": None if math.isnan(r["disagreement"]) else round(r["disagreement"], 3),
                }
                for r in self.controller.parcellation_rows()
            ]
            self.state.fetal_view = "parcellation"
            self.state.fetal_effect = ""
            result = self.controller.parcellation
            if result.uncertainty_node is not None and result.uncertainty_node.GetDisplayNode() is not None:
                color = result.uncertainty_node.GetDisplayNode().GetColorNode()
                self.state.fetal_legend = "" if color is None else _colormap_css(color)
            self._say(
                "Parcellation done: the 8 tissues in the views, the members' disagreement as the overlay "
                "(View switches to the annotation); the table lists each tissue",
                "success",
            )
        return False

    # Layout ----------------------------------------------------------------------------------------------

    def build_drawer(self) -> None:
        """The page's panel (call inside the layout's drawer)."""
        from trame.widgets import html
        from trame.widgets import vuetify3 as v

        busy = "fetal_busy"
        with html.Div(classes="pa-2", style="font-size: 0.85rem;"):
            self.confirm_dialog()
            self.message_alert()
            html.Div("Case", classes="text-subtitle-2")
            v.VTextField(
                v_model=("fetal_mri",), label="MRI (.nii.gz, .nrrd)", density="compact", hide_details=True
            )
            v.VTextField(
                v_model=("fetal_mask",), label="brain mask (optional)", density="compact", hide_details=True
            )
            v.VFileInput(
                v_model=("fetal_upload",),
                label="or upload the MRI (+ a file named *mask*)",
                multiple=True,
                density="compact",
                hide_details=True,
                classes="fetal-upload",
            )
            with html.Div(classes="d-flex ga-2 my-2"):
                v.VBtn(
                    "Load",
                    click=self.button(self.load, "fetal_mri", "fetal_mask"),
                    disabled=(busy,),
                    size="small",
                    classes="fetal-load",
                )
                if self.sample_loader is not None:
                    v.VBtn(
                        "Sample",
                        click=self.button(self.load_sample),
                        disabled=(busy,),
                        size="small",
                        classes="fetal-sample",
                    )

            with html.Div(v_if="fetal_loaded"):
                html.Div("Paint", classes="text-subtitle-2")
                v.VSelect(
                    v_model=("fetal_tissue",),
                    items=("fetal_tissues",),
                    label="segment",
                    density="compact",
                    hide_details=True,
                    classes="fetal-tissue",
                )
                with v.VBtnToggle(v_model=("fetal_effect",), density="compact", classes="my-1"):
                    v.VBtn("{{ e }}", v_for="e in fetal_effects", key="e", value=("e",), size="small")
                html.Div(
                    "{{ fetal_effect_help[fetal_effect || ''] }}",
                    classes="text-caption mb-1 fetal-effect-help",
                )
                with html.Div(classes="d-flex ga-2 mb-2"):
                    v.VBtn("Undo", click=self.button(self.undo, once=False), size="small")
                    v.VBtn("Redo", click=self.button(self.redo, once=False), size="small")

                html.Div("Annotated tissues", classes="text-subtitle-2")
                html.Div(
                    "Tick a tissue once it is painted completely in the brain: the others count as "
                    "'somewhere in the brain, not known where'.",
                    classes="text-caption",
                )
                with v.VTable(density="compact", classes="fetal-checklist"):
                    with html.Thead():
                        with html.Tr():
                            html.Th("annotated", classes="px-1")
                            html.Th("tissue", classes="px-1")
                            html.Th("painted voxels", classes="px-1")
                    with html.Tbody():
                        with html.Tr(v_for="row in fetal_rows", key="row.tissue", title=("row.name",)):
                            with html.Td(classes="px-1"):
                                v.VCheckbox(
                                    model_value=("row.annotated",),
                                    update_modelValue=(self.toggle, "[row.tissue, $event]"),
                                    density="compact",
                                    hide_details=True,
                                )
                            with html.Td(classes="px-1"):
                                _swatch("fetal_colors[row.tissue]")
                                html.Span("{{ row.tissue }}")
                            html.Td("{{ row.voxels }}", classes="px-1")
                with html.Ul(classes="fetal-problems text-caption"):
                    html.Li("{{ p }}", v_for="p in fetal_problems", key="p")
                html.Div(
                    "Ready to export", v_if="fetal_problems.length === 0", classes="text-caption fetal-ready"
                )

                html.Div("Export to a dataset", classes="text-subtitle-2 mt-2")
                v.VTextField(
                    v_model=("fetal_dataset",), label="dataset folder", density="compact", hide_details=True
                )
                v.VTextField(
                    v_model=("fetal_case_id",), label="case id", density="compact", hide_details=True
                )
                v.VBtn(
                    "Export",
                    click=(
                        self._export_click,
                        "[fetal_epoch, fetal_dataset, fetal_case_id, fetal_case_token]",
                    ),
                    disabled=("fetal_problems.length > 0 || " + busy,),
                    size="small",
                    classes="my-2 fetal-export",
                )

                html.Div("Parcellation", classes="text-subtitle-2 mt-2")
                v.VCombobox(
                    v_model=("fetal_model",),
                    items=("fetal_models",),
                    label="model (name or folder)",
                    density="compact",
                    hide_details=True,
                )
                with html.Div(classes="d-flex ga-2 my-2"):
                    v.VBtn(
                        "Run",
                        click=self.button(self.run_model, "fetal_model"),
                        disabled=("fetal_running",),
                        size="small",
                        classes="fetal-run",
                    )
                    v.VBtn(
                        "Stop",
                        click=self.button(self.stop_model, once=False),
                        disabled=("!fetal_running",),
                        size="small",
                        classes="fetal-stop",
                    )
                v.VProgressLinear(v_if="fetal_running", model_value=("fetal_progress * 100",), height=6)
                html.Div("{{ fetal_status }}", v_if="fetal_running", classes="text-caption fetal-status")
                with html.Div(v_if="fetal_results.length", classes="fetal-results-box"):
                    with html.Div(classes="d-flex align-center ga-2 my-1"):
                        html.Span("View", classes="text-caption")
                        with v.VBtnToggle(
                            v_model=("fetal_view",), density="compact", mandatory=True, classes="fetal-view"
                        ):
                            v.VBtn("annotation", value="annotation", size="small")
                            v.VBtn("parcellation", value="parcellation", size="small")
                    with html.Div(v_if="fetal_legend", classes="text-caption fetal-legend my-1"):
                        html.Div(
                            "Overlay: the members' disagreement (fraction of ensemble members that differ)"
                        )
                        html.Div(
                            style=("'height: 0.7em; border: 1px solid #555; background: ' + fetal_legend",)
                        )
                        with html.Div(classes="d-flex justify-space-between"):
                            html.Span("0: all agree")
                            html.Span("1: all differ")
                    with v.VTable(density="compact", classes="fetal-results"):
                        with html.Thead():
                            with html.Tr():
                                html.Th("tissue", classes="px-1")
                                html.Th("voxels", classes="px-1")
                                html.Th("volume (mL)", classes="px-1")
                                html.Th("disagreement", classes="px-1", title="mean over the tissue's voxels")
                        with html.Tbody():
                            with html.Tr(v_for="r in fetal_results", key="r.tissue", title=("r.name",)):
                                with html.Td(classes="px-1"):
                                    _swatch("fetal_colors[r.tissue]")
                                    html.Span("{{ r.tissue }}")
                                html.Td("{{ r.voxels }}", classes="px-1")
                                html.Td("{{ r.ml ?? '' }}", classes="px-1")
                                html.Td("{{ r.disagreement ?? '' }}", classes="px-1")
                    v.VTextField(
                        v_model=("fetal_result_path",),
                        label="save the parcellation as (.seg.nrrd)",
                        density="compact",
                        hide_details=True,
                        classes="mt-2",
                    )
                    v.VBtn(
                        "Save",
                        click=self.button(self.save_result, "fetal_result_path"),
                        size="small",
                        classes="my-2 fetal-save-result",
                    )
