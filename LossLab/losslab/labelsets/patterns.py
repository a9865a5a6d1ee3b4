"""The paper's Table 1 annotation patterns, applied to fully annotated volumes (the atlas).

Table 1 (label-set-losses-fidon2021) lists, for the 164 training MRI of the partially supervised set, how many
have each tissue: atlas 18 (all 8 tissues); controls 116 (WM, Vent, Cer in all; ECSF in 54; CC in 18;
CGM, DGM, BS in none); spina bifida 30 (WM, Vent, Cer only). The table gives counts per tissue, not per
case; we read them as nested (the 18 controls with CC are among the 54 with ECSF), which is exactly the
released code's three set labels (9 = ECSF+CGM+DGM+BS+CC missing, 10 = CGM+DGM+BS+CC missing,
11 = CGM+DGM+BS missing). That gives four patterns:

======================  ===============================  =========  ==============  =========
pattern                 annotated                        paper MRI  share           set label
======================  ===============================  =========  ==============  =========
``full``                all 8                            18         11.0 % (1 in 9) none
``wm-vent-cer-ecsf-cc`` WM, Vent, Cer, ECSF, CC          18         11.0 %          11
``wm-vent-cer-ecsf``    WM, Vent, Cer, ECSF              36         22.0 %          10
``wm-vent-cer``         WM, Vent, Cer (spina bifida-like) 92 (62+30) 56.1 %         9
======================  ===============================  =========  ==============  =========

:func:`pattern_counts` splits ``n`` volumes in these proportions (largest remainders, at least ``min_full``
fully annotated volumes so the fully supervised baseline has data); :func:`assign_patterns` draws which
volume gets which pattern (seeded); :func:`apply_pattern` erases the unannotated tissues.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from .tissues import tissue


@dataclass(frozen=True)
class Pattern:
    """An annotation pattern: which tissues are annotated, and how many of the paper's 164 MRI had it."""

    name: str
    annotated: tuple[int, ...]
    paper_count: int
    description: str

    @property
    def abbreviations(self) -> list[str]:
        return [tissue(t).abbreviation for t in self.annotated]


TABLE1_PATTERNS: tuple[Pattern, ...] = (
    Pattern("full", (1, 2, 3, 4, 5, 6, 7, 8), 18, "atlas volumes: all 8 tissues"),
    Pattern("wm-vent-cer-ecsf-cc", (1, 2, 3, 4, 8), 18, "controls with ECSF and CC"),
    Pattern("wm-vent-cer-ecsf", (1, 2, 3, 4), 36, "controls with ECSF, without CC"),
    Pattern("wm-vent-cer", (1, 2, 3), 92, "62 controls and 30 spina bifida cases: WM, Vent, Cer only"),
)


def pattern_counts(n: int, patterns: Sequence[Pattern] = TABLE1_PATTERNS, min_full: int = 1) -> list[int]:
    """How many of ``n`` volumes get each pattern: the paper's proportions by largest remainders, with at
    least ``min_full`` (capped at ``n``) volumes of the first pattern."""
    if n < 0:
        raise ValueError(f"the number of volumes must be >= 0, got {n}")
    weights = np.asarray([p.paper_count for p in patterns], dtype=float)
    quota = n * weights / weights.sum()
    counts = np.floor(quota).astype(int)
    order = np.argsort(-(quota - counts), kind="stable")
    for i in order[: n - counts.sum()]:
        counts[i] += 1
    need = min(min_full, n) - counts[0]
    while need > 0:  # take from the most frequent other pattern
        j = 1 + int(np.argmax(counts[1:]))
        counts[j] -= 1
        counts[0] += 1
        need -= 1
    return [int(c) for c in counts]


def assign_patterns(
    case_ids: Sequence[str], seed: int = 0, patterns: Sequence[Pattern] = TABLE1_PATTERNS, min_full: int = 1
) -> dict[str, Pattern]:
    """A seeded random assignment of patterns to cases in :func:`pattern_counts`'s proportions."""
    ids = list(case_ids)
    if len(set(ids)) != len(ids):
        raise ValueError(f"case ids must be unique, got {ids}")
    counts = pattern_counts(len(ids), patterns, min_full)
    order = np.random.default_rng(seed).permutation(len(ids))
    out, pos = {}, 0
    for pattern, count in zip(patterns, counts):
        for i in order[pos : pos + count]:
            out[ids[int(i)]] = pattern
        pos += count
    return {cid: out[cid] for cid in ids}


def apply_pattern(parcellation: np.ndarray, pattern: Pattern) -> np.ndarray:
    """The partial annotation: ``parcellation`` with the tissues the pattern does not annotate set to 0."""
    p = np.asarray(parcellation)
    return np.where(np.isin(p, pattern.annotated), p, 0).astype(np.uint8)
