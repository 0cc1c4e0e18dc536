"""SEGs as a reader's workstation writes them (issue 17, item 5): another manufacturer,
a person as content creator, MANUAL segments, codes kept or generic, any Segmentation Type.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from dataclasses import dataclass

import highdicom as hd
import numpy as np
from pydicom import Dataset
from pydicom.sr.codedict import codes
from pydicom.sr.coding import Code
from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian, generate_uid

#: What a viewer writes when a reader draws a new segment (OHIF's default category/type).
TISSUE = Code("85756007", "SCT", "Tissue")


@dataclass(frozen=True)
class ReaderSegment:
    label: str
    mask: np.ndarray  # (z, y, x) on the source slices
    property_type: Code = TISSUE
    side: Code | None = None


def source_slices(n: int = 6, rows: int = 101, columns: int = 122, *,
                  pixel_spacing: tuple[float, float] = (0.8, 0.7), step_mm: float = 2.5,
                  study_uid: str | None = None) -> list[Dataset]:
    """Axial CT slices in memory (rows x columns not a multiple of 8 by default)."""
    study_uid = study_uid or generate_uid()
    series_uid, frame_uid = generate_uid(), generate_uid()
    slices = []
    for z in range(n):
        ds = Dataset()
        ds.file_meta = Dataset()
        ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
        ds.SOPClassUID, ds.SOPInstanceUID = CTImageStorage, generate_uid()
        ds.StudyInstanceUID, ds.SeriesInstanceUID = study_uid, series_uid
        ds.FrameOfReferenceUID = frame_uid
        ds.Modality, ds.PatientID, ds.PatientName = "CT", "READER-1", "Reader^Case"
        ds.PatientBirthDate, ds.PatientSex, ds.StudyDate, ds.StudyTime = "", "O", "20260101", ""
        ds.AccessionNumber, ds.StudyID, ds.ReferringPhysicianName = "", "1", ""
        ds.SeriesNumber, ds.InstanceNumber = 2, z + 1
        ds.ImagePositionPatient = [-40.0, -35.0, 100.0 + z * step_mm]
        ds.ImageOrientationPatient = [1, 0, 0, 0, 1, 0]
        ds.PixelSpacing = list(pixel_spacing)
        ds.SliceThickness = step_mm
        ds.Rows, ds.Columns = rows, columns
        ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
        ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 1
        ds.PixelData = np.zeros((rows, columns), np.int16).tobytes()
        slices.append(ds)
    return slices


def reader_seg(sources: Sequence[Dataset], segments: Sequence[ReaderSegment], *,
               kind: str = "BINARY", creator: str = "DOE^JANE",
               manufacturer: str = "OHIF", omit_empty_frames: bool = True) -> Dataset:
    """A SEG of ``segments`` drawn by hand on ``sources``."""
    descriptions = []
    for number, segment in enumerate(segments, start=1):
        description = hd.seg.SegmentDescription(
            segment_number=number, segment_label=segment.label,
            segmented_property_category=codes.SCT.AnatomicalStructure
            if segment.property_type != TISSUE else codes.SCT.Tissue,
            segmented_property_type=segment.property_type,
            algorithm_type=hd.seg.SegmentAlgorithmTypeValues.MANUAL)
        if segment.side is not None:
            description.SegmentedPropertyTypeCodeSequence[0] \
                .SegmentedPropertyTypeModifierCodeSequence = [
                    hd.sr.CodedConcept(segment.side.value, segment.side.scheme_designator,
                                       segment.side.meaning)]
        descriptions.append(description)
    stack = np.stack([s.mask for s in segments], axis=-1).astype(np.uint8)
    extra: dict = {}
    if kind == "LABELMAP":
        labels = np.zeros(stack.shape[:3], np.uint8)
        for number in range(stack.shape[-1]):
            labels[stack[..., number] > 0] = number + 1
        pixels = labels
    elif kind == "FRACTIONAL":
        pixels = stack.astype(np.float32)
        extra = {"fractional_type": hd.seg.SegmentationFractionalTypeValues.PROBABILITY,
                 "max_fractional_value": 200}
    else:
        pixels = stack
    seg = hd.seg.Segmentation(
        source_images=list(sources), pixel_array=pixels,
        segmentation_type=hd.seg.SegmentationTypeValues[kind], **extra,
        segment_descriptions=descriptions, series_instance_uid=generate_uid(),
        series_number=300, sop_instance_uid=generate_uid(), instance_number=1,
        manufacturer=manufacturer, manufacturer_model_name="Viewer",
        software_versions="3.13.2", device_serial_number="1",
        content_label="CORRECTED", content_creator_name=creator,
        omit_empty_frames=omit_empty_frames)
    now = dt.datetime(2026, 12, 6, 14, 30, 0)
    seg.ContentDate, seg.ContentTime = now.strftime("%Y%m%d"), now.strftime("%H%M%S")
    return seg


#: Label Map Segmentation Storage (PS3.4 B.5): what OHIF 3.13 stores by default.
LABEL_MAP_SEG = "1.2.840.10008.5.1.4.1.1.66.7"


def _code_item(value: str, scheme: str, meaning: str) -> Dataset:
    item = Dataset()
    item.CodeValue, item.CodingSchemeDesignator, item.CodeMeaning = value, scheme, meaning
    return item


def ohif_style_seg(sources: Sequence[Dataset], labels: np.ndarray,
                   names: dict[int, str]) -> Dataset:
    """A SEG laid out as OHIF 3.13.2 stores an edited segmentation (its writer, dcmjs
    0.52 through @cornerstonejs/adapters 5.6.8, read for issue 17): Label Map
    Segmentation Storage, LABELMAP, 8 bits, RLE Lossless, one frame per source slice that
    holds a label and none for the others, no Segment Identification per frame, every
    segment listed (empty ones too) with the generic code "Tissue" (the codes of a loaded
    SEG are not kept, its labels are), algorithm "OHIF Brush", placeholder equipment
    ("Unspecified", "0"), no Content Creator's Name, Slice Thickness the distance of the
    first two frames and no Spacing Between Slices, new UIDs."""
    from pydicom.uid import RLELossless

    first = sources[0]
    written = [z for z in range(len(sources)) if labels[z].any()]
    ds = Dataset()
    ds.file_meta = Dataset()
    ds.SOPClassUID, ds.SOPInstanceUID = LABEL_MAP_SEG, generate_uid()
    ds.file_meta.MediaStorageSOPClassUID = ds.SOPClassUID
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    for keyword in ("PatientName", "PatientID", "PatientBirthDate", "PatientSex",
                    "StudyInstanceUID", "StudyDate", "StudyTime", "StudyID",
                    "AccessionNumber", "ReferringPhysicianName", "FrameOfReferenceUID"):
        setattr(ds, keyword, first.get(keyword, ""))
    ds.SpecificCharacterSet = "ISO_IR 192"
    ds.Modality, ds.SeriesInstanceUID = "SEG", generate_uid()
    ds.SeriesNumber, ds.SeriesDescription, ds.InstanceNumber = 99, "Research Derived series", 1
    ds.Manufacturer = ds.ManufacturerModelName = "Unspecified"
    ds.SoftwareVersions, ds.DeviceSerialNumber = "0", "1"
    ds.ContentLabel, ds.ContentDescription, ds.ContentCreatorName = "SEGMENTATION", "", ""
    now = dt.datetime(2026, 12, 6, 15, 0, 0)
    ds.ContentDate = ds.SeriesDate = now.strftime("%Y%m%d")
    ds.ContentTime = ds.SeriesTime = now.strftime("%H%M%S")
    ds.ImageType = ["DERIVED", "PRIMARY"]
    ds.ImageComments, ds.ContentQualification = "NOT FOR CLINICAL USE", "RESEARCH"
    ds.SegmentationType = "LABELMAP"
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    ds.BitsAllocated = ds.BitsStored = 8
    ds.HighBit, ds.PixelRepresentation = 7, 0
    ds.Rows, ds.Columns = int(first.Rows), int(first.Columns)
    ds.LossyImageCompression = "00"
    segments = []
    for number, name in sorted(names.items()):
        item = Dataset()
        item.SegmentNumber, item.SegmentLabel = number, name
        item.SegmentAlgorithmType, item.SegmentAlgorithmName = "MANUAL", "OHIF Brush"
        item.SegmentedPropertyCategoryCodeSequence = [_code_item("T-D0050", "SRT", "Tissue")]
        item.SegmentedPropertyTypeCodeSequence = [_code_item("T-D0050", "SRT", "Tissue")]
        item.RecommendedDisplayCIELabValue = [40000, 50000, 30000]
        segments.append(item)
    ds.SegmentSequence = segments
    orientation = Dataset()
    orientation.ImageOrientationPatient = list(first.ImageOrientationPatient)
    measures = Dataset()
    measures.PixelSpacing = list(first.PixelSpacing)
    along = [float(np.dot(np.asarray(sources[z].ImagePositionPatient, float),
                          np.cross(np.asarray(first.ImageOrientationPatient[:3], float),
                                   np.asarray(first.ImageOrientationPatient[3:], float))))
             for z in written]
    measures.SliceThickness = abs(along[1] - along[0]) if len(along) > 1 else 0
    shared = Dataset()
    shared.PlaneOrientationSequence, shared.PixelMeasuresSequence = [orientation], [measures]
    ds.SharedFunctionalGroupsSequence = [shared]
    frames = []
    for z in written:
        source_ref = Dataset()
        source_ref.ReferencedSOPInstanceUID = sources[z].SOPInstanceUID
        source_ref.ReferencedFrameNumber = 1
        derivation = Dataset()
        derivation.SourceImageSequence = [source_ref]
        position = Dataset()
        position.ImagePositionPatient = list(sources[z].ImagePositionPatient)
        group = Dataset()
        group.DerivationImageSequence = [derivation]
        group.PlanePositionSequence = [position]
        group.PlaneOrientationSequence = [orientation]
        frames.append(group)
    ds.PerFrameFunctionalGroupsSequence = frames
    ds.NumberOfFrames = len(written)
    referenced = Dataset()
    referenced.SeriesInstanceUID = first.SeriesInstanceUID
    instances = []
    for z in written:
        item = Dataset()
        item.ReferencedSOPClassUID = sources[z].SOPClassUID
        item.ReferencedSOPInstanceUID = sources[z].SOPInstanceUID
        instances.append(item)
    referenced.ReferencedInstanceSequence = instances
    ds.ReferencedSeriesSequence = [referenced]
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.compress(RLELossless, labels[written].astype(np.uint8), encoding_plugin="pydicom")
    return ds
