"""DICOM SEG (PS3.3 A.51) of a pipeline's label mask, built with highdicom."""

from __future__ import annotations

from dataclasses import dataclass

import highdicom as hd
import numpy as np
from pydicom.sr.coding import Code

from service.pipeline.base import PipelineOutput

__all__ = ["MANUFACTURER", "SegOptions", "build_segmentation"]

MANUFACTURER = "kidney-node"


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
) -> hd.seg.Segmentation:
    """A BINARY SEG with one segment per structure, frames on the source slices.

    Each frame is built from its source slice's own Image Position/Orientation (highdicom
    derives the plane positions from ``source_images``), so no reorientation can mirror
    it; every frame keeps its Source Image Sequence and the Referenced Series Sequence
    names the source series, which OHIF needs.

    Raises
    ------
    ValueError
        When the mask does not match the source slices (frames, rows, columns).
    """
    sources = list(output.reference.datasets)
    labels = np.asarray(output.labels)
    expected = (len(sources), int(sources[0].Rows), int(sources[0].Columns))
    if labels.shape != expected:
        raise ValueError(f"series {sources[0].SeriesInstanceUID}: mask shape {labels.shape} "
                         f"does not match the source slices {expected}")
    algorithm = hd.AlgorithmIdentificationSequence(
        name=pipeline_name, family=family, version=pipeline_version, source=MANUFACTURER)
    descriptions = [
        hd.seg.SegmentDescription(
            segment_number=spec.label,
            segment_label=spec.text,
            segmented_property_category=spec.category,
            segmented_property_type=spec.property_type,
            algorithm_type=hd.seg.SegmentAlgorithmTypeValues.AUTOMATIC,
            algorithm_identification=algorithm,
        )
        for spec in output.segments
    ]
    seg = hd.seg.Segmentation(
        source_images=sources,
        pixel_array=labels.astype(np.uint8),
        segmentation_type=hd.seg.SegmentationTypeValues.BINARY,
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
    seg.SeriesDescription = f"Kidney SEG ({pipeline_name})"[:64]
    by_number = {spec.label: spec for spec in output.segments}
    for item in seg.SegmentSequence:
        spec = by_number[int(item.SegmentNumber)]
        if spec.laterality is not None:
            # PS3.3 C.8.20.2: laterality modifies the segmented property type.
            item.SegmentedPropertyTypeCodeSequence[0].SegmentedPropertyTypeModifierCodeSequence = [
                hd.sr.CodedConcept(spec.laterality.value, spec.laterality.scheme_designator,
                                   spec.laterality.meaning)]
    return seg
