"""The SampleData entry of the FetalParcellation module: one CC0 atlas case, downloaded with SHA256 checks.

The case is GA26_operated of the spatio-temporal fetal brain MRI atlas with spina bifida aperta (Fidon et al.,
Open Research Europe 2021; CC0 1.0), as published in the public repository
LucasFidon/trustworthy-ai-fetal-brain-segmentation, folder data/fetal_brain_atlases/SpinaBifida_Fidon2021, at
commit 38cf1fb77bc896d133941b8f5388ef18feb2cae7 (a fixed commit, so the bytes and checksums never change).
It is one of the cases our fetal protocol holds out for testing (:data:`losslab.labelsets.atlas.PROTOCOL_TEST_CASES`).

The three files are the T2w super-resolution MRI (0.8 mm, loaded as a volume), its 8-tissue parcellation and
its brain mask (both loaded as segmentations: the parcellation's segments are recognised as tissues by their
label values, the mask becomes a session's brain mask). The SHA256 digests below are those of the files at that
commit: ``shared/data/fetal-sb-atlas/GA26_operated`` holds the same bytes (same git blob ids), and
``Testing/mrml/test_fetal_sample_data.py`` recomputes the digests from it.

The module registers it on Slicer's ``startupCompleted()``::

    SampleData.SampleDataLogic.registerCustomSampleDataSource(**sample_data_source(iconPath))
"""

from __future__ import annotations

__all__ = ["ATLAS_COMMIT", "ATLAS_REPOSITORY", "SAMPLE_CASE", "SAMPLE_FILES", "sample_data_source"]

ATLAS_REPOSITORY = "LucasFidon/trustworthy-ai-fetal-brain-segmentation"
ATLAS_COMMIT = "38cf1fb77bc896d133941b8f5388ef18feb2cae7"
ATLAS_FOLDER = "data/fetal_brain_atlases/SpinaBifida_Fidon2021"
SAMPLE_CASE = "GA26_operated"
SAMPLE_NAME = "FetalBrainAtlasGA26"

#: (file in the case folder, file name in Slicer's cache, node name, load type, SHA256, size in bytes)
SAMPLE_FILES = (
    ("srr.nii.gz", "FetalAtlasGA26_srr.nii.gz", "FetalAtlasGA26", "VolumeFile",
     "c8e0a6620217f03fbc984fab005e9587c20caf0731b79b3d47c45eb5164e5c36", 912290),
    ("parcellation.nii.gz", "FetalAtlasGA26_parcellation.nii.gz", "FetalAtlasGA26 parcellation",
     "SegmentationFile", "32e2977e37156c832397368850a05fce7b83ab86cceeeca541357f5b09b5be1b", 53192),
    ("mask.nii.gz", "FetalAtlasGA26_mask.nii.gz", "FetalAtlasGA26 brain mask", "SegmentationFile",
     "240f9dfd72a497d3de57bd1016cf12ff6027c2838b6962a4f93129b75721119d", 68894),
)  # fmt: skip


def url(file_name: str) -> str:
    """The download URL of a file of the sample case (raw file at the fixed commit)."""
    return (
        f"https://raw.githubusercontent.com/{ATLAS_REPOSITORY}/{ATLAS_COMMIT}/{ATLAS_FOLDER}/"
        f"fetal_SB_atlas_{SAMPLE_CASE}/{file_name}"
    )


def sample_data_source(thumbnail: str | None = None, category: str = "Fetal brain") -> dict:
    """Keyword arguments of ``SampleData.SampleDataLogic.registerCustomSampleDataSource``."""
    return {
        "category": category,
        "sampleName": SAMPLE_NAME,
        "uris": [url(f[0]) for f in SAMPLE_FILES],
        "fileNames": [f[1] for f in SAMPLE_FILES],
        "nodeNames": [f[2] for f in SAMPLE_FILES],
        "loadFileTypes": [f[3] for f in SAMPLE_FILES],
        "checksums": [f"SHA256:{f[4]}" for f in SAMPLE_FILES],
        "thumbnailFileName": thumbnail,
    }
