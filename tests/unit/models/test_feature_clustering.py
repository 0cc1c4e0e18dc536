"""Tests of models.feature_clustering: the unsupervised 3D clustering of paper §2.2."""

import math
from dataclasses import replace

import numpy as np
import pytest
import torch

import models.feature_clustering as fc
from models.feature_clustering import (
    ClusteringConfig,
    StopReason,
    cluster_slices,
    cluster_volume,
)
from models.metrics import dice

SHAPE = (16, 32, 32)
# Narrow network so that a fit takes about a second on one CPU thread; the paper's p=50
# is exercised by the timing measurement, not by unit tests.
SMALL = ClusteringConfig(channels=8, seed=1)

cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")


@pytest.fixture(autouse=True)
def _one_thread():
    """Tiny volumes run fastest on one thread, and a busy machine does not slow them."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


def _phantom(seed=0, shape=SHAPE):
    """Background 100, an inner ellipsoid 300, Gaussian noise sigma 30."""
    z, y, x = np.ogrid[: shape[0], : shape[1], : shape[2]]
    centre = [(n - 1) / 2 for n in shape]
    radii = (shape[0] * 0.375, shape[1] * 0.34, shape[2] * 0.31)
    inside = sum(((a - c) / r) ** 2 for a, c, r in zip((z, y, x), centre, radii, strict=True)) <= 1
    rng = np.random.default_rng(seed)
    volume = np.where(inside, 300.0, 100.0) + rng.normal(0.0, 30.0, shape)
    return volume, inside


@pytest.fixture(scope="module")
def fitted():
    """One fit at the default stopping rules, shared by the tests that only read it."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)  # module fixtures are set up before _one_thread
    volume, inside = _phantom()
    calls = []
    result = cluster_volume(volume[np.newaxis], config=SMALL, progress=lambda *a: calls.append(a))
    torch.set_num_threads(previous)
    return result, inside, calls


def test_separates_the_bright_ellipsoid(fitted):
    result, inside, _ = fitted
    assert result.labels.shape == SHAPE and result.labels.dtype == np.int32
    assert sorted(np.unique(result.labels)) == list(range(result.n_labels))
    best = max(dice(result.labels == k, inside) for k in range(result.n_labels))
    assert best > 0.9


def test_loss_history_and_stop_reason(fitted):
    result, _, _ = fitted
    assert len(result.losses) == result.iterations >= 2
    assert result.losses[-1] < 0.5 * result.losses[0]
    assert all(math.isfinite(v) for v in result.losses)
    if result.stopped_by == StopReason.MIN_LABELS:
        assert result.n_labels <= SMALL.min_labels
    else:
        assert result.stopped_by == "epsilon"
        assert abs(result.losses[-1] - result.losses[-2]) < SMALL.eps


def test_progress_is_reported_every_check_and_at_the_end(fitted):
    result, _, calls = fitted
    iterations = [c[0] for c in calls]
    expected = list(range(SMALL.check_every, result.iterations, SMALL.check_every))
    assert iterations == expected + [result.iterations]
    assert calls[-1] == (result.iterations, pytest.approx(result.losses[-1]), result.n_labels)
    for iteration, loss, n_labels in calls:
        assert loss == pytest.approx(result.losses[iteration - 1])
        assert 1 <= n_labels <= SMALL.channels


def test_max_iter_stops():
    volume, _ = _phantom(shape=(8, 16, 16))
    config = ClusteringConfig(channels=8, max_iter=3, eps=0.0, min_labels=0)
    result = cluster_volume(volume[np.newaxis], config=config)
    assert result.stopped_by == "max_iter"
    assert result.iterations == 3 and len(result.losses) == 3


def test_min_labels_and_epsilon_stop():
    volume, _ = _phantom(shape=(8, 16, 16))
    at_once = ClusteringConfig(channels=8, min_labels=8, max_iter=10)
    result = cluster_volume(volume[np.newaxis], config=at_once)
    assert (result.stopped_by, result.iterations) == ("min_labels", 1)
    loose = ClusteringConfig(channels=8, eps=1e3, min_labels=0, max_iter=10)
    result = cluster_volume(volume[np.newaxis], config=loose)
    assert (result.stopped_by, result.iterations) == ("epsilon", 2)


def test_same_seed_same_result_other_seed_differs():
    volume, _ = _phantom(seed=2, shape=(8, 16, 16))
    config = ClusteringConfig(channels=8, max_iter=6, eps=0.0, min_labels=0, seed=3)
    first = cluster_volume(volume[np.newaxis], config=config)
    second = cluster_volume(volume[np.newaxis], config=config)
    np.testing.assert_array_equal(first.labels, second.labels)
    assert first.losses == second.losses
    other = cluster_volume(volume[np.newaxis], config=replace(config, seed=4))
    assert other.losses != first.losses


def test_global_random_state_is_left_alone():
    volume, _ = _phantom(shape=(8, 16, 16))
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    cluster_volume(volume[np.newaxis], config=ClusteringConfig(channels=4, max_iter=1))
    assert torch.equal(torch.rand(3), expected)


def test_result_does_not_depend_on_the_sync_period(monkeypatch):
    """The device path (stop state read every check_every iterations) runs past the stop
    and must return what a per-iteration check returns."""
    volume, _ = _phantom(seed=1, shape=(8, 16, 16))
    config = ClusteringConfig(channels=6, check_every=4, max_iter=60)
    reference = cluster_volume(volume[np.newaxis], config=config)
    assert reference.stopped_by != "max_iter"
    assert reference.iterations % config.check_every != 0  # the stop lies inside a chunk
    monkeypatch.setattr(fc, "_sync_period", lambda dev, cfg: cfg.check_every)
    calls = []
    chunked = cluster_volume(volume[np.newaxis], config=config, progress=lambda *a: calls.append(a))
    np.testing.assert_array_equal(chunked.labels, reference.labels)
    assert chunked.losses == reference.losses
    assert (chunked.iterations, chunked.stopped_by) == (
        reference.iterations,
        reference.stopped_by,
    )
    assert calls[-1][0] == reference.iterations
    assert [c[0] for c in calls] == sorted(c[0] for c in calls)


@pytest.mark.parametrize(
    ("channels", "match"),
    [
        (np.zeros((8, 8, 8)), r"4D \(C, z, y, x\)"),
        (np.stack([np.ones((4, 4, 4)), np.arange(64.0).reshape(4, 4, 4)]), r"\[0\] are constant"),
        (np.full((1, 4, 4, 4), np.nan), "NaN"),
        (np.random.default_rng(0).normal(size=(1, 1, 8, 8)), "at least 2 voxels"),
    ],
)
def test_bad_input_raises(channels, match):
    config = ClusteringConfig(max_iter=1)
    with pytest.raises(ValueError, match=match):
        cluster_volume(channels, config=config)


@pytest.mark.parametrize(
    "kwargs",
    [
        {"channels": 1},
        {"max_iter": 0},
        {"lr": 0.0},
        {"momentum": 1.0},
        {"eps": -1.0},
        {"spatial_dims": 1},
    ],
)
def test_bad_config_raises(kwargs):
    with pytest.raises(ValueError, match="ClusteringConfig"):
        ClusteringConfig(**kwargs)


@pytest.mark.skipif(torch.cuda.is_available(), reason="CUDA is available here")
def test_cuda_requested_without_cuda_raises():
    volume, _ = _phantom(shape=(4, 8, 8))
    with pytest.raises(ValueError, match="CUDA is not available"):
        cluster_volume(volume[np.newaxis], device="cuda")


@pytest.mark.gpu
@cuda
def test_cuda_path_separates_and_reports():
    volume, inside = _phantom()
    calls = []
    result = cluster_volume(
        volume[np.newaxis], config=SMALL, device="cuda", progress=lambda *a: calls.append(a)
    )
    assert result.labels.shape == SHAPE
    assert len(result.losses) == result.iterations
    assert calls[-1][0] == result.iterations
    assert max(dice(result.labels == k, inside) for k in range(result.n_labels)) > 0.85


def _slice_order_agreement(spatial_dims):
    volume, _ = _phantom(seed=2)
    config = replace(SMALL, spatial_dims=spatial_dims, max_iter=6, eps=0.0, min_labels=0)
    a = cluster_volume(volume[np.newaxis], config=config).labels
    b = cluster_volume(volume[np.newaxis, ::-1].copy(), config=config).labels[::-1]
    return float((a == b).mean())


def test_2d_variant_treats_slices_independently():
    """Reversing the slice order only reverses the labels of the slice-wise network: its
    kernels and continuity term never look across slices. The 3D network does."""
    assert _slice_order_agreement(2) > 0.999
    assert _slice_order_agreement(3) < 0.99


def test_2d_variant_separates_the_bright_ellipsoid():
    volume, inside = _phantom(seed=3)
    result = cluster_volume(volume[np.newaxis], config=replace(SMALL, spatial_dims=2))
    best = max(dice(result.labels == k, inside) for k in range(result.n_labels))
    assert best > 0.85


def test_slice_networks_find_the_ellipsoid_on_every_slice():
    """One network per slice: labels mean something only within a slice, and on each
    slice crossing the ellipsoid one of them is its cross-section."""
    volume, inside = _phantom(seed=4)
    calls = []
    config = replace(SMALL, max_iter=40)
    result = cluster_slices(volume[np.newaxis], config=config,
                            progress=lambda *a: calls.append(a))
    assert result.labels.shape == SHAPE and result.labels.dtype == np.int32
    assert len(result.losses) == result.iterations == calls[-1][0]
    assert len(calls) == SHAPE[0]
    assert result.n_labels == max(int(lab.max()) + 1 for lab in result.labels)
    for k in range(SHAPE[0]):
        if inside[k].sum() >= 100:  # the noisy polar caps (about 50 voxels) excepted
            best = max(dice(result.labels[k] == v, inside[k])
                       for v in np.unique(result.labels[k]))
            assert best > 0.85, f"slice {k}: {best:.2f}"


def test_slice_networks_are_independent_of_the_other_slices():
    volume, _ = _phantom(seed=5)
    config = replace(SMALL, max_iter=5, eps=0.0, min_labels=0)
    whole = cluster_slices(volume[np.newaxis], config=config)
    alone = cluster_slices(volume[np.newaxis, 7:8], config=config)
    assert np.array_equal(whole.labels[7], alone.labels[0])
    assert whole.stopped_by == StopReason.MAX_ITER and whole.iterations == 5 * SHAPE[0]


def test_slice_networks_zero_a_channel_constant_on_a_slice():
    volume, _ = _phantom(seed=6)
    second = volume.copy()
    second[3] = 0.0  # e.g. a T2 slab that does not cover this slice
    config = replace(SMALL, max_iter=3, eps=0.0, min_labels=0)
    result = cluster_slices(np.stack([volume, second]), config=config)
    assert result.labels.shape == SHAPE
    empty = volume.copy()
    empty[5] = 1.0
    with pytest.raises(ValueError, match="slice 5"):
        cluster_slices(np.stack([empty, np.where(np.arange(16)[:, None, None] == 5, 2.0,
                                                 volume)]), config=config)
