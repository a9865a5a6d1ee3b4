"""Segmentation metrics: overlap, surface distances in mm, the ICE editing metric and calibration.

Every function takes numpy arrays or torch tensors; surface distances, contours and the editing map run on
the tensor's device (GPU included) and give the same values as the CPU path. See each module's docstring
for its conventions (boundary voxels, percentiles, empty masks).
"""

from ._distance import boundary, nearest_distances
from .attention import DEFAULT_SIGMA, PAPER_SIGMA_MM, attention_map
from .calibration import classwise_ece, reliability_bins
from .editing import EditingResult, contour_distance, editing_metric
from .overlap import (
    confusion_matrix,
    dice_score,
    iou_score,
    mean_dice,
    mean_iou,
    overlap_per_class,
    pixel_accuracy,
)
from .surface import (
    MetricSummary,
    SegmentationMetrics,
    assd_from_distances,
    average_symmetric_surface_distance,
    compare_masks,
    hausdorff_distance,
    hausdorff_from_distances,
    hd95,
    surface_distances,
)

__all__ = [
    "DEFAULT_SIGMA",
    "PAPER_SIGMA_MM",
    "EditingResult",
    "MetricSummary",
    "SegmentationMetrics",
    "assd_from_distances",
    "attention_map",
    "average_symmetric_surface_distance",
    "boundary",
    "classwise_ece",
    "compare_masks",
    "confusion_matrix",
    "contour_distance",
    "dice_score",
    "editing_metric",
    "hausdorff_distance",
    "hausdorff_from_distances",
    "hd95",
    "iou_score",
    "mean_dice",
    "mean_iou",
    "nearest_distances",
    "overlap_per_class",
    "pixel_accuracy",
    "reliability_bins",
    "surface_distances",
]
