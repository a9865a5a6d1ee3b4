"""How the eight fetal tissues live in a Slicer segmentation node: names, colours, terminology, tags.

One segment per tissue of :data:`losslab.labelsets.TISSUES` (the label-set paper's WM, Vent, Cer, ECSF, CGM,
DGM, BS, CC), named with the paper's abbreviation and coloured with the core's colour (``Tissue.color_float``),
plus a brain mask segment. Each segment carries **segment tags**, which Slicer writes into the ``.seg.nrrd``
header (``SegmentN_Tags``) and reads back, so everything below survives saving and loading the file:

- ``FetalParcellation.Tissue``: the tissue abbreviation (``"WM"``...), or ``"BrainMask"`` for the mask;
  segments are found by this tag, so renaming a segment does not lose it;
- ``FetalParcellation.Annotated``: ``"true"`` / ``"false"``, the annotator's declaration for that tissue;
- ``FetalParcellation.Unannotated``: on an imported set-label segment, the abbreviations of its tissues
  (comma separated);
- ``TerminologyEntry``: a standard terminology entry (SNOMED CT codes, Slicer's serialisation), so that
  Slicer's terminology browser and DICOM SEG export know what each segment is.

Terminology codes: WM, Vent, ECSF (cerebrospinal fluid spaces), CGM (cerebral cortex) and CC are the entries of
Slicer's "3D Slicer General Anatomy list"; the cerebellum (113305005), brainstem (15926001) and deep grey matter
(basal ganglia, 32603002: FeTA's "deep grey matter" is basal ganglia and thalamus; no SNOMED concept names the
pair) are SNOMED CT body structures that list does not hold; Slicer shows them with their codes.

Segments that are not ours are matched by their tag first, then by name (abbreviation, full name, or a label
value: ``"3"``, ``"Label_3"``, ``"Segment_3"``), then, for a segmentation imported from a label map
(``parcellation.nii.gz`` loaded as a segmentation), by the segments' label values (:func:`tissue_segment_ids`).
"""

from __future__ import annotations

import re

import slicer
import vtk

from losslab.labelsets import TISSUES, Tissue, tissue

__all__ = [
    "ANNOTATED_TAG",
    "MASK_NAME",
    "MASK_ROLE",
    "TERMINOLOGY",
    "TISSUE_TAG",
    "UNANNOTATED_TAG",
    "CONTRAST_COLORS",
    "displayed_colors",
    "use_contrast_colors",
    "find_mask_segment",
    "find_tissue_segment",
    "is_annotated",
    "segment_tissue",
    "set_annotated",
    "style_mask_segment",
    "style_tissue_segment",
    "terminology_entry",
    "tissue_segment_ids",
]

TISSUE_TAG = "FetalParcellation.Tissue"
ANNOTATED_TAG = "FetalParcellation.Annotated"
UNANNOTATED_TAG = "FetalParcellation.Unannotated"
MASK_ROLE = "BrainMask"
MASK_NAME = "brain mask"
MASK_COLOR = (0.55, 0.55, 0.55)

#: display colours (RGB in [0, 1]) for tissues whose own colour hardly shows on a T2w MRI: WM's near-white
#: (245, 245, 220) over the MRI's greys. Only the views change (a segment's override colour): the segments
#: keep the core's colours, which files and terminology carry.
CONTRAST_COLORS: dict[str, tuple[float, float, float]] = {"WM": (1.0, 0.92, 0.0)}

_CONTEXT = "Segmentation category and type - 3D Slicer General Anatomy list"
_ANATOMIC_CONTEXT = "Anatomic codes - DICOM master list"
_STRUCTURE = "SCT^123037004^Anatomical Structure"

#: SNOMED CT (code, meaning) of each tissue and of the brain (mask), see the module docstring.
TERMINOLOGY: dict[str, tuple[str, str]] = {
    "WM": ("389080008", "White matter"),
    "Vent": ("35764002", "Brain ventricle"),
    "Cer": ("113305005", "Cerebellum"),
    "ECSF": ("280371009", "Brain cerebrospinal fluid pathway"),
    "CGM": ("40146001", "Cerebral cortex"),
    "DGM": ("32603002", "Basal ganglia"),
    "BS": ("15926001", "Brainstem"),
    "CC": ("88442005", "Corpus callosum"),
    MASK_ROLE: ("12738006", "Brain"),
}


def terminology_entry(key: str) -> str:
    """Slicer's serialised terminology entry for a tissue abbreviation or :data:`MASK_ROLE`."""
    code, meaning = TERMINOLOGY[key]
    return f"{_CONTEXT}~{_STRUCTURE}~SCT^{code}^{meaning}~^^~{_ANATOMIC_CONTEXT}~^^~^^"


def _segment(segmentation_node, segment_id):
    segment = segmentation_node.GetSegmentation().GetSegment(segment_id)
    if segment is None:
        raise ValueError(f"no segment {segment_id!r} in segmentation {segmentation_node.GetName()!r}")
    return segment


def _tag(segment, name: str) -> str | None:
    value = vtk.mutable("")
    return str(value) if segment.GetTag(name, value) else None


def _ids(segmentation_node) -> list[str]:
    ids = vtk.vtkStringArray()
    segmentation_node.GetSegmentation().GetSegmentIDs(ids)
    return [ids.GetValue(i) for i in range(ids.GetNumberOfValues())]


_NUMBERED = re.compile(r"^(?:label|segment)[ _-]?(\d+)$", re.IGNORECASE)


_BY_NAME = {key.lower(): t for t in TISSUES for key in (t.abbreviation, t.name)}


def segment_tissue(segment) -> Tissue | None:
    """The tissue a segment stands for: its :data:`TISSUE_TAG`, else its name when it is exactly a tissue's
    abbreviation or full name (any case), or a label value (``"3"``, ``"Label_3"``, ``"Segment_3"``); ``None``
    for the mask, an unannotated-set segment or anything else. Looser names are not trusted: a label map
    loaded with a colour table gets names such as "Ventricles" for whatever its value 4 is."""
    tag = _tag(segment, TISSUE_TAG)
    if tag is not None:
        return None if tag == MASK_ROLE else tissue(tag)
    if _tag(segment, UNANNOTATED_TAG) is not None:
        return None
    name = segment.GetName().strip()
    match = _NUMBERED.match(name)
    if match or name.isdigit():
        label = int(match.group(1) if match else name)
        return next((t for t in TISSUES if t.label == label), None)
    return _BY_NAME.get(name.lower())


def _by_tag_or_name(segmentation_node) -> dict[int, list[str]]:
    found: dict[int, list[str]] = {}
    for sid in _ids(segmentation_node):
        t = segment_tissue(_segment(segmentation_node, sid))
        if t is not None:
            found.setdefault(t.label, []).append(sid)
    return found


def _by_label_value(segmentation_node) -> dict[int, list[str]]:
    """Segments imported from a label map (e.g. ``parcellation.nii.gz`` loaded as a segmentation) share a
    labelmap layer and keep the map's values as their label values, while their names come from a colour
    table that knows nothing of fetal tissues. Used only when no segment is recognised by tag or name, and
    only when the segments have distinct label values, at least two, all tissue labels 1..8."""
    ids = [
        sid
        for sid in _ids(segmentation_node)
        if _tag(_segment(segmentation_node, sid), TISSUE_TAG) is None
        and _tag(_segment(segmentation_node, sid), UNANNOTATED_TAG) is None
    ]
    values = [_segment(segmentation_node, sid).GetLabelValue() for sid in ids]
    if len(values) < 2 or len(set(values)) != len(values) or not set(values) <= {t.label for t in TISSUES}:
        return {}
    return {int(v): [sid] for v, sid in zip(values, ids)}


def tissue_segment_ids(segmentation_node) -> dict[int, str]:
    """``{tissue label: segment ID}`` of the tissue segments present: by tag, else by name, else (a
    segmentation imported from a label map) by label value.

    Raises:
        ValueError: two segments claim one tissue (named, so the user can fix it).
    """
    found = _by_tag_or_name(segmentation_node) or _by_label_value(segmentation_node)
    out = {}
    for label, sids in sorted(found.items()):
        if len(sids) > 1:
            tagged = [s for s in sids if _tag(_segment(segmentation_node, s), TISSUE_TAG) is not None]
            if len(tagged) != 1:
                t = tissue(label)
                names = [_segment(segmentation_node, s).GetName() for s in sids]
                raise ValueError(
                    f"segmentation {segmentation_node.GetName()!r} has {len(sids)} segments for "
                    f"{t.abbreviation} ({t.name}): {names}; keep one (delete or rename the others)"
                )
            sids = tagged
        out[label] = sids[0]
    return out


def find_tissue_segment(segmentation_node, key: str | int) -> str | None:
    """The ID of the segment of tissue ``key`` (abbreviation, name or label), or ``None``
    (see :func:`tissue_segment_ids`). Raises ``ValueError`` for an unknown tissue."""
    return tissue_segment_ids(segmentation_node).get(tissue(key).label)


def find_mask_segment(segmentation_node) -> str | None:
    """The ID of the brain mask segment (tagged :data:`MASK_ROLE`, else named "brain mask" / "mask")."""
    ids = _ids(segmentation_node)
    for sid in ids:
        if _tag(_segment(segmentation_node, sid), TISSUE_TAG) == MASK_ROLE:
            return sid
    for sid in ids:
        if _segment(segmentation_node, sid).GetName().strip().lower() in (MASK_NAME, "mask", "brainmask"):
            return sid
    return None


def style_tissue_segment(segment, t: Tissue) -> None:
    """Name, colour, tissue tag and terminology of a tissue segment (its declaration is left as it is)."""
    segment.SetName(t.abbreviation)
    segment.SetColor(*t.color_float)
    segment.SetTag(TISSUE_TAG, t.abbreviation)
    segment.SetTag(slicer.vtkSegment.GetTerminologyEntryTagName(), terminology_entry(t.abbreviation))


def style_mask_segment(segment) -> None:
    segment.SetName(MASK_NAME)
    segment.SetColor(*MASK_COLOR)
    segment.SetTag(TISSUE_TAG, MASK_ROLE)
    segment.SetTag(slicer.vtkSegment.GetTerminologyEntryTagName(), terminology_entry(MASK_ROLE))


def is_annotated(segment) -> bool:
    """The segment's declaration (``False`` when it has none)."""
    return (_tag(segment, ANNOTATED_TAG) or "").strip().lower() == "true"


def set_annotated(segment, annotated: bool) -> None:
    segment.SetTag(ANNOTATED_TAG, "true" if annotated else "false")


def use_contrast_colors(segmentation_node) -> dict[str, tuple[float, float, float]]:
    """Show the tissues of :data:`CONTRAST_COLORS` in their contrast colour in every view (the display node's
    override colour; the segments' own colours stay). Returns :func:`displayed_colors`."""
    display = segmentation_node.GetDisplayNode()
    if display is None:
        segmentation_node.CreateDefaultDisplayNodes()
        display = segmentation_node.GetDisplayNode()
    for label, sid in tissue_segment_ids(segmentation_node).items():
        color = CONTRAST_COLORS.get(tissue(label).abbreviation)
        if color is not None:
            display.SetSegmentOverrideColor(sid, *color)
    return displayed_colors(segmentation_node)


def displayed_colors(segmentation_node) -> dict[str, tuple[float, float, float]]:
    """``{abbreviation: RGB}`` of the tissues as the views show them (override colour, else the segment's)."""
    display = segmentation_node.GetDisplayNode()
    out = {}
    for label, sid in tissue_segment_ids(segmentation_node).items():
        color = tuple(segmentation_node.GetSegmentation().GetSegment(sid).GetColor())
        if display is not None:
            override = tuple(display.GetSegmentOverrideColor(sid))
            if all(0.0 <= c <= 1.0 for c in override):  # unset: (-1, -1, -1)
                color = override
        out[tissue(label).abbreviation] = tuple(float(c) for c in color)
    return out
