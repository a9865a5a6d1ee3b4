"""An ICE case in an MRML scene: the sparse volume, its data mask, the CAS contours, the frames, y_init.

Qt-free (MRML, VTK, numpy and :mod:`losslab.ice`): runs in desktop Slicer and on ``slicer-core``.

Geometry (docs/ice.md): arrays are ``(k, j, i)``; a frame's **pose** maps its pixel ``(u, v, 0, 1)`` to RAS
mm, with ``u`` the column (along the catheter), ``v`` the row (depth) and the apex (transducer) at pixel
``((cols - 1) / 2, 0)``. So a frame is a volume of one slice whose IJK-to-RAS matrix *is* its pose
(spacing ``(pixel, pixel, 1)`` mm), and a slice view shows frame ``k`` in its own plane when its
SliceToRAS is :func:`frame_slice_to_ras` (x along ``u``, y towards the apex so the fan opens downwards as
on an ICE screen, centred on the fan).
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import vtk
from vtk.util import numpy_support

from losslab import ice
from LossLabLib import mrml_io
from LossLabLib.mrml_io import Grid

__all__ = [
    "DEFAULT_EDITING_MODEL",
    "DEFAULT_SEGMENTATION_MODEL",
    "FRAME_ATTRIBUTE",
    "ICESceneCase",
    "MODEL_KINDS",
    "align_slice_node",
    "available_models",
    "check_model",
    "frame_of_node",
    "frame_of_stroke",
    "frame_points_ras",
    "frame_slice_to_ras",
    "initial_from_mask",
    "initial_from_segmentation",
    "initial_segmentation",
    "load_case",
    "model_grid_note",
    "model_installed",
    "model_kind",
    "predict_initial",
]

#: the shipped models (``losslab models list``): 64^3 x 2.2048 mm, the paper's field of view
DEFAULT_SEGMENTATION_MODEL = "ice-segmentation-64"
DEFAULT_EDITING_MODEL = "ice-editing-64"
#: node attribute holding the frame index of a CAS curve or a frame volume
FRAME_ATTRIBUTE = "ICEEditing.Frame"
CAS_SEGMENT_ID = "CAS contours"
CAS_COLOR = (1.0, 0.85, 0.1)
ProgressCallback = Callable[[float, str], None]


@dataclass
class ICESceneCase:
    """The nodes of an ICE case in a scene (see :func:`load_case`).

    Attributes:
        case: the :class:`losslab.ice.ICECase` (arrays, frames, poses).
        grid: the voxel grid of ``volume_node`` in world RAS.
        volume_node: the sparse volume ``x``; ``datamask_node``: labelmap, 1 where a frame hit.
        cas_segmentation: a segmentation with one segment ``"CAS contours"`` (all frames' contour voxels),
            or ``None``; ``cas_curves[k]``: the markups curves of frame ``k`` (one per polyline).
        frame_volumes: one single-slice volume per frame, placed by its pose (empty list when not made).
        folder: the case folder it was read from, if any.
    """

    case: ice.ICECase
    grid: Grid
    volume_node: object
    datamask_node: object
    cas_segmentation: object | None = None
    cas_curves: list[list] = field(default_factory=list)
    frame_volumes: list = field(default_factory=list)
    folder: Path | None = None

    @property
    def n_frames(self) -> int:
        return len(self.case.frames)

    @property
    def cas_mask(self) -> np.ndarray:
        """Boolean ``(k, j, i)`` mask of every frame's CAS contour voxels (``y_cas`` of the metric D)."""
        return self.case.cas_mask()

    def frames_with_contours(self) -> list[int]:
        return [f.index for f in self.case.frames if any(len(c) >= 2 for c in f.contours)]


def _vtk_matrix(array: np.ndarray) -> vtk.vtkMatrix4x4:
    matrix = vtk.vtkMatrix4x4()
    for r in range(4):
        for c in range(4):
            matrix.SetElement(r, c, float(array[r, c]))
    return matrix


def _check_grid_matches(grid: Grid, case: ice.ICECase) -> None:
    expected = case.grid.index_to_ras()
    # Grid.ijk_to_ras takes (i, j, k); losslab.ice's index_to_ras takes (k, j, i)
    reverse = np.zeros((4, 4))
    reverse[0, 2] = reverse[1, 1] = reverse[2, 0] = reverse[3, 3] = 1.0
    if grid.shape != case.grid.shape or not np.allclose(grid.ijk_to_ras @ reverse, expected, atol=1e-4):
        raise ValueError(
            f"the volume's grid ({grid.describe()}) is not the case's grid (shape {case.grid.shape}, "
            f"index->RAS\n{np.round(expected, 4)}); load the case's own image"
        )


def _add_volume(scene, array: np.ndarray, ijk_to_ras: np.ndarray, name: str, labelmap: bool = False):
    node = mrml_io.array_to_volume(scene, array, Grid(array.shape, ijk_to_ras), name=name, labelmap=labelmap)
    return node


def frame_points_ras(case: ice.ICECase, frame: int, uv: np.ndarray) -> np.ndarray:
    """Frame pixels ``(N, 2)`` ``(u, v)`` -> ``(N, 3)`` RAS mm at frame ``frame``'s (nominal) pose."""
    pose = np.asarray(case.frames[frame].pose, float)
    uv = np.asarray(uv, float).reshape(-1, 2)
    return uv @ pose[:3, :2].T + pose[:3, 3]


def frame_slice_to_ras(case: ice.ICECase, frame: int) -> np.ndarray:
    """4x4 SliceToRAS that shows frame ``frame`` in its own plane in a slice view.

    Columns: x = the frame's ``u`` direction, y = towards the apex (``-v``: the fan opens downwards, as on an
    ICE screen), z = x cross y (a right-handed rotation), origin = the centre of the fan.

    Raises:
        IndexError: no such frame.
    """
    if not 0 <= int(frame) < len(case.frames):
        raise IndexError(f"frame {frame} does not exist: the case has frames 0..{len(case.frames) - 1}")
    pose = np.asarray(case.frames[int(frame)].pose, float)
    e_u = pose[:3, 0] / np.linalg.norm(pose[:3, 0])
    e_v = pose[:3, 1] / np.linalg.norm(pose[:3, 1])
    y = -e_v
    z = np.cross(e_u, y)
    centre_uv = np.array([[case.sector.apex_pixel[0], (case.sector.rows - 1) / 2.0]])
    out = np.eye(4)
    out[:3, 0], out[:3, 1], out[:3, 2] = e_u, y, z / np.linalg.norm(z)
    out[:3, 3] = frame_points_ras(case, frame, centre_uv)[0]
    return out


def align_slice_node(slice_node, scene_case: ICESceneCase, frame: int, composite_node=None) -> np.ndarray:
    """Show frame ``frame`` in a slice view: its SliceToRAS becomes :func:`frame_slice_to_ras`, its field
    of view the fan's (keeping the view's aspect ratio), the frame's CAS curves are shown (the others'
    hidden), and, given the view's composite node, the frame's volume (or the sparse volume) becomes the
    background. Returns the SliceToRAS matrix."""
    matrix = frame_slice_to_ras(scene_case.case, frame)
    slice_node.GetSliceToRAS().DeepCopy(_vtk_matrix(matrix))
    sector = scene_case.case.sector
    width, height = sector.cols * sector.pixel_mm, sector.rows * sector.pixel_mm
    dims = slice_node.GetDimensions()
    aspect = dims[0] / dims[1] if dims[1] > 0 else 1.0
    fov_x = max(width, height * aspect)
    slice_node.SetFieldOfView(fov_x, fov_x / aspect, float(min(scene_case.case.spacing)))
    slice_node.UpdateMatrices()
    for k, curves in enumerate(scene_case.cas_curves):  # the frame's CAS contours shown, the others hidden
        for curve in curves:
            display = curve.GetDisplayNode()
            if display is not None:
                display.SetVisibility(k == frame)
    if composite_node is not None:
        background = scene_case.frame_volumes[frame] if scene_case.frame_volumes else scene_case.volume_node
        composite_node.SetBackgroundVolumeID(background.GetID())
    return matrix


def frame_of_node(node) -> int | None:
    """The frame index a CAS curve or frame volume of :func:`load_case` belongs to (``None`` for others)."""
    value = node.GetAttribute(FRAME_ATTRIBUTE) if node is not None else None
    return int(value) if value not in (None, "") else None


def frame_of_stroke(scene, points_ras, tolerance_mm: float | None = None) -> int | None:
    """The ICE frame whose plane holds the whole stroke (a frame volume of :func:`load_case`, attribute
    :data:`FRAME_ATTRIBUTE`), or ``None``. ``tolerance_mm``: default half the frame's pixel size."""
    points = np.asarray(points_ras, float).reshape(-1, 3)
    if len(points) == 0:
        return None
    best, best_distance = None, np.inf
    nodes = scene.GetNodesByClass("vtkMRMLScalarVolumeNode")
    for n in range(nodes.GetNumberOfItems()):
        node = nodes.GetItemAsObject(n)
        value = node.GetAttribute(FRAME_ATTRIBUTE)
        if value in (None, "") or node.GetImageData() is None:
            continue
        grid = Grid.from_volume(node)
        w = grid.ras_to_continuous_ijk(points)[:, 2] * grid.spacing_ijk[2]  # mm off the frame's plane
        distance = float(np.max(np.abs(w)))
        limit = tolerance_mm if tolerance_mm is not None else 0.5 * min(grid.spacing_ijk[:2])
        if distance <= limit and distance < best_distance:
            best, best_distance = int(value), distance
    return best


def _add_curve(scene, points_ras: np.ndarray, name: str, frame: int):
    curve = scene.AddNewNodeByClass("vtkMRMLMarkupsCurveNode", scene.GenerateUniqueName(name))
    curve.SetCurveTypeToLinear()  # through the contour's vertices exactly
    points = vtk.vtkPoints()
    points.SetData(numpy_support.numpy_to_vtk(np.ascontiguousarray(points_ras, dtype=np.float64), deep=True))
    curve.SetControlPointPositionsWorld(points)
    curve.SetAttribute(FRAME_ATTRIBUTE, str(frame))
    curve.SetLocked(True)
    curve.CreateDefaultDisplayNodes()
    display = curve.GetDisplayNode()
    if display is not None:
        display.SetSelectedColor(*CAS_COLOR)
        display.SetColor(*CAS_COLOR)
        display.SetVisibility(False)  # 28 frames of curves clutter the views: shown frame by frame
        display.SetPointLabelsVisibility(False)
    return curve


def load_case(
    scene,
    case: ice.ICECase | str | os.PathLike,
    *,
    name: str = "ICE",
    cas_segmentation: bool = True,
    cas_curves: bool = True,
    frame_volumes: bool = True,
    max_curve_points: int = 400,
    progress: ProgressCallback | None = None,
) -> ICESceneCase:
    """Put an ICE case into ``scene``.

    Args:
        scene: the vtkMRMLScene.
        case: an :class:`losslab.ice.ICECase` (``losslab.ice.simulate_case``) or a case folder written by
            ``losslab ice simulate`` / :func:`losslab.ice.write_case`.
        name: prefix of the node names.
        cas_segmentation: add the CAS contour voxels as a segmentation (segment ``"CAS contours"``).
        cas_curves: add one markups curve per CAS polyline, in RAS at its frame's pose (attribute
            :data:`FRAME_ATTRIBUTE` = frame index; hidden until :func:`align_slice_node` shows a frame).
        frame_volumes: add each frame as a single-slice volume placed by its pose.
        max_curve_points: a longer polyline is subsampled (its ends kept) to this many control points.

    Returns:
        :class:`ICESceneCase`.

    Raises:
        FileNotFoundError / ValueError: not a case folder, or inconsistent files (from ``read_case``).
    """
    folder = None
    if not isinstance(case, ice.ICECase):
        folder = Path(case)
        case = ice.read_case(folder)

    def report(fraction, message):
        if progress is not None:
            progress(float(fraction), message)

    report(0.0, "Loading the sparse volume")
    reverse = np.zeros((4, 4))
    reverse[0, 2] = reverse[1, 1] = reverse[2, 0] = reverse[3, 3] = 1.0
    ijk_to_ras = case.grid.index_to_ras() @ reverse  # (i, j, k, 1) -> RAS
    volume = _add_volume(scene, case.image.astype(np.float32), ijk_to_ras, scene.GenerateUniqueName(name))
    datamask = _add_volume(
        scene, case.datamask.astype(np.uint8), ijk_to_ras, scene.GenerateUniqueName(f"{name} data"), True
    )
    grid = Grid.from_volume(volume)
    _check_grid_matches(grid, case)
    out = ICESceneCase(case=case, grid=grid, volume_node=volume, datamask_node=datamask, folder=folder)
    if cas_segmentation:
        report(0.2, "Adding the CAS contours")
        seg = scene.AddNewNodeByClass("vtkMRMLSegmentationNode", scene.GenerateUniqueName(f"{name} CAS"))
        seg.SetReferenceImageGeometryParameterFromVolumeNode(volume)
        mrml_io.set_segment_from_mask(seg, CAS_SEGMENT_ID, case.cas_mask(), grid)
        seg.GetSegmentation().GetSegment(CAS_SEGMENT_ID).SetColor(*CAS_COLOR)
        seg.CreateDefaultDisplayNodes()
        out.cas_segmentation = seg
    for frame in case.frames:
        curves = []
        if cas_curves:
            for n, line in enumerate(c for c in frame.contours if len(c) >= 2):
                if len(line) > max_curve_points:
                    keep = np.unique(np.linspace(0, len(line) - 1, max_curve_points).round().astype(int))
                    line = line[keep]
                points = frame_points_ras(case, frame.index, line)
                curves.append(
                    _add_curve(scene, points, f"{name} CAS frame {frame.index:02d}-{n}", frame.index)
                )
        out.cas_curves.append(curves)
        if frame_volumes:
            image = np.rint(np.clip(frame.image, 0, 1) * 255).astype(np.uint8)[None]  # (1, v, u): k, j, i
            node = _add_volume(scene, image, np.asarray(frame.pose, float), f"{name} frame {frame.index:02d}")
            node.SetAttribute(FRAME_ATTRIBUTE, str(frame.index))
            out.frame_volumes.append(node)
        report(
            0.2 + 0.8 * (frame.index + 1) / len(case.frames), f"Frame {frame.index + 1}/{len(case.frames)}"
        )
    return out


def initial_from_mask(
    scene,
    scene_case: ICESceneCase,
    mask: np.ndarray,
    *,
    segmentation_node=None,
    segment_id: str = "left atrium",
    name: str = "ICE segmentation",
):
    """y_init from a boolean ``(k, j, i)`` mask on the case's grid (a loaded segmentation, a test's mask):
    a segmentation node (new, or ``segmentation_node``) on the sparse volume's geometry with the segment
    ``segment_id``. Returns ``(segmentation_node, segment_id)``."""
    mask = np.asarray(mask)
    if mask.shape != scene_case.grid.shape:
        raise ValueError(f"the mask has shape {mask.shape}, the case's grid {scene_case.grid.shape}")
    node = segmentation_node or scene.AddNewNodeByClass(
        "vtkMRMLSegmentationNode", scene.GenerateUniqueName(name)
    )
    node.SetReferenceImageGeometryParameterFromVolumeNode(scene_case.volume_node)
    new = node.GetSegmentation().GetSegment(segment_id) is None
    mrml_io.set_segment_from_mask(node, segment_id, mask.astype(bool), scene_case.grid)
    if new:  # named as its ID ("left atrium"), not "Segment_1": the name is what files and tables show
        node.GetSegmentation().GetSegment(segment_id).SetName(segment_id)
    node.CreateDefaultDisplayNodes()
    return node, segment_id


def initial_from_segmentation(
    scene, scene_case: ICESceneCase, segmentation_node, segment_id: str, *, name: str = "ICE segmentation"
):
    """y_init from a loaded segmentation (e.g. a ``.seg.nrrd``) on any grid: the segment is moved onto the
    case's grid (exactly when the lattices align, else nearest neighbour) into a new segmentation on the
    sparse volume's geometry, which the edits then change (the loaded node is left as it is). Returns
    ``(segmentation_node, segment_id)``."""
    mask = mrml_io.segment_mask(
        segmentation_node, segment_id, scene_case.grid, allow_resample=True, role="initial segment"
    )
    return initial_from_mask(scene, scene_case, mask, segment_id=segment_id, name=name)


#: the kinds of ICE model, by the inputs their cards list
MODEL_KINDS = {"segmentation": ["image"], "editing": ["image", "initial", "heatmap"]}


def model_kind(card) -> str | None:
    """What a registered model is for the ICE modules: ``"segmentation"``, ``"editing"`` or ``None`` (not an
    ICE model, e.g. a fetal parcellation ensemble).

    Read from its card (:class:`losslab.models.ModelCard`): the network inputs it lists (``inputs``:
    ``["image"]`` segments, ``["image", "initial", "heatmap"]`` edits) with two labels (background and the
    left atrium); a card without ``inputs`` is judged by its name, ``ice-<kind>-...``."""
    inputs = card.raw.get("inputs")
    if inputs is not None:
        binary = not card.labels or len(card.labels) == 2
        for kind, expected in MODEL_KINDS.items():
            if [str(i) for i in inputs] == expected and binary:
                return kind
        return None
    for kind in MODEL_KINDS:
        if card.name.startswith(f"ice-{kind}"):
            return kind
    return None


def available_models(kind: str, root: str | os.PathLike | None = None) -> list[str]:
    """Registered ICE models of a kind (``"segmentation"`` or ``"editing"``, :func:`model_kind`), the default
    first; the default is listed even before it is installed (loading it then says what to do)."""
    from losslab import models

    if kind not in MODEL_KINDS:
        raise ValueError(f"kind must be 'segmentation' or 'editing', got {kind!r}")
    default = DEFAULT_SEGMENTATION_MODEL if kind == "segmentation" else DEFAULT_EDITING_MODEL
    names = [c.name for c in models.list_models(root) if model_kind(c) == kind]
    return [default] + sorted(n for n in names if n != default)


def model_installed(name: str, root: str | os.PathLike | None = None) -> bool:
    """Whether a model of that name is registered (``losslab models list``); its files are checked on load."""
    from losslab import models

    return any(c.name == name for c in models.list_models(root))


def check_model(model: str | os.PathLike, kind: str, root: str | os.PathLike | None = None) -> Path:
    """The checkpoint (or ensemble folder) of ``model`` for the ``kind`` of ICE work, checked: a path is
    taken as it is; a registered name must be a model of that kind (its card says so, :func:`model_kind`) and
    its files must match their checksums.

    Raises:
        ValueError: an unknown name, or a model of another kind (the message lists the models of ``kind``).
    """
    from losslab import models

    path = Path(str(model)).expanduser()
    if path.exists():
        return path
    choices = ", ".join(available_models(kind, root))
    cards = {c.name: c for c in models.list_models(root)}
    card = cards.get(str(model))
    if card is None:
        raise ValueError(
            f"no ICE {kind} model {str(model)!r} is registered in {models.registry_root(root)} and no such file "
            f"exists; the {kind} models: {choices}"
        )
    found = model_kind(card)
    if found != kind:
        what = f"an ICE {found} model" if found else f"not an ICE model ({card.task})"
        raise ValueError(f"{card.name} is {what}, not an ICE {kind} model; the {kind} models: {choices}")
    return models.model_path(card.name, root=root)


def model_grid_note(
    model: str | os.PathLike, grid: Grid, root: str | os.PathLike | None = None
) -> str | None:
    """A warning when the case's voxels differ from those the model was trained on (its card's grid), or
    ``None``. The ICE models run on the case's own voxels: a model trained at 64^3 x 2.2 mm that reads a
    128^3 x 1.1 mm case sees an atrium twice as large (in voxels) as any it learnt from."""
    from losslab import models

    try:
        card = models.get_card(str(model), root=root)
    except ValueError:
        return None
    spacing = card.spacing
    if not spacing:
        return None
    trained = float(np.mean(spacing))
    here = float(np.mean(grid.spacing_ijk))
    if abs(here - trained) <= 0.1 * trained:
        return None
    size = card.grid.get("size")
    trained_text = f"{'x'.join(str(int(n)) for n in size)} voxels of " if size else ""
    return (
        f"{card.name} was trained on {trained_text}{trained:.2f} mm; this case has "
        f"{'x'.join(str(n) for n in reversed(grid.shape))} voxels of {here:.2f} mm, so its results may be poor "
        f"(simulate cases at {trained:.4g} mm to match: losslab ice simulate ... --spacing {trained:.4g})"
    )


def predict_initial(
    image: np.ndarray,
    model: str | os.PathLike = DEFAULT_SEGMENTATION_MODEL,
    *,
    root: str | os.PathLike | None = None,
    device: str = "auto",
    progress: ProgressCallback | None = None,
) -> np.ndarray:
    """y_init as a boolean ``(k, j, i)`` mask: the segmentation model (a registered name of that kind,
    :func:`check_model`, or a checkpoint path) on the sparse volume ``image`` (``(k, j, i)`` array).

    Arrays only, no MRML: it may run in a worker thread while the scene stays with the caller's thread (the
    web app does). :func:`initial_segmentation` is this plus the segmentation node."""
    from losslab.engine import load_predictor

    def report(fraction, message):
        if progress is not None:
            progress(float(fraction), message)

    report(0.0, f"Checking model {model}")
    path = check_model(model, "segmentation", root)
    report(0.1, f"Loading {Path(str(model)).name}")
    predictor = load_predictor(path, device=device)
    channels = predictor.info.channel_names
    if len(channels) != 1:
        raise ValueError(
            f"{model} takes {len(channels)} input channels {channels}: a segmentation model takes the image only"
        )
    report(0.3, f"Predicting on {predictor.device}")
    prediction = predictor.predict(np.asarray(image, np.float32)[None])
    report(1.0, "Segmented")
    return np.asarray(prediction.labels) == 1


def initial_segmentation(
    scene,
    scene_case,
    model: str | os.PathLike = DEFAULT_SEGMENTATION_MODEL,
    *,
    root: str | os.PathLike | None = None,
    device: str = "auto",
    segmentation_node=None,
    progress: ProgressCallback | None = None,
):
    """y_init from a segmentation model: a registered model's name (``losslab models list``; an ICE
    segmentation model, :func:`check_model`; checksums verified) or a checkpoint / ensemble path, run on the sparse volume (``scene_case``: an
    :class:`ICESceneCase` or a volume node) with :class:`LossLabLib.inference.InferenceLogic`. Returns
    ``(segmentation_node, segment_id)`` (the first foreground label's segment)."""
    from LossLabLib.inference import InferenceLogic

    if progress is not None:
        progress(0.0, f"Checking model {model}")
    path = check_model(model, "segmentation", root)
    result = InferenceLogic(scene, progress, device=device).run(
        path,
        getattr(scene_case, "volume_node", scene_case),
        output_segmentation=segmentation_node,
        name="ICE segmentation",
    )
    return result.segmentation_node, result.segment_ids[0]
