"""Tissues of the synthetic phantom and their MR signals.

:data:`TISSUE_SIGNALS` holds, per :class:`Tissue`, the pre-contrast T1-weighted (DCE)
signal, the signal gained at full enhancement, the T2-weighted signal, an
:class:`EnhancementCurve` (knots, linear in between) and the relative amplitude of its
texture. Arterial phase (20 s): the arteries outshine everything and the renal vein
(opacified within seconds of the renal artery) is as bright as the cortex; nephrographic
phase (60 s): the kidney is the brightest tissue; late phase (180 s): bowel walls and the
blood pool are still enhanced, bowel loops close to the kidney's signal.
:func:`default_phase_times` gives the acquisition times of the DCE phases.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from enum import IntEnum
from types import MappingProxyType

import numpy as np

__all__ = [
    "DIXON_SIGNALS",
    "TISSUE_SIGNALS",
    "EnhancementCurve",
    "Tissue",
    "TissueSignal",
    "default_phase_times",
]


class Tissue(IntEnum):
    """Label values of the phantom's tissues."""

    AIR = 0
    FAT = 1
    MUSCLE = 2
    BONE = 3
    BOWEL = 4
    BLADDER = 5
    ARTERY = 6
    VEIN = 7
    CORTEX = 8
    MEDULLA = 9
    BOWEL_CONTENT = 10


_KIDNEY_TISSUES = (Tissue.CORTEX, Tissue.MEDULLA)


@dataclass(frozen=True)
class EnhancementCurve:
    """Relative contrast enhancement over time since injection, linear between knots.

    ``values`` are 0 before the bolus arrives and about 1 at a tissue's peak.
    """

    times_s: tuple[float, ...]
    values: tuple[float, ...]

    def __post_init__(self) -> None:
        if len(self.times_s) != len(self.values) or not self.times_s:
            raise ValueError("an enhancement curve needs as many times as values, at least one")
        if any(b <= a for a, b in zip(self.times_s, self.times_s[1:], strict=False)):
            raise ValueError(f"enhancement curve times must increase, got {self.times_s}")

    def at(self, time_s: float) -> float:
        """Return the relative enhancement at ``time_s`` seconds after injection."""
        return float(np.interp(time_s, self.times_s, self.values))


@dataclass(frozen=True)
class TissueSignal:
    """Signal of one tissue in the two synthetic sequences (arbitrary scanner units).

    Attributes
    ----------
    t1w : float
        Pre-contrast signal of the fat-saturated T1-weighted 3D gradient echo (DCE).
    t1w_gain : float
        DCE signal added at relative enhancement 1.
    t2w : float
        Signal of the T2-weighted turbo spin echo.
    enhancement : EnhancementCurve
        Relative enhancement after the contrast injection.
    texture : float
        Standard deviation of the tissue's smooth multiplicative texture (0.05: 5 %).
    """

    t1w: float
    t1w_gain: float
    t2w: float
    enhancement: EnhancementCurve
    texture: float = 0.0

    def dce(self, time_s: float) -> float:
        """Return the DCE signal ``time_s`` seconds after injection."""
        return self.t1w + self.t1w_gain * self.enhancement.at(time_s)


def _curve(*knots: tuple[float, float]) -> EnhancementCurve:
    return EnhancementCurve(tuple(t for t, _ in knots), tuple(v for _, v in knots))


_NO_ENHANCEMENT = _curve((0.0, 0.0))

#: Tissue signals. Arterial phase (~20 s): arteries far brighter than the cortex, the
#: renal vein as bright as it; nephrographic phase (~60 s): the kidney brighter than
#: everything else; late phase (~180 s): bowel walls within about 10 % of the kidney,
#: vessels at about two thirds of it. Bowel content is fluid: dark on T1, bright on T2.
TISSUE_SIGNALS: Mapping[Tissue, TissueSignal] = MappingProxyType(
    {
        Tissue.AIR: TissueSignal(t1w=0.0, t1w_gain=0.0, t2w=0.0, enhancement=_NO_ENHANCEMENT),
        Tissue.FAT: TissueSignal(
            t1w=70.0,
            t1w_gain=20.0,
            t2w=450.0,
            enhancement=_curve((0, 0), (60, 0.5), (600, 1.0)),
            texture=0.08,
        ),
        Tissue.MUSCLE: TissueSignal(
            t1w=220.0,
            t1w_gain=200.0,
            t2w=180.0,
            enhancement=_curve((0, 0), (20, 0.1), (60, 0.5), (180, 0.8), (600, 1.0)),
            texture=0.05,
        ),
        Tissue.BONE: TissueSignal(
            t1w=130.0,
            t1w_gain=100.0,
            t2w=250.0,
            enhancement=_curve((0, 0), (30, 0.2), (120, 0.7), (600, 1.0)),
            texture=0.10,
        ),
        Tissue.BOWEL: TissueSignal(
            t1w=180.0,
            t1w_gain=800.0,
            t2w=600.0,
            enhancement=_curve((0, 0), (20, 0.1), (35, 0.45), (60, 0.75), (180, 0.95), (600, 0.75)),
            texture=0.10,
        ),
        Tissue.BOWEL_CONTENT: TissueSignal(
            t1w=60.0,
            t1w_gain=40.0,
            t2w=900.0,
            enhancement=_curve((0, 0), (600, 1.0)),
            texture=0.10,
        ),
        Tissue.BLADDER: TissueSignal(
            t1w=80.0,
            t1w_gain=600.0,
            t2w=1600.0,
            enhancement=_curve((0, 0), (120, 0.0), (180, 0.1), (600, 0.6)),
            texture=0.02,
        ),
        Tissue.ARTERY: TissueSignal(
            t1w=200.0,
            t1w_gain=1500.0,
            t2w=60.0,
            enhancement=_curve(
                (0, 0), (12, 0), (20, 1.0), (30, 0.7), (60, 0.45), (180, 0.3), (600, 0.15)
            ),
            texture=0.03,
        ),
        Tissue.VEIN: TissueSignal(
            t1w=190.0,
            t1w_gain=1300.0,
            t2w=80.0,
            enhancement=_curve(
                (0, 0), (14, 0), (22, 0.6), (30, 0.85), (60, 0.6), (180, 0.35), (600, 0.15)
            ),
            texture=0.04,
        ),
        Tissue.CORTEX: TissueSignal(
            t1w=300.0,
            t1w_gain=1000.0,
            t2w=550.0,
            enhancement=_curve(
                (0, 0), (14, 0), (20, 0.35), (35, 0.95), (60, 0.9), (180, 0.7), (600, 0.45)
            ),
            texture=0.04,
        ),
        Tissue.MEDULLA: TissueSignal(
            t1w=250.0,
            t1w_gain=1000.0,
            t2w=800.0,
            enhancement=_curve(
                (0, 0), (18, 0), (20, 0.05), (60, 0.85), (120, 0.9), (180, 0.8), (600, 0.55)
            ),
            texture=0.05,
        ),
    }
)


#: Pre-contrast T1-weighted 3D gradient echo, two-point Dixon: (water, fat) signal of each
#: tissue. In-phase = water + fat, opposed-phase = |water - fat|, and the water and fat
#: images. Fat bright on in-phase and fat images, dark on water; the kidney intermediate
#: (cortex a little brighter than medulla, as on T1); urine, bowel fluid and a lymphocele
#: dark; fatty marrow bright on fat; flowing blood intermediate.
DIXON_SIGNALS: Mapping[Tissue, tuple[float, float]] = MappingProxyType(
    {
        Tissue.AIR: (0.0, 0.0),
        Tissue.FAT: (35.0, 420.0),
        Tissue.MUSCLE: (190.0, 12.0),
        Tissue.BONE: (90.0, 260.0),
        Tissue.BOWEL: (230.0, 15.0),
        Tissue.BOWEL_CONTENT: (70.0, 0.0),
        Tissue.BLADDER: (55.0, 0.0),
        Tissue.ARTERY: (150.0, 0.0),
        Tissue.VEIN: (140.0, 0.0),
        Tissue.CORTEX: (300.0, 0.0),
        Tissue.MEDULLA: (240.0, 0.0),
    }
)


def default_phase_times(phases: int) -> tuple[float, ...]:
    """Return acquisition times (s after injection) of ``phases`` DCE phases.

    The first phase is pre-contrast (0 s); the others run geometrically from 20 s
    (arterial) to 180 s (late): 4 phases give 0, 20, 60, 180 s.
    """
    if phases < 1:
        raise ValueError(f"at least one DCE phase is needed, got {phases}")
    if phases == 1:
        return (0.0,)
    if phases == 2:
        return (0.0, 60.0)
    return (0.0, *(20.0 * 9.0 ** (k / (phases - 2)) for k in range(phases - 1)))
