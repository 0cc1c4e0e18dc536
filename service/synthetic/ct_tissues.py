"""Tissues of the synthetic CT abdomen and their attenuation in the cortico-medullary phase.

Each :class:`CtTissue` has a range of CT numbers (HU) from which a case draws its own
value (:func:`draw_hu`), and a texture amplitude (HU, standard deviation of a smooth random
field added inside the tissue). The ranges are those of a contrast-enhanced abdominal CT
about 30-40 s after an intravenous iodine bolus (late arterial / cortico-medullary phase):
the aorta at 250-350 HU, the renal cortex at 150-250 HU clearly brighter than the medulla
(60-100 HU, not yet enhanced), the renal veins already opacified, the liver at 90-110 HU,
the spleen brighter and mottled, the collecting system not yet opacified (urine 0-20 HU).
"""

from __future__ import annotations

from collections.abc import Mapping
from enum import IntEnum
from types import MappingProxyType

import numpy as np

__all__ = ["CT_HU_RANGES", "CT_TEXTURE_HU", "CtTissue", "draw_hu"]


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
    }
)


def draw_hu(rng: np.random.Generator) -> dict[CtTissue, float]:
    """Draw one case's CT number of every tissue, uniformly within :data:`CT_HU_RANGES`.

    Parameters
    ----------
    rng : numpy.random.Generator
        Source of the draws (one per tissue, in label order).

    Returns
    -------
    dict of CtTissue to float
        HU of each tissue.
    """
    return {tissue: float(rng.uniform(*CT_HU_RANGES[tissue])) for tissue in CtTissue}
