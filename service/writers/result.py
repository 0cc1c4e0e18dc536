"""The objects one pipeline result is sent as: the SEG and the SR of its volumes."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import highdicom as hd

from service import __version__
from service.config import ProcessingSettings
from service.pipeline.base import Pipeline, PipelineOutput
from service.pipeline.quality import Assessment
from service.writers.seg import SegOptions, build_segmentation
from service.writers.sr import SrOptions, build_volume_report

__all__ = ["ResultUids", "build_result_objects"]


@dataclass(frozen=True)
class ResultUids:
    seg_series: str
    seg: str
    sr_series: str
    sr: str
    device: str


def build_result_objects(
    output: PipelineOutput, pipeline: Pipeline, processing: ProcessingSettings,
    uids: ResultUids, *, quality: Mapping[str, Assessment] | None = None,
) -> tuple[hd.seg.Segmentation, hd.sr.Comprehensive3DSR]:
    """The SEG of ``output`` and the SR (TID 1500) of its volumes referencing that SEG,
    both saying the quality-control verdict of each segment when ``quality`` is given."""
    quality = quality or {}
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
    return seg, sr
