"""Write synthetic kidney-graft MR studies as DICOM: MR Image Storage, one file per slice.

The images come from :func:`service.synthetic.phantom.synthesize_mr`; this module only
encodes them (PS3.3 A.4 MR Image IOD: Patient, General Study, General Series, Frame of
Reference, General Equipment, General Acquisition, General Image, Image Plane, Image
Pixel, Contrast/Bolus, MR Image, VOI LUT and SOP Common modules), explicit VR little
endian with File Meta Information (PS3.10).
"""

from __future__ import annotations

import datetime
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from types import MappingProxyType

import numpy as np
import pydicom
import SimpleITK as sitk
from pydicom.dataset import FileMetaDataset
from pydicom.filebase import DicomBytesIO
from pydicom.filewriter import write_data_element, write_file_meta_info
from pydicom.uid import ExplicitVRLittleEndian, MRImageStorage

from service.dicom.uids import new_uid
from service.synthetic.phantom import (
    DIXON_IMAGES,
    AcquisitionProtocol,
    GridCentre,
    Orientation,
    RenderSettings,
    RigidMotion,
    SmoothDeformation,
    SyntheticMR,
    VolumeGeometry,
    synthesize_mr,
)

__all__ = [
    "DCE_SERIES_NUMBER",
    "DIXON_SERIES_NUMBER",
    "T2_SERIES_NUMBER",
    "DceLayout",
    "SyntheticStudy",
    "geometry_image",
    "write_mr_study",
]

logger = logging.getLogger(__name__)

#: Series Number of the T2 series.
T2_SERIES_NUMBER = 2
#: Series Number of the DCE series (per-phase layout: of its first phase, then +1 each).
DCE_SERIES_NUMBER = 3
#: Series Number of the first Dixon series (in-phase), then +1 each (opp, water, fat).
DIXON_SERIES_NUMBER = 11
#: SeriesDescription suffix of each Dixon image, as a Siemens VIBE Dixon names them.
_DIXON_SUFFIX = {"in": "in", "opp": "opp", "water": "W", "fat": "F"}
_DIXON_IMAGE_TYPE = {"in": "IN_PHASE", "opp": "OPP_PHASE", "water": "WATER", "fat": "FAT"}
_DIXON_TIME = datetime.time(10, 4, 0)

_STUDY_TIME = datetime.time(10, 0, 0)
_T2_TIME = datetime.time(10, 2, 0)
_INJECTION_TIME = datetime.time(10, 6, 0)
_PIXEL_DATA = 0x7FE00010


class DceLayout(StrEnum):
    """How the DCE phases are stored."""

    SINGLE_SERIES = "single-series"  # one series, Temporal Position Identifier per phase
    PER_PHASE = "per-phase"  # one series per phase


@dataclass(frozen=True)
class SyntheticStudy:
    """A synthetic study written to disk, with its ground truth.

    Attributes
    ----------
    root : pathlib.Path
        Folder holding the files (one sub-folder per series).
    patient_id, study_instance_uid : str
        Patient ID and Study Instance UID of every file.
    dce_series_uids : tuple of str
        One UID (single-series layout) or one per phase, in time order.
    t2_series_uid : str or None
        UID of the T2 series, ``None`` without T2.
    files : tuple of pathlib.Path
        Every file written.
    truth_volume_ml : float
        Volume of the voxelised kidney mask in the DCE grid, ml.
    truth_mask : SimpleITK.Image
        uint8 kidney mask in the DCE grid: same origin, spacing and direction as the DCE
        series loaded by :func:`service.imaging.load_series`.
    analytic_volume_ml : float
        Exact volume of the analytic kidney shape, ml.
    phase_times_s : tuple of float
        Seconds after injection of each DCE phase.
    t2_motion : RigidMotion or None
        Rigid patient motion of the T2 series relative to the DCE.
    t2_deformation : SmoothDeformation or None
        Smooth non-rigid part of the T2 misalignment (see
        :meth:`~service.synthetic.phantom.SyntheticMR.t2_source_points`).
    dixon_series_uids : mapping of str to str
        UID of each Dixon series by image name (``in``, ``opp``, ``water``, ``fat``);
        empty without Dixon.
    t2_truth_mask : SimpleITK.Image or None
        uint8 kidney mask in the T2 grid (the truth of a study without DCE).
    t2_truth_volume_ml : float or None
        Its volume, ml.
    """

    root: Path
    patient_id: str
    study_instance_uid: str
    dce_series_uids: tuple[str, ...]
    t2_series_uid: str | None
    files: tuple[Path, ...]
    truth_volume_ml: float
    truth_mask: sitk.Image
    analytic_volume_ml: float
    phase_times_s: tuple[float, ...]
    t2_motion: RigidMotion | None
    t2_deformation: SmoothDeformation | None = None
    dixon_series_uids: Mapping[str, str] = field(default_factory=dict)
    t2_truth_mask: sitk.Image | None = None
    t2_truth_volume_ml: float | None = None


#: MR Image module and acquisition attributes of the DCE series (3D spoiled gradient echo).
_DCE_PROTOCOL: Mapping[str, object] = MappingProxyType(
    {
        "ScanningSequence": "GR",
        "SequenceVariant": "SP",
        "ScanOptions": "FS",
        "MRAcquisitionType": "3D",
        "SequenceName": "*fl3d1",
        "AngioFlag": "N",
        "RepetitionTime": "3.6",
        "EchoTime": "1.4",
        "EchoTrainLength": 1,
        "FlipAngle": "12",
        "NumberOfAverages": "1",
        "PixelBandwidth": "450",
        "TemporalResolution": "15000",
    }
)

#: MR Image module and acquisition attributes of the Dixon series (3D gradient echo, two
#: echoes; TE of the opposed-phase echo at 1.5 T).
_DIXON_PROTOCOL: Mapping[str, object] = MappingProxyType(
    {
        "ScanningSequence": "GR",
        "SequenceVariant": "SP",
        "ScanOptions": "",
        "MRAcquisitionType": "3D",
        "SequenceName": "*fl3d2",
        "AngioFlag": "N",
        "RepetitionTime": "6.7",
        "EchoTime": "2.39",
        "EchoTrainLength": 2,
        "FlipAngle": "10",
        "NumberOfAverages": "1",
        "PixelBandwidth": "500",
    }
)

#: MR Image module and acquisition attributes of the T2 series (2D turbo spin echo).
_T2_PROTOCOL: Mapping[str, object] = MappingProxyType(
    {
        "ScanningSequence": "SE",
        "SequenceVariant": "SK",
        "ScanOptions": "",
        "MRAcquisitionType": "2D",
        "SequenceName": "*tse2d1_16",
        "AngioFlag": "N",
        "RepetitionTime": "4200",
        "EchoTime": "95",
        "EchoTrainLength": 16,
        "FlipAngle": "150",
        "NumberOfAverages": "2",
        "PixelBandwidth": "260",
    }
)

#: Attributes common to both series (equipment, acquisition system).
_SCANNER: Mapping[str, object] = MappingProxyType(
    {
        "Manufacturer": "kidney-node",
        "ManufacturerModelName": "Synthetic phantom",
        "InstitutionName": "Synthetic",
        "StationName": "SYNTH",
        "DeviceSerialNumber": "0001",
        "SoftwareVersions": "phantom 1",
        "MagneticFieldStrength": "1.5",
        "ImagingFrequency": "63.676",
        "ImagedNucleus": "1H",
        "ReceiveCoilName": "Body",
        "TransmitCoilName": "Body",
        "PercentSampling": "100",
        "PercentPhaseFieldOfView": "100",
        "InPlanePhaseEncodingDirection": "ROW",
        "PatientPosition": "HFS",
        "BodyPartExamined": "ABDOMEN",
        "PositionReferenceIndicator": "",
    }
)

#: Contrast/Bolus module (PS3.3 C.7.6.4) of the DCE series.
_CONTRAST: Mapping[str, object] = MappingProxyType(
    {
        "ContrastBolusAgent": "Gadoterate meglumine",
        "ContrastBolusRoute": "IV",
        "ContrastBolusVolume": "15",
        "ContrastBolusStartTime": _INJECTION_TIME.strftime("%H%M%S"),
    }
)


@dataclass(frozen=True)
class _SeriesPlan:
    uid: str
    number: int
    description: str
    protocol: Mapping[str, object]
    geometry: VolumeGeometry
    phases: tuple[np.ndarray, ...]  # uint16 (slices, rows, columns) each
    times: tuple[datetime.time, ...]  # acquisition time of each phase
    temporal_positions: tuple[int, ...] | None  # Temporal Position Identifier of each
    number_of_temporal_positions: int | None
    contrast: bool
    image_type: tuple[str, ...] = ("ORIGINAL", "PRIMARY", "OTHER")


def write_mr_study(
    out_dir: Path,
    *,
    patient_id: str = "SYNTH0001",
    study_date: datetime.date = datetime.date(2024, 3, 14),
    seed: int = 0,
    shape: tuple[int, int, int] | None = None,
    spacing_mm: tuple[float, float, float] | None = None,
    orientation: Orientation | str = "axial",
    dce_layout: DceLayout | str = "single-series",
    include_t2: bool = True,
    kidney_scale: float | None = None,
    study_instance_uid: str | None = None,
    phases: int = 4,
    protocol: AcquisitionProtocol | None = None,
    t2_shape: tuple[int, int, int] | None = None,
    t2_spacing_mm: tuple[float, float, float] | None = None,
    grid_centre: GridCentre | str | None = None,
    settings: RenderSettings | None = None,
    include_dce: bool = True,
    dixon: bool = False,
    lymphocele: bool = False,
    renal_sinus: bool = False,
) -> SyntheticStudy:
    """Write a synthetic kidney-graft MR study (DCE, optionally T2) as DICOM files.

    Parameters
    ----------
    out_dir : pathlib.Path
        Folder to write into (created); each series gets a sub-folder.
    patient_id : str
        Patient ID; the Patient's Name is always ``Synthetic^Graft``.
    study_date : datetime.date
        Study, series, acquisition and content date.
    seed : int
        Seeds the phantom (see :func:`~service.synthetic.phantom.synthesize_mr`).
    shape : tuple of int, optional
        DCE (slices, rows, columns); default (24, 96, 96).
    spacing_mm : tuple of float, optional
        DCE (slice step, row spacing, column spacing), mm; default (2.5, 1.5, 1.5).
    orientation : Orientation or str
        ``"axial"``, ``"axial-flipped"`` (column direction (0, -1, 0)), ``"coronal"``,
        ``"sagittal"`` or ``"oblique"``.
    dce_layout : DceLayout or str
        ``"single-series"`` (Temporal Position Identifier 1..n) or ``"per-phase"``.
    include_t2 : bool
        Also write the T2 series (5 mm slices by default, same Frame of Reference, patient
        moved and deformed).
    kidney_scale : float, optional
        Factor on the kidney's semi-axes; default 1.
    study_instance_uid : str, optional
        Study Instance UID; a new one by default.
    phases : int
        Number of DCE phases.
    protocol : AcquisitionProtocol, optional
        Grids and kidney scale, e.g. :func:`~service.synthetic.phantom.paper_protocol`;
        excludes ``shape``, ``spacing_mm``, ``kidney_scale``, ``t2_shape`` and
        ``t2_spacing_mm``.
    t2_shape, t2_spacing_mm : tuple, optional
        T2 (slices, rows, columns) and (slice thickness, row, column spacing); default:
        the DCE's in-plane grid and 5 mm slices covering the DCE slab.
    grid_centre : GridCentre or str, optional
        ``"kidney"`` or ``"body"``; default ``"body"`` with a protocol, else ``"kidney"``.
    settings : RenderSettings, optional
        Image formation (texture, point-spread function, bias, noise, deformation).
    include_dce : bool
        Write the DCE series; ``False``: a study without contrast (``dce_series_uids``
        empty, ``truth_mask`` still on the DCE grid, which the Dixon series share).
    dixon : bool
        Also write a pre-contrast T1 VIBE Dixon: four series on the DCE grid, "in"
        (in-phase), "opp" (opposed-phase), "W" (water) and "F" (fat), numbered from
        :data:`DIXON_SERIES_NUMBER`, acquired between the T2 and the DCE (no motion
        relative to the DCE; the T2 moved).
    lymphocele : bool
        A lymphocele against the graft.
    renal_sinus : bool
        The graft with its renal sinus fat, outside the truth mask (as real kidneys' masks;
        :class:`~service.synthetic.shapes.Kidney`).

    Returns
    -------
    SyntheticStudy
        Paths, UIDs and the kidney ground truth.

    Raises
    ------
    ValueError
        For an unknown orientation, layout or grid centre, fewer than one phase, or grid
        arguments given together with a protocol.
    """
    orientation = Orientation(orientation)
    layout = DceLayout(dce_layout)
    mr = synthesize_mr(
        seed=seed,
        shape=shape,
        spacing_mm=spacing_mm,
        orientation=orientation,
        phases=phases,
        include_t2=include_t2,
        kidney_scale=kidney_scale,
        protocol=protocol,
        t2_shape=t2_shape,
        t2_spacing_mm=t2_spacing_mm,
        grid_centre=grid_centre,
        settings=settings,
        include_dce=include_dce,
        dixon=dixon,
        lymphocele=lymphocele,
        renal_sinus=renal_sinus,
    )
    study_uid = study_instance_uid or new_uid()
    study = {
        "PatientName": "Synthetic^Graft",
        "PatientID": patient_id,
        "PatientBirthDate": "19650412",
        "PatientSex": "F" if seed % 2 else "M",
        "StudyInstanceUID": study_uid,
        "StudyDate": study_date.strftime("%Y%m%d"),
        "StudyTime": _STUDY_TIME.strftime("%H%M%S"),
        "StudyID": "1",
        "AccessionNumber": f"SYN{seed % 10**12:012d}",
        "ReferringPhysicianName": "Synthetic^Referrer",
        "StudyDescription": "MR kidney graft (synthetic)",
        "FrameOfReferenceUID": new_uid(),
    }
    dce_plans = _dce_plans(mr, layout) if include_dce else []
    dixon_plans = {
        name: _SeriesPlan(
            uid=new_uid(),
            number=DIXON_SERIES_NUMBER + k,
            description=f"t1_vibe_dixon_tra_{_DIXON_SUFFIX[name]}",
            protocol=_DIXON_PROTOCOL,
            geometry=mr.dce_geometry,
            phases=(image,),
            times=(_DIXON_TIME,),
            temporal_positions=None,
            number_of_temporal_positions=None,
            contrast=False,
            image_type=("DERIVED", "PRIMARY", "DIXON", _DIXON_IMAGE_TYPE[name]),
        )
        for k, (name, image) in enumerate(
            (n, mr.dixon[n]) for n in DIXON_IMAGES if mr.dixon is not None)
    }
    t2_plan = None
    if mr.t2 is not None and mr.t2_geometry is not None:
        t2_plan = _SeriesPlan(
            uid=new_uid(),
            number=T2_SERIES_NUMBER,
            description="T2 TSE",
            protocol=_T2_PROTOCOL,
            geometry=mr.t2_geometry,
            phases=(mr.t2,),
            times=(_T2_TIME,),
            temporal_positions=None,
            number_of_temporal_positions=None,
            contrast=False,
        )
    out_dir = Path(out_dir)
    files: list[Path] = []
    for plan in [*dce_plans, *([t2_plan] if t2_plan else []), *dixon_plans.values()]:
        files.extend(_write_series(out_dir, plan=plan, study=study, study_date=study_date))
    dce_uids = tuple(plan.uid for plan in dce_plans)
    t2_uid = t2_plan.uid if t2_plan else None
    logger.info(
        "wrote synthetic study %s: %d files, DCE %s, T2 %s", study_uid, len(files), dce_uids, t2_uid
    )
    return SyntheticStudy(
        root=out_dir,
        patient_id=patient_id,
        study_instance_uid=study_uid,
        dce_series_uids=dce_uids,
        t2_series_uid=t2_uid,
        files=tuple(files),
        truth_volume_ml=mr.truth_volume_ml,
        truth_mask=geometry_image(mr.kidney_mask, mr.dce_geometry),
        analytic_volume_ml=mr.analytic_volume_ml,
        phase_times_s=mr.phase_times_s,
        t2_motion=mr.t2_motion,
        t2_deformation=mr.t2_deformation,
        dixon_series_uids={name: plan.uid for name, plan in dixon_plans.items()},
        t2_truth_mask=(geometry_image(mr.t2_kidney_mask, mr.t2_geometry)
                       if mr.t2_kidney_mask is not None and mr.t2_geometry is not None
                       else None),
        t2_truth_volume_ml=mr.t2_truth_volume_ml,
    )


def geometry_image(array: np.ndarray, geometry: VolumeGeometry) -> sitk.Image:
    """Wrap a (slices, rows, columns) array as a SimpleITK image with ``geometry``.

    Parameters
    ----------
    array : numpy.ndarray
        Voxel values, shape ``geometry.shape``.
    geometry : VolumeGeometry
        Grid of the array.

    Returns
    -------
    SimpleITK.Image
        Origin, spacing (column, row, slice) and direction as :func:`load_series` builds
        them for the series written with this geometry.
    """
    if array.shape != geometry.shape:
        raise ValueError(f"array shape {array.shape} does not match the grid {geometry.shape}")
    image = sitk.GetImageFromArray(array)
    image.SetOrigin(tuple(float(v) for v in geometry.origin))
    step, row_spacing, column_spacing = geometry.spacing_mm
    image.SetSpacing((float(column_spacing), float(row_spacing), float(step)))
    image.SetDirection(tuple(float(v) for v in geometry.direction.ravel()))
    return image


def _dce_plans(mr: SyntheticMR, layout: DceLayout) -> list[_SeriesPlan]:
    times = tuple(_add_seconds(_INJECTION_TIME, t) for t in mr.phase_times_s)
    n_phases = len(mr.phase_times_s)
    if layout is DceLayout.SINGLE_SERIES:
        return [
            _SeriesPlan(
                uid=new_uid(),
                number=DCE_SERIES_NUMBER,
                description="DCE dyn 3D",
                protocol=_DCE_PROTOCOL,
                geometry=mr.dce_geometry,
                phases=tuple(mr.dce),
                times=times,
                temporal_positions=tuple(range(1, n_phases + 1)),
                number_of_temporal_positions=n_phases,
                contrast=True,
            )
        ]
    return [
        _SeriesPlan(
            uid=new_uid(),
            number=DCE_SERIES_NUMBER + p,
            description=f"DCE dyn 3D phase {p + 1}",
            protocol=_DCE_PROTOCOL,
            geometry=mr.dce_geometry,
            phases=(mr.dce[p],),
            times=(times[p],),
            temporal_positions=(p + 1,),
            number_of_temporal_positions=n_phases,
            contrast=True,
        )
        for p in range(n_phases)
    ]


def _add_seconds(start: datetime.time, seconds: float) -> datetime.time:
    moment = datetime.datetime.combine(datetime.date(2000, 1, 1), start)
    return (moment + datetime.timedelta(seconds=seconds)).time()


def _tm(value: datetime.time) -> str:
    """DICOM TM ``HHMMSS.FFFFFF``."""
    return value.strftime("%H%M%S.%f")


def _decimal(value: float, decimals: int = 6) -> str:
    """A DS value of at most 16 characters."""
    text = f"{round(float(value), decimals):.{decimals}f}".rstrip("0").rstrip(".")
    return "0" if text in ("-0", "") else text


def _window(phases: Sequence[np.ndarray]) -> tuple[str, str]:
    high = float(max(np.percentile(p, 99.5) for p in phases))
    return _decimal(high / 2.0, 1), _decimal(max(high, 1.0), 1)


def _write_series(
    out_dir: Path, *, plan: _SeriesPlan, study: Mapping[str, object], study_date: datetime.date
) -> list[Path]:
    series_dir = out_dir / f"series-{plan.number:03d}"
    series_dir.mkdir(parents=True, exist_ok=True)
    geometry = plan.geometry
    step, row_spacing, column_spacing = geometry.spacing_mm
    date = study_date.strftime("%Y%m%d")
    window_centre, window_width = _window(plan.phases)
    orientation = [_decimal(v, 9) for v in (*geometry.row_direction, *geometry.column_direction)]
    normal = geometry.normal
    series = {
        **study,
        **_SCANNER,
        **plan.protocol,
        "Modality": "MR",
        "SeriesInstanceUID": plan.uid,
        "SeriesNumber": plan.number,
        "SeriesDescription": plan.description,
        "ProtocolName": plan.description,
        "SeriesDate": date,
        "SeriesTime": _tm(plan.times[0]),
        "ImageType": list(plan.image_type),
        "SOPClassUID": MRImageStorage,
        "SpecificCharacterSet": "ISO_IR 100",
        "InstanceCreationDate": date,
        "InstanceCreationTime": _tm(plan.times[0]),
        "ImageOrientationPatient": orientation,
        "PixelSpacing": [_decimal(row_spacing), _decimal(column_spacing)],
        "SliceThickness": _decimal(step),
        "SpacingBetweenSlices": _decimal(step),
        "NumberOfPhaseEncodingSteps": geometry.shape[1],
        "SamplesPerPixel": 1,
        "PhotometricInterpretation": "MONOCHROME2",
        "Rows": geometry.shape[1],
        "Columns": geometry.shape[2],
        "BitsAllocated": 16,
        "BitsStored": 16,
        "HighBit": 15,
        "PixelRepresentation": 0,
        "WindowCenter": window_centre,
        "WindowWidth": window_width,
        "AcquisitionDate": date,
        "ContentDate": date,
        "LossyImageCompression": "00",
    }
    if plan.contrast:
        series.update(_CONTRAST)
    if plan.number_of_temporal_positions is not None:
        series["NumberOfTemporalPositions"] = plan.number_of_temporal_positions

    paths: list[Path] = []
    n_slices = geometry.shape[0]
    for p, volume in enumerate(plan.phases):
        phase: dict[str, object] = {
            **series,
            "AcquisitionTime": _tm(plan.times[p]),
            "ContentTime": _tm(plan.times[p]),
            "AcquisitionNumber": p + 1,
        }
        if plan.temporal_positions is not None:
            phase["TemporalPositionIdentifier"] = plan.temporal_positions[p]
        template = pydicom.Dataset()
        for keyword, value in phase.items():
            setattr(template, keyword, value)
        shared = _encode_elements(template)  # encoded once, reused by every slice
        for k in range(n_slices):
            instance_number = p * n_slices + k + 1
            position = geometry.slice_position(k)
            sop_uid = new_uid()
            varying = pydicom.Dataset()
            varying.SOPInstanceUID = sop_uid
            varying.InstanceNumber = instance_number
            varying.ImagePositionPatient = [_decimal(v) for v in position]
            varying.SliceLocation = _decimal(float(position @ normal))
            varying.add_new(
                _PIXEL_DATA, "OW", np.ascontiguousarray(volume[k], dtype="<u2").tobytes()
            )
            path = series_dir / f"IM{instance_number:05d}.dcm"
            _write_part10(path, sop_uid, [*shared, *_encode_elements(varying)])
            paths.append(path)
    return paths


def _encode_elements(ds: pydicom.Dataset) -> list[tuple[int, bytes]]:
    """Encode each element of ``ds`` (explicit VR little endian), keyed by its tag."""
    parts = []
    for element in ds:
        buffer = DicomBytesIO()
        buffer.is_little_endian = True
        buffer.is_implicit_VR = False
        write_data_element(buffer, element)
        parts.append((int(element.tag), buffer.getvalue()))
    return parts


def _write_part10(
    path: Path,
    sop_instance_uid: str,
    parts: list[tuple[int, bytes]],
    *,
    sop_class_uid: str = MRImageStorage,
) -> None:
    """Write a PS3.10 file: preamble, File Meta Information, then elements in tag order."""
    buffer = DicomBytesIO()
    buffer.is_little_endian = True
    buffer.is_implicit_VR = False
    buffer.write(b"\x00" * 128 + b"DICM")
    write_file_meta_info(buffer, _file_meta(sop_instance_uid, sop_class_uid), enforce_standard=True)
    for _, chunk in sorted(parts, key=lambda part: part[0]):
        buffer.write(chunk)
    path.write_bytes(buffer.getvalue())


def _file_meta(sop_instance_uid: str, sop_class_uid: str = MRImageStorage) -> FileMetaDataset:
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = sop_class_uid
    meta.MediaStorageSOPInstanceUID = sop_instance_uid
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    return meta
