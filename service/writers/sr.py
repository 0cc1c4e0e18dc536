"""DICOM SR (TID 1500 Measurement Report) of the volumes of a SEG's segments (highdicom)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import highdicom as hd
import numpy as np
from pydicom.sr.codedict import codes
from pydicom.sr.coding import Code

from models.qc import Verdict
from service.dicom.uids import derived_uid
from service.pipeline.base import PipelineOutput
from service.pipeline.quality import Assessment, description_prefix
from service.writers.outline import largest_slice_outline
from service.writers.seg import MANUFACTURER

__all__ = ["SrOptions", "build_volume_report"]

MILLILITER = Code("ml", "UCUM", "milliliter")
#: The node's own coding scheme (PS3.3 8.2: a private scheme designator starts with
#: "99"), for the quality-control verdict, which no standard code covers.
QC_SCHEME = "99KIDNEYNODE"
QC_VERDICT = Code("QC-VERDICT", QC_SCHEME, "Automated quality control verdict")
QC_VALUES = {
    Verdict.PASS: Code("QC-PASS", QC_SCHEME, "Pass"),
    Verdict.REVIEW: Code("QC-REVIEW", QC_SCHEME, "Needs review"),
    Verdict.FAIL: Code("QC-FAIL", QC_SCHEME, "Fail"),
}
_PROCEDURES = {"MR": codes.cid100.MRIUnspecifiedBodyRegion,
               "CT": codes.cid100.CTUnspecifiedBodyRegion}


@dataclass(frozen=True)
class SrOptions:
    series_instance_uid: str
    sop_instance_uid: str
    series_number: int
    device_uid: str
    software_version: str


def build_volume_report(
    output: PipelineOutput,
    seg: hd.seg.Segmentation,
    *,
    pipeline_name: str,
    pipeline_version: str,
    options: SrOptions,
    quality: Mapping[str, Assessment] | None = None,
) -> hd.sr.Comprehensive3DSR:
    """A Comprehensive 3D SR holding one TID 1411 volumetric group per segment of ``seg``.

    Each group references its segment of the SEG (and through it the source series), is
    tracked by a UID derived from the SEG and the segment number, and holds the segment's
    volume in ml (SCT 118565006 "Volume", UCUM ``ml``). The SEG and the source images are
    the report's evidence, so a PACS files the report with the study of the images.
    With ``quality``, each group holds its segment's quality-control verdict as a coded
    qualitative evaluation (:data:`QC_VERDICT` = :data:`QC_VALUES`), and the Series
    Description starts with the worst verdict when it is not ``pass``.

    Each segment also gets a TID 1410 planar group with the same tracking identifier: its
    outline, as an "Image Region" SCOORD, on the source image where it is largest. That is
    the spatial reference viewers need to list the measurement and place it (OHIF 3.13
    merges groups by Tracking Unique Identifier and throws on one without any SCOORD).
    """
    quality = quality or {}
    sources = list(output.reference.datasets)
    modality = str(sources[0].get("Modality", ""))
    # Not ReferencedSegment.from_segmentation: it reads the segment number from per-frame
    # groups, where highdicom does not put it when the SEG has a single segment.
    source_series = hd.sr.SourceSeriesForSegmentation(str(sources[0].SeriesInstanceUID))
    groups = []
    planar = []
    stack = output.segment_stack()
    for spec in output.segments:
        number = output.segment_number(spec)
        other = output.algorithms.get(spec.structure)
        algorithm = hd.sr.AlgorithmIdentification(
            name=pipeline_name if other is None else other.name,
            version=pipeline_version if other is None else other.version)
        tracking = hd.sr.TrackingIdentifier(
            uid=derived_uid(str(seg.SOPInstanceUID), "segment", str(number)),
            identifier=f"{spec.text} (segment {number})")
        sites = None if spec.laterality is None else [hd.sr.FindingSite(
            anatomic_location=spec.property_type, laterality=spec.laterality)]
        groups.append(hd.sr.VolumetricROIMeasurementsAndQualitativeEvaluations(
            tracking_identifier=tracking,
            referenced_segment=hd.sr.ReferencedSegment(
                sop_class_uid=str(seg.SOPClassUID), sop_instance_uid=str(seg.SOPInstanceUID),
                segment_number=number, source_series=source_series),
            finding_type=spec.property_type,
            finding_category=spec.category,
            finding_sites=sites,
            algorithm_id=algorithm,
            measurements=[hd.sr.Measurement(
                name=codes.SCT.Volume,
                value=round(float(output.volumes_ml[spec.structure]), 3),
                unit=MILLILITER,
                algorithm_id=algorithm,
            )],
            qualitative_evaluations=_evaluations(quality.get(spec.structure)),
        ))
        outline = largest_slice_outline(stack[..., number - 1])
        if outline is not None:
            source = sources[outline.z]
            planar.append(hd.sr.PlanarROIMeasurementsAndQualitativeEvaluations(
                tracking_identifier=tracking,
                referenced_region=hd.sr.ImageRegion(
                    graphic_type=hd.sr.GraphicTypeValues.POLYLINE,
                    graphic_data=outline.points.astype(np.float32),
                    source_image=hd.sr.SourceImageForRegion(
                        referenced_sop_class_uid=str(source.SOPClassUID),
                        referenced_sop_instance_uid=str(source.SOPInstanceUID))),
                finding_type=spec.property_type,
                finding_category=spec.category,
                finding_sites=sites,
                algorithm_id=algorithm,
            ))
    observer = hd.sr.ObserverContext(
        observer_type=codes.DCM.Device,
        observer_identifying_attributes=hd.sr.DeviceObserverIdentifyingAttributes(
            uid=options.device_uid, name=MANUFACTURER, manufacturer_name=MANUFACTURER,
            model_name=f"{MANUFACTURER} {pipeline_name}"))
    report = hd.sr.MeasurementReport(
        observation_context=hd.sr.ObservationContext(observer_device_context=observer),
        procedure_reported=_PROCEDURES.get(modality, codes.cid100.ImagingProcedure),
        imaging_measurements=[*groups, *planar],
    )
    sr = hd.sr.Comprehensive3DSR(
        evidence=[seg, *sources],
        content=report[0],
        series_instance_uid=options.series_instance_uid,
        series_number=options.series_number,
        sop_instance_uid=options.sop_instance_uid,
        instance_number=1,
        manufacturer=MANUFACTURER,
        is_complete=True,
        is_final=False,
        is_verified=False,
        software_versions=options.software_version,
        specific_character_set=sources[0].get("SpecificCharacterSet"),
    )
    sr.SeriesDescription = f"{description_prefix(quality)}Kidney volumes ({pipeline_name})"[:64]
    return sr


def _evaluations(assessment: Assessment | None) -> list[hd.sr.QualitativeEvaluation] | None:
    if assessment is None:
        return None
    return [hd.sr.QualitativeEvaluation(name=QC_VERDICT, value=QC_VALUES[assessment.verdict])]
