"""Small real fetal cases for the FetalParcellation tests: atlas volumes of shared/data downsampled to 2.4 mm
and cropped to the brain (about 30-45 voxels a side), written as NIfTI files and read into MRML by Slicer's own
storage nodes (an independent route from FetalParcellationLib's writers)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

ATLAS = Path(__file__).resolve().parents[3] / "shared" / "data" / "fetal-sb-atlas"
SPACING = 2.4


def need_atlas(*cases: str) -> None:
    for case in cases:
        if not (ATLAS / case / "srr.nii.gz").is_file():
            pytest.skip(
                f"fetal atlas case {case} not found in {ATLAS} (shared/data/fetal-sb-atlas, see its README)"
            )


def write_small_case(case: str, folder: Path, spacing: float = SPACING) -> dict[str, Path]:
    """``{"srr", "parcellation", "mask"}`` NIfTI files of an atlas case at ``spacing`` mm, cropped to the mask."""
    from losslab.labelsets.atlas import load_atlas_case

    need_atlas(case)
    images = load_atlas_case(ATLAS / case, spacing=spacing, crop_margin_mm=2 * spacing)
    folder.mkdir(parents=True, exist_ok=True)
    out = {}
    for name, img in images.items():
        out[name] = folder / f"{name}.nii.gz"
        sitk.WriteImage(img, str(out[name]))
    return out


def load_volume(scene, path: Path, name: str, labelmap: bool = False):
    """A volume node read by vtkMRMLVolumeArchetypeStorageNode (Slicer's own reader)."""
    node = scene.AddNewNodeByClass(
        "vtkMRMLLabelMapVolumeNode" if labelmap else "vtkMRMLScalarVolumeNode", name
    )
    storage = scene.AddNewNodeByClass("vtkMRMLVolumeArchetypeStorageNode")
    storage.SetFileName(str(path))
    assert storage.ReadData(node), f"reading {path} failed"
    node.SetAndObserveStorageNodeID(storage.GetID())
    return node


def array(path: Path) -> np.ndarray:
    """(k, j, i) voxels of a file, read by SimpleITK."""
    return sitk.GetArrayFromImage(sitk.ReadImage(str(path)))


#: the shipped fetal ensemble, which finds the brain itself (its card: ``"input": {"mask": "optional"}``)
SHIPPED = "fetal-leafdice-1.6mm"
#: the registry name of :func:`mask_required_registry`'s copy
NEEDS_MASK = "fetal-needs-mask"


def mask_required_registry(root: Path) -> Path:
    """A registry folder under ``root`` holding a copy of the shipped ensemble whose card requires a brain
    mask (``"input": {"mask": "required"}``, as the module writes for a model trained without the brain-mask
    augmentation), named :data:`NEEDS_MASK`; point ``LOSSLAB_MODELS_DIR`` at the returned folder."""
    import json
    import shutil

    from losslab import models

    registry = root / "registry-needs-mask"
    folder = registry / NEEDS_MASK
    shutil.copytree(models.get_card(SHIPPED, Path(models.__file__).parent).folder, folder)  # the package's
    card = json.loads((folder / models.CARD).read_text())
    card.update(name=NEEDS_MASK, input={"mask": "required"})
    (folder / models.CARD).write_text(json.dumps(card))
    return registry
