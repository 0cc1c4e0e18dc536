"""RT Structure Set of a result: the segments' contours, for systems that show RT structures
but no SEG (many PACS viewers, treatment planning systems).

One ROI per segment (its name, colour and an ORGAN interpretation), one CLOSED_PLANAR
contour per connected part of the segment on each source image (the outer outline, holes
filled, traced half-way between inside and outside pixels), each contour referencing its
image. Written with pydicom (highdicom has no RT Structure Set).
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

import numpy as np
from pydicom import Dataset
from pydicom.uid import ExplicitVRLittleEndian, RTStructureSetStorage

from service.pipeline.base import PipelineOutput
from service.writers.outline import slice_outlines
from service.writers.seg import MANUFACTURER, copy_patient_study

__all__ = ["RtStructOptions", "build_rtstruct"]

@dataclass(frozen=True)
class RtStructOptions:
    series_instance_uid: str
    sop_instance_uid: str
    series_number: int
    software_version: str
    label: str = "KIDNEY"


def _item(**attributes: object) -> Dataset:
    ds = Dataset()
    for keyword, value in attributes.items():
        setattr(ds, keyword, value)
    return ds


def _to_patient(points: np.ndarray, source: Dataset) -> np.ndarray:
    """SCOORD-convention (column, row) points of ``source`` to patient coordinates (mm)."""
    iop = np.asarray(source.ImageOrientationPatient, dtype=float)
    origin = np.asarray(source.ImagePositionPatient, dtype=float)
    row_mm, col_mm = (float(v) for v in source.PixelSpacing)
    # (0.5, 0.5) is the centre of the first pixel, at Image Position (Patient).
    cols, rows = points[:, 0] - 0.5, points[:, 1] - 0.5
    return origin + np.outer(cols * col_mm, iop[:3]) + np.outer(rows * row_mm, iop[3:])


def build_rtstruct(output: PipelineOutput, *, pipeline_name: str,
                   options: RtStructOptions) -> Dataset:
    """The RT Structure Set of ``output``'s segments on ``output.reference``'s images."""
    sources = list(output.reference.datasets)
    first = sources[0]
    now = dt.datetime.now()
    ds = Dataset()
    ds.file_meta = Dataset()
    ds.file_meta.MediaStorageSOPClassUID = RTStructureSetStorage
    ds.file_meta.MediaStorageSOPInstanceUID = options.sop_instance_uid
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    copy_patient_study(first, ds)
    ds.SOPClassUID = RTStructureSetStorage
    ds.SOPInstanceUID = options.sop_instance_uid
    ds.Modality = "RTSTRUCT"
    ds.SeriesInstanceUID = options.series_instance_uid
    ds.SeriesNumber = options.series_number
    ds.SeriesDescription = f"Kidney contours ({pipeline_name})"[:64]
    ds.OperatorsName = ""
    ds.Manufacturer = MANUFACTURER
    ds.SoftwareVersions = options.software_version
    ds.InstanceNumber = 1
    ds.InstanceCreationDate = ds.StructureSetDate = now.strftime("%Y%m%d")
    ds.InstanceCreationTime = ds.StructureSetTime = now.strftime("%H%M%S")
    ds.StructureSetLabel = options.label
    ds.StructureSetName = f"{pipeline_name} contours"[:64]
    ds.ApprovalStatus = "UNAPPROVED"
    frame_uid = str(first.FrameOfReferenceUID)
    ds.FrameOfReferenceUID = frame_uid  # Frame of Reference module
    ds.PositionReferenceIndicator = first.get("PositionReferenceIndicator", "")
    images = [_item(ReferencedSOPClassUID=s.SOPClassUID,
                    ReferencedSOPInstanceUID=s.SOPInstanceUID) for s in sources]
    ds.ReferencedFrameOfReferenceSequence = [_item(
        FrameOfReferenceUID=frame_uid,
        RTReferencedStudySequence=[_item(
            # Detached Study Management SOP Class, as PS3.3 C.8.8.5 asks for.
            ReferencedSOPClassUID="1.2.840.10008.3.1.2.3.1",
            ReferencedSOPInstanceUID=first.StudyInstanceUID,
            RTReferencedSeriesSequence=[_item(SeriesInstanceUID=first.SeriesInstanceUID,
                                              ContourImageSequence=images)])])]
    stack = output.segment_stack()
    rois, contours, observations = [], [], []
    for spec in output.segments:
        number = output.segment_number(spec)
        rois.append(_item(ROINumber=number, ReferencedFrameOfReferenceUID=frame_uid,
                          ROIName=spec.text, ROIGenerationAlgorithm="AUTOMATIC",
                          ROIGenerationDescription=f"{pipeline_name} (kidney-node)"[:64]))
        items = []
        for outline in slice_outlines(stack[..., number - 1]):
            source = sources[outline.z]
            xyz = _to_patient(outline.points[:-1], source)  # closed: last point implied
            items.append(_item(
                ContourImageSequence=[_item(ReferencedSOPClassUID=source.SOPClassUID,
                                            ReferencedSOPInstanceUID=source.SOPInstanceUID)],
                ContourGeometricType="CLOSED_PLANAR", NumberOfContourPoints=len(xyz),
                ContourData=[f"{v:.3f}" for v in xyz.ravel()]))
        contour = _item(ReferencedROINumber=number, ROIDisplayColor=list(spec.rgb))
        if items:  # (Type 3: absent for a segment without any pixel)
            contour.ContourSequence = items
        contours.append(contour)
        observations.append(_item(ObservationNumber=number, ReferencedROINumber=number,
                                  RTROIInterpretedType="ORGAN", ROIInterpreter=""))
    ds.StructureSetROISequence = rois
    ds.ROIContourSequence = contours
    ds.RTROIObservationsSequence = observations
    return ds
