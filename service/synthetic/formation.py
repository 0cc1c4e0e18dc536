"""Low-level image formation of the renderer: texture, bias field, blur and noise.

:class:`RenderSettings` holds the image-formation parameters; ``RenderSettings.ideal()``
renders flat tissues with sharp edges and no noise, bias or deformation. The helpers here
are the steps described in :mod:`service.synthetic.phantom`: smooth fields sampled on a
coarse lattice of a grid and interpolated linearly (``_GridField``), the per-tissue
texture (``_Texture``), the bias field, the point-spread-function blur, Rician noise and
the noise sigma set by the kidney's SNR.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np
from scipy import ndimage as ndi

from service.synthetic.anatomy import BODY_CENTRE_XY, Anatomy
from service.synthetic.geometry import _SampleGrid
from service.synthetic.shapes import Vector
from service.synthetic.tissues import _KIDNEY_TISSUES, TISSUE_SIGNALS, Tissue, TissueSignal

__all__ = ["RenderSettings"]


@dataclass(frozen=True)
class RenderSettings:
    """Image-formation parameters of :func:`synthesize_mr` (defaults: realistic).

    Attributes
    ----------
    psf_sigma_in_plane : float
        Gaussian point-spread function in-plane, sigma in voxels (0: none).
    psf_sigma_through_plane : float
        Slice profile of the 3D DCE, sigma in slices (0: none).
    t2_sub_slices : int
        Samples averaged across each T2 slice's thickness (1: the slice centre only).
    texture_scale : float
        Factor on every tissue's ``texture`` amplitude (0: flat tissues).
    texture_correlation_mm : float
        Smoothing (Gaussian sigma) of the texture's white noise, mm.
    bias_amplitude : float
        Bias fields stay within ``1 / (1 + b)`` and ``1 + b`` over the body (0: none).
    dce_snr, t2_snr : float or None
        Kidney SNR (late-phase DCE / T2 signal over the noise sigma) at the reference
        voxel of the paper's protocol; ``None``: no noise.
    t2_deformation_mm : float
        Largest displacement of the T2's smooth deformation, mm (0: rigid motion only).
    """

    psf_sigma_in_plane: float = 0.5
    psf_sigma_through_plane: float = 0.5
    t2_sub_slices: int = 5
    texture_scale: float = 1.0
    texture_correlation_mm: float = 6.0
    bias_amplitude: float = 0.25
    dce_snr: float | None = 20.0
    t2_snr: float | None = 20.0
    t2_deformation_mm: float = 3.0

    def __post_init__(self) -> None:
        if self.t2_sub_slices < 1:
            raise ValueError(f"t2_sub_slices must be at least 1, got {self.t2_sub_slices}")
        for name in ("dce_snr", "t2_snr"):
            value = getattr(self, name)
            if value is not None and not value > 0:
                raise ValueError(f"{name} must be positive or None, got {value}")
        for name in (
            "psf_sigma_in_plane",
            "psf_sigma_through_plane",
            "texture_scale",
            "bias_amplitude",
            "t2_deformation_mm",
        ):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must not be negative, got {getattr(self, name)}")
        if not self.texture_correlation_mm > 0:
            raise ValueError("texture_correlation_mm must be positive")

    @classmethod
    def ideal(cls) -> RenderSettings:
        """Flat tissues, sharp edges, no bias, noise or deformation: labels made images."""
        return cls(
            psf_sigma_in_plane=0.0,
            psf_sigma_through_plane=0.0,
            t2_sub_slices=1,
            texture_scale=0.0,
            bias_amplitude=0.0,
            dce_snr=None,
            t2_snr=None,
            t2_deformation_mm=0.0,
        )


# --------------------------------------------------------------------------- lattice interpolation


def _linear_weights(n: int, nodes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """For positions 0..n-1: index of the node below and the weight of the node above."""
    positions = np.arange(n, dtype=float)
    below = np.clip(np.searchsorted(nodes, positions, side="right") - 1, 0, len(nodes) - 2)
    gap = np.maximum(nodes[below + 1] - nodes[below], 1e-9)
    above = np.clip((positions - nodes[below]) / gap, 0.0, 1.0).astype(np.float32)
    return below, above


def _interpolate_axis(
    values: np.ndarray, axis: int, below: np.ndarray, above: np.ndarray
) -> np.ndarray:
    """Linear interpolation of ``values`` along ``axis`` (fine positions of ``below``)."""
    lower = np.take(values, below, axis=axis)
    upper = np.take(values, below + 1, axis=axis)
    shape = [1] * values.ndim
    shape[axis] = len(below)
    weight = above.reshape(shape)
    return lower + (upper - lower) * weight


@dataclass(frozen=True)
class _GridField:
    """A smooth field sampled on a coarse lattice of a grid, interpolated linearly.

    ``values`` (channels, a, b, c) are the field at lattice nodes; ``weights`` the
    interpolation (node below, weight above) of each grid axis.
    """

    values: np.ndarray
    weights: tuple[tuple[np.ndarray, np.ndarray], ...]

    @classmethod
    def sample(
        cls,
        grid: _SampleGrid,
        function: Callable[[np.ndarray], np.ndarray],
        node_spacing_mm: float,
    ) -> _GridField:
        """Evaluate ``function`` (positions (..., 3) -> (..., channels)) on the lattice."""
        nodes = []
        for axis, n in enumerate(grid.shape):
            length = float(np.linalg.norm(grid.steps[axis])) * max(n - 1, 0)
            count = max(2, math.ceil(length / node_spacing_mm) + 1)
            nodes.append(np.linspace(0.0, n - 1, count))
        values = function(grid.positions(*nodes))
        values = np.moveaxis(np.asarray(values, dtype=np.float32), -1, 0)
        weights = tuple(_linear_weights(n, node) for n, node in zip(grid.shape, nodes, strict=True))
        return cls(np.ascontiguousarray(values), weights)

    def block(self, k0: int, k1: int) -> np.ndarray:
        """The field on slices ``k0:k1``, (channels, K, J, I) float32."""
        below, above = self.weights[0]
        out = _interpolate_axis(self.values, 1, below[k0:k1], above[k0:k1])
        out = _interpolate_axis(out, 2, *self.weights[1])
        return _interpolate_axis(out, 3, *self.weights[2])


# --------------------------------------------------------------------------- fields


#: Spacing of the texture's white-noise lattice and of its sampling in a grid, mm.
_TEXTURE_LATTICE_MM = 3.0
#: Half-extent of the texture lattice around (body axis, kidney height), mm.
_TEXTURE_HALF_EXTENT_MM = (185.0, 130.0, 200.0)


@dataclass(frozen=True)
class _Texture:
    """Per-tissue multiplicative texture ``1 + sum_c weights[c][tissue] * field_c(x)``.

    ``fields`` are three unit-variance smooth random fields on a lattice in patient space
    (``origin``, ``spacing_mm``); ``weights`` (3, tissues) give each tissue a unit mixture of
    them scaled by its texture amplitude.
    """

    fields: np.ndarray
    origin: np.ndarray
    spacing_mm: float
    weights: np.ndarray

    @classmethod
    def generate(cls, seed: int, anatomy: Anatomy, settings: RenderSettings) -> _Texture | None:
        amplitudes = np.array(
            [TISSUE_SIGNALS[t].texture * settings.texture_scale for t in Tissue], dtype=float
        )
        if not np.any(amplitudes > 0):
            return None
        rng = np.random.default_rng(np.random.SeedSequence([seed, 3]))
        mixtures = rng.normal(size=(len(Tissue), 3))
        mixtures /= np.linalg.norm(mixtures, axis=1, keepdims=True)
        weights = (mixtures * amplitudes[:, None]).T.astype(np.float32)
        half = np.asarray(_TEXTURE_HALF_EXTENT_MM)
        centre = np.array([*BODY_CENTRE_XY, anatomy.kidney.centre[2]])
        origin = centre - half
        shape = tuple(int(n) for n in np.ceil(2 * half / _TEXTURE_LATTICE_MM) + 1)
        sigma = settings.texture_correlation_mm / _TEXTURE_LATTICE_MM
        fields = np.empty((3, *shape), dtype=np.float32)
        for c in range(3):
            noise = rng.standard_normal(shape, dtype=np.float32)
            smooth = ndi.gaussian_filter(noise, sigma, mode="wrap", truncate=3.0)
            fields[c] = smooth / smooth.std()
        return cls(fields, origin, _TEXTURE_LATTICE_MM, weights)

    def at(self, points: np.ndarray) -> np.ndarray:
        """The three fields at patient ``points`` (..., 3), shape (..., 3)."""
        index = (np.asarray(points, dtype=float) - self.origin) / self.spacing_mm
        coordinates = np.moveaxis(index, -1, 0)
        return np.stack(
            [
                ndi.map_coordinates(f, coordinates, order=1, mode="nearest", output=np.float32)
                for f in self.fields
            ],
            axis=-1,
        )

    def factors(self, labels: np.ndarray, fields: np.ndarray) -> np.ndarray:
        """Texture factor of each voxel given its tissue and the fields (3, ...) there."""
        out = self.weights[0][labels] * fields[0]
        out += self.weights[1][labels] * fields[1]
        out += self.weights[2][labels] * fields[2]
        out += np.float32(1.0)
        return np.maximum(out, np.float32(0.2), out=out)


#: Half-extent of the region over which a bias field is normalised, around the body axis
#: at the kidney's height, mm.
_BIAS_HALF_EXTENT_MM = (165.0, 115.0, 150.0)


def _bias_function(
    rng: np.random.Generator, kidney_centre: Sequence[float], amplitude: float
) -> Callable[[np.ndarray], np.ndarray]:
    """``exp`` of a random quadratic polynomial, within ``1/(1+a), 1+a`` over the body."""
    centre = np.array([*BODY_CENTRE_XY, kidney_centre[2]])
    half = np.asarray(_BIAS_HALF_EXTENT_MM)
    coefficients = rng.uniform(-1.0, 1.0, size=9)

    def polynomial(points: np.ndarray) -> np.ndarray:
        x, y, z = np.moveaxis((np.asarray(points, dtype=float) - centre) / half, -1, 0)
        terms = (x, y, z, x * x, y * y, z * z, x * y, x * z, y * z)
        return sum(c * t for c, t in zip(coefficients, terms, strict=True))

    axes = [np.linspace(-h, h, 9) for h in half]
    lattice = centre + np.stack(np.meshgrid(*axes, indexing="ij"), axis=-1)
    largest = float(np.abs(polynomial(lattice)).max())
    scale = math.log1p(amplitude) / largest if largest > 0 else 0.0

    def bias(points: np.ndarray) -> np.ndarray:
        return np.exp(scale * polynomial(points))[..., None]

    return bias


def _blur(volume: np.ndarray, sigmas: Sequence[float]) -> np.ndarray:
    """Separable Gaussian blur (sigma in voxels per axis) of a float32 volume, in place."""
    for axis, sigma in enumerate(sigmas):
        if sigma > 0 and volume.shape[axis] > 1:
            ndi.gaussian_filter1d(
                volume, sigma, axis=axis, mode="nearest", truncate=3.0, output=volume
            )
    return volume


def _rician(signal: np.ndarray, sigma: float, rng: np.random.Generator) -> np.ndarray:
    """Magnitude of the signal plus complex Gaussian noise (Rician distributed), float32."""
    real = rng.standard_normal(signal.shape, dtype=np.float32)
    real *= np.float32(sigma)
    real += signal
    imaginary = rng.standard_normal(signal.shape, dtype=np.float32)
    imaginary *= np.float32(sigma)
    return np.hypot(real, imaginary, out=real)


def _to_uint16(values: np.ndarray) -> np.ndarray:
    return np.clip(np.rint(values), 0, np.iinfo(np.uint16).max).astype(np.uint16)


def _lookup(values: Mapping[Tissue, float]) -> np.ndarray:
    table = np.zeros(max(Tissue) + 1, dtype=np.float32)
    for tissue, value in values.items():
        table[tissue] = value
    return table


#: Reference voxels (slice, row, column mm) at which the SNR settings hold: the middle of
#: the paper's DCE and T2 protocols.
_DCE_REFERENCE_VOXEL_MM = (2.2, 0.86, 0.86)
_T2_REFERENCE_VOXEL_MM = (5.5, 0.84, 0.84)
#: Phase (s after injection) whose kidney signal defines the DCE SNR.
_SNR_PHASE_S = 180.0


def _noise_sigma(
    snr: float | None, kidney_signal: float, reference_mm: Sequence[float], spacing_mm: Vector
) -> float:
    """Noise sigma giving ``snr`` at the reference voxel, inversely to the voxel volume."""
    if snr is None:
        return 0.0
    return kidney_signal / snr * float(np.prod(reference_mm)) / float(np.prod(spacing_mm))


def _kidney_signal(signal: Callable[[TissueSignal], float]) -> float:
    return float(np.mean([signal(TISSUE_SIGNALS[t]) for t in _KIDNEY_TISSUES]))
