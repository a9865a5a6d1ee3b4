"""The fetal annotator page: trame widgets bound to a :class:`~.fetal.FetalController`.

Layout (left drawer, views on the right): load an MRI (and mask) by path or the sample case; choose the tissue
and the effect (Paint, Erase, Draw, Scissors; undo / redo); the annotated-tissues checklist (painted voxels per
tissue, a tick per tissue, the validation messages); export to a dataset; run a model or an ensemble with
progress; the 8 segments and the members' disagreement. Every handler goes through :meth:`FetalPage._act`,
which turns an exception into a one-line message in the page (the traceback goes to the server's log).

State names all start with ``fetal_`` so another page can live beside this one.
"""

from __future__ import annotations

import asyncio
import math
import tempfile
from pathlib import Path

from losslab.labelsets import TISSUES

from .fetal import EFFECTS, FetalController
from .page import Page

#: Seconds between two reads of a running parcellation job's events.
POLL_S = 0.5


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
                "fetal_progress": 0.0,
                "fetal_status": "",
                "fetal_results": [],
            }
        )
        s.change("fetal_upload")(self._on_upload)
        s.change("fetal_tissue")(self._on_tissue)
        s.change("fetal_effect")(self._on_effect)

    def _refresh(self) -> None:
        c = self.controller
        self.state.fetal_loaded = c.session is not None
        self.state.fetal_rows = c.checklist()
        self.state.fetal_problems = c.problems()

    # Handlers --------------------------------------------------------------------------------------------

    def load(self, mri=None, mask=None, *, remember: bool = True) -> bool:
        """Load a case (default: the paths in the page's fields); ``remember``: show the paths in the fields."""
        mri = self.state.fetal_mri if mri is None else mri
        mask = self.state.fetal_mask if mask is None else mask
        if self._act("Load", self.controller.load_case, mri, mask) is None:
            return False
        if remember:
            self.state.fetal_mri, self.state.fetal_mask = str(mri), str(mask or "")
        self.state.fetal_effect = ""
        self.state.fetal_results = []
        self._on_tissue(self.state.fetal_tissue)
        self._refresh()
        self.state.fetal_models = self._act("Models", self.controller.models) or []
        if not self.state.fetal_model and self.state.fetal_models:  # the shipped ensemble, ready to run
            self.state.fetal_model = self.state.fetal_models[0]
        self._say(f"Loaded {self.controller.volume_node.GetName()}: paint tissues, tick the annotated ones")
        return True

    def load_sample(self) -> bool:
        if self.sample_loader is None:
            self._say("Sample: no sample case is configured", "error")
            return False
        paths = self._act("Sample", self.sample_loader)
        return paths is not None and self.load(*paths)

    def _on_upload(self, fetal_upload=None, **_):
        """Files chosen in the browser: the MRI, and a mask (the file whose name contains "mask"). They are
        written to a temporary folder, loaded, then deleted (the scene holds the data)."""
        if not fetal_upload:
            return
        files = fetal_upload if isinstance(fetal_upload, list) else [fetal_upload]
        self._act("Upload", self._load_uploaded, files)
        self.state.fetal_upload = None

    def _load_uploaded(self, files: list[dict]) -> None:
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
            if self.load(str(paths[0]), str(paths[1]) if len(paths) > 1 else "", remember=False):
                self.state.fetal_mri = self.state.fetal_mask = ""

    def _on_tissue(self, fetal_tissue=None, **_):
        if self.controller.session is not None and fetal_tissue:
            self._act("Tissue", self.controller.select_tissue, fetal_tissue)

    def _on_effect(self, fetal_effect=None, **_):
        if self.controller.session is not None:
            self._act("Effect", self.controller.set_effect, fetal_effect or "")

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

    def export(self):
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
                {**r, "disagreement": None if math.isnan(r["disagreement"]) else round(r["disagreement"], 3)}
                for r in self.controller.parcellation_rows()
            ]
            self._say(
                "Parcellation done: the 8 segments, the members' disagreement as the overlay", "success"
            )
        return False

    # Layout ----------------------------------------------------------------------------------------------

    def build_drawer(self) -> None:
        """The page's panel (call inside the layout's drawer)."""
        from trame.widgets import html
        from trame.widgets import vuetify3 as v

        with html.Div(classes="pa-2", style="font-size: 0.85rem;"):
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
                v.VBtn("Load", click=self.load, size="small", classes="fetal-load")
                if self.sample_loader is not None:
                    v.VBtn("Sample", click=self.load_sample, size="small", classes="fetal-sample")

            with html.Div(v_if="fetal_loaded"):
                html.Div("Paint", classes="text-subtitle-2")
                v.VSelect(
                    v_model=("fetal_tissue",),
                    items=("fetal_tissues",),
                    label="segment",
                    density="compact",
                    hide_details=True,
                )
                with v.VBtnToggle(v_model=("fetal_effect",), density="compact", classes="my-1"):
                    v.VBtn("{{ e }}", v_for="e in fetal_effects", key="e", value=("e",), size="small")
                with html.Div(classes="d-flex ga-2 mb-2"):
                    v.VBtn("Undo", click=self.undo, size="small")
                    v.VBtn("Redo", click=self.redo, size="small")

                html.Div("Annotated tissues", classes="text-subtitle-2")
                with v.VTable(density="compact", classes="fetal-checklist"):
                    with html.Tbody():
                        with html.Tr(v_for="row in fetal_rows", key="row.tissue"):
                            with html.Td():
                                v.VCheckbox(
                                    model_value=("row.annotated",),
                                    update_modelValue=(self.toggle, "[row.tissue, $event]"),
                                    density="compact",
                                    hide_details=True,
                                )
                            html.Td("{{ row.tissue }}")
                            html.Td("{{ row.voxels }}")
                with html.Ul(classes="fetal-problems text-caption"):
                    html.Li("{{ p }}", v_for="p in fetal_problems", key="p")
                html.Div("Ready to export", v_if="fetal_problems.length === 0", classes="text-caption")

                html.Div("Export to a dataset", classes="text-subtitle-2 mt-2")
                v.VTextField(
                    v_model=("fetal_dataset",), label="dataset folder", density="compact", hide_details=True
                )
                v.VTextField(
                    v_model=("fetal_case_id",), label="case id", density="compact", hide_details=True
                )
                v.VBtn("Export", click=self.export, size="small", classes="my-2 fetal-export")

                html.Div("Parcellation", classes="text-subtitle-2 mt-2")
                v.VCombobox(
                    v_model=("fetal_model",),
                    items=("fetal_models",),
                    label="model (name or folder)",
                    density="compact",
                    hide_details=True,
                )
                with html.Div(classes="d-flex ga-2 my-2"):
                    v.VBtn("Run", click=self.run_model, disabled=("fetal_running",), size="small")
                    v.VBtn("Stop", click=self.stop_model, disabled=("!fetal_running",), size="small")
                v.VProgressLinear(v_if="fetal_running", model_value=("fetal_progress * 100",), height=6)
                html.Div("{{ fetal_status }}", v_if="fetal_running", classes="text-caption")
                with v.VTable(v_if="fetal_results.length", density="compact"):
                    with html.Tbody():
                        with html.Tr(v_for="r in fetal_results", key="r.tissue"):
                            html.Td("{{ r.tissue }}")
                            html.Td("{{ r.voxels }}")
                            html.Td("{{ r.disagreement }}")
