"""Imaging: assembling received DICOM series into oriented volumes."""

from service.imaging.series import (
    ORIENTATION_TOLERANCE,
    SAME_POSITION_TOLERANCE_MM,
    SPACING_TOLERANCE_FRACTION,
    SPACING_TOLERANCE_MM,
    TILT_TOLERANCE_DEG,
    LoadedSeries,
    LoadedVolume,
    group_by_series,
    load_series,
)

__all__ = [
    "ORIENTATION_TOLERANCE",
    "SAME_POSITION_TOLERANCE_MM",
    "SPACING_TOLERANCE_FRACTION",
    "SPACING_TOLERANCE_MM",
    "TILT_TOLERANCE_DEG",
    "LoadedSeries",
    "LoadedVolume",
    "group_by_series",
    "load_series",
]
