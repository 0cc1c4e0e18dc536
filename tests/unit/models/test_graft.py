"""Tests of models.graft: the whole MRI method on small synthetic volumes."""

from dataclasses import replace

import numpy as np
import pytest
import SimpleITK as sitk
import torch

from models.feature_clustering import ClusteringConfig
from models.graft import GraftConfig, segment_graft, working_spacing
from models.metrics import dice
from service.synthetic import synthesize_mr
from service.synthetic.study import geometry_image


def test_working_spacing_keeps_native_under_the_cap():
    assert working_spacing((10, 20, 20), (2.5, 0.8, 0.8), None) == (2.5, 0.8, 0.8)
    assert working_spacing((10, 20, 20), (2.5, 0.8, 0.8), 4000) == (2.5, 0.8, 0.8)


def test_working_spacing_meets_the_cap_near_isotropically():
    shape, spacing = (60, 150, 160), (2.2, 0.8, 0.8)
    z, y, x = working_spacing(shape, spacing, 80_000)
    count = np.prod([np.ceil(n * s / a) for n, s, a in zip(shape, spacing, (z, y, x),
                                                           strict=True)])
    assert count <= 80_000
    assert count > 0.8 * 80_000  # not coarser than needed
    assert y == x and z >= 2.2 and abs(y - z) < 0.05  # isotropic once coarser than z


@pytest.fixture(scope="module")
def small_study():
    mr = synthesize_mr(seed=6, shape=(20, 64, 64), spacing_mm=(3.0, 2.0, 2.0), phases=3)
    truth = mr.kidney_mask.astype(bool)
    return (geometry_image(mr.dce[-1], mr.dce_geometry),
            geometry_image(mr.t2, mr.t2_geometry), truth,
            (geometry_image(mr.dce[1], mr.dce_geometry),))


FAST = GraftConfig(clustering=ClusteringConfig(channels=16, max_iter=40), deformable=False)


@pytest.fixture(autouse=True)
def _two_threads():
    previous = torch.get_num_threads()
    torch.set_num_threads(2)
    yield
    torch.set_num_threads(previous)


@pytest.mark.parametrize("use_t2", [True, False])
def test_segments_the_synthetic_graft(small_study, use_t2):
    dce, t2, truth, extra = small_study
    result = segment_graft(dce, t2 if use_t2 else None, extra_phases=extra, config=FAST)
    assert result.mask.shape == truth.shape
    assert dice(result.mask, truth) > 0.8
    assert (result.registration is not None) == use_t2
    assert set(result.timings_s) >= {"n4", "roi", "clustering", "selection"}


def test_slice_wise_variant_runs_one_network_per_slice(small_study):
    dce, t2, truth, extra = small_study
    config = replace(FAST, clustering=replace(FAST.clustering, spatial_dims=2, max_iter=20))
    result = segment_graft(dce, t2, extra_phases=extra, config=config)
    slices = result.working_shape[0]
    # Every slice trained its own network: at least one iteration per slice.
    assert result.clustering.iterations >= slices > 1
    assert dice(result.mask, truth) > 0.6


def test_working_grid_cap_is_applied_and_mask_comes_back_full_size(small_study):
    dce, _, truth, extra = small_study
    result = segment_graft(dce, None, extra_phases=extra,
                           config=replace(FAST, working_voxels=4000))
    assert np.prod(result.working_shape) <= 4000
    assert min(result.working_spacing_zyx) > 3.0
    assert result.mask.shape == truth.shape
    assert dice(result.mask, truth) > 0.7


def test_config_rejects_a_tiny_cap():
    with pytest.raises(ValueError, match="working_voxels"):
        GraftConfig(working_voxels=10)


def test_constant_volume_has_no_region_of_interest(small_study):
    dce, *_ = small_study
    flat = dce * 0 + 5
    with pytest.raises(ValueError, match="constant"):
        segment_graft(flat, None, config=FAST)


def test_refine_boundary_adds_the_bright_edge_only():
    from models.graft import refine_boundary

    z, y, x = np.ogrid[:30, :30, :30]
    r = np.sqrt((z - 15) ** 2 + (y - 15) ** 2 + (x - 15) ** 2)
    truth = r <= 9
    image = np.where(truth, 1000.0, 100.0)
    core = r <= 7.5  # a kidney cluster that misses the edge
    refined = refine_boundary(core, image, spacing_zyx=(1.0, 1.0, 1.0), band_mm=2.0)
    assert np.array_equal(refined, truth)
    # Nothing bright outside: nothing is added.
    assert np.array_equal(refine_boundary(truth, image, spacing_zyx=(1.0, 1.0, 1.0),
                                          band_mm=2.0), truth)


def test_finish_kidney_drops_a_darker_lobe_at_the_configured_split():
    """The DCE path drops a loop split off by about 3.3 pooled SDs (``foreign_separation``
    3); the stricter 4 of the no-contrast path keeps it."""
    from models.graft import finish_kidney
    from models.roi import RegionOfInterest
    from tests.unit.models.test_kidney_trim import SHAPE, SPACING, _scene

    channels, kidney, loop = _scene(seed=5, loop_value=880.0)
    grid = sitk.GetImageFromArray(channels[1].astype(np.float32))
    grid.SetSpacing(SPACING[::-1])
    roi = RegionOfInterest(start=(0, 0, 0), stop=SHAPE, touches_edge=False)
    base = GraftConfig(vessel_radius_mm=0.0, refine_boundary_mm=0.0)
    kept = {split: finish_kidney(kidney | loop, channels, coarse=grid, crop=grid, grid=SPACING,
                                 roi=roi, shape=SHAPE,
                                 config=replace(base, foreign_separation=split))
            for split in (3.0, 4.0)}
    assert dice(kept[3.0], kidney) > 0.99
    assert np.array_equal(kept[4.0], kidney | loop)
