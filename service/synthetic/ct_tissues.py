"""Tissues of the synthetic CT abdomen and their attenuation in the cortico-medullary phase.

Each :class:`CtTissue` has a range of CT numbers (HU) from which a case draws its own
value (:func:`draw_hu`), and a texture amplitude (HU, standard deviation of a smooth random
field added inside the tissue). The ranges are those of a contrast-enhanced abdominal CT
about 30-40 s after an intravenous iodine bolus (late arterial / cortico-medullary phase):
the aorta at 250-350 HU, the renal cortex at 150-250 HU clearly brighter than the medulla
(60-100 HU, not yet enhanced), the renal veins already opacified, the liver at 90-110 HU,
the spleen brighter and mottled, the collecting system not yet opacified (urine 0-20 HU).
A lymphocele beside a kidney graft is fluid of 0-15 HU in every phase (it does not
enhance).

Other acquisition phases (:class:`CtPhase`) change the ranges of the enhancing tissues
only (:func:`hu_ranges`), typical adult values:

- ``unenhanced``: no contrast; kidney 25-40 HU (cortex and medulla alike), below the
  liver (50-65) and the psoas, so the kidney stands out from fat only;
- ``nephrographic`` (about 100 s): cortex and medulla both 140-200 HU, homogeneous;
- ``excretory`` (5-10 min): parenchyma 100-150 HU, the collecting system full of
  contrast (urine 400-1200 HU, as dense as bone).
"""

from __future__ import annotations

from collections.abc import Mapping
from enum import IntEnum, StrEnum
from types import MappingProxyType

import numpy as np

__all__ = ["CT_HU_RANGES", "CT_TEXTURE_HU", "CtPhase", "CtTissue", "draw_hu", "hu_ranges"]


class CtTissue(IntEnum):
    """Label values of the CT phantom's tissues."""

    AIR = 0
    SUBCUTANEOUS_FAT = 1
    FAT = 2
    MUSCLE = 3
    LIVER = 4
    SPLEEN = 5
    PANCREAS = 6
    BOWEL_WALL = 7
    BOWEL_FLUID = 8
    AORTA = 9
    VEIN = 10
    RENAL_VEIN = 11
    CORTICAL_BONE = 12
    CANCELLOUS_BONE = 13
    DISC = 14
    CSF = 15
    CORTEX = 16
    MEDULLA = 17
    SINUS_FAT = 18
    URINE = 19
    #: A fluid collection (lymphocele, seroma) beside a kidney graft.
    LYMPH = 20


#: Range of each tissue's CT number in this phase (low, high), HU.
CT_HU_RANGES: Mapping[CtTissue, tuple[float, float]] = MappingProxyType(
    {
        CtTissue.AIR: (-1000.0, -1000.0),
        CtTissue.SUBCUTANEOUS_FAT: (-120.0, -100.0),
        CtTissue.FAT: (-110.0, -85.0),
        CtTissue.MUSCLE: (45.0, 65.0),
        CtTissue.LIVER: (90.0, 110.0),
        CtTissue.SPLEEN: (115.0, 145.0),
        CtTissue.PANCREAS: (100.0, 130.0),
        CtTissue.BOWEL_WALL: (70.0, 120.0),
        CtTissue.BOWEL_FLUID: (5.0, 30.0),
        CtTissue.AORTA: (250.0, 350.0),
        CtTissue.VEIN: (90.0, 140.0),
        CtTissue.RENAL_VEIN: (150.0, 220.0),
        CtTissue.CORTICAL_BONE: (500.0, 1000.0),
        CtTissue.CANCELLOUS_BONE: (200.0, 300.0),
        CtTissue.DISC: (70.0, 100.0),
        CtTissue.CSF: (5.0, 15.0),
        CtTissue.CORTEX: (150.0, 250.0),
        CtTissue.MEDULLA: (60.0, 100.0),
        CtTissue.SINUS_FAT: (-110.0, -85.0),
        CtTissue.URINE: (0.0, 20.0),
        CtTissue.LYMPH: (0.0, 15.0),
    }
)

#: Texture amplitude of each tissue (standard deviation of its smooth random field), HU.
CT_TEXTURE_HU: Mapping[CtTissue, float] = MappingProxyType(
    {
        CtTissue.SUBCUTANEOUS_FAT: 4.0,
        CtTissue.FAT: 5.0,
        CtTissue.MUSCLE: 5.0,
        CtTissue.LIVER: 6.0,
        CtTissue.SPLEEN: 14.0,
        CtTissue.PANCREAS: 8.0,
        CtTissue.BOWEL_WALL: 8.0,
        CtTissue.BOWEL_FLUID: 4.0,
        CtTissue.CANCELLOUS_BONE: 25.0,
        CtTissue.CORTEX: 6.0,
        CtTissue.MEDULLA: 5.0,
        CtTissue.SINUS_FAT: 5.0,
        CtTissue.LYMPH: 3.0,
    }
)


class CtPhase(StrEnum):
    """Contrast phase of the synthetic CT (see the module docstring)."""

    CORTICOMEDULLARY = "corticomedullary"
    NEPHROGRAPHIC = "nephrographic"
    EXCRETORY = "excretory"
    UNENHANCED = "unenhanced"


_VESSELS_UNENHANCED = (35.0, 50.0)

#: Ranges that differ from :data:`CT_HU_RANGES` in each other phase.
_PHASE_RANGES: Mapping[CtPhase, Mapping[CtTissue, tuple[float, float]]] = MappingProxyType({
    CtPhase.CORTICOMEDULLARY: MappingProxyType({}),
    CtPhase.UNENHANCED: MappingProxyType({
        CtTissue.LIVER: (50.0, 65.0), CtTissue.SPLEEN: (40.0, 50.0),
        CtTissue.PANCREAS: (35.0, 50.0), CtTissue.BOWEL_WALL: (30.0, 45.0),
        CtTissue.AORTA: _VESSELS_UNENHANCED, CtTissue.VEIN: _VESSELS_UNENHANCED,
        CtTissue.RENAL_VEIN: _VESSELS_UNENHANCED, CtTissue.CORTEX: (28.0, 40.0),
        CtTissue.MEDULLA: (25.0, 38.0), CtTissue.URINE: (0.0, 15.0)}),
    CtPhase.NEPHROGRAPHIC: MappingProxyType({
        CtTissue.LIVER: (100.0, 120.0), CtTissue.SPLEEN: (110.0, 130.0),
        CtTissue.AORTA: (150.0, 200.0), CtTissue.VEIN: (140.0, 180.0),
        CtTissue.RENAL_VEIN: (150.0, 190.0), CtTissue.CORTEX: (150.0, 200.0),
        CtTissue.MEDULLA: (140.0, 190.0)}),
    CtPhase.EXCRETORY: MappingProxyType({
        CtTissue.LIVER: (80.0, 100.0), CtTissue.SPLEEN: (85.0, 105.0),
        CtTissue.AORTA: (100.0, 130.0), CtTissue.VEIN: (100.0, 130.0),
        CtTissue.RENAL_VEIN: (100.0, 130.0), CtTissue.CORTEX: (110.0, 150.0),
        CtTissue.MEDULLA: (110.0, 150.0), CtTissue.URINE: (400.0, 1200.0)}),
})


def hu_ranges(phase: CtPhase | str = CtPhase.CORTICOMEDULLARY
              ) -> Mapping[CtTissue, tuple[float, float]]:
    """Range of each tissue's CT number (HU) in ``phase``."""
    return MappingProxyType({**CT_HU_RANGES, **_PHASE_RANGES[CtPhase(phase)]})


def draw_hu(rng: np.random.Generator, phase: CtPhase | str = CtPhase.CORTICOMEDULLARY
            ) -> dict[CtTissue, float]:
    """Draw one case's CT number of every tissue, uniformly within its range in ``phase``.

    Parameters
    ----------
    rng : numpy.random.Generator
        Source of the draws (one per tissue, in label order, whatever the phase: a seed
        gives the same anatomy and noise in every phase).
    phase : CtPhase or str
        Contrast phase (:func:`hu_ranges`).

    Returns
    -------
    dict of CtTissue to float
        HU of each tissue.
    """
    ranges = hu_ranges(phase)
    return {tissue: float(rng.uniform(*ranges[tissue])) for tissue in CtTissue}
