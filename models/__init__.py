"""Image maths and segmentation methods: pure functions on numpy arrays in (z, y, x) order.

Nothing here touches disk, network or database, and nothing imports from ``service``.
"""

from models.components import (
    FACE_CONNECTIVITY,
    ball,
    binary_closing,
    binary_dilation,
    binary_erosion,
    binary_opening,
    fill_holes,
    label_components,
    largest_component,
)
from models.dce import DceVolume, combine_phases
from models.feature_clustering import ClusteringConfig, ClusteringResult, cluster_volume
from models.graft import GraftConfig, GraftResult, segment_graft
from models.kidney_cluster import prune_tubes, select_kidney
from models.metrics import dice, hd95, precision, recall, volume_difference_pct
from models.otsu import otsu_threshold, segment_otsu
from models.roi import RegionOfInterest, detect_roi, high_intensity_threshold
from models.volume import mask_volume_ml
from models.watershed import segment_watershed

__all__ = [
    "FACE_CONNECTIVITY",
    "ClusteringConfig",
    "ClusteringResult",
    "DceVolume",
    "GraftConfig",
    "GraftResult",
    "RegionOfInterest",
    "ball",
    "binary_closing",
    "binary_dilation",
    "binary_erosion",
    "binary_opening",
    "cluster_volume",
    "combine_phases",
    "detect_roi",
    "dice",
    "fill_holes",
    "hd95",
    "high_intensity_threshold",
    "label_components",
    "largest_component",
    "mask_volume_ml",
    "otsu_threshold",
    "precision",
    "prune_tubes",
    "recall",
    "segment_graft",
    "segment_otsu",
    "segment_watershed",
    "select_kidney",
    "volume_difference_pct",
]
