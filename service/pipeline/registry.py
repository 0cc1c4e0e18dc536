"""Pipelines by name."""

from __future__ import annotations

from service.errors import PipelineError
from service.pipeline.base import Pipeline
from service.pipeline.mri_baselines import OtsuPipeline, WatershedPipeline

__all__ = ["PIPELINES", "get_pipeline"]

PIPELINES: dict[str, Pipeline] = {p.name: p for p in (OtsuPipeline(), WatershedPipeline())}


def get_pipeline(name: str) -> Pipeline:
    """The pipeline called ``name``.

    Raises
    ------
    PipelineError
        When no such pipeline exists; the message lists the known ones.
    """
    try:
        return PIPELINES[name]
    except KeyError:
        raise PipelineError(
            f"unknown pipeline {name!r}; known: {', '.join(sorted(PIPELINES))}") from None
