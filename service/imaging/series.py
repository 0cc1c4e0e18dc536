"""Assemble the instances of one DICOM series into volumes, one per temporal phase.

The volumes keep the acquisition's own geometry: array index ``z`` is exactly the slice
``datasets[z]``, with that slice's position and orientation (PS3.3 C.7.6.2 Image Plane
Module). Nothing is resampled or flipped to a canonical axis order, so a writer can build
each output frame from its source slice (see FIELD-NOTES: mirrored masks).

Tolerances
----------
- Two slices are at the same position when their projections on the slice normal differ by
  at most :data:`SAME_POSITION_TOLERANCE_MM`.
- Slice spacing is uniform when every step between neighbouring slices differs from the mean
  step by at most ``max(SPACING_TOLERANCE_MM, SPACING_TOLERANCE_FRACTION * mean step)``
  (0.01 mm or 1 % of the step, whichever is larger).
- Orientations agree when no direction cosine differs by more than
  :data:`ORIENTATION_TOLERANCE`.
- The slice stack is along the normal (no gantry tilt) when the in-plane offset of every
  slice from the first is at most ``0.01 mm + tan(TILT_TOLERANCE_DEG) * distance``.
"""

from __future__ import annotations

import logging
import math
from collections import defaultdict
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pydicom
import SimpleITK as sitk
from pydicom.pixels import apply_modality_lut, pixel_array

from service.errors import DICOM_READ_ERRORS, SeriesLoadError
from service.imaging.dcmtk_decode import dcmtk_decodes, decode_jpeg_extended

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
    "phase_images",
    "tm_seconds",
]

logger = logging.getLogger(__name__)

#: Slices whose positions along the normal differ by at most this share a position (mm).
SAME_POSITION_TOLERANCE_MM = 0.01
#: Absolute part of the slice-spacing uniformity tolerance (mm).
SPACING_TOLERANCE_MM = 0.01
#: Relative part of the slice-spacing uniformity tolerance (fraction of the mean step).
SPACING_TOLERANCE_FRACTION = 0.01
#: Largest difference between direction cosines of slices in one series.
ORIENTATION_TOLERANCE = 1e-4
#: Largest angle between the slice stack and the slice normal (degrees).
TILT_TOLERANCE_DEG = 0.1

_MIN_SLICES = 3
_ROUNDING_MM = 0.01

#: SOP classes whose geometry lives in functional groups (PS3.3 C.7.6.16).
_ENHANCED_SOP_CLASSES = frozenset(
    {
        "1.2.840.10008.5.1.4.1.1.2.1",  # Enhanced CT Image Storage
        "1.2.840.10008.5.1.4.1.1.2.2",  # Legacy Converted Enhanced CT Image Storage
        "1.2.840.10008.5.1.4.1.1.4.1",  # Enhanced MR Image Storage
        "1.2.840.10008.5.1.4.1.1.4.3",  # Enhanced MR Color Image Storage
        "1.2.840.10008.5.1.4.1.1.4.4",  # Legacy Converted Enhanced MR Image Storage
        "1.2.840.10008.5.1.4.1.1.128.1",  # Legacy Converted Enhanced PET Image Storage
        "1.2.840.10008.5.1.4.1.1.130",  # Enhanced PET Image Storage
    }
)

#: Errors pydicom and its decoder plugins raise on missing or corrupt pixel data.
_PIXEL_ERRORS: tuple[type[Exception], ...] = (
    AttributeError,
    EOFError,
    IndexError,
    KeyError,
    NotImplementedError,
    OSError,
    RuntimeError,
    TypeError,
    ValueError,
)

#: Errors of reading a series file: pydicom's on a corrupt file or element, the file
#: system's on an unreadable one.
_READ_ERRORS: tuple[type[Exception], ...] = (*DICOM_READ_ERRORS, OSError)


@dataclass(frozen=True)
class LoadedVolume:
    """One temporal phase of a series as an image in the acquisition geometry.

    Attributes
    ----------
    image : SimpleITK.Image
        float32 pixel values after the modality LUT (Rescale Slope / Intercept). Origin is
        the Image Position (Patient) of ``datasets[0]``; spacing is (Pixel Spacing[1],
        Pixel Spacing[0], slice step); the direction columns are the row direction, the
        column direction and their cross product (the normal). Array index ``z`` (as
        :func:`SimpleITK.GetArrayFromImage` gives) is ``datasets[z]``.
    datasets : tuple of pydicom.Dataset
        The slice headers in ``z`` order, Pixel Data removed.
    temporal_position : int or None
        Temporal Position Identifier when the instances carry it, else the 1-based phase
        index for a dynamic series, else ``None`` (static series).
    acquisition_time_s : float or None
        Seconds since the first phase of the series (Trigger Time, else Acquisition Time,
        else Content Time), ``None`` when no time is known.
    """

    image: sitk.Image
    datasets: tuple[pydicom.Dataset, ...]
    temporal_position: int | None
    acquisition_time_s: float | None


@dataclass(frozen=True)
class LoadedSeries:
    """A series assembled into one volume per temporal phase, in time order."""

    series_instance_uid: str
    modality: str
    description: str
    volumes: tuple[LoadedVolume, ...]


@dataclass(frozen=True)
class _SliceGeometry:
    position: np.ndarray  # Image Position (Patient), mm
    row_direction: np.ndarray  # direction of increasing column index
    column_direction: np.ndarray  # direction of increasing row index
    pixel_spacing: tuple[float, float]  # (between rows, between columns), mm
    shape: tuple[int, int]  # (Rows, Columns)


def group_by_series(paths: Iterable[Path]) -> dict[str, list[Path]]:
    """Group DICOM files by Series Instance UID, reading headers only.

    Parameters
    ----------
    paths : iterable of pathlib.Path
        Files to look at. Files that are not DICOM, cannot be read or have no Series
        Instance UID are skipped with a warning naming the path.

    Returns
    -------
    dict of str to list of pathlib.Path
        Series Instance UID to the sorted paths of its instances.
    """
    groups: dict[str, list[Path]] = defaultdict(list)
    for path in paths:
        path = Path(path)
        try:
            header = pydicom.dcmread(
                path, stop_before_pixels=True, specific_tags=["SeriesInstanceUID"]
            )
        except _READ_ERRORS as exc:
            logger.warning("skipping %s: not a readable DICOM file (%s)", path, exc)
            continue
        series_uid = str(header.get("SeriesInstanceUID", "") or "")
        if not series_uid:
            logger.warning("skipping %s: no SeriesInstanceUID", path)
            continue
        groups[series_uid].append(path)
    return {uid: sorted(files) for uid, files in groups.items()}


def load_series(paths: Sequence[Path]) -> LoadedSeries:
    """Load the instances of one series into volumes, one per temporal phase.

    Slices are sorted by the projection of Image Position (Patient) on the slice normal
    (row direction x column direction). Temporal phases are told apart by Temporal
    Position Identifier when it splits the instances; otherwise, when several instances
    share a position, the k-th instance at each position (ordered by Trigger Time, else
    Acquisition Time, else Acquisition Number) belongs to phase k.

    Parameters
    ----------
    paths : sequence of pathlib.Path
        The instances of one series (single-frame images, PS3.3 C.7.6.2).

    Returns
    -------
    LoadedSeries
        One :class:`LoadedVolume` per phase, in time order; exactly one for a static series.

    Raises
    ------
    ValueError
        If ``paths`` is empty.
    SeriesLoadError
        With the Series Instance UID, if a file is unreadable, instances of several series
        are mixed, an instance is enhanced multi-frame, geometry attributes are missing or
        invalid, orientations or Frame of Reference UIDs differ, slice spacing is not
        uniform, the stack is tilted (gantry tilt), positions are duplicated in a way that
        cannot be split into phases, phases have different slice counts or positions, a
        phase has fewer than 3 slices, or pixel data is missing or cannot be decoded.
    """
    if not paths:
        raise ValueError("load_series needs at least one path")
    datasets, pixels = _read_all(paths)
    series_uid = str(datasets[0].get("SeriesInstanceUID", ""))
    datasets, pixels = _check_same_series(datasets, pixels, series_uid)
    geometries = [_slice_geometry(ds, series_uid) for ds in datasets]
    row_direction, column_direction = _common_orientation(geometries, datasets, series_uid)
    _check_common_attributes(geometries, datasets, series_uid)
    normal = np.cross(row_direction, column_direction)
    normal /= np.linalg.norm(normal)
    positions = np.array([g.position for g in geometries])
    along = positions @ normal

    phases = _split_phases(datasets, along, series_uid)
    ordered = [sorted(indices, key=lambda i: along[i]) for _, indices in phases]
    _check_phase_geometry(ordered, positions, along, normal, series_uid)

    pixel_spacing = geometries[0].pixel_spacing
    first = ordered[0]
    step = (along[first[-1]] - along[first[0]]) / (len(first) - 1)
    spacing = (pixel_spacing[1], pixel_spacing[0], float(step))
    direction = np.column_stack([row_direction, column_direction, normal])
    times = _phase_times([[datasets[i] for i in indices] for indices in ordered])

    volumes = []
    for (temporal_position, _), indices, time_s in zip(phases, ordered, times, strict=True):
        phase_datasets = tuple(datasets[i] for i in indices)
        array = np.stack([pixels[i] for i in indices])
        image = sitk.GetImageFromArray(array)
        image.SetOrigin(tuple(float(v) for v in positions[indices[0]]))
        image.SetSpacing(spacing)
        image.SetDirection(tuple(float(v) for v in direction.ravel()))
        volumes.append(
            LoadedVolume(
                image=image,
                datasets=phase_datasets,
                temporal_position=temporal_position,
                acquisition_time_s=time_s,
            )
        )
    first_ds = datasets[0]
    logger.info(
        "loaded series %s: %d phase(s) of %d slices",
        series_uid,
        len(volumes),
        len(first),
    )
    return LoadedSeries(
        series_instance_uid=series_uid,
        modality=str(first_ds.get("Modality", "") or ""),
        description=str(first_ds.get("SeriesDescription", "") or ""),
        volumes=tuple(volumes),
    )


def _read_all(paths: Sequence[Path]) -> tuple[list[pydicom.Dataset], list[np.ndarray]]:
    """Read every file, decoding its pixels at once and dropping Pixel Data (low memory)."""
    datasets: list[pydicom.Dataset] = []
    pixels: list[np.ndarray] = []
    unreadable: list[tuple[Path, Exception]] = []
    for path in paths:
        try:
            ds = pydicom.dcmread(path)
            for tag in [t for t in ds.keys() if not t.is_private]:
                # Decode every standard element now: a corrupt one fails here, not later
                # in a pipeline or writer that reads the headers.
                _ = ds[tag]
        except _READ_ERRORS as exc:
            unreadable.append((Path(path), exc))
            continue
        uid = str(ds.get("SeriesInstanceUID", "") or "<no SeriesInstanceUID>")
        _refuse_multi_frame(ds, uid)
        pixels.append(_decode(ds, uid))
        datasets.append(ds)
    if unreadable:
        path, exc = unreadable[0]
        uid = str(datasets[0].get("SeriesInstanceUID", "")) if datasets else "<unknown>"
        raise SeriesLoadError(uid, f"{path} is not a readable DICOM file: {exc}")
    return datasets, pixels


def _check_same_series(
    datasets: list[pydicom.Dataset], pixels: list[np.ndarray], series_uid: str
) -> tuple[list[pydicom.Dataset], list[np.ndarray]]:
    """Refuse mixed series; drop repeated SOP instances (a resent instance stored twice)."""
    uids = {str(ds.get("SeriesInstanceUID", "")) for ds in datasets}
    if len(uids) > 1:
        raise SeriesLoadError(
            series_uid, f"instances of {len(uids)} series given: {', '.join(sorted(uids))}"
        )
    seen: set[str] = set()
    kept: list[int] = []
    for i, ds in enumerate(datasets):
        sop_uid = str(ds.get("SOPInstanceUID", "") or "")
        if sop_uid and sop_uid in seen:
            logger.warning("series %s: instance %s given twice, using one", series_uid, sop_uid)
            continue
        seen.add(sop_uid)
        kept.append(i)
    return [datasets[i] for i in kept], [pixels[i] for i in kept]


def _refuse_multi_frame(ds: pydicom.Dataset, series_uid: str) -> None:
    sop_class = str(ds.get("SOPClassUID", "") or "")
    frames = ds.get("NumberOfFrames")
    try:
        n_frames = int(frames) if frames not in (None, "") else 1
    except (TypeError, ValueError):
        n_frames = 1
    if (
        sop_class in _ENHANCED_SOP_CLASSES
        or "PerFrameFunctionalGroupsSequence" in ds
        or n_frames > 1
    ):
        name = pydicom.uid.UID(sop_class).name if sop_class else "?"
        raise SeriesLoadError(
            series_uid,
            f"instance {ds.get('SOPInstanceUID', '?')} is an enhanced multi-frame image "
            f"(SOP class {name}"
            f"{f' ({sop_class})' if name != sop_class else ''}, {n_frames} frame(s)): "
            "enhanced multi-frame instances are not supported yet",
        )


def _decode(ds: pydicom.Dataset, series_uid: str) -> np.ndarray:
    """Return the slice's pixels after the modality LUT as float32; drop Pixel Data."""
    sop_uid = ds.get("SOPInstanceUID", "?")
    if "PixelData" not in ds:
        raise SeriesLoadError(series_uid, f"instance {sop_uid} has no pixel data")
    try:
        syntax = str(getattr(ds.file_meta, "TransferSyntaxUID", "") or "")
        stored = decode_jpeg_extended(ds) if dcmtk_decodes(syntax) else pixel_array(ds)
        values = apply_modality_lut(stored, ds)
    except _PIXEL_ERRORS as exc:
        raise SeriesLoadError(
            series_uid, f"instance {sop_uid}: pixel data cannot be decoded: {exc}"
        ) from exc
    if values.ndim != 2:
        raise SeriesLoadError(
            series_uid,
            f"instance {sop_uid}: decoded pixels have shape {values.shape}, expected one "
            "greyscale frame",
        )
    pixels = values.astype(np.float32, copy=False)
    if not np.isfinite(pixels).all():
        raise SeriesLoadError(
            series_uid,
            f"instance {sop_uid}: pixel values are not finite after the modality LUT "
            f"(RescaleSlope {ds.get('RescaleSlope')}, RescaleIntercept "
            f"{ds.get('RescaleIntercept')})",
        )
    del ds.PixelData
    return pixels


def _slice_geometry(ds: pydicom.Dataset, series_uid: str) -> _SliceGeometry:
    sop_uid = ds.get("SOPInstanceUID", "?")
    missing = [
        keyword
        for keyword in ("ImagePositionPatient", "ImageOrientationPatient", "PixelSpacing")
        if ds.get(keyword) in (None, "")
    ]
    if missing:
        raise SeriesLoadError(
            series_uid, f"instance {sop_uid} lacks geometry attribute(s) {', '.join(missing)}"
        )
    try:
        position = np.array([float(v) for v in ds.ImagePositionPatient], dtype=float)
        orientation = np.array([float(v) for v in ds.ImageOrientationPatient], dtype=float)
        pixel_spacing = tuple(float(v) for v in ds.PixelSpacing)
        shape = (int(ds.Rows), int(ds.Columns))
    except (AttributeError, TypeError, ValueError) as exc:
        raise SeriesLoadError(
            series_uid, f"instance {sop_uid} has unreadable geometry attributes: {exc}"
        ) from exc
    if position.shape != (3,) or orientation.shape != (6,) or len(pixel_spacing) != 2:
        raise SeriesLoadError(
            series_uid,
            f"instance {sop_uid}: expected 3 ImagePositionPatient, 6 ImageOrientationPatient "
            f"and 2 PixelSpacing values, found {position.size}, {orientation.size} and "
            f"{len(pixel_spacing)}",
        )
    if not (np.isfinite(position).all() and np.isfinite(orientation).all()
            and np.isfinite(pixel_spacing).all()):
        raise SeriesLoadError(
            series_uid,
            f"instance {sop_uid}: non-finite geometry: ImagePositionPatient "
            f"{position.tolist()}, ImageOrientationPatient {orientation.tolist()}, "
            f"PixelSpacing {list(pixel_spacing)}",
        )
    if min(pixel_spacing) <= 0:
        raise SeriesLoadError(
            series_uid, f"instance {sop_uid}: PixelSpacing {pixel_spacing} is not positive"
        )
    row, column = orientation[:3], orientation[3:]
    row_norm, column_norm = np.linalg.norm(row), np.linalg.norm(column)
    if min(row_norm, column_norm) < 0.5 or abs(row @ column) / (row_norm * column_norm) > 1e-3:
        raise SeriesLoadError(
            series_uid,
            f"instance {sop_uid}: ImageOrientationPatient {orientation.tolist()} is not two "
            "orthogonal unit vectors",
        )
    return _SliceGeometry(
        position=position,
        row_direction=row / row_norm,
        column_direction=column / column_norm,
        pixel_spacing=(pixel_spacing[0], pixel_spacing[1]),
        shape=shape,
    )


def _common_orientation(
    geometries: Sequence[_SliceGeometry], datasets: Sequence[pydicom.Dataset], series_uid: str
) -> tuple[np.ndarray, np.ndarray]:
    reference = geometries[0]
    for geometry, ds in zip(geometries, datasets, strict=True):
        deviation = max(
            np.abs(geometry.row_direction - reference.row_direction).max(),
            np.abs(geometry.column_direction - reference.column_direction).max(),
        )
        if deviation > ORIENTATION_TOLERANCE:
            raise SeriesLoadError(
                series_uid,
                "mixed orientations: instance "
                f"{ds.get('SOPInstanceUID', '?')} has ImageOrientationPatient "
                f"{np.r_[geometry.row_direction, geometry.column_direction].round(6).tolist()}, "
                "expected "
                f"{np.r_[reference.row_direction, reference.column_direction].round(6).tolist()}",
            )
    return reference.row_direction, reference.column_direction


def _check_common_attributes(
    geometries: Sequence[_SliceGeometry], datasets: Sequence[pydicom.Dataset], series_uid: str
) -> None:
    frames_of_reference = {str(ds.get("FrameOfReferenceUID", "") or "") for ds in datasets}
    if len(frames_of_reference) > 1:
        listed = ", ".join(sorted(uid or "<none>" for uid in frames_of_reference))
        raise SeriesLoadError(series_uid, f"different FrameOfReferenceUID values: {listed}")
    shapes = {g.shape for g in geometries}
    if len(shapes) > 1:
        raise SeriesLoadError(series_uid, f"slices have different Rows x Columns: {sorted(shapes)}")
    spacings = np.array([g.pixel_spacing for g in geometries])
    if np.ptp(spacings, axis=0).max() > 1e-4:
        raise SeriesLoadError(
            series_uid,
            f"slices have different PixelSpacing: {sorted({g.pixel_spacing for g in geometries})}",
        )


def _position_clusters(along: np.ndarray, indices: Sequence[int]) -> list[list[int]]:
    """Group instance indices whose positions along the normal coincide."""
    order = sorted(indices, key=lambda i: along[i])
    clusters: list[list[int]] = []
    for i in order:
        if clusters and along[i] - along[clusters[-1][-1]] <= SAME_POSITION_TOLERANCE_MM:
            clusters[-1].append(i)
        else:
            clusters.append([i])
    return clusters


def _optional_int(value: object) -> int | None:
    if value in (None, ""):
        return None
    try:
        return int(str(value))
    except (TypeError, ValueError):
        return None


def _optional_float(value: object) -> float | None:
    if value in (None, ""):
        return None
    try:
        return float(str(value))
    except (TypeError, ValueError):
        return None


def tm_seconds(value: object) -> float | None:
    """Seconds since midnight of a TM value (``HHMMSS.FFFFFF``, parts optional)."""
    if value in (None, ""):
        return None
    text = str(value).strip().replace(":", "")
    try:
        hours = int(text[0:2])
        minutes = int(text[2:4]) if len(text) >= 4 else 0
        seconds = float(text[4:]) if len(text) > 4 else 0.0
    except ValueError:
        return None
    return hours * 3600.0 + minutes * 60.0 + seconds


#: Attributes that order the instances sharing a slice position, in order of preference.
_TIME_KEYS: tuple[tuple[str, Callable[[object], float | None]], ...] = (
    ("TriggerTime", _optional_float),
    ("AcquisitionTime", tm_seconds),
    ("AcquisitionNumber", lambda v: None if (n := _optional_int(v)) is None else float(n)),
)


def _split_phases(
    datasets: Sequence[pydicom.Dataset], along: np.ndarray, series_uid: str
) -> list[tuple[int | None, list[int]]]:
    """Split instance indices into temporal phases, in time order."""
    all_indices = list(range(len(datasets)))
    identifiers = [_optional_int(ds.get("TemporalPositionIdentifier")) for ds in datasets]
    if all(v is not None for v in identifiers) and len(set(identifiers)) > 1:
        groups: dict[int, list[int]] = defaultdict(list)
        for i, identifier in enumerate(identifiers):
            groups[int(identifier or 0)].append(i)
        for identifier, indices in groups.items():
            clusters = _position_clusters(along, indices)
            if len(clusters) != len(indices):
                raise SeriesLoadError(
                    series_uid,
                    f"temporal position {identifier} holds {len(indices)} instances at only "
                    f"{len(clusters)} distinct positions: duplicated positions cannot be "
                    "split into phases",
                )
        _check_phase_counts({k: len(v) for k, v in groups.items()}, series_uid)
        return [(k, groups[k]) for k in sorted(groups)]

    clusters = _position_clusters(along, all_indices)
    sizes = {len(c) for c in clusters}
    if sizes == {1}:
        single = identifiers[0] if len(set(identifiers)) == 1 else None
        return [(single, all_indices)]
    if len(sizes) > 1:
        raise SeriesLoadError(
            series_uid,
            f"slice positions hold between {min(sizes)} and {max(sizes)} instances: "
            "duplicated positions cannot be split into phases with equal slice counts",
        )
    n_phases = sizes.pop()
    for keyword, parse in _TIME_KEYS:
        parsed = [parse(ds.get(keyword)) for ds in datasets]
        if any(v is None for v in parsed):
            continue
        values = [float(v) for v in parsed if v is not None]
        by_time = [sorted(c, key=values.__getitem__) for c in clusters]
        if any(len({values[i] for i in c}) != len(c) for c in by_time):
            continue
        phases = [[c[p] for c in by_time] for p in range(n_phases)]
        bounds = [(min(values[i] for i in p), max(values[i] for i in p)) for p in phases]
        if any(bounds[p][1] >= bounds[p + 1][0] for p in range(n_phases - 1)):
            continue  # phases would interleave in time: not a clean split
        logger.debug("series %s: %d phases told apart by %s", series_uid, n_phases, keyword)
        return [(p + 1, phase) for p, phase in enumerate(phases)]
    raise SeriesLoadError(
        series_uid,
        f"{n_phases} instances share each slice position and neither "
        "TemporalPositionIdentifier, TriggerTime, AcquisitionTime nor AcquisitionNumber "
        "tells them apart: duplicated positions cannot be split into phases",
    )


def _check_phase_counts(counts: dict[int, int], series_uid: str) -> None:
    if len(set(counts.values())) > 1:
        listed = ", ".join(f"{k}: {n}" for k, n in sorted(counts.items()))
        raise SeriesLoadError(
            series_uid, f"phases have different slice counts (temporal position: count) {listed}"
        )


def _check_phase_geometry(
    ordered: Sequence[Sequence[int]],
    positions: np.ndarray,
    along: np.ndarray,
    normal: np.ndarray,
    series_uid: str,
) -> None:
    reference = along[list(ordered[0])]
    if len(reference) < _MIN_SLICES:
        raise SeriesLoadError(
            series_uid,
            f"{len(reference)} slice(s) per phase, at least {_MIN_SLICES} are needed",
        )
    for p, indices in enumerate(ordered[1:], start=2):
        if len(indices) != len(reference):
            raise SeriesLoadError(
                series_uid,
                f"phases have different slice counts: phase 1 has {len(reference)}, "
                f"phase {p} has {len(indices)}",
            )
        offset = np.abs(along[list(indices)] - reference).max()
        if offset > SAME_POSITION_TOLERANCE_MM:
            raise SeriesLoadError(
                series_uid,
                f"phase {p} covers other slice positions than phase 1 (up to {offset:.3f} mm)",
            )
    steps = np.diff(reference)
    mean_step = (reference[-1] - reference[0]) / (len(reference) - 1)
    tolerance = max(SPACING_TOLERANCE_MM, SPACING_TOLERANCE_FRACTION * mean_step)
    worst = int(np.argmax(np.abs(steps - mean_step)))
    if abs(steps[worst] - mean_step) > tolerance:
        raise SeriesLoadError(
            series_uid,
            f"non-uniform slice spacing: step {worst + 1} is {steps[worst]:.4f} mm, the mean "
            f"step is {mean_step:.4f} mm (tolerance {tolerance:.4f} mm); missing slices?",
        )
    tan_tilt = math.tan(math.radians(TILT_TOLERANCE_DEG))
    for indices in ordered:
        indices = list(indices)
        offsets = positions[indices] - positions[indices[0]]
        distance = offsets @ normal
        in_plane = np.linalg.norm(offsets - np.outer(distance, normal), axis=1)
        if np.any(in_plane > _ROUNDING_MM + tan_tilt * np.abs(distance)):
            angle = math.degrees(math.atan2(in_plane[-1], abs(distance[-1])))
            raise SeriesLoadError(
                series_uid,
                f"slices are not stacked along their normal (gantry tilt or sheared stack, "
                f"about {angle:.2f} degrees): tilted series are not supported",
            )


def _phase_times(phases: Sequence[Sequence[pydicom.Dataset]]) -> list[float | None]:
    """Seconds since the first phase, from the first time attribute every phase has."""
    sources: tuple[tuple[str, Callable[[object], float | None], float], ...] = (
        ("TriggerTime", _optional_float, 1e-3),
        ("AcquisitionTime", tm_seconds, 1.0),
        ("ContentTime", tm_seconds, 1.0),
    )
    for keyword, parse, scale in sources:
        starts: list[float] = []
        for phase in phases:
            parsed = [parse(ds.get(keyword)) for ds in phase]
            values = [v for v in parsed if v is not None]
            if len(values) != len(parsed):
                break
            starts.append(min(values) * scale)
        else:
            times = [s - starts[0] for s in starts]
            if scale == 1.0:  # TM values: an acquisition running over midnight
                times = [t + 86400.0 if t < 0 else t for t in times]
            return times
    return [None] * len(phases)


def phase_images(reference: LoadedVolume, series_files: Sequence[Path]) -> list[pydicom.Dataset]:
    """The images of ``reference`` with their Pixel Data, in its ``z`` order, when its series
    (``series_files``: every file of that series) holds other images too (the other phases
    of a DCE stored as one series); else an empty list."""
    if len(series_files) <= len(reference.datasets):
        return []
    wanted = {str(ds.SOPInstanceUID): z for z, ds in enumerate(reference.datasets)}
    found: dict[int, pydicom.Dataset] = {}
    for path in series_files:
        header = pydicom.dcmread(path, stop_before_pixels=True,
                                 specific_tags=["SOPInstanceUID"])
        z = wanted.get(str(header.SOPInstanceUID))
        if z is not None:
            found[z] = pydicom.dcmread(path)
    if len(found) != len(wanted):
        raise SeriesLoadError(f"series {reference.datasets[0].SeriesInstanceUID}: "
                              f"{len(wanted) - len(found)} images of the segmented phase "
                              "are no longer in the archive")
    return [found[z] for z in range(len(wanted))]
