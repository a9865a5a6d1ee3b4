"""Fetal parcellation of the current MRI with a registered model / ensemble (or a checkpoint) into 8 segments.

The computation is :func:`losslab.labelsets.segment.segment`: the MRI (masked and cropped to the brain mask
when one is given) is resampled onto the model's grid (from its model card), each ensemble member predicts, the
mean probabilities come back to the MRI's own voxels, and the members' disagreement (the fraction of members
whose label differs from the ensemble's) is the uncertainty. This layer writes the MRI (and mask) of the scene
to NIfTI files in a work folder, runs ``segment()`` -- in this process (:meth:`ParcellationLogic.run`, fine for
one small model) or in a background process (:meth:`ParcellationLogic.start`, a
:class:`LossLabLib.jobs.SubprocessJob` with progress per member and a Stop) -- and loads the results:

- a segmentation node with the 8 tissue segments, named, coloured, tagged and with terminology
  (:mod:`.segments`), on the MRI's grid (every tissue gets a segment, empty ones too);
- a scalar volume "disagreement" in [0, 1] with a continuous colour map (window 0..1, 0 transparent when
  shown as a foreground layer with a threshold).

Example (Slicer's Python console)::

    from FetalParcellationLib import ParcellationLogic
    logic = ParcellationLogic(slicer.mrmlScene)
    job = logic.start("fetal-leafdice-1.6mm", slicer.util.getNode("srr"), python_executable=shutil.which("PythonSlicer"))
    ...  # poll with a QTimer: job.poll(); job.progress; when job.finished:
    result = logic.load_job(job)
"""

from __future__ import annotations

import os
import shutil
import sys
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from losslab import io as _io
from losslab.labelsets import TISSUES
from LossLabLib import mrml_io
from LossLabLib.jobs import SubprocessJob, core_folder
from LossLabLib.mrml_io import Grid

from . import segments as seg
from .dataset import grid_to_geometry

__all__ = [
    "ParcellationJob",
    "ParcellationLogic",
    "ParcellationResult",
    "available_models",
    "check_mask_rule",
    "is_fetal_model",
    "save_parcellation",
]

ProgressCallback = Callable[[float, str], None]
WORKER = Path(__file__).resolve().with_name("segment_worker.py")


def is_fetal_model(card) -> bool:
    """Whether a registered model (its :class:`losslab.models.ModelCard`) parcellates the fetal brain: its
    labels are background and the 8 tissues (or, on a card without labels, its name starts ``fetal``)."""
    from losslab.labelsets import LABEL_NAMES

    if card.labels:
        return list(card.labels) == list(LABEL_NAMES)
    return card.name.startswith("fetal")


#: what a user of the module or the web page does to give a brain mask (the refusal names it)
MASK_HOW = (
    "paint the 'brain mask' segment of the annotation, or choose / load a brain mask (a segmentation or a "
    "labelmap) with the MRI"
)


def check_mask_rule(model: str | os.PathLike, mask) -> None:
    """Refuse, before any work, to run a model whose card requires a brain mask
    (``"input": {"mask": "required"}``, such as a model trained without the brain-mask augmentation) without
    one: by its registered name or by its folder's path alike.

    Raises:
        losslab.models.MaskRequiredError (a ``ValueError``): one line naming the model and :data:`MASK_HOW`.
    """
    from losslab import models

    models.require_mask(models.find_card(str(model).strip()), mask is not None, how=MASK_HOW)


def available_models(root: str | os.PathLike | None = None) -> list[str]:
    """Names of the registered fetal models (:mod:`losslab.models`, :func:`is_fetal_model`), for the model
    menu (ICE models and other tasks are left out)."""
    from losslab import models

    return [card.name for card in models.list_models(root) if is_fetal_model(card)]


def save_parcellation(result: ParcellationResult, path: str | os.PathLike) -> Path:
    """Write a parcellation's 8 tissues as a ``.seg.nrrd`` (segments named WM, Vent, ...; label values in the
    file's order, so ``losslab`` and the engine read it back with the right labels) on the MRI's grid, or a
    label map as ``.nii.gz`` / ``.nrrd``. Atomic and read back (:func:`losslab.io.write_image`); returns the
    path.

    Raises:
        ValueError: a path that is not a segmentation or image file (the suffixes are named).
    """
    from losslab.labelsets.tissues import segment_names

    path = Path(path).expanduser()
    if not path.name.lower().endswith((".seg.nrrd", ".nii.gz", ".nii", ".nrrd")):
        raise ValueError(
            f"save the parcellation as .seg.nrrd (or a label map .nii.gz / .nrrd), not {path.name}"
        )
    if not path.parent.is_dir():
        raise FileNotFoundError(f"the folder {path.parent} does not exist")
    grid = result.grid if result.grid is not None else Grid.from_segmentation(result.segmentation_node)
    labels = np.asarray(result.labels).astype(np.uint8)
    return _io.write_image(path, labels, grid_to_geometry(grid), labels=segment_names())


@dataclass
class ParcellationResult:
    """The loaded outputs: the segmentation node, the disagreement volume node (``None`` without one), the
    label map ``(k, j, i)``, the disagreement array, ``segment()``'s summary (members, model grid...) and the
    MRI's grid the labels lie on."""

    segmentation_node: object
    uncertainty_node: object | None
    labels: np.ndarray
    uncertainty: np.ndarray | None
    info: dict[str, Any]
    grid: Grid | None = None


@dataclass
class _Inputs:
    folder: Path
    image: Path
    mask: Path | None
    output: Path
    uncertainty: Path
    grid: Grid
    volume_node: object


class ParcellationJob(SubprocessJob):
    """``segment_worker.py`` in a background process (see :mod:`.segment_worker`); the inputs are written
    before it starts, :meth:`ParcellationLogic.load_job` loads its outputs once :attr:`finished`."""

    def __init__(self, inputs: _Inputs, model: str, *, spacing=None, device="auto", python_executable=None):
        self.inputs = inputs
        self.model = str(model)
        args = [str(python_executable or sys.executable), str(WORKER), str(model), str(inputs.image)]
        args += [str(inputs.output), "--uncertainty", str(inputs.uncertainty), "--device", str(device)]
        if inputs.mask is not None:
            args += ["--mask", str(inputs.mask)]
        if spacing:
            args += ["--spacing", *(str(float(s)) for s in spacing)]
        stop = inputs.folder / "STOP"
        super().__init__(
            args + ["--stop-file", str(stop)], cwd=inputs.folder, pythonpath=[core_folder()], stop_path=stop
        )

    @property
    def stopped(self) -> bool:
        return any(e.get("event") == "stopped" for e in self.events) or super().stopped


class ParcellationLogic:
    """Segment volume nodes of ``scene`` into the 8 fetal tissues.

    Args:
        scene: the vtkMRMLScene; outputs are added to it.
        progress: optional ``progress(fraction, message)`` callback (in-process runs).
        device: ``auto`` | ``cpu`` | ``cuda`` | ``cuda:N`` | ``mps``.
        work_folder: where each run's folder of input / output files goes (default: the system's temporary
            folder). A run's folder is deleted once its outputs are loaded (or the job failed or stopped),
            unless ``keep_files``.
    """

    def __init__(
        self,
        scene,
        progress: ProgressCallback | None = None,
        device: str = "auto",
        work_folder=None,
        keep_files: bool = False,
    ):
        if scene is None:
            raise ValueError("ParcellationLogic needs the MRML scene (e.g. slicer.mrmlScene)")
        self.scene = scene
        self.progress = progress
        self.device = device
        self.work_folder = None if work_folder is None else Path(work_folder)
        self.keep_files = bool(keep_files)

    def _report(self, fraction: float, message: str) -> None:
        if self.progress is not None:
            self.progress(float(fraction), message)

    # Inputs ----------------------------------------------------------------------------------------------

    def prepare(self, volume_node, mask=None, mask_segment_id: str | None = None) -> _Inputs:
        """Write the MRI (world geometry) and the brain mask (a segment, or a labelmap volume; resampled onto
        the MRI's grid when needed) to NIfTI files in a new work folder."""
        if (
            volume_node is None
            or not volume_node.IsA("vtkMRMLScalarVolumeNode")
            or volume_node.IsA("vtkMRMLLabelMapVolumeNode")
        ):
            raise ValueError(
                f"choose the MRI to segment (a scalar volume), got "
                f"{'None' if volume_node is None else volume_node.GetClassName()}"
            )
        grid = Grid.from_volume(volume_node)
        base = self.work_folder or Path(tempfile.gettempdir())
        base.mkdir(parents=True, exist_ok=True)
        folder = Path(tempfile.mkdtemp(prefix="fetal-parcellation-", dir=base))
        geometry = grid_to_geometry(grid)
        image = _io.write_image(
            folder / "image.nii.gz", mrml_io.volume_array(volume_node).astype(np.float32), geometry
        )
        mask_path = None
        if mask is not None:
            brain = mrml_io.node_mask(mask, grid, mask_segment_id, allow_resample=True, role="brain mask")
            if not brain.any():
                raise ValueError("the brain mask is empty: paint it, or segment without a mask")
            mask_path = _io.write_image(folder / "mask.nii.gz", brain.astype(np.uint8), geometry)
        return _Inputs(
            folder,
            image,
            mask_path,
            folder / "labels.nii.gz",
            folder / "disagreement.nii.gz",
            grid,
            volume_node,
        )

    # Running -----------------------------------------------------------------------------------------------

    def run(
        self,
        model: str | os.PathLike,
        volume_node,
        *,
        mask=None,
        mask_segment_id: str | None = None,
        spacing=None,
        output_segmentation=None,
        output_uncertainty=None,
    ) -> ParcellationResult:
        """Segment in this process (blocks; for one small model) and load the outputs.

        Args:
            model: a registered model name, a folder with a model card, or a checkpoint / ensemble folder
                (then ``spacing``, the grid it was trained at, in mm).
            volume_node: the MRI (never modified).
            mask, mask_segment_id: brain mask (segmentation + segment ID, or a labelmap volume); optional,
                unless the model's card requires one (``"input": {"mask": "required"}``).
            output_segmentation, output_uncertainty: nodes to overwrite; new ones otherwise.

        Raises:
            losslab.models.MaskRequiredError: no ``mask`` for a model whose card requires one (checked first:
                nothing written, no segmentation node added).
        """
        from losslab.labelsets.segment import segment

        check_mask_rule(model, mask)
        self._report(0.0, "Writing the inputs")
        inputs = self.prepare(volume_node, mask, mask_segment_id)
        self._report(0.1, f"Segmenting with {model}")
        try:
            info = segment(
                model,
                inputs.image,
                inputs.output,
                mask=inputs.mask,
                uncertainty=inputs.uncertainty,
                spacing=spacing,
                device=self.device,
                progress=False,
            )
        except BaseException:
            self._discard(inputs)
            raise
        info["model"] = str(model)
        self._report(0.9, "Loading the segments")
        result = self.load(inputs, info, output_segmentation, output_uncertainty)
        self._report(1.0, "Done")
        return result

    def start(
        self,
        model: str | os.PathLike,
        volume_node,
        *,
        mask=None,
        mask_segment_id: str | None = None,
        spacing=None,
        python_executable=None,
    ) -> ParcellationJob:
        """Start the segmentation in a background process (``python_executable``: ``PythonSlicer`` in
        Slicer); poll the returned job, then :meth:`load_job`.

        Raises:
            losslab.models.MaskRequiredError: no ``mask`` for a model whose card requires one (nothing
                written, no process started).
        """
        check_mask_rule(model, mask)
        inputs = self.prepare(volume_node, mask, mask_segment_id)
        job = ParcellationJob(
            inputs, str(model), spacing=spacing, device=self.device, python_executable=python_executable
        )
        return job.start()

    def load_job(self, job: ParcellationJob, output_segmentation=None, output_uncertainty=None):
        """The outputs of a finished job.

        Raises:
            RuntimeError: the job has not finished, failed (its error message) or was stopped.
        """
        if not job.finished:
            raise RuntimeError("the parcellation job has not finished yet")
        if job.error or job.stopped or job.result is None:
            self._discard(job.inputs)
            if job.error:
                raise RuntimeError(f"the parcellation failed: {job.error.get('message')}")
            raise RuntimeError("the parcellation was stopped before it finished: nothing to load")
        info = {k: v for k, v in job.result.items() if k != "event"}
        info["model"] = job.model
        return self.load(job.inputs, info, output_segmentation, output_uncertainty)

    # Outputs ---------------------------------------------------------------------------------------------

    def _discard(self, inputs: _Inputs) -> None:
        if not self.keep_files:
            shutil.rmtree(inputs.folder, ignore_errors=True)

    def load(
        self, inputs: _Inputs, info, output_segmentation=None, output_uncertainty=None
    ) -> ParcellationResult:
        """Read a run's output files into nodes (then delete the run's folder unless ``keep_files``)."""
        try:
            return self._load(inputs, info, output_segmentation, output_uncertainty)
        finally:
            self._discard(inputs)

    def _load(self, inputs: _Inputs, info, output_segmentation, output_uncertainty) -> ParcellationResult:
        labels_image = _io.read_image(inputs.output)
        labels = labels_image.array.astype(np.uint8)
        if labels.shape != inputs.grid.shape:
            raise ValueError(f"the labels have shape {labels.shape}, the MRI {inputs.grid.shape}")
        node = self.write_segmentation(labels, inputs.grid, inputs.volume_node, output_segmentation)
        uncertainty = unc_node = None
        if inputs.uncertainty.is_file():
            uncertainty = _io.read_image(inputs.uncertainty).array.astype(np.float32)
            unc_node = self.write_uncertainty(
                uncertainty, inputs.grid, inputs.volume_node, output_uncertainty
            )
        node.SetAttribute("FetalParcellation.Model", str(info.get("model", "")))
        return ParcellationResult(node, unc_node, labels, uncertainty, dict(info), inputs.grid)

    def write_segmentation(self, labels: np.ndarray, grid: Grid, volume_node=None, node=None):
        """A segmentation node with one segment per tissue (``labels == tissue.label``), styled as in
        :mod:`.segments`; an existing ``node`` has its segments replaced."""
        scene = self.scene
        if node is None:
            name = f"{volume_node.GetName()} parcellation" if volume_node is not None else "parcellation"
            node = scene.AddNewNodeByClass("vtkMRMLSegmentationNode", scene.GenerateUniqueName(name))
        if node.GetDisplayNode() is None:
            node.CreateDefaultDisplayNodes()
        if volume_node is not None:
            node.SetReferenceImageGeometryParameterFromVolumeNode(volume_node)
        was_modifying = node.StartModify()
        try:
            node.GetSegmentation().RemoveAllSegments()
            for t in TISSUES:
                sid = node.GetSegmentation().AddEmptySegment(t.abbreviation, t.abbreviation, t.color_float)
                mrml_io.set_segment_from_mask(node, sid, labels == t.label, grid)
                seg.style_tissue_segment(node.GetSegmentation().GetSegment(sid), t)
        finally:
            node.EndModify(was_modifying)
        return node

    def write_uncertainty(self, uncertainty: np.ndarray, grid: Grid, volume_node=None, node=None):
        """The members' disagreement as a scalar volume with a continuous colour map, window [0, 1]."""
        name = f"{volume_node.GetName()} disagreement" if volume_node is not None else "disagreement"
        node = mrml_io.array_to_volume(self.scene, uncertainty.astype(np.float32), grid, node=node, name=name)
        display = node.GetDisplayNode()
        was_modifying = display.StartModify()
        display.SetAndObserveColorNodeID(mrml_io.continuous_color_node(self.scene).GetID())
        display.AutoWindowLevelOff()
        display.SetWindowLevelMinMax(0.0, 1.0)
        display.AutoThresholdOff()
        display.SetLowerThreshold(1e-6)
        display.SetUpperThreshold(1.0)
        display.ApplyThresholdOn()
        display.EndModify(was_modifying)
        node.SetAttribute(
            "FetalParcellation.Meaning", "fraction of ensemble members disagreeing with the ensemble"
        )
        return node
