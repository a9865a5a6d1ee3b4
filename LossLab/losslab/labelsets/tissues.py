"""The eight fetal brain tissues of the label-set paper (label-set-losses-fidon2021, Table 1) in one place.

Label values follow the paper, the FeTA labelling protocol and the released code (``LABELS`` in
``src/utils/definitions.py`` of the authors' repository): 0 background, 1 WM, 2 Vent, 3 Cer, 4 ECSF, 5 CGM,
6 DGM, 7 BS, 8 CC.

Colours: neither the spina bifida atlas nor the authors' code ship a colour table, and FeTA publishes none,
so the colours here are our choice, documented in ``docs/fetal.md``: light tones for white matter, blues for
the two CSF compartments (ventricles darker than extra-axial CSF), warm tones for the grey matter, and
distinct hues for the cerebellum, brainstem and corpus callosum so that neighbours always differ.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass


@dataclass(frozen=True)
class Tissue:
    """One tissue: its label value, abbreviation (the paper's), full name and RGB colour (0-255)."""

    label: int
    abbreviation: str
    name: str
    color: tuple[int, int, int]

    @property
    def color_float(self) -> tuple[float, float, float]:
        """The colour in [0, 1] (what Slicer segments store)."""
        return tuple(round(c / 255.0, 6) for c in self.color)  # type: ignore[return-value]


TISSUES: tuple[Tissue, ...] = (
    Tissue(1, "WM", "white matter", (245, 245, 220)),
    Tissue(2, "Vent", "ventricular system", (30, 80, 200)),
    Tissue(3, "Cer", "cerebellum", (80, 200, 120)),
    Tissue(4, "ECSF", "extra-axial CSF", (120, 200, 240)),
    Tissue(5, "CGM", "cortical grey matter", (220, 90, 70)),
    Tissue(6, "DGM", "deep grey matter", (240, 180, 40)),
    Tissue(7, "BS", "brainstem", (160, 90, 190)),
    Tissue(8, "CC", "corpus callosum", (230, 60, 170)),
)
#: Number of output channels of a fetal parcellation network: background and the eight tissues.
NUM_CLASSES = len(TISSUES) + 1
ABBREVIATIONS: tuple[str, ...] = tuple(t.abbreviation for t in TISSUES)
#: Leaf label names, background first, as an engine ``dataset.json`` wants them (``labels``).
LABEL_NAMES: list[str] = ["background", *ABBREVIATIONS]

_BY_KEY: dict[str, Tissue] = {}
for _t in TISSUES:
    for _key in (_t.abbreviation, _t.name, str(_t.label)):
        _BY_KEY[_key.lower()] = _t
# The released code's names (``ALL_ROI``) and a few common spellings.
for _alias, _label in {
    "wm": 1,
    "csf": 2,
    "ventricles": 2,
    "external_csf": 4,
    "cortical_gm": 5,
    "cortical gray matter": 5,
    "deep_gm": 6,
    "deep gray matter": 6,
    "corpus_callosum": 8,
}.items():
    _BY_KEY[_alias] = TISSUES[_label - 1]


def tissue(key: str | int) -> Tissue:
    """A tissue by label value (1..8), abbreviation, full name or the released code's name (any case).

    Raises:
        ValueError: unknown tissue, naming the valid abbreviations.
    """
    if isinstance(key, bool):
        raise ValueError(
            f"unknown tissue {key!r}; expected one of {', '.join(ABBREVIATIONS)} or a label 1..8"
        )
    found = _BY_KEY.get(str(key).strip().lower())
    if found is None:
        raise ValueError(
            f"unknown tissue {key!r}; expected one of {', '.join(ABBREVIATIONS)} or a label 1..8"
        )
    return found


def tissue_labels(keys: Iterable[str | int]) -> list[int]:
    """Sorted label values of tissues given by name, abbreviation or label (repeats removed).

    Raises:
        ValueError: naming every unknown tissue at once.
    """
    keys = list(keys)
    unknown = []
    labels = set()
    for key in keys:
        try:
            labels.add(tissue(key).label)
        except ValueError:
            unknown.append(key)
    if unknown:
        raise ValueError(
            f"unknown tissue name(s) {unknown}; expected abbreviations {', '.join(ABBREVIATIONS)}, "
            f"full names or labels 1..{len(TISSUES)}"
        )
    return sorted(labels)


def segment_names() -> dict[int, str]:
    """``{label: abbreviation}``: the segment names written into .seg.nrrd outputs (they match ``LABEL_NAMES``,
    so the engine reads such files back with the right label values)."""
    return {t.label: t.abbreviation for t in TISSUES}


def segment_colors() -> dict[int, tuple[float, float, float]]:
    """``{label: (r, g, b)}`` in [0, 1]."""
    return {t.label: t.color_float for t in TISSUES}


def color_table_text() -> str:
    """A Slicer / ITK-SNAP-style colour table (``label name r g b a`` per line) for the tissues."""
    lines = ["# LossLab fetal tissues: label name R G B A", "0 background 0 0 0 0"]
    lines += [f"{t.label} {t.abbreviation} {t.color[0]} {t.color[1]} {t.color[2]} 255" for t in TISSUES]
    return "\n".join(lines) + "\n"
