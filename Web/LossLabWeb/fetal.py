"""The fetal annotator's actions on a trame-slicer ``SlicerApp``, without a server (:class:`FetalController`).

Each action is a call into :mod:`FetalParcellationLib` (session, validation, export, parcellation job) or into
trame-slicer (loading files, views, the segment editor). The page (:mod:`.fetal_page`) binds buttons to these
methods and shows their results; tests drive the same methods on views from ``DirectViewFactory``.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from FetalParcellationLib import (
    AnnotationSession,
    ParcellationLogic,
    available_models,
    export_case,
    save_parcellation,
    segments,
)

#: Suffixes the loader accepts (what Slicer's volume reader reads): a clearer message than VTK's for others.
VOLUME_SUFFIXES = (".nii", ".nii.gz", ".nrrd", ".nhdr", ".mha", ".mhd")


def _check_volume_file(path, role: str) -> Path:
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"the {role} file {path} does not exist")
    if not path.name.lower().endswith(VOLUME_SUFFIXES):
        raise ValueError(
            f"the {role} file {path.name} is not a volume Slicer reads here; expected one of "
            f"{', '.join(VOLUME_SUFFIXES)}"
        )
    return path


#: Elevation of the 3D view's camera above the anterior view (degrees), so that the axial slice is seen.
THREED_ELEVATION_DEG = 50.0

#: The page's effects: name -> trame-slicer effect class.
EFFECTS = {
    "Paint": "SegmentationEffectPaint",
    "Erase": "SegmentationEffectErase",
    "Draw": "SegmentationEffectDraw",
    "Scissors": "SegmentationEffectScissors",
}


def _stem(path: Path) -> str:
    """The file name without its volume suffix (``srr.nii.gz`` -> ``srr``)."""
    name = path.name
    for suffix in sorted(VOLUME_SUFFIXES, key=len, reverse=True):
        if name.lower().endswith(suffix):
            return name[: -len(suffix)] or name
    return name


#: file names that say nothing of the case (the atlas's srr.nii.gz): the case id comes from the folder then
_GENERIC_STEMS = {"srr", "image", "mri", "t2", "t2w", "volume", "img"}


def case_id_for(path) -> str:
    """A case id for an MRI file: its name without suffix, or its folder's name when the file name is
    generic (``GA26_operated/srr.nii.gz`` -> ``GA26_operated``); letters, digits, ``_ . -`` only."""
    path = Path(path)
    stem = _stem(path)
    if stem.lower() in _GENERIC_STEMS and path.parent.name:
        stem = path.parent.name
    text = re.sub(r"[^A-Za-z0-9_.-]+", "_", stem).strip("._-")
    return text or "case01"


@dataclass
class JobState:
    """What the page shows of a running parcellation: fraction done, one status line, finished, error."""

    progress: float = 0.0
    status: str = ""
    finished: bool = False
    error: str = ""


class FetalController:
    """The fetal page's behaviour on ``slicer_app`` (a ``trame_slicer.core.SlicerApp`` with its views).

    Args:
        slicer_app: the application (scene, views, io_manager, segmentation_editor).
        device: torch device of the parcellation (``cpu`` by default: the page's machine may share a GPU).
        work_folder: where parcellation runs write their temporary files (default: the system's).
        python_executable: the Python that runs the background parcellation (default: this one).
    """

    def __init__(self, slicer_app, *, device: str = "cpu", work_folder=None, python_executable=None):
        self.app = slicer_app
        self.session: AnnotationSession | None = None
        self.volume_node = None
        self.parcellation = None  # ParcellationResult of the last run
        self.showing = "annotation"  # what the views show: "annotation" or "parcellation"
        self.saved_parcellation = None  # where it was saved
        self.mri_path = None
        self.job = None
        self._python = python_executable
        self.logic = ParcellationLogic(self.app.scene, device=device, work_folder=work_folder)

    @property
    def scene(self):
        return self.app.scene

    # Loading ---------------------------------------------------------------------------------------------

    def _read_volume(self, path: Path, role: str):
        volumes = self.app.io_manager.load_volumes([str(path)])
        if not volumes or volumes[0] is None or volumes[0].GetImageData() is None:
            raise ValueError(f"could not read the {role} {path.name}: not a readable image volume")
        return volumes[0]

    def _data_nodes(self) -> list:
        """The scene's volumes and segmentations (what a new case replaces)."""
        nodes = []
        for cls in ("vtkMRMLVolumeNode", "vtkMRMLSegmentationNode"):
            collection = self.scene.GetNodesByClass(cls)
            nodes += [collection.GetItemAsObject(i) for i in range(collection.GetNumberOfItems())]
        return nodes

    def load_case(self, mri, mask=None) -> AnnotationSession:
        """Load an MRI (and optionally a brain mask: voxels > 0), start an annotation session on it, point
        the segment editor at it (segments may overlap: the mask covers every tissue) and show it."""
        mri = _check_volume_file(mri, "MRI")
        mask = None if mask in (None, "") else _check_volume_file(mask, "brain mask")
        previous = self._data_nodes()
        volume = mask_node = session = None
        try:  # a file that fails to load leaves the current case as it was
            volume = self._read_volume(mri, "MRI")
            volume.SetName(self.scene.GenerateUniqueName(_stem(mri)))
            if volume.IsA("vtkMRMLLabelMapVolumeNode"):
                raise ValueError(f"{mri.name} is a label map; load the MRI (a scalar volume)")
            if mask is not None:
                mask_node = self._read_volume(mask, "brain mask")
            session = AnnotationSession.create(self.scene, volume)
            if mask_node is not None:
                session.set_brain_mask(mask_node)
        except BaseException:
            for node in (volume, None if session is None else session.segmentation_node):
                if node is not None:
                    self.scene.RemoveNode(node)
            raise
        finally:
            if mask_node is not None:  # its voxels are in the session's mask segment now
                self.scene.RemoveNode(mask_node)
        self.stop_job()
        self.app.segmentation_editor.deactivate_effect()
        for node in previous:
            self.scene.RemoveNode(node)
        volume.SetName(_stem(mri))  # the previous case is gone: "srr", not "srr_7" after 7 loads
        session.segmentation_node.SetName(f"{_stem(mri)} annotation")
        self.parcellation = None
        self.saved_parcellation = None
        self.mri_path = mri
        self.volume_node, self.session = volume, session
        editor = self.app.segmentation_editor
        editor.set_active_segmentation(session.segmentation_node, volume)
        session.prepare_segment_editor(editor.editor_node)
        display = session.segmentation_node.GetDisplayNode()
        display.SetSegmentOpacity2DFill(session.mask_segment_id, 0.0)  # the mask as an outline: MRI visible
        segments.use_contrast_colors(session.segmentation_node)  # WM in a colour that shows on the MRI
        self.show(volume)
        return session

    def colors(self) -> dict[str, str]:
        """``{tissue: "#rrggbb"}`` as the views show the tissues (the checklist's swatches)."""
        if self.session is None:
            return {}
        shown = segments.displayed_colors(self.session.segmentation_node)
        return {k: "#" + "".join(f"{round(255 * c):02x}" for c in rgb) for k, rgb in shown.items()}

    def work_summary(self) -> str | None:
        """The user's work that loading another case would replace (``None``: nothing)."""
        if self.session is None:
            return None
        parts = [self.session.work_summary()]
        if self.parcellation is not None and self.saved_parcellation is None:
            parts.append("an unsaved parcellation")
        parts = [p for p in parts if p]
        return "; ".join(parts) or None

    def show(self, volume, foreground=None) -> None:
        """``volume`` in every slice view's background (``foreground`` over it); views reset. Volume
        rendering stays off (about a second a frame on a CPU renderer)."""
        display = self.app.display_manager
        display.show_volume_in_slice_background(volume)
        display.show_volume_in_slice_foreground(foreground)
        for view in self.app.view_manager.get_slice_views():
            view.set_foreground_opacity(0.5 if foreground is not None else 0.0)
            view.set_visible_in_3d(True)  # the slice in the 3D view
        display.reset_views()
        for view in self.app.view_manager.get_threed_views():  # look at the axial slice from above the front
            camera = view.get_camera_node()
            if camera is not None:
                camera.RotateTo(camera.Anterior)
                camera.GetCamera().Elevation(THREED_ELEVATION_DEG)
                camera.GetCamera().OrthogonalizeViewUp()
                view.reset_camera()

    def _need_session(self) -> AnnotationSession:
        if self.session is None:
            raise ValueError("load an MRI first (Load case, or the sample)")
        return self.session

    # Painting --------------------------------------------------------------------------------------------

    def select_tissue(self, key: str | int) -> str:
        """Make a tissue (abbreviation, name or label) or ``"mask"`` the segment the editor paints."""
        session = self._need_session()
        sid = session.mask_segment_id if key == "mask" else session.segment_id(key)
        self.app.segmentation_editor.set_active_segment_id(sid)
        return sid

    def set_effect(self, name: str) -> None:
        """Activate a segment editor effect: ``Paint``, ``Erase``, ``Draw``, ``Scissors`` (``""``: none)."""
        from trame_slicer import segmentation as effects

        self._need_session()
        editor = self.app.segmentation_editor
        if not name:
            editor.deactivate_effect()
            return
        if name not in EFFECTS:
            raise ValueError(f"unknown segment editor effect {name!r}; expected one of {', '.join(EFFECTS)}")
        editor.set_active_effect_type(getattr(effects, EFFECTS[name]))

    # Checklist and export --------------------------------------------------------------------------------

    def checklist(self) -> list[dict]:
        """One row per tissue: abbreviation, name, painted voxels, declared annotated."""
        if self.session is None:
            return []
        return [
            {"tissue": abbr, "name": name, "voxels": int(voxels), "annotated": declared == "yes"}
            for abbr, name, voxels, declared in self.session.summary_rows()
        ]

    def set_annotated(self, tissue: str, annotated: bool) -> None:
        self._need_session().set_annotated(tissue, bool(annotated))

    def problems(self) -> list[str]:
        """The session's validation messages (empty: ready to export)."""
        return [] if self.session is None else self._need_session().problems()

    def export(self, dataset_folder, case_id: str, overwrite: bool = False):
        """Export the session as a case of ``dataset_folder`` (``FetalParcellationLib.export_case``; refuses
        a session with problems, naming them)."""
        session = self._need_session()
        if not str(dataset_folder).strip():
            raise ValueError("give the dataset folder to export to")
        if not case_id.strip():
            raise ValueError("give the case id (letters, digits, _ . -)")
        return export_case(session, Path(dataset_folder).expanduser(), case_id.strip(), overwrite=overwrite)

    # Parcellation ----------------------------------------------------------------------------------------

    @staticmethod
    def models() -> list[str]:
        """The registered fetal models (``losslab models list``; ``LOSSLAB_MODELS_DIR`` adds a folder)."""
        return available_models(os.environ.get("LOSSLAB_MODELS_DIR") or None)

    def start_parcellation(self, model: str):
        """Start the model / ensemble in a background process, masked by the session's brain mask when it
        is painted. Poll with :meth:`poll`."""
        session = self._need_session()
        if not str(model).strip():
            raise ValueError("choose a model (a registered name or a model folder)")
        if self.job is not None and not self.job.finished:
            raise ValueError("a parcellation is already running: wait, or stop it")
        has_mask = session.voxel_counts()["mask"] > 0
        self.job = self.logic.start(
            model.strip(),
            self.volume_node,
            mask=session.segmentation_node if has_mask else None,
            mask_segment_id=session.mask_segment_id if has_mask else None,
            python_executable=self._python,
        )
        return self.job

    def poll(self) -> JobState:
        """Read the job's new events; when it has finished, load its segments and disagreement and show
        them. The error, if any, is one line."""
        job = self.job
        if job is None:
            return JobState()
        job.poll()
        state = JobState(progress=float(job.progress), status=job.status(), finished=job.finished)
        if job.finished:
            self.job = None
            try:
                self.parcellation = self.logic.load_job(job)
            except RuntimeError as exc:
                state.error = str(exc)
                return state
            self.show_parcellation()
        return state

    def request_stop(self) -> str:
        """The page's Stop button (never blocks): ask the running job to stop; a second call kills it."""
        if self.job is None or self.job.finished:
            raise ValueError("no parcellation is running")
        return self.job.stop_or_kill()

    def stop_job(self) -> None:
        if self.job is not None and not self.job.finished:
            self.job.stop(timeout=10.0)
        self.job = None

    def show_parcellation(self) -> bool:
        """The 8 tissue segments of the last run in the views, its disagreement as the foreground (the
        annotation hidden)."""
        if self.parcellation is None:
            raise ValueError("no parcellation yet: Run a model first")
        node = self.parcellation.segmentation_node
        if self.session is not None:
            self.session.segmentation_node.GetDisplayNode().SetVisibility(False)
        segments.use_contrast_colors(node)
        node.GetDisplayNode().SetVisibility(True)
        self.show(self.volume_node, self.parcellation.uncertainty_node)
        self.showing = "parcellation"
        return True

    def show_annotation(self) -> bool:
        """The annotation in the views (what painting changes), the parcellation and its overlay hidden."""
        self._need_session()
        if self.parcellation is not None:
            self.parcellation.segmentation_node.GetDisplayNode().SetVisibility(False)
        self.session.segmentation_node.GetDisplayNode().SetVisibility(True)
        display = self.app.display_manager
        display.show_volume_in_slice_foreground(None)
        for view in self.app.view_manager.get_slice_views():
            view.set_foreground_opacity(0.0)
            view.schedule_render()
        self.showing = "annotation"
        return True

    def save_parcellation(self, path) -> Path:
        """Write the last parcellation (:func:`FetalParcellationLib.save_parcellation`: a ``.seg.nrrd`` with
        the 8 named tissues, atomic)."""
        if self.parcellation is None:
            raise ValueError("no parcellation to save: Run a model first")
        if not str(path or "").strip():
            raise ValueError("give the file to save the parcellation to (a .seg.nrrd)")
        written = save_parcellation(self.parcellation, str(path).strip())
        self.saved_parcellation = written
        return written

    def parcellation_rows(self) -> list[dict]:
        """Voxels per tissue of the last run and the mean disagreement inside the brain."""
        from losslab.labelsets import TISSUES

        if self.parcellation is None:
            return []
        labels, unc = self.parcellation.labels, self.parcellation.uncertainty
        grid = self.parcellation.grid
        voxel_ml = float(np.prod(grid.spacing_ijk)) / 1000.0 if grid is not None else float("nan")
        rows = []
        for t in TISSUES:
            inside = labels == t.label
            mean = float(unc[inside].mean()) if unc is not None and inside.any() else float("nan")
            n = int(inside.sum())
            rows.append(
                {
                    "tissue": t.abbreviation,
                    "name": t.name,
                    "voxels": n,
                    "ml": n * voxel_ml,
                    "disagreement": mean,
                }
            )
        return rows
