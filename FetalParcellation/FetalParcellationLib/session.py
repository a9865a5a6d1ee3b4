"""An annotation session for one fetal brain MRI: the 8 tissue segments, the brain mask, the declaration.

A session is a segmentation node (its segments are described in :mod:`.segments`) on the MRI's voxel grid.
Painting is the Segment Editor's; this class reads the segments as arrays on the MRI's grid and calls
:mod:`losslab.labelsets` for everything else:

- :meth:`AnnotationSession.voxel_counts`: painted voxels per tissue (live counts for the panel);
- :meth:`AnnotationSession.problems`: the core's :func:`losslab.labelsets.check_partial_annotation` messages
  (painted but undeclared, declared but empty, paint outside the mask, empty mask) plus voxels painted with two
  tissues, which a label map cannot hold;
- :meth:`AnnotationSession.label_set_map`: :func:`losslab.labelsets.make_label_set_map` of the session.

The declaration ("this tissue was annotated") is a segment tag (:data:`.segments.ANNOTATED_TAG`), so it is
saved with the ``.seg.nrrd`` and read back with it (:meth:`AnnotationSession.open`).

Example (Slicer's Python console)::

    from FetalParcellationLib import AnnotationSession
    session = AnnotationSession.create(slicer.mrmlScene, slicer.util.getNode("srr"))
    ...  # paint WM and Vent in the Segment Editor, set a brain mask
    session.set_annotated("WM", True); session.set_annotated("Vent", True)
    session.problems()  # [] when ready to export
"""

from __future__ import annotations

import numpy as np
import slicer

from losslab.labelsets import (
    TISSUES,
    Declaration,
    LabelSetNumbering,
    check_partial_annotation,
    make_label_set_map,
    tissue,
)
from LossLabLib import mrml_io
from LossLabLib.mrml_io import Grid

from . import segments as seg

__all__ = ["NOTHING_DECLARED", "SEGMENT_EDITOR_TAG", "AnnotationSession"]

#: singleton tag of the Segment Editor module's parameter node
SEGMENT_EDITOR_TAG = "SegmentEditor"
#: the problem of a session that declares no tissue
NOTHING_DECLARED = (
    "no tissue is declared annotated: paint at least one tissue completely and tick it (a case without one "
    "teaches the model nothing)"
)


def _label(node) -> str:
    return "None" if node is None else f"{node.GetClassName()} {node.GetName()!r}"


class AnnotationSession:
    """A fetal annotation session on ``segmentation_node`` (see the module docstring).

    Use :meth:`create` (new node, or complete an existing one) or :meth:`open` (a node saved earlier).

    Args:
        scene: the vtkMRMLScene.
        segmentation_node: the session's segmentation node.
        volume_node: the MRI; its grid is the session's grid (else the segmentation's reference geometry).
    """

    def __init__(self, scene, segmentation_node, volume_node=None):
        if scene is None:
            raise ValueError("AnnotationSession needs the MRML scene (e.g. slicer.mrmlScene)")
        if segmentation_node is None or not segmentation_node.IsA("vtkMRMLSegmentationNode"):
            raise ValueError(
                f"an annotation session needs a segmentation node, got {_label(segmentation_node)}"
            )
        if volume_node is not None and not volume_node.IsA("vtkMRMLScalarVolumeNode"):
            raise ValueError(f"the MRI must be a scalar volume node, got {_label(volume_node)}")
        self.scene = scene
        self.segmentation_node = segmentation_node
        self.volume_node = volume_node

    # Construction ----------------------------------------------------------------------------------------

    @classmethod
    def create(cls, scene, volume_node, segmentation_node=None, name: str | None = None) -> AnnotationSession:
        """A session on ``volume_node``: a new segmentation node (or ``segmentation_node``, completed) holding
        the 8 tissue segments and a brain mask segment, on the volume's geometry. Existing tissue segments
        (matched by tag or name) are kept with their voxels and declarations and restyled; missing ones are
        added empty and declared not annotated."""
        if volume_node is None or not volume_node.IsA("vtkMRMLScalarVolumeNode"):
            raise ValueError(f"choose the MRI (a scalar volume) to annotate, got {_label(volume_node)}")
        if segmentation_node is None:
            segmentation_node = scene.AddNewNodeByClass(
                "vtkMRMLSegmentationNode",
                scene.GenerateUniqueName(name or f"{volume_node.GetName()} annotation"),
            )
        if segmentation_node.GetDisplayNode() is None:
            segmentation_node.CreateDefaultDisplayNodes()
        segmentation_node.SetReferenceImageGeometryParameterFromVolumeNode(volume_node)
        session = cls(scene, segmentation_node, volume_node)
        session.ensure_segments()
        return session

    @classmethod
    def open(cls, scene, segmentation_node, volume_node=None) -> AnnotationSession:
        """A session on an existing segmentation node (e.g. a ``.seg.nrrd`` saved from a session): its
        declarations are read from the segment tags; missing tissue segments are added (not annotated)."""
        session = cls(scene, segmentation_node, volume_node)
        session.ensure_segments()
        return session

    def ensure_segments(self) -> None:
        """Add missing tissue / mask segments; give existing ones their name, colour, tags and terminology."""
        node = self.segmentation_node
        segmentation = node.GetSegmentation()
        was_modifying = node.StartModify()
        try:
            existing = seg.tissue_segment_ids(node)  # before restyling: label-value matches need it
            for t in TISSUES:
                sid = existing.get(t.label)
                if sid is None:
                    sid = segmentation.AddEmptySegment(t.abbreviation, t.abbreviation, t.color_float)
                    seg.set_annotated(segmentation.GetSegment(sid), False)
                segment = segmentation.GetSegment(sid)
                seg.style_tissue_segment(segment, t)
                if not segment.HasTag(seg.ANNOTATED_TAG):
                    seg.set_annotated(segment, False)
            sid = seg.find_mask_segment(node)
            if sid is None:
                sid = segmentation.AddEmptySegment("BrainMask", seg.MASK_NAME, seg.MASK_COLOR)
            seg.style_mask_segment(segmentation.GetSegment(sid))
        finally:
            node.EndModify(was_modifying)

    def prepare_segment_editor(self, editor_node=None):
        """Point the Segment Editor at this session and let segments overlap; returns its parameter node.

        The brain mask overlaps every tissue by definition, but the Segment Editor's default ("Modify other
        segments: Overwrite all") erases what a stroke covers from the other segments, so painting a tissue
        would carve it out of the mask (and export would then refuse paint outside the mask). This sets the
        editor's overwrite mode to "Allow overlap" (``OverwriteNone``); tissues painted over one another are
        reported by :meth:`problems`. ``editor_node``: the editor's ``vtkMRMLSegmentEditorNode``; default, the
        scene's singleton one (tag "SegmentEditor", what Slicer's Segment Editor module uses), created if
        missing.
        """
        node = editor_node
        if node is None:
            node = self.scene.GetSingletonNode(SEGMENT_EDITOR_TAG, "vtkMRMLSegmentEditorNode")
        if node is None:
            node = slicer.vtkMRMLSegmentEditorNode()
            node.SetSingletonTag(SEGMENT_EDITOR_TAG)
            node = self.scene.AddNode(node)
        node.SetAndObserveSegmentationNode(self.segmentation_node)
        if self.volume_node is not None:
            node.SetAndObserveSourceVolumeNode(self.volume_node)
        node.SetOverwriteMode(node.OverwriteNone)
        return node

    # Geometry and segments -------------------------------------------------------------------------------

    @property
    def grid(self) -> Grid:
        """The MRI's voxel grid (world RAS), else the segmentation's reference geometry."""
        if self.volume_node is not None:
            return Grid.from_volume(self.volume_node)
        return Grid.from_segmentation(self.segmentation_node)

    @property
    def tissue_segment_ids(self) -> dict[int, str]:
        return seg.tissue_segment_ids(self.segmentation_node)

    @property
    def mask_segment_id(self) -> str | None:
        return seg.find_mask_segment(self.segmentation_node)

    def segment_id(self, key: str | int) -> str:
        """The segment ID of a tissue (abbreviation, name or label)."""
        sid = seg.find_tissue_segment(self.segmentation_node, key)
        if sid is None:
            raise ValueError(
                f"segmentation {self.segmentation_node.GetName()!r} has no segment for tissue {key!r}; "
                "create the session again to add the missing segments"
            )
        return sid

    def _read(self, segment_id: str, grid: Grid, role: str) -> np.ndarray:
        return mrml_io.segment_mask(self.segmentation_node, segment_id, grid, allow_resample=True, role=role)

    def tissue_masks(self, grid: Grid | None = None) -> dict[int, np.ndarray]:
        """``{tissue label: painted voxels}`` as boolean ``(k, j, i)`` arrays on the session's grid."""
        grid = grid or self.grid
        return {
            label: self._read(sid, grid, f"tissue {tissue(label).abbreviation}")
            for label, sid in self.tissue_segment_ids.items()
        }

    def brain_mask(self, grid: Grid | None = None) -> np.ndarray:
        """The brain mask segment as a boolean ``(k, j, i)`` array (all False when there is none)."""
        grid = grid or self.grid
        sid = self.mask_segment_id
        if sid is None:
            return np.zeros(grid.shape, dtype=bool)
        return self._read(sid, grid, "brain mask")

    def set_brain_mask(self, source, segment_id: str | None = None) -> int:
        """Copy a brain mask into the session's mask segment: a segment of a segmentation node (give
        ``segment_id``; e.g. ``mask.nii.gz`` loaded as a segmentation) or a labelmap / scalar volume (voxels
        > 0). Resampled (nearest neighbour) when on another grid. Returns the number of mask voxels."""
        grid = self.grid
        mask = mrml_io.node_mask(source, grid, segment_id, allow_resample=True, role="brain mask")
        self.write_segment(self.mask_segment_id, mask, grid)
        return int(mask.sum())

    def write_segment(self, segment_id: str | None, mask: np.ndarray, grid: Grid | None = None) -> None:
        """Replace a segment's voxels (tags, name and colour are kept)."""
        grid = grid or self.grid
        if segment_id is None:
            self.ensure_segments()
            segment_id = self.mask_segment_id
        mrml_io.set_segment_from_mask(self.segmentation_node, segment_id, np.asarray(mask, bool), grid)

    # Declaration ----------------------------------------------------------------------------------------

    def annotated(self) -> list[int]:
        """Labels of the tissues declared annotated, sorted."""
        node = self.segmentation_node.GetSegmentation()
        return sorted(
            label for label, sid in self.tissue_segment_ids.items() if seg.is_annotated(node.GetSegment(sid))
        )

    def is_annotated(self, key: str | int) -> bool:
        return seg.is_annotated(self.segmentation_node.GetSegmentation().GetSegment(self.segment_id(key)))

    def set_annotated(self, key: str | int, annotated: bool = True) -> None:
        """Declare a tissue annotated (or not): a segment tag, saved with the ``.seg.nrrd``."""
        seg.set_annotated(
            self.segmentation_node.GetSegmentation().GetSegment(self.segment_id(key)), annotated
        )
        self.segmentation_node.Modified()

    def set_declaration(self, annotated) -> None:
        """Declare exactly the tissues ``annotated`` (names, abbreviations or labels)."""
        wanted = {tissue(k).label for k in annotated}
        for t in TISSUES:
            self.set_annotated(t.label, t.label in wanted)

    # Arrays, counts and validation ----------------------------------------------------------------------

    def voxel_counts(self) -> dict[str, int]:
        """Painted voxels per tissue abbreviation (0 for an empty or missing segment) and ``"mask"``."""
        grid = self.grid
        masks = self.tissue_masks(grid)
        counts = {t.abbreviation: int(masks[t.label].sum()) if t.label in masks else 0 for t in TISSUES}
        counts["mask"] = int(self.brain_mask(grid).sum())
        return counts

    def partial_annotation(self, grid: Grid | None = None) -> tuple[np.ndarray, list[str]]:
        """``(label map, overlap problems)``: the painted tissues as a ``uint8`` ``(k, j, i)`` label map (0 not
        painted) and a message per pair of tissues painted on the same voxels (those voxels keep the higher
        label; the message makes export refuse them)."""
        grid = grid or self.grid
        out = np.zeros(grid.shape, dtype=np.uint8)
        problems = []
        for label, mask in sorted(self.tissue_masks(grid).items()):
            overlap = mask & (out != 0)
            if overlap.any():
                others = sorted(int(v) for v in np.unique(out[overlap]))
                problems.append(
                    f"{int(overlap.sum())} voxel(s) painted both {tissue(label).abbreviation} and "
                    f"{', '.join(tissue(v).abbreviation for v in others)}: a voxel holds one tissue; erase the "
                    "overlap (Segment Editor: Erase, or paint with 'Overwrite other segments')"
                )
            out[mask] = label
        return out, problems

    def problems(self) -> list[str]:
        """Every problem of the session (empty list: ready to export): nothing declared, overlaps, then the
        core's checks. A case that declares no tissue would only say "all 8 tissues are somewhere in the
        brain" (one set label of every tissue): it teaches a model nothing, so it is not ready either."""
        grid = self.grid
        partial, problems = self.partial_annotation(grid)
        annotated = self.annotated()
        if not annotated:
            problems.insert(0, NOTHING_DECLARED)
        return problems + check_partial_annotation(partial, self.brain_mask(grid), annotated)

    def work_summary(self) -> str | None:
        """What replacing this session (loading another MRI) would lose, in one line: the painted tissues
        with their voxels and the declared ones; ``None`` when nothing is painted or declared (the brain mask
        came from a file and is not counted)."""
        counts = self.voxel_counts()
        painted = [f"{t.abbreviation} {counts[t.abbreviation]}" for t in TISSUES if counts[t.abbreviation]]
        declared = [tissue(v).abbreviation for v in self.annotated()]
        if not painted and not declared:
            return None
        parts = []
        if painted:
            parts.append("painted voxels: " + ", ".join(painted))
        if declared:
            parts.append("declared: " + ", ".join(declared))
        return "; ".join(parts)

    def label_set_map(
        self, numbering: LabelSetNumbering | None = None, case: str | None = None
    ) -> tuple[np.ndarray, Declaration]:
        """:func:`losslab.labelsets.make_label_set_map` of the session (on the session's grid).

        Raises:
            losslab.labelsets.PartialAnnotationError: listing every problem (:meth:`problems`).
        """
        from losslab.labelsets import PartialAnnotationError

        grid = self.grid
        partial, overlaps = self.partial_annotation(grid)
        mask = self.brain_mask(grid)
        annotated = self.annotated()
        first = ([] if annotated else [NOTHING_DECLARED]) + overlaps
        if first:
            raise PartialAnnotationError(first + check_partial_annotation(partial, mask, annotated), case)
        return make_label_set_map(partial, mask, annotated, numbering, case)

    def summary_rows(self) -> list[tuple[str, str, float, str]]:
        """``(abbreviation, name, painted voxels, "yes"/"no")`` per tissue, for a table."""
        counts = self.voxel_counts()
        declared = set(self.annotated())
        return [
            (t.abbreviation, t.name, float(counts[t.abbreviation]), "yes" if t.label in declared else "no")
            for t in TISSUES
        ]
