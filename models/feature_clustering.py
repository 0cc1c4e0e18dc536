"""Unsupervised 3D segmentation by differentiable feature clustering (paper §2.2 and §3).

The method of Kim & Kanezaki (the paper's reference [12]) extended to 3D and to several
co-registered sequences stacked as input channels (early fusion: DCE, optionally the T2
warped onto it). A small CNN is fitted to one volume, with no annotation:

* network ``h``: ``N`` blocks of ``Conv3d(3x3x3, stride 1, padding 1) -> ReLU ->
  BatchNorm3d`` with ``p`` channels, then, as in [12], a ``1x1x1`` ``Conv3d`` to ``p``
  channels followed by ``BatchNorm3d``, giving the response ``Y`` (``p`` values per voxel);
* labels ``C = argmax_j Y_j`` per voxel, taken without gradient and used as targets;
* loss ``L = CE(Y, C) + lambda * L_cont(Y)``: the cross-entropy is mean-reduced over the
  voxels and ``L_cont`` is, for each of the three axes, the mean absolute difference of
  ``Y`` between neighbouring voxels (over channels and voxels, as the ``L1Loss`` against
  zero of [12]), summed over the axes;
* plain SGD (learning rate 0.01, momentum 0.9), the same volume every iteration, the
  batch-normalisation layers always in training mode (statistics of this volume).

Each input channel is standardised to zero mean and unit variance over the volume.

Stopping
--------
At iteration ``t`` (1-based) the loss ``L_t`` and the number ``K_t`` of distinct labels in
``C_t`` are recorded. Training stops at the first ``t`` where

1. ``K_t <= min_labels`` (reason ``"min_labels"``, as in [12]; ``min_labels=0`` disables
   it), or
2. ``t >= 2`` and ``|L_t - L_{t-1}| < eps`` (reason ``"epsilon"``, the paper's criterion;
   ``eps=0`` disables it), or
3. ``t == max_iter`` (reason ``"max_iter"``, a guard the paper does not need to state).

When 1 and 2 hold at the same iteration the reason is ``"min_labels"``. The returned
labels are ``C_t`` of that stopping iteration (the argmax of the forward pass whose loss
was ``L_t``), the returned losses are ``L_1 .. L_t``.

Device synchronisation
----------------------
Reference [12] copies the label map to the host at every iteration to count the labels,
which stalls a GPU. Here the losses, the label counts and the stop tests live on the
device: the label count is a scatter into a ``p``-element presence vector, the epsilon
test compares the two consecutive losses recorded on the device (``L_t`` against
``L_{t-1}``, exactly as a per-iteration test would), and the label map of the first
iteration meeting a stop condition is frozen on the device with ``torch.where``. The host
reads a handful of scalars back only every ``check_every`` iterations on CUDA, so up to
``check_every - 1`` further iterations may run before the stop is seen; their results are
discarded and the returned result does not depend on ``check_every``. On the CPU there is
nothing to overlap and the stop is read back at every iteration (no wasted iterations).
The ``progress`` callback is called every ``check_every`` iterations and once at the end.

On CUDA the forward pass runs under ``torch.autocast`` in bfloat16 when the device
supports it (float16 would need a ``GradScaler``, whose overflow check synchronises at
every step); losses are computed in float32. The CPU path is float32.

Determinism: the weights are initialised from ``torch.manual_seed(seed)`` inside
``torch.random.fork_rng``, so the caller's global random state is left untouched and the
same input and seed give the same result. On the CPU the result is bitwise reproducible;
on CUDA up to cuDNN's choice of non-deterministic kernels, which this module does not
override.

The clustering runs on the grid it is given; the CPU profile's coarser grid and the
return to full resolution are :mod:`models.graft`'s. The number of torch threads is left
to the caller (``torch.set_num_threads``).
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable
from dataclasses import dataclass, replace
from enum import StrEnum

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

__all__ = [
    "ClusteringConfig",
    "ClusteringResult",
    "StopReason",
    "cluster_slices",
    "cluster_volume",
]


class StopReason(StrEnum):
    """Why :func:`cluster_volume` stopped (compares equal to its string value)."""

    EPSILON = "epsilon"
    MIN_LABELS = "min_labels"
    MAX_ITER = "max_iter"


# Codes of the on-device stop state.
_REASONS = {0: StopReason.MAX_ITER, 1: StopReason.EPSILON, 2: StopReason.MIN_LABELS}


@dataclass(frozen=True)
class ClusteringConfig:
    """Hyper-parameters of :func:`cluster_volume` (defaults: the paper's, §3).

    Attributes
    ----------
    n_blocks : int
        Number ``N`` of 3x3x3 convolution blocks (paper: 2).
    channels : int
        Number ``p`` of feature channels, also the maximum number of clusters (paper: 50).
    lam : float
        Weight ``lambda`` of the spatial continuity loss (paper: 5).
    lr : float
        SGD learning rate (paper: 0.01).
    momentum : float
        SGD momentum (paper: 0.9).
    eps : float
        Stop when two consecutive losses differ by less than this (paper: 0.005); 0
        disables the test.
    max_iter : int
        Maximum number of iterations, a guard.
    min_labels : int
        Stop when the number of distinct labels falls to this value or below ([12]: 3);
        0 disables the test.
    check_every : int
        On CUDA, read the stop state back to the host every this many iterations; the
        ``progress`` callback is called at the same period on every device.
    seed : int
        Seed of the weight initialisation.
    mixed_precision : bool
        Use bfloat16 autocast on CUDA devices that support it. Ignored on the CPU.
    spatial_dims : int
        3 (the paper's method) or 2: the 2D network of [12], ``1x3x3`` kernels and the
        continuity term along y and x only. :func:`cluster_volume` then fits one network
        to all the slices at once (labels agree across slices);
        :func:`cluster_slices` fits one network per slice, as [12] does per image.
    """

    n_blocks: int = 2
    channels: int = 50
    lam: float = 5.0
    lr: float = 0.01
    momentum: float = 0.9
    eps: float = 0.005
    max_iter: int = 200
    min_labels: int = 3
    check_every: int = 5
    seed: int = 0
    mixed_precision: bool = True
    spatial_dims: int = 3

    def __post_init__(self) -> None:
        checks = (
            ("n_blocks", self.n_blocks >= 1, ">= 1"),
            ("channels", self.channels >= 2, ">= 2"),
            ("max_iter", self.max_iter >= 1, ">= 1"),
            ("min_labels", self.min_labels >= 0, ">= 0"),
            ("check_every", self.check_every >= 1, ">= 1"),
            ("spatial_dims", self.spatial_dims in (2, 3), "2 or 3"),
        )
        for name, ok, expected in checks:
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or not ok:
                raise ValueError(
                    f"ClusteringConfig.{name} must be an integer {expected}, got {value!r}"
                )
        for name, low, high in (
            ("lam", 0.0, math.inf),
            ("lr", 0.0, math.inf),
            ("momentum", 0.0, 1.0),
            ("eps", 0.0, math.inf),
        ):
            value = float(getattr(self, name))
            if not (math.isfinite(value) and low <= value and (value < high)):
                raise ValueError(
                    f"ClusteringConfig.{name} must be finite in [{low}, {high}), "
                    f"got {getattr(self, name)!r}"
                )
        if self.lr == 0:
            raise ValueError("ClusteringConfig.lr must be > 0, got 0")


@dataclass(frozen=True)
class ClusteringResult:
    """Outcome of :func:`cluster_volume`.

    Attributes
    ----------
    labels : numpy.ndarray
        int32 (z, y, x) cluster map at the input resolution, labels renumbered
        ``0 .. n_labels - 1`` in the order of the network channels they came from.
    iterations : int
        Number of iterations up to and including the stopping one.
    n_labels : int
        Number of distinct labels in ``labels``.
    losses : tuple of float
        Loss of every iteration, ``len(losses) == iterations``.
    stopped_by : StopReason
        ``"epsilon"``, ``"min_labels"`` or ``"max_iter"`` (a ``str`` enum).
    """

    labels: np.ndarray
    iterations: int
    n_labels: int
    losses: tuple[float, ...]
    stopped_by: StopReason


class _FeatureNet(nn.Module):
    """``N x (Conv3d 3x3x3 -> ReLU -> BatchNorm3d)`` then ``Conv3d 1x1x1 -> BatchNorm3d``."""

    def __init__(
        self, in_channels: int, *, n_blocks: int, width: int, spatial_dims: int
    ) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        previous = in_channels
        kernel, padding = ((3, 3, 3), (1, 1, 1)) if spatial_dims == 3 else ((1, 3, 3), (0, 1, 1))
        for _ in range(n_blocks):
            layers += [
                nn.Conv3d(previous, width, kernel_size=kernel, stride=1, padding=padding),
                nn.ReLU(inplace=True),
                nn.BatchNorm3d(width),
            ]
            previous = width
        layers += [nn.Conv3d(width, width, kernel_size=1), nn.BatchNorm3d(width)]
        self.body = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x)


def _as_channels(channels: np.ndarray) -> np.ndarray:
    arr = np.asarray(channels)
    if arr.ndim != 4:
        raise ValueError(
            f"channels must be a 4D (C, z, y, x) array, got shape {arr.shape}; "
            "use volume[np.newaxis] for a single sequence"
        )
    if arr.size == 0:
        raise ValueError(f"channels must not be empty, got shape {arr.shape}")
    if not np.issubdtype(arr.dtype, np.number) or np.iscomplexobj(arr):
        raise ValueError(f"channels must be real numbers, got dtype {arr.dtype}")
    arr = arr.astype(np.float64, copy=False)
    if not np.isfinite(arr).all():
        raise ValueError("channels hold NaN or infinite values")
    return arr


def _standardise(arr: np.ndarray, *, allow_constant: bool = False) -> np.ndarray:
    """Zero mean, unit variance per channel; a constant channel raises, or is zeroed."""
    mean = arr.mean(axis=(1, 2, 3), keepdims=True)
    std = arr.std(axis=(1, 2, 3), keepdims=True)
    constant = std.ravel() <= 1e-12 * np.maximum(1.0, np.abs(mean).ravel())
    if constant.all() or (constant.any() and not allow_constant):
        raise ValueError(
            f"input channel(s) {np.flatnonzero(constant).tolist()} are constant over the "
            "volume: nothing to cluster on"
        )
    std[constant.reshape(std.shape)] = np.inf  # a constant channel carries nothing: zeros
    return ((arr - mean) / std).astype(np.float32)


def _torch_device(device: str) -> torch.device:
    try:
        dev = torch.device(device)
    except RuntimeError as exc:
        raise ValueError(f"unknown torch device {device!r}") from exc
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device {device!r} requested but CUDA is not available")
    if dev.type not in ("cpu", "cuda"):
        raise ValueError(f"device must be 'cpu' or 'cuda[:n]', got {device!r}")
    return dev


def _continuity(y: torch.Tensor, spatial_dims: int) -> torch.Tensor:
    """Sum over the axes (z only in 3D) of the mean absolute difference between neighbours."""
    dy = (y[:, :, :, 1:] - y[:, :, :, :-1]).abs().mean()
    dx = (y[..., 1:] - y[..., :-1]).abs().mean()
    if spatial_dims == 2:
        return dy + dx
    return (y[:, :, 1:] - y[:, :, :-1]).abs().mean() + dy + dx


def _autocast(dev: torch.device, enabled: bool) -> contextlib.AbstractContextManager[object]:
    if dev.type == "cuda" and enabled and torch.cuda.is_bf16_supported():
        return torch.autocast(device_type="cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext()


def _sync_period(dev: torch.device, config: ClusteringConfig) -> int:
    """Iterations between two reads of the stop state by the host."""
    return config.check_every if dev.type == "cuda" else 1


@dataclass
class _Fit:
    labels: np.ndarray
    stop_index: int
    reason: StopReason
    losses: tuple[float, ...]
    n_labels: int


def _fit(
    inputs: torch.Tensor,
    *,
    config: ClusteringConfig,
    dev: torch.device,
    progress: Callable[[int, float, int], None] | None,
) -> _Fit:
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(config.seed)
        net = _FeatureNet(inputs.shape[1], n_blocks=config.n_blocks, width=config.channels,
                          spatial_dims=config.spatial_dims)
    # Channels-last (NDHWC) is about 1.7x faster for these convolutions on the CPU
    # (oneDNN) and is the layout tensor cores prefer on CUDA.
    net.to(dev, memory_format=torch.channels_last_3d).train()
    inputs = inputs.contiguous(memory_format=torch.channels_last_3d)
    optimiser = torch.optim.SGD(net.parameters(), lr=config.lr, momentum=config.momentum)
    sync_every = _sync_period(dev, config)

    loss_hist = torch.zeros(config.max_iter, dtype=torch.float32, device=dev)
    count_hist = torch.zeros(config.max_iter, dtype=torch.int64, device=dev)
    done = torch.zeros((), dtype=torch.bool, device=dev)
    stop_index = torch.full((), config.max_iter - 1, dtype=torch.int64, device=dev)
    reason = torch.zeros((), dtype=torch.int64, device=dev)
    no_reason = torch.zeros((), dtype=torch.int64, device=dev)
    frozen: torch.Tensor | None = None
    reported = 0

    for t in range(config.max_iter):
        optimiser.zero_grad(set_to_none=True)
        with _autocast(dev, config.mixed_precision):
            response = net(inputs)
        response = response.float()
        labels = response.detach().argmax(dim=1)
        continuity = _continuity(response, config.spatial_dims)
        loss = F.cross_entropy(response, labels) + config.lam * continuity
        loss.backward()
        optimiser.step()

        # Stop bookkeeping, all on the device: no host synchronisation here.
        current = loss.detach()
        loss_hist[t] = current
        present = torch.zeros(config.channels, dtype=torch.bool, device=dev)
        n_labels = present.index_fill_(0, labels.reshape(-1), True).sum()
        count_hist[t] = n_labels
        code = torch.where(n_labels <= config.min_labels, 2, no_reason)
        if t > 0:
            close = (current - loss_hist[t - 1]).abs() < config.eps
            code = torch.where((code == 0) & close, 1, code)
        first = (~done) & (code > 0)
        frozen = labels if frozen is None else torch.where(done, frozen, labels)
        stop_index = torch.where(first, t, stop_index)
        reason = torch.where(first, code, reason)
        done = done | first

        last = t == config.max_iter - 1
        if (t + 1) % sync_every == 0 or last:
            state = torch.stack((done.double(), current.double(), n_labels.double())).tolist()
            if state[0] or last:
                break
            if progress is not None and (t + 1) % config.check_every == 0:
                progress(t + 1, float(state[1]), int(state[2]))
                reported = t + 1

    assert frozen is not None  # max_iter >= 1
    index = int(stop_index.item())
    losses = tuple(float(v) for v in loss_hist[: index + 1].cpu().tolist())
    n_final = int(count_hist[index].item())
    if progress is not None and reported != index + 1:
        progress(index + 1, losses[-1], n_final)
    return _Fit(
        labels=frozen[0].cpu().numpy(),
        stop_index=index,
        reason=_REASONS[int(reason.item())],
        losses=losses,
        n_labels=n_final,
    )


def cluster_volume(
    channels: np.ndarray,
    *,
    config: ClusteringConfig = ClusteringConfig(),
    device: str = "cpu",
    progress: Callable[[int, float, int], None] | None = None,
) -> ClusteringResult:
    """Cluster a multi-sequence volume with a CNN fitted to it alone (paper §2.2).

    Parameters
    ----------
    channels : numpy.ndarray
        Real (C, z, y, x) array: the co-registered sequences stacked along the first
        axis (early fusion), e.g. ``np.stack([dce_roi, warped_t2_roi])``. Every axis
        must have at least 2 voxels.
    config : ClusteringConfig
        Hyper-parameters; the defaults are the paper's.
    device : str
        Torch device, ``"cpu"`` or ``"cuda[:n]"``.
    progress : callable, optional
        ``progress(iteration, loss, n_labels)``, called every ``config.check_every``
        iterations and once for the stopping iteration, e.g. to log progress.

    Returns
    -------
    ClusteringResult
        Labels at the input resolution, iteration count, losses and stop reason; see
        the module notes for the stopping rules.

    Raises
    ------
    ValueError
        If ``channels`` is not a finite real 4D array, a channel is constant, an axis is
        shorter than 2 voxels, or the device is unknown or
        unavailable.
    """
    arr = _as_channels(channels)
    dev = _torch_device(device)
    if min(arr.shape[1:]) < 2:
        raise ValueError(
            f"the grid {arr.shape[1:]} needs at least 2 voxels along every axis"
        )
    inputs = torch.from_numpy(_standardise(arr))[None].to(dev)
    fit = _fit(inputs, config=config, dev=dev, progress=progress)
    values, renumbered = np.unique(fit.labels, return_inverse=True)
    return ClusteringResult(
        labels=renumbered.reshape(fit.labels.shape).astype(np.int32),
        iterations=fit.stop_index + 1,
        n_labels=int(values.size),
        losses=fit.losses,
        stopped_by=fit.reason,
    )


def cluster_slices(
    channels: np.ndarray,
    *,
    config: ClusteringConfig = ClusteringConfig(),
    device: str = "cpu",
    progress: Callable[[int, float, int], None] | None = None,
) -> ClusteringResult:
    """The 2D method of [12] on every (y, x) slice: one network fitted to each slice alone.

    The slice-wise variant of the paper's Table 1 ("2D implementation [12]"). Each slice
    is standardised on its own (a channel constant on a slice, e.g. a T2 that does not
    cover it, becomes zeros) and clustered with ``config`` and ``spatial_dims=2``.

    Returns
    -------
    ClusteringResult
        ``labels`` numbered ``0 .. k - 1`` within each slice: one number on two slices
        need not be one cluster. ``iterations`` and ``losses`` are summed and
        concatenated over the slices, ``n_labels`` is the most any slice kept, and
        ``stopped_by`` is ``"max_iter"`` when any slice hit the guard, otherwise the
        commonest reason. ``progress(iterations so far, loss, n_labels)`` is called after
        each slice.

    Raises
    ------
    ValueError
        As :func:`cluster_volume`; every channel constant on one slice also raises.
    """
    arr = _as_channels(channels)
    dev = _torch_device(device)
    if min(arr.shape[2:]) < 2:
        raise ValueError(f"slices of {arr.shape[2:]} need at least 2 voxels along y and x")
    slice_config = replace(config, spatial_dims=2)
    labels = np.empty(arr.shape[1:], dtype=np.int32)
    losses: list[float] = []
    reasons: list[StopReason] = []
    most = 0
    for k in range(arr.shape[1]):
        try:
            standard = _standardise(arr[:, k:k + 1], allow_constant=True)
        except ValueError as exc:
            raise ValueError(f"slice {k}: {exc}") from exc
        fit = _fit(torch.from_numpy(standard)[None].to(dev), config=slice_config, dev=dev,
                   progress=None)
        _, renumbered = np.unique(fit.labels, return_inverse=True)
        labels[k] = renumbered.reshape(fit.labels.shape)
        losses += fit.losses
        reasons.append(fit.reason)
        most = max(most, int(renumbered.max()) + 1)
        if progress is not None:
            progress(len(losses), fit.losses[-1], int(renumbered.max()) + 1)
    reason = (StopReason.MAX_ITER if StopReason.MAX_ITER in reasons
              else max(set(reasons), key=reasons.count))
    return ClusteringResult(labels=labels, iterations=len(losses), n_labels=most,
                            losses=tuple(losses), stopped_by=reason)
