"""Pipelines by name."""

from __future__ import annotations

from service.config import ProcessingSettings
from service.errors import PipelineError
from service.pipeline.base import Pipeline
from service.pipeline.ct_kidneys import CtKidneysPipeline
from service.pipeline.mri_baselines import OtsuPipeline, WatershedPipeline
from service.pipeline.mri_graft import GRAFT_PIPELINES, GraftPipeline
from service.pipeline.mri_graft_nc import NoContrastGraftPipeline
from service.pipeline.mri_kidneys_nc import NativeKidneysNoContrastPipeline

__all__ = ["PIPELINES", "get_pipeline"]

PIPELINES: dict[str, Pipeline] = {
    p.name: p for p in (*GRAFT_PIPELINES, NoContrastGraftPipeline(),
                        NativeKidneysNoContrastPipeline(), OtsuPipeline(), WatershedPipeline(),
                        CtKidneysPipeline())
}


def get_pipeline(name: str, processing: ProcessingSettings | None = None) -> Pipeline:
    """The pipeline called ``name``, configured by ``processing`` when given.

    Raises
    ------
    PipelineError
        When no such pipeline exists; the message lists the known ones.
    """
    try:
        pipeline = PIPELINES[name]
    except KeyError:
        raise PipelineError(
            f"unknown pipeline {name!r}; known: {', '.join(sorted(PIPELINES))}") from None
    if processing is not None and isinstance(pipeline, GraftPipeline | NoContrastGraftPipeline):
        return pipeline.configured(processing.graft)
    if processing is not None and isinstance(pipeline, CtKidneysPipeline):
        return pipeline.configured(processing.ct)
    return pipeline
