"""Acquisition protocols: the grids of both series and the graft size of a study.

:class:`ProtocolRanges` / :data:`PAPER_RANGES` and :func:`paper_protocol`: acquisition
geometry of the MRI paper's dataset (§4), drawn reproducibly per seed as an
:class:`AcquisitionProtocol`. Without a protocol,
:func:`~service.synthetic.phantom.synthesize_mr` builds one from its arguments and the
defaults (``_acquisition``; T2 slices of :data:`T2_SLICE_THICKNESS_MM`).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from service.synthetic.shapes import Vector, _as_vector

__all__ = [
    "PAPER_RANGES",
    "T2_SLICE_THICKNESS_MM",
    "AcquisitionProtocol",
    "ProtocolRanges",
    "paper_protocol",
]


#: Slice thickness and spacing of the default T2-weighted series, mm.
T2_SLICE_THICKNESS_MM = 5.0

_DEFAULT_SHAPE = (24, 96, 96)
_DEFAULT_SPACING_MM: Vector = (2.5, 1.5, 1.5)


@dataclass(frozen=True)
class ProtocolRanges:
    """Acquisition ranges of a dataset, from which :func:`paper_protocol` draws.

    Defaults: the MRI paper's dataset (§4): DCE 512 x 512 x [64-88] voxels of 0.78-0.94 mm
    in-plane and 1.9-2.5 mm slices; T2 512 x 512 x [25-36] voxels of 0.70-0.98 mm in-plane
    and 5.0-6.0 mm slices; adult grafts (``kidney_scale`` 1.3-1.6, about 125-235 ml).
    """

    matrix: int = 512
    dce_slices: tuple[int, int] = (64, 88)
    dce_pixel_mm: tuple[float, float] = (0.78, 0.94)
    dce_slice_mm: tuple[float, float] = (1.9, 2.5)
    t2_slices: tuple[int, int] = (25, 36)
    t2_pixel_mm: tuple[float, float] = (0.70, 0.98)
    t2_slice_mm: tuple[float, float] = (5.0, 6.0)
    kidney_scale: tuple[float, float] = (1.3, 1.6)


#: Acquisition ranges of the MRI paper's dataset (32 grafts, 12 months after transplant).
PAPER_RANGES = ProtocolRanges()


def _positive_shape(shape: Sequence[int], name: str) -> tuple[int, int, int]:
    if len(shape) != 3 or any(int(n) < 1 for n in shape):
        raise ValueError(f"{name} must be 3 positive sizes, got {tuple(shape)}")
    return (int(shape[0]), int(shape[1]), int(shape[2]))


def _positive_spacing(spacing: Sequence[float], name: str) -> Vector:
    if len(spacing) != 3 or not all(float(s) > 0 for s in spacing):
        raise ValueError(f"{name} must be 3 positive spacings, got {tuple(spacing)}")
    return _as_vector(spacing)


@dataclass(frozen=True)
class AcquisitionProtocol:
    """Grids of the DCE and T2 series and the graft size of one synthetic study.

    Attributes
    ----------
    dce_shape, t2_shape : tuple of int
        (slices, rows, columns).
    dce_spacing_mm, t2_spacing_mm : tuple of float
        (slice step = slice thickness, row spacing, column spacing), mm.
    kidney_scale : float
        Factor on :data:`KIDNEY_SEMI_AXES_MM`.
    """

    dce_shape: tuple[int, int, int]
    dce_spacing_mm: Vector
    t2_shape: tuple[int, int, int]
    t2_spacing_mm: Vector
    kidney_scale: float

    def __post_init__(self) -> None:
        object.__setattr__(self, "dce_shape", _positive_shape(self.dce_shape, "dce_shape"))
        object.__setattr__(self, "t2_shape", _positive_shape(self.t2_shape, "t2_shape"))
        for name in ("dce_spacing_mm", "t2_spacing_mm"):
            object.__setattr__(self, name, _positive_spacing(getattr(self, name), name))
        if not self.kidney_scale > 0:
            raise ValueError(f"kidney_scale must be positive, got {self.kidney_scale}")

    @property
    def dce_slab_mm(self) -> float:
        """Thickness covered by the DCE slices, mm."""
        return self.dce_shape[0] * self.dce_spacing_mm[0]

    @property
    def t2_slab_mm(self) -> float:
        """Thickness covered by the T2 slices, mm."""
        return self.t2_shape[0] * self.t2_spacing_mm[0]


def _t2_slices_covering(
    slab_mm: float, thickness_mm: float, drawn: int, ranges: ProtocolRanges
) -> tuple[int, float]:
    """T2 slice count and thickness whose slab covers ``slab_mm``.

    The drawn count is raised to the number needed; past the range's maximum the
    thickness is first raised (up to the range's maximum), then the count exceeds the range.
    """
    needed = math.ceil(slab_mm / thickness_mm - 1e-9)
    most = ranges.t2_slices[1]
    if needed > most:
        thickness_mm = min(ranges.t2_slice_mm[1], math.ceil(slab_mm / most * 100.0) / 100.0)
        needed = math.ceil(slab_mm / thickness_mm - 1e-9)
    return max(drawn, needed), thickness_mm


def paper_protocol(seed: int = 0, *, ranges: ProtocolRanges = PAPER_RANGES,
                   t2_draw: int = 0) -> AcquisitionProtocol:
    """Draw the acquisition of one study of the MRI paper's dataset (§4), reproducibly.

    Every value is uniform in its range of ``ranges``: DCE slice count, in-plane spacing
    (square pixels, rounded to 1e-4 mm) and slice spacing (0.01 mm); T2 in-plane spacing,
    slice thickness and count; ``kidney_scale``. Both matrices are ``ranges.matrix``
    squared. The T2 slab must cover the DCE slab (both are centred alike): the drawn T2
    count is raised to the number of slices needed, and where that exceeds the range
    (a DCE slab above 36 x 6 mm = 216 mm) the T2 slices are thickened to at most 6 mm and
    the count goes just beyond the range (at most 37 for the paper's ranges).

    Parameters
    ----------
    seed : int
        Seeds the draw (independently of the anatomy and noise of the same seed).
    ranges : ProtocolRanges
        Ranges to draw from; default :data:`PAPER_RANGES`.
    t2_draw : int
        0: the T2 slab of the seed. Another value draws the T2 slab (in-plane spacing,
        slice thickness and count) again, independently, for the same DCE grid and graft
        size: the same patient's T2 acquired another time.

    Returns
    -------
    AcquisitionProtocol
        For :func:`synthesize_mr` / ``write_mr_study`` (``protocol=``).
    """
    rng = np.random.default_rng(np.random.SeedSequence([seed, 4]))
    dce_slices = int(rng.integers(ranges.dce_slices[0], ranges.dce_slices[1] + 1))
    dce_pixel = round(float(rng.uniform(*ranges.dce_pixel_mm)), 4)
    dce_step = round(float(rng.uniform(*ranges.dce_slice_mm)), 2)
    t2_pixel = round(float(rng.uniform(*ranges.t2_pixel_mm)), 4)
    t2_thickness = round(float(rng.uniform(*ranges.t2_slice_mm)), 2)
    t2_drawn = int(rng.integers(ranges.t2_slices[0], ranges.t2_slices[1] + 1))
    kidney_scale = round(float(rng.uniform(*ranges.kidney_scale)), 3)
    if t2_draw:
        t2_rng = np.random.default_rng(np.random.SeedSequence([seed, 4, t2_draw]))
        t2_pixel = round(float(t2_rng.uniform(*ranges.t2_pixel_mm)), 4)
        t2_thickness = round(float(t2_rng.uniform(*ranges.t2_slice_mm)), 2)
        t2_drawn = int(t2_rng.integers(ranges.t2_slices[0], ranges.t2_slices[1] + 1))
    t2_slices, t2_thickness = _t2_slices_covering(
        dce_slices * dce_step, t2_thickness, t2_drawn, ranges
    )
    n = ranges.matrix
    return AcquisitionProtocol(
        dce_shape=(dce_slices, n, n),
        dce_spacing_mm=(dce_step, dce_pixel, dce_pixel),
        t2_shape=(t2_slices, n, n),
        t2_spacing_mm=(t2_thickness, t2_pixel, t2_pixel),
        kidney_scale=kidney_scale,
    )


def _acquisition(
    protocol: AcquisitionProtocol | None,
    *,
    shape: tuple[int, int, int] | None,
    spacing_mm: tuple[float, float, float] | None,
    kidney_scale: float | None,
    t2_shape: tuple[int, int, int] | None,
    t2_spacing_mm: tuple[float, float, float] | None,
) -> AcquisitionProtocol:
    """The protocol given, or one built from the explicit arguments and defaults."""
    if protocol is not None:
        given = [
            name
            for name, value in (
                ("shape", shape),
                ("spacing_mm", spacing_mm),
                ("kidney_scale", kidney_scale),
                ("t2_shape", t2_shape),
                ("t2_spacing_mm", t2_spacing_mm),
            )
            if value is not None
        ]
        if given:
            raise ValueError(f"protocol= already sets {', '.join(given)}; give one or the other")
        return protocol
    shape = _positive_shape(shape or _DEFAULT_SHAPE, "shape")
    spacing = _positive_spacing(spacing_mm or _DEFAULT_SPACING_MM, "spacing_mm")
    t2_spacing = _positive_spacing(
        t2_spacing_mm or (T2_SLICE_THICKNESS_MM, spacing[1], spacing[2]), "t2_spacing_mm"
    )
    if t2_shape is None:
        t2_slices = max(3, math.ceil(shape[0] * spacing[0] / t2_spacing[0]) + 2)
        t2_shape = (t2_slices, shape[1], shape[2])
    return AcquisitionProtocol(
        dce_shape=shape,
        dce_spacing_mm=spacing,
        t2_shape=t2_shape,
        t2_spacing_mm=t2_spacing,
        kidney_scale=1.0 if kidney_scale is None else float(kidney_scale),
    )
