"""ICE data (ice-editing-shahin2023): a sparse-ICE simulator on any left-atrium anatomy, the CAS contours,
and the paper's interaction synthesis for training and testing editing models.

Typical use (a training loop making cases on the fly)::

    from losslab import ice

    grid = ice.Grid.cube(64, 2.2048)                        # or Grid.cube() = the paper's 128^3 x 1.1024 mm
    case = ice.simulate_case(ice.make_atrium(grid, seed=3), grid, seed=3)  # or make_phantom, a LA mask
    edit = ice.training_interaction(case, y_init, seed=0)   # scribble on y where y_init is worst
    u = edit.encode(case.spacing)                            # Gaussian map, sigma 22.048 mm (paper: 20 voxels)
    test_edit = ice.furthest_cas_interaction(case, prediction)   # the furthest CAS contour

Conventions (see :mod:`losslab.ice.geometry`): arrays ``(k, j, i)`` with ``spacing`` in the same order;
poses map frame pixels ``(u, v, 0, 1)`` to RAS mm; files are written in ITK's LPS by :mod:`losslab.io`.
"""

from .anatomy import make_atrium, make_phantom, prepare_anatomy, sample_atrium
from .dataset import dataset_cases, read_case, simulate_dataset, write_case, write_manifest
from .editing import EditingModel, EditResult, edit_changes
from .geometry import PAPER_SHAPE, PAPER_SPACING, Grid, Sector
from .interactions import (
    PAPER_SIGMA_MM,
    CASEditSequence,
    Interaction,
    cas_contour_distances,
    editing_batch,
    encode,
    frame_errors,
    furthest_cas_interaction,
    perturb_polyline,
    sample_on_frames,
    training_interaction,
)
from .simulate import Frame, ICECase, SimulationConfig, polylines_to_voxels, signed_distance, simulate_case

__all__ = [
    "EditResult",
    "EditingModel",
    "edit_changes",
    "PAPER_SHAPE",
    "PAPER_SIGMA_MM",
    "PAPER_SPACING",
    "CASEditSequence",
    "Frame",
    "Grid",
    "ICECase",
    "Interaction",
    "Sector",
    "SimulationConfig",
    "cas_contour_distances",
    "dataset_cases",
    "editing_batch",
    "encode",
    "frame_errors",
    "furthest_cas_interaction",
    "make_atrium",
    "make_phantom",
    "perturb_polyline",
    "polylines_to_voxels",
    "prepare_anatomy",
    "read_case",
    "sample_atrium",
    "sample_on_frames",
    "signed_distance",
    "simulate_case",
    "simulate_dataset",
    "training_interaction",
    "write_case",
    "write_manifest",
]
