"""Write synthetic CT studies: DICOM CT Image Storage plus NIfTI ground truth.

:func:`write_ct_study` encodes a :class:`~service.synthetic.ct_phantom.SyntheticCT` as one
axial series (PS3.3 A.3 CT Image IOD: Patient, General Study, General Series, Frame of
Reference, General Equipment, General Acquisition, General Image, Image Plane, Image Pixel,
Contrast/Bolus, CT Image, VOI LUT and SOP Common modules), one file per slice, explicit VR
little endian, stored values = HU + 1024 (Rescale Intercept -1024, slope 1), and writes
the kidney and cortex masks next to it as NIfTI. :func:`write_ct_nifti_case` writes the
``<case>_ct / _cortex / _kidneys.nii.gz`` triple the cortex-training command reads.
"""

from __future__ import annotations

import datetime
import logging
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType

import numpy as np
import pydicom
import SimpleITK as sitk
from pydicom.uid import CTImageStorage

from service.dicom.uids import new_uid
from service.synthetic.ct_anatomy import Side
from service.synthetic.ct_phantom import KidneyTruth, SyntheticCT
from service.synthetic.ct_tissues import CtPhase
from service.synthetic.study import (
    _decimal,
    _encode_elements,
    _tm,
    _write_part10,
    geometry_image,
)

__all__ = [
    "CT_SERIES_DESCRIPTION",
    "CT_SERIES_NUMBER",
    "CtNiftiCase",
    "SyntheticCTStudy",
    "write_ct_nifti_case",
    "write_ct_study",
]

logger = logging.getLogger(__name__)

#: Series Number and Series Description of the synthetic CT series.
CT_SERIES_NUMBER = 2
CT_SERIES_DESCRIPTION = "ABD C+ ARTERIAL"
#: Series description of each contrast phase (the cortico-medullary one is the default's).
_PHASE_DESCRIPTIONS: Mapping[CtPhase, str] = MappingProxyType({
    CtPhase.CORTICOMEDULLARY: CT_SERIES_DESCRIPTION,
    CtPhase.NEPHROGRAPHIC: "ABD C+ NEPHROGRAPHIC",
    CtPhase.EXCRETORY: "ABD C+ DELAYED",
    CtPhase.UNENHANCED: "ABD NON-CONTRAST",
})
_RESCALE_INTERCEPT = -1024
_STUDY_TIME = datetime.time(9, 30, 0)
_INJECTION_TIME = datetime.time(9, 34, 0)
_SCAN_TIME = datetime.time(9, 34, 35)  # 35 s after the bolus: cortico-medullary phase
_PIXEL_DATA = 0x7FE00010

#: Equipment, acquisition and CT Image module attributes (PS3.3 C.7.5.1, C.8.2.1).
_CT_PROTOCOL: Mapping[str, object] = MappingProxyType(
    {
        "Manufacturer": "kidney-node",
        "ManufacturerModelName": "Synthetic CT phantom",
        "InstitutionName": "Synthetic",
        "StationName": "SYNTHCT",
        "DeviceSerialNumber": "0002",
        "SoftwareVersions": "ct phantom 1",
        "BodyPartExamined": "ABDOMEN",
        "PatientPosition": "HFS",
        "PositionReferenceIndicator": "",
        "ScanOptions": "HELICAL MODE",
        "KVP": "120",
        "XRayTubeCurrent": 250,
        "ExposureTime": 500,
        "Exposure": 125,
        "ConvolutionKernel": "B30f",
        "FilterType": "BODY",
        "GantryDetectorTilt": "0",
        "RotationDirection": "CW",
        "TableHeight": "150",
        "SpiralPitchFactor": 0.8,
        "RescaleType": "HU",
        "WindowCenter": "40",
        "WindowWidth": "400",
    }
)

#: Contrast/Bolus module (PS3.3 C.7.6.4): iodinated contrast, intravenous.
_CONTRAST: Mapping[str, object] = MappingProxyType(
    {
        "ContrastBolusAgent": "Iohexol 350 mgI/ml",
        "ContrastBolusRoute": "IV",
        "ContrastBolusVolume": "100",
        "ContrastBolusTotalDose": "100",
        "ContrastFlowRate": ["4"],
        "ContrastBolusIngredient": "IODINE",
        "ContrastBolusIngredientConcentration": "350",
        "ContrastBolusStartTime": _INJECTION_TIME.strftime("%H%M%S"),
    }
)


@dataclass(frozen=True)
class SyntheticCTStudy:
    """A synthetic CT study written to disk, with its ground truth.

    Attributes
    ----------
    root : pathlib.Path
        Folder holding the series folder and the NIfTI ground truth.
    patient_id, study_instance_uid, series_instance_uid : str
        Identifiers shared by every file.
    files : tuple of pathlib.Path
        The DICOM files, one per slice.
    kidneys_path, cortex_path : pathlib.Path
        NIfTI label maps on the CT grid (0 background, 1 right, 2 left): whole kidneys
        (parenchyma plus sinus) and cortex only.
    truth : mapping of Side to KidneyTruth
        Volumes of each kidney present in the anatomy.
    kidney_in_view : bool
        Whether any voxel of the series lies in a kidney.
    graft_path : pathlib.Path or None
        NIfTI mask of the kidney graft on the CT grid (1 inside), written only for a
        CT with a graft (a transplant anatomy); its side is ``graft_side``.
    graft_side : Side or None
        The patient's side of the iliac fossa holding the graft.
    """

    root: Path
    patient_id: str
    study_instance_uid: str
    series_instance_uid: str
    files: tuple[Path, ...]
    kidneys_path: Path
    cortex_path: Path
    truth: Mapping[Side, KidneyTruth]
    kidney_in_view: bool
    graft_path: Path | None = None
    graft_side: Side | None = None


@dataclass(frozen=True)
class CtNiftiCase:
    """Paths of one training case: CT volume (HU), cortex and kidney label maps."""

    ct_path: Path
    cortex_path: Path
    kidneys_path: Path


def write_ct_study(
    out_dir: Path,
    ct: SyntheticCT,
    *,
    patient_id: str = "SYNTHCT0001",
    study_date: datetime.date = datetime.date(2024, 5, 21),
    study_instance_uid: str | None = None,
) -> SyntheticCTStudy:
    """Write ``ct`` as a DICOM CT series and its ground truth as NIfTI.

    Parameters
    ----------
    out_dir : pathlib.Path
        Folder to write into (created): ``series-002/CT00001.dcm`` ... (slice 1 the most
        superior, as a head-first scan reconstructs them), ``truth_kidneys.nii.gz`` and
        ``truth_cortex.nii.gz`` (and ``truth_graft.nii.gz`` for a CT with a graft).
    ct : SyntheticCT
        The rendered volume (:func:`~service.synthetic.ct_phantom.synthesize_ct`).
    patient_id : str
        Patient ID; the Patient's Name is always ``Synthetic^Abdomen``.
    study_date : datetime.date
        Study, series, acquisition and content date.
    study_instance_uid : str, optional
        Study Instance UID; a new one by default.

    Returns
    -------
    SyntheticCTStudy
        Paths, UIDs and the kidney volumes.

    Raises
    ------
    ValueError
        If the volume is not axial (row (1, 0, 0), column (0, 1, 0)).
    """
    geometry = ct.geometry
    if geometry.row_direction != (1.0, 0.0, 0.0) or geometry.column_direction != (0.0, 1.0, 0.0):
        raise ValueError(
            f"write_ct_study writes axial series, got orientation {geometry.row_direction}, "
            f"{geometry.column_direction}"
        )
    out_dir = Path(out_dir)
    series_dir = out_dir / f"series-{CT_SERIES_NUMBER:03d}"
    series_dir.mkdir(parents=True, exist_ok=True)
    study_uid = study_instance_uid or new_uid()
    series_uid = new_uid()
    date = study_date.strftime("%Y%m%d")
    step, row_spacing, column_spacing = geometry.spacing_mm
    fov = geometry.shape[2] * column_spacing
    header = {
        **_CT_PROTOCOL,
        **({} if ct.phase == CtPhase.UNENHANCED else _CONTRAST),
        "SpecificCharacterSet": "ISO_IR 100",
        "SOPClassUID": CTImageStorage,
        "PatientName": "Synthetic^Abdomen",
        "PatientID": patient_id,
        "PatientBirthDate": "19580923",
        "PatientSex": "F" if ct.seed % 2 else "M",
        "StudyInstanceUID": study_uid,
        "StudyDate": date,
        "StudyTime": _tm(_STUDY_TIME),
        "StudyID": "1",
        "AccessionNumber": f"SCT{ct.seed % 10**12:012d}",
        "ReferringPhysicianName": "Synthetic^Referrer",
        "StudyDescription": ("CT abdomen (synthetic)" if ct.phase == CtPhase.UNENHANCED
                             else "CT abdomen C+ (synthetic)"),
        "Modality": "CT",
        "SeriesInstanceUID": series_uid,
        "SeriesNumber": CT_SERIES_NUMBER,
        "SeriesDescription": _PHASE_DESCRIPTIONS[ct.phase],
        "ProtocolName": "Renal CT arterial",
        "SeriesDate": date,
        "SeriesTime": _tm(_SCAN_TIME),
        "FrameOfReferenceUID": new_uid(),
        "ImageType": ["ORIGINAL", "PRIMARY", "AXIAL"],
        "AcquisitionNumber": 1,
        "AcquisitionDate": date,
        "AcquisitionTime": _tm(_SCAN_TIME),
        "ContentDate": date,
        "ContentTime": _tm(_SCAN_TIME),
        "InstanceCreationDate": date,
        "InstanceCreationTime": _tm(_SCAN_TIME),
        "ImageOrientationPatient": ["1", "0", "0", "0", "1", "0"],
        "PixelSpacing": [_decimal(row_spacing), _decimal(column_spacing)],
        "SliceThickness": _decimal(step),
        "DataCollectionDiameter": _decimal(500.0),
        "ReconstructionDiameter": _decimal(fov),
        "SamplesPerPixel": 1,
        "PhotometricInterpretation": "MONOCHROME2",
        "Rows": geometry.shape[1],
        "Columns": geometry.shape[2],
        "BitsAllocated": 16,
        "BitsStored": 12,
        "HighBit": 11,
        "PixelRepresentation": 0,
        "RescaleIntercept": str(_RESCALE_INTERCEPT),
        "RescaleSlope": "1",
        "LossyImageCompression": "00",
    }
    template = pydicom.Dataset()
    for keyword, value in header.items():
        setattr(template, keyword, value)
    shared = _encode_elements(template)
    stored = (ct.hu.astype(np.int32) - _RESCALE_INTERCEPT).astype("<u2")
    files: list[Path] = []
    n_slices = geometry.shape[0]
    for k in range(n_slices):
        instance_number = n_slices - k  # 1 = most superior
        position = geometry.slice_position(k)
        sop_uid = new_uid()
        varying = pydicom.Dataset()
        varying.SOPInstanceUID = sop_uid
        varying.InstanceNumber = instance_number
        varying.ImagePositionPatient = [_decimal(v) for v in position]
        varying.SliceLocation = _decimal(float(position[2]))
        varying.add_new(_PIXEL_DATA, "OW", np.ascontiguousarray(stored[k]).tobytes())
        path = series_dir / f"CT{instance_number:05d}.dcm"
        _write_part10(
            path, sop_uid, [*shared, *_encode_elements(varying)], sop_class_uid=CTImageStorage
        )
        files.append(path)
    files.sort()
    kidneys_path = out_dir / "truth_kidneys.nii.gz"
    cortex_path = out_dir / "truth_cortex.nii.gz"
    sitk.WriteImage(geometry_image(ct.kidneys, geometry), str(kidneys_path), True)
    sitk.WriteImage(geometry_image(ct.cortex, geometry), str(cortex_path), True)
    graft_path = None
    if ct.graft_truth is not None and ct.graft is not None:
        graft_path = out_dir / "truth_graft.nii.gz"
        sitk.WriteImage(geometry_image(ct.graft.astype(np.uint8), geometry), str(graft_path),
                        True)
    logger.info(
        "wrote synthetic CT study %s: series %s, %d slices", study_uid, series_uid, n_slices
    )
    return SyntheticCTStudy(
        root=out_dir,
        patient_id=patient_id,
        study_instance_uid=study_uid,
        series_instance_uid=series_uid,
        files=tuple(files),
        kidneys_path=kidneys_path,
        cortex_path=cortex_path,
        truth=ct.truth,
        kidney_in_view=ct.kidney_in_view,
        graft_path=graft_path,
        graft_side=ct.graft_side,
    )


def write_ct_nifti_case(out_dir: Path, case: str, ct: SyntheticCT) -> CtNiftiCase:
    """Write ``<case>_ct.nii.gz`` (int16 HU), ``<case>_cortex.nii.gz``, ``<case>_kidneys.nii.gz``.

    Both label maps are uint8 on the CT grid with 1 = right and 2 = left (``> 0`` gives
    the binary mask): the cortex only, and the whole kidney (parenchyma plus sinus).

    Parameters
    ----------
    out_dir : pathlib.Path
        Folder to write into (created).
    case : str
        File name prefix.
    ct : SyntheticCT
        The rendered volume and its ground truth.

    Returns
    -------
    CtNiftiCase
        The three paths.

    Raises
    ------
    ValueError
        If ``case`` is empty or holds a path separator.
    """
    if not case or "/" in case or "\\" in case:
        raise ValueError(f"case must be a plain file name prefix, got {case!r}")
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = CtNiftiCase(
        ct_path=out_dir / f"{case}_ct.nii.gz",
        cortex_path=out_dir / f"{case}_cortex.nii.gz",
        kidneys_path=out_dir / f"{case}_kidneys.nii.gz",
    )
    for array, path in (
        (ct.hu, paths.ct_path),
        (ct.cortex, paths.cortex_path),
        (ct.kidneys, paths.kidneys_path),
    ):
        sitk.WriteImage(geometry_image(array, ct.geometry), str(path), True)
    return paths
