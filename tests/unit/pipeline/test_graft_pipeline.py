"""The mri-graft pipelines: registry, settings, inputs from both DCE layouts, flags."""

import logging
from dataclasses import replace

import numpy as np
import pytest
import SimpleITK as sitk
import torch
from pydicom.sr.codedict import codes

from models.metrics import dice
from service.config import GraftSettings, ProcessingSettings
from service.db.tables import SeriesRole
from service.errors import PipelineError
from service.imaging.series import group_by_series, load_series
from service.pipeline.base import TRANSPLANTED_KIDNEY, StudyInput
from service.pipeline.mri_graft import GraftPipeline, device_profile
from service.pipeline.registry import PIPELINES, get_pipeline
from service.synthetic import write_mr_study

FAST = GraftSettings(cpu_working_voxels=20_000, cpu_max_iterations=80)


def test_all_variants_are_registered_and_graft_is_the_default():
    assert {"mri-graft", "mri-graft-dce", "mri-graft-2d", "mri-graft-2d-dce",
            "mri-otsu", "mri-watershed"} <= set(PIPELINES)
    assert ProcessingSettings().mr_pipeline == "mri-graft"


def test_node_settings_reach_the_pipeline():
    pipeline = get_pipeline("mri-graft-2d", ProcessingSettings(graft=FAST))
    config = pipeline.method_config("cpu")
    assert config.working_voxels == 20_000
    assert config.clustering.max_iter == 80
    assert config.clustering.spatial_dims == 2
    # On a GPU: native resolution, the paper's stop with the larger guard.
    gpu = device_profile(FAST, cpu=False)
    assert gpu.working_voxels is None and gpu.clustering.max_iter == FAST.max_iterations
    assert get_pipeline("mri-otsu", ProcessingSettings(graft=FAST)) is PIPELINES["mri-otsu"]


def test_unknown_pipeline_lists_the_known_ones():
    with pytest.raises(PipelineError, match="mri-graft"):
        get_pipeline("mri-magic")


@pytest.fixture(scope="module")
def study(tmp_path_factory):
    return write_mr_study(tmp_path_factory.mktemp("graft"), seed=2, shape=(20, 64, 64),
                          spacing_mm=(3.0, 2.0, 2.0), dce_layout="per-phase", phases=3)


def _inputs(study, *, with_t2):
    groups = group_by_series(study.files)
    series = {SeriesRole.DCE: tuple(load_series(groups[u]) for u in study.dce_series_uids)}
    if with_t2:
        series[SeriesRole.T2] = (load_series(groups[study.t2_series_uid]),)
    return StudyInput(study.study_instance_uid, series)


@pytest.mark.parametrize(("name", "with_t2", "dce_only"), [
    ("mri-graft", True, False), ("mri-graft", False, True), ("mri-graft-dce", True, True)])
def test_graft_pipeline_segments_and_flags(study, caplog, name, with_t2, dce_only):
    torch.set_num_threads(2)
    pipeline = get_pipeline(name, ProcessingSettings(graft=FAST))
    with caplog.at_level(logging.INFO, logger="service.pipeline.mri_graft"):
        out = pipeline.run(_inputs(study, with_t2=with_t2), device="cpu")
    truth = sitk.GetArrayFromImage(study.truth_mask).astype(bool)
    assert out.labels.shape == truth.shape
    assert dice(out.labels.astype(bool), truth) > 0.75
    assert ("dce-only" in out.flags) == dce_only
    assert out.volumes_ml["graft"] == pytest.approx(study.truth_volume_ml, rel=0.25)
    # The graft, coded as a transplanted kidney, on the side it lies: the phantom's
    # graft is in the right iliac fossa.
    (segment,) = out.segments
    assert segment.property_type == TRANSPLANTED_KIDNEY and segment.laterality == codes.SCT.Right
    assert out.reference.datasets[0].SeriesInstanceUID == study.dce_series_uids[-1]
    messages = " ".join(r.getMessage() for r in caplog.records)
    assert "iteration 5, loss" in messages and "stopped by" in messages


def test_constant_dce_is_a_pipeline_error(study):
    inputs = _inputs(study, with_t2=False)
    flat = []
    for series in inputs.series[SeriesRole.DCE]:
        volume = series.volumes[0]
        image = sitk.GetImageFromArray(np.full(sitk.GetArrayViewFromImage(volume.image).shape,
                                               7, dtype=np.uint16))
        image.CopyInformation(volume.image)
        flat.append(replace(series, volumes=(replace(volume, image=image),)))
    with pytest.raises(PipelineError, match=inputs.study_instance_uid):
        GraftPipeline(settings=FAST).run(StudyInput(inputs.study_instance_uid,
                                                    {SeriesRole.DCE: tuple(flat)}), device="cpu")
