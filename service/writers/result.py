"""The objects one pipeline result is sent as: the SEG and the SR of its volumes, and, when
the segmented phase is only part of its series, that phase as a series of its own."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace

import highdicom as hd
from pydicom import Dataset

from service import __version__
from service.config import ProcessingSettings
from service.dicom.uids import derived_uid
from service.pipeline.base import Pipeline, PipelineOutput
from service.pipeline.quality import Assessment
from service.writers.overlay import OverlayOptions, build_overlay_series
from service.writers.phase_series import build_phase_series, headers_of
from service.writers.rtstruct import RtStructOptions, build_rtstruct
from service.writers.seg import SegOptions, build_segmentation
from service.writers.sr import SrOptions, build_volume_report

__all__ = ["ResultObjects", "ResultUids", "build_result_objects"]


@dataclass(frozen=True)
class ResultUids:
    seg_series: str
    seg: str
    sr_series: str
    sr: str
    device: str
    #: Series of the segmented phase's copies (SOP Instance UIDs derived from it).
    phase_series: str = ""
    rtstruct_series: str = ""
    rtstruct: str = ""
    #: Series of the colour overlay images (SOP Instance UIDs derived from it).
    overlay_series: str = ""


@dataclass(frozen=True)
class ResultObjects:
    """What one result is sent as, in sending order: ``phase_images`` (empty unless the
    segmented phase is part of a multi-phase series), the SEG, the SR, then the RT
    Structure Set and the colour overlay images when asked for."""

    phase_images: tuple[Dataset, ...]
    seg: hd.seg.Segmentation
    sr: hd.sr.Comprehensive3DSR
    rtstruct: Dataset | None = None
    overlay: tuple[Dataset, ...] = ()

    def in_order(self) -> list[tuple[str, Dataset]]:
        """(output kind, object) pairs: "phase" (for every destination), "seg", "sr",
        "rtstruct", "overlay" (for the destinations whose ``outputs`` name them)."""
        extra = [] if self.rtstruct is None else [("rtstruct", self.rtstruct)]
        return [*(("phase", image) for image in self.phase_images), ("seg", self.seg),
                ("sr", self.sr), *extra, *(("overlay", image) for image in self.overlay)]


def build_result_objects(
    output: PipelineOutput, pipeline: Pipeline, processing: ProcessingSettings,
    uids: ResultUids, *, quality: Mapping[str, Assessment] | None = None,
    phase_images: Sequence[Dataset] = (),
    rtstruct: bool = False,
    overlay: bool = False,
) -> ResultObjects:
    """The SEG of ``output`` and the SR (TID 1500) of its volumes referencing that SEG,
    both saying the quality-control verdict of each segment when ``quality`` is given.

    ``phase_images``: the segmented volume's images with their pixels, given when they are
    only part of their series (one phase of a DCE stored as one series): they are copied
    as a series of their own (:mod:`service.writers.phase_series`), which the SEG and SR
    then reference instead. ``rtstruct``: also the RT Structure Set of the same contours
    on the same images. ``overlay``: also the colour overlay series (the slices with the
    outlines and volumes burnt in, :mod:`service.writers.overlay`).
    """
    quality = quality or {}
    copies: list[Dataset] = []
    if phase_images:
        if not uids.phase_series:
            raise ValueError("phase images given without a series UID for their copies")
        copies = build_phase_series(
            phase_images, series_instance_uid=uids.phase_series,
            sop_instance_uid=lambda original: derived_uid(uids.phase_series, original),
            series_number=processing.phase_series_number,
            phase=output.reference.temporal_position)
        output = replace(output, reference=replace(output.reference,
                                                   datasets=headers_of(copies)))
    seg = build_segmentation(
        output, pipeline_name=pipeline.name, pipeline_version=pipeline.version,
        family=pipeline.family, quality=quality,
        options=SegOptions(series_instance_uid=uids.seg_series, sop_instance_uid=uids.seg,
                           series_number=processing.series_number,
                           content_creator=processing.content_creator,
                           software_version=__version__,
                           omit_empty_frames=processing.omit_empty_frames))
    sr = build_volume_report(
        output, seg, pipeline_name=pipeline.name, pipeline_version=pipeline.version,
        quality=quality,
        options=SrOptions(series_instance_uid=uids.sr_series, sop_instance_uid=uids.sr,
                          series_number=processing.sr_series_number, device_uid=uids.device,
                          software_version=__version__))
    rt = None
    if rtstruct:
        if not uids.rtstruct:
            raise ValueError("an RT Structure Set asked for without its UIDs")
        rt = build_rtstruct(output, pipeline_name=pipeline.name, options=RtStructOptions(
            series_instance_uid=uids.rtstruct_series, sop_instance_uid=uids.rtstruct,
            series_number=processing.rtstruct_series_number, software_version=__version__))
    images: list[Dataset] = []
    if overlay:
        if not uids.overlay_series:
            raise ValueError("an overlay series asked for without its series UID")
        images = build_overlay_series(output, pipeline_name=pipeline.name, quality=quality,
                                      options=OverlayOptions(
                                          series_instance_uid=uids.overlay_series,
                                          series_number=processing.overlay_series_number,
                                          software_version=__version__))
    return ResultObjects(tuple(copies), seg, sr, rt, tuple(images))
