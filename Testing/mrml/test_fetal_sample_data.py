"""The SampleData entry: the registered arguments match Slicer's registerCustomSampleDataSource, the SHA256
digests and sizes are those of the atlas files (shared/data holds the same bytes as the public repository at
the registered commit: same git blob ids), and the three files load as Slicer would load them (a volume and
two label maps imported into segmentations) into a usable session: the parcellation is recognised tissue by
tissue, the mask becomes the session's brain mask."""

from __future__ import annotations

import hashlib
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("slicer", reason="slicer-core is not installed (pip install slicer-core)")

import slicer  # noqa: E402
from fetal_cases import ATLAS, load_volume, need_atlas  # noqa: E402

from FetalParcellationLib import AnnotationSession, sample_data, segments  # noqa: E402
from losslab.labelsets import TISSUES  # noqa: E402

# Slicer's SampleData.SampleDataLogic.registerCustomSampleDataSource (Slicer 5.8 signature)
SLICER_PARAMETERS = {
    "category", "sampleName", "uris", "fileNames", "nodeNames", "customDownloader", "thumbnailFileName",
    "loadFileTypes", "loadFiles", "loadFileProperties", "checksums", "loadFileType",
}  # fmt: skip


def test_registration_arguments_and_checksums():
    source = sample_data.sample_data_source("icon.png")
    assert set(source) <= SLICER_PARAMETERS
    n = len(sample_data.SAMPLE_FILES)
    assert all(len(source[k]) == n for k in ("uris", "fileNames", "nodeNames", "loadFileTypes", "checksums"))
    assert set(source["loadFileTypes"]) <= {"VolumeFile", "SegmentationFile"}
    for uri in source["uris"]:
        assert uri.startswith(
            "https://raw.githubusercontent.com/LucasFidon/trustworthy-ai-fetal-brain-segmentation/"
        )
        assert f"/{sample_data.ATLAS_COMMIT}/" in uri and len(sample_data.ATLAS_COMMIT) == 40
    need_atlas(sample_data.SAMPLE_CASE)
    for (name, _, _, _, digest, size), checksum in zip(sample_data.SAMPLE_FILES, source["checksums"]):
        data = (ATLAS / sample_data.SAMPLE_CASE / name).read_bytes()
        assert checksum == f"SHA256:{hashlib.sha256(data).hexdigest()}" == f"SHA256:{digest}"
        assert len(data) == size
    # the package's sample-data part needs nothing installed on first use (Slicer reads it at startup)
    code = (
        "import sys; import FetalParcellationLib.sample_data as s; s.sample_data_source(); "
        "print(sorted(m for m in ('losslab', 'numpy', 'slicer', 'LossLabLib') if m in sys.modules))"
    )
    folder = Path(sample_data.__file__).resolve().parents[1]
    out = subprocess.run([sys.executable, "-c", code], cwd=folder, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_sample_files_load_into_a_session(scene):
    need_atlas(sample_data.SAMPLE_CASE)
    folder = ATLAS / sample_data.SAMPLE_CASE
    volume = load_volume(scene, folder / "srr.nii.gz", "FetalAtlasGA26")
    reference = scene.AddNewNodeByClass("vtkMRMLSegmentationNode", "FetalAtlasGA26 parcellation")
    mask = scene.AddNewNodeByClass("vtkMRMLSegmentationNode", "FetalAtlasGA26 brain mask")
    for node, name in ((reference, "parcellation.nii.gz"), (mask, "mask.nii.gz")):
        labelmap = load_volume(scene, folder / name, name, labelmap=True)
        assert slicer.vtkSlicerSegmentationsModuleLogic.ImportLabelmapToSegmentationNode(labelmap, node, "")
    ids = segments.tissue_segment_ids(reference)
    assert sorted(ids) == [t.label for t in TISSUES]
    session = AnnotationSession.create(scene, volume)
    voxels = session.set_brain_mask(mask, mask.GetSegmentation().GetNthSegmentID(0))
    assert voxels == int(
        (slicer.util.arrayFromVolume(load_volume(scene, folder / "mask.nii.gz", "m", True)) != 0).sum()
    )
    # adopting the loaded parcellation as a (complete) annotation: every tissue found by its label value
    adopted = AnnotationSession.create(scene, volume, segmentation_node=reference)
    counts = adopted.voxel_counts()
    labels = slicer.util.arrayFromVolume(load_volume(scene, folder / "parcellation.nii.gz", "p", True))
    assert [counts[t.abbreviation] for t in TISSUES] == [int((labels == t.label).sum()) for t in TISSUES]
    assert np.all(
        [reference.GetSegmentation().GetSegment(ids[t.label]).GetName() == t.abbreviation for t in TISSUES]
    )
