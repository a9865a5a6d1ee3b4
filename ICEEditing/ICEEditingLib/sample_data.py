"""The bundled sample: a simulated ICE case (``losslab ice simulate`` output for one case) on the shipped
models' grid, 64^3 voxels of 2.2048 mm, 28 frames, procedural LA phantom seed 2026.

Made with::

    from losslab import ice
    grid = ice.Grid.cube(64, 2.2048)
    case = ice.simulate_case(ice.make_phantom(grid, seed=2026), grid, seed=2026)
    ice.write_case(case, "ICEEditing/Resources/SampleData/ICESample")

Every file is checked against its SHA-256 below before loading (:func:`verify_sample`), and the sparse
volume is registered with Slicer's Sample Data module with its checksum (:func:`sample_data_source`).
"""

from __future__ import annotations

import os
from pathlib import Path

__all__ = [
    "SAMPLE_CHECKSUMS",
    "SAMPLE_NAME",
    "load_sample",
    "sample_case_folder",
    "sample_data_source",
    "verify_sample",
]

SAMPLE_NAME = "ICESample"
#: file -> SHA-256 of the bundled case
SAMPLE_CHECKSUMS = {
    "cas.nii.gz": "9b8486cd70ee86bff87b69f8519945e98b9ab39aa26ac8a7e4248e041ff9804a",
    "datamask.nii.gz": "52994c935ad2bcf37aa88e3c647164af19a1ac53a8e1e562df3b68c64fa2f050",
    "frames.json": "82efaf1a4ad239b4f99cae7294909b08c82c3106bf962f54e817e601993a4bab",
    "frames.nii.gz": "d8178e919e045c3562d4bec20dd0236c4e299a9a268c410fff79b7e4701306ce",
    "image.nii.gz": "6eac93094425d48ec71c69f7a7852107d6a5e53e6f5de4b86686168a02acce0c",
    "label.nii.gz": "8e0c9c233365d3ecb6e50b4c0bd88cbd1272ac64021f6a93badea58735921988",
}


def sample_case_folder() -> Path:
    """The bundled case folder (``ICEEditing/Resources/SampleData/ICESample``)."""
    return Path(__file__).resolve().parent.parent / "Resources" / "SampleData" / SAMPLE_NAME


def verify_sample(folder: str | os.PathLike | None = None) -> Path:
    """Check every file of the sample against :data:`SAMPLE_CHECKSUMS`; returns the folder.

    Raises:
        FileNotFoundError: a file is missing. ValueError: a checksum differs (the file is named).
    """
    from losslab.models import sha256_file

    folder = Path(folder) if folder is not None else sample_case_folder()
    for name, expected in SAMPLE_CHECKSUMS.items():
        path = folder / name
        if not path.is_file():
            raise FileNotFoundError(f"the ICE sample file {path} is missing: reinstall the extension")
        actual = sha256_file(path)
        if actual != expected:
            raise ValueError(
                f"the ICE sample file {path} has SHA-256 {actual}, expected {expected}: the file is corrupt "
                "or was replaced; reinstall the extension"
            )
    return folder


def sample_data_source(thumbnail: str | os.PathLike | None = None) -> dict:
    """Keyword arguments of ``SampleData.SampleDataLogic.registerCustomSampleDataSource`` for the sample's
    sparse volume (a ``file://`` URI with its SHA-256)."""
    image = sample_case_folder() / "image.nii.gz"
    return {
        "category": "ICE editing",
        "sampleName": SAMPLE_NAME,
        "uris": image.as_uri(),
        "fileNames": f"{SAMPLE_NAME}.nii.gz",
        "nodeNames": SAMPLE_NAME,
        "checksums": f"SHA256:{SAMPLE_CHECKSUMS['image.nii.gz']}",
        "thumbnailFileName": str(thumbnail) if thumbnail is not None else None,
        "loadFileType": "VolumeFile",
    }


def load_sample(scene, **kwargs):
    """Verify the bundled case and load it (:func:`ICEEditingLib.scene.load_case`; ``kwargs`` passed on)."""
    from .scene import load_case

    return load_case(scene, verify_sample(), name=SAMPLE_NAME, **kwargs)
