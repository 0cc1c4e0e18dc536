"""A SEG built from a small synthetic MR series, for the writer and report tests."""

from __future__ import annotations

import io
from pathlib import Path

import highdicom as hd
import numpy as np
import SimpleITK as sitk
from pydicom.sr.codedict import codes

from service.imaging.series import LoadedVolume, group_by_series, load_series
from service.pipeline.base import KIDNEY, PipelineOutput
from service.synthetic import write_mr_study
from service.writers.seg import SegOptions, build_segmentation

SegCase = tuple[LoadedVolume, np.ndarray, hd.seg.Segmentation, bytes]


def build_seg_case(root: Path, orientation: str, *, omit_empty_frames: bool) -> SegCase:
    """Source phase, truth labels, the SEG read back, and the SEG's bytes."""
    study = write_mr_study(root / orientation, orientation=orientation, seed=1,
                           include_t2=False, shape=(16, 64, 64))
    (dce_paths,) = group_by_series(study.files).values()
    phase = load_series(dce_paths).volumes[-1]
    truth = sitk.Resample(study.truth_mask, phase.image, sitk.Transform(),
                          sitk.sitkNearestNeighbor)
    labels = sitk.GetArrayFromImage(truth).astype(np.uint8)
    assert labels.any()
    output = PipelineOutput(reference=phase, labels=labels, segments=(KIDNEY,),
                            volumes_ml={"kidney": 1.0})
    seg = build_segmentation(
        output, pipeline_name="test-pipeline", pipeline_version="9.9",
        family=codes.cid7162.MorphologicalOperations,
        options=SegOptions(series_instance_uid="1.2.3.4", sop_instance_uid="1.2.3.4.5",
                           series_number=9901, content_creator="KIDNEY^NODE",
                           software_version="0.1.0", omit_empty_frames=omit_empty_frames))
    buffer = io.BytesIO()
    seg.save_as(buffer, enforce_file_format=True)
    return phase, labels, hd.seg.segread(io.BytesIO(buffer.getvalue())), buffer.getvalue()
