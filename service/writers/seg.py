"""DICOM SEG (PS3.3 A.51) of a pipeline's segments, built with highdicom."""

from __future__ import annotations

import copy
from collections.abc import Mapping
from dataclasses import dataclass

import highdicom as hd
import numpy as np
from pydicom import Dataset
from pydicom.sr.coding import Code

from models.qc import Verdict
from service.pipeline.base import AlgorithmSpec, PipelineOutput
from service.pipeline.quality import Assessment, description_prefix

__all__ = ["MANUFACTURER", "SegOptions", "bit_aligned", "build_segmentation",
           "copy_patient_study"]

MANUFACTURER = "kidney-node"

#: Type 2 Patient and General Study attributes (PS3.3 C.7.1.1, C.7.2.1) the SEG and SR
#: copy from the first source image; some sources (anonymised, converted) leave them out.
TYPE2_COPIED = ("PatientName", "PatientID", "PatientBirthDate", "PatientSex", "StudyDate",
                 "StudyTime", "AccessionNumber", "StudyID", "ReferringPhysicianName")


#: The patient and study attributes an object the node writes with pydicom (RT Structure
#: Set, overlay images) copies from its source image.
_PATIENT_STUDY = ("SpecificCharacterSet", "IssuerOfPatientID", "StudyInstanceUID",
                  *TYPE2_COPIED)


def copy_patient_study(source: Dataset, target: Dataset, extra: tuple[str, ...] = ()) -> None:
    """Copy ``source``'s patient and study attributes (and ``extra``) into ``target``; a
    Type 2 one the source lacks is written present and empty."""
    for keyword in (*_PATIENT_STUDY, *extra):
        if keyword in source:
            setattr(target, keyword, source[keyword].value)
        elif keyword in TYPE2_COPIED:
            setattr(target, keyword, None)


@dataclass(frozen=True)
class SegOptions:
    series_instance_uid: str
    sop_instance_uid: str
    series_number: int
    content_creator: str
    software_version: str
    omit_empty_frames: bool = True


def build_segmentation(
    output: PipelineOutput,
    *,
    pipeline_name: str,
    pipeline_version: str,
    family: Code,
    options: SegOptions,
    quality: Mapping[str, Assessment] | None = None,
) -> hd.seg.Segmentation:
    """A BINARY SEG with one segment per structure, frames on the source slices
    (FRACTIONAL when BINARY frames would not start on byte boundaries: :func:`bit_aligned`).

    Segments may overlap (PS3.3 C.8.20.1 Segments Overlap: the cortex lies inside its
    kidney): each segment is encoded in frames of its own, numbered by its position in
    ``output.segments`` (:meth:`PipelineOutput.segment_number`), with the pipeline's
    algorithm or the one ``output.algorithms`` names for its structure.

    Each frame is built from its source slice's own Image Position/Orientation
    (highdicom derives the plane positions from ``source_images``), so no reorientation
    can mirror it; every frame keeps its Source Image Sequence and the Referenced Series
    Sequence names the source series, which OHIF needs.

    With ``quality`` (verdicts by structure), a segment whose verdict is not ``pass`` says
    so in its Segment Description, and the Series Description starts with the worst
    verdict ("QC REVIEW", "QC FAIL"), so a reader sees it in any viewer's series list.

    Raises
    ------
    ValueError
        When the output has no segment, or its masks do not match the source slices
        (frames, rows, columns).
    """
    quality = quality or {}
    sources = list(output.reference.datasets)
    if not output.segments:
        raise ValueError(f"series {sources[0].SeriesInstanceUID}: nothing to write, "
                         f"{output.finding}")
    stack = output.segment_stack()
    expected = (len(sources), int(sources[0].Rows), int(sources[0].Columns))
    if stack.shape[:3] != expected:
        raise ValueError(f"series {sources[0].SeriesInstanceUID}: mask shape {stack.shape[:3]} "
                         f"does not match the source slices {expected}")
    own = AlgorithmSpec(pipeline_name, pipeline_version, family)
    descriptions = [
        hd.seg.SegmentDescription(
            segment_number=output.segment_number(spec),
            segment_label=spec.text,
            segmented_property_category=spec.category,
            segmented_property_type=spec.property_type,
            algorithm_type=hd.seg.SegmentAlgorithmTypeValues.AUTOMATIC,
            algorithm_identification=_identification(output.algorithms.get(spec.structure,
                                                                            own)),
            display_color=hd.color.CIELabColor.from_rgb(*spec.rgb),
        )
        for spec in output.segments
    ]
    if bit_aligned(expected[1], expected[2]):
        pixels, kind = stack.astype(np.uint8), {
            "segmentation_type": hd.seg.SegmentationTypeValues.BINARY}
    else:
        pixels, kind = stack.astype(np.float32), {
            "segmentation_type": hd.seg.SegmentationTypeValues.FRACTIONAL,
            "fractional_type": hd.seg.SegmentationFractionalTypeValues.OCCUPANCY,
            "max_fractional_value": 255}
    seg = hd.seg.Segmentation(
        source_images=[_with_type2_attributes(sources[0]), *sources[1:]],
        pixel_array=pixels,
        **kind,
        segment_descriptions=descriptions,
        series_instance_uid=options.series_instance_uid,
        series_number=options.series_number,
        sop_instance_uid=options.sop_instance_uid,
        instance_number=1,
        manufacturer=MANUFACTURER,
        manufacturer_model_name=f"{MANUFACTURER} {pipeline_name}",
        software_versions=options.software_version,
        device_serial_number="0",
        content_label="KIDNEY",
        content_description=f"Kidney segmentation by {pipeline_name} {pipeline_version}"[:64],
        content_creator_name=options.content_creator,
        omit_empty_frames=options.omit_empty_frames,
        # The patient and study attributes come from the source: so does their charset.
        specific_character_set=sources[0].get("SpecificCharacterSet"),
    )
    seg.SeriesDescription = (description_prefix(quality) + f"Kidney SEG ({pipeline_name})")[:64]
    by_number = {output.segment_number(spec): spec for spec in output.segments}
    for item in seg.SegmentSequence:
        spec = by_number[int(item.SegmentNumber)]
        qc = quality.get(spec.structure)
        if qc is not None and qc.verdict is not Verdict.PASS:
            # Segment Description (0062,0006), LO: the verdict and its reasons, cut at 64.
            item.SegmentDescription = (f"QC {qc.verdict.value.upper()}: "
                                       + "; ".join(qc.reasons))[:64]
        if spec.laterality is not None:
            # PS3.3 C.8.20.2: laterality modifies the segmented property type.
            item.SegmentedPropertyTypeCodeSequence[0].SegmentedPropertyTypeModifierCodeSequence = [
                hd.sr.CodedConcept(spec.laterality.value, spec.laterality.scheme_designator,
                                   spec.laterality.meaning)]
    return seg


def bit_aligned(rows: int, columns: int) -> bool:
    """Whether BINARY frames of ``rows`` x ``columns`` start on byte boundaries.

    BINARY packs each frame's pixels one bit each, frames back to back: unless rows x
    columns is a multiple of 8, frames after the first start inside a byte. That is legal
    DICOM, but OHIF 3.13 rejects such a file (then Orthanc 1.10 refuses its frames one by
    one) or scrambles those frames (issue 17, the real example CT's 122 x 101 frames).
    Such SEGs are written FRACTIONAL (OCCUPANCY, 0 or 255, one byte per pixel), which
    OHIF, dcmqi, highdicom and pydicom all read as the same mask.
    """
    return (rows * columns) % 8 == 0


def _identification(algorithm: AlgorithmSpec) -> hd.AlgorithmIdentificationSequence:
    return hd.AlgorithmIdentificationSequence(
        name=algorithm.name, family=algorithm.family, version=algorithm.version,
        source=MANUFACTURER)


def _with_type2_attributes(source: Dataset) -> Dataset:
    """``source``, or a copy of it with its missing Type 2 patient and study attributes
    present and empty (highdicom copies them and fails on an absent one)."""
    missing = [k for k in TYPE2_COPIED if k not in source]
    if not missing:
        return source
    filled = copy.deepcopy(source)  # Dataset.copy() would share the elements
    for keyword in missing:
        setattr(filled, keyword, None)
    return filled
