"""A kidney's outline against fat, redrawn on the CT's own grid.

The CT kidney and graft searches work on a 2.5 mm grid (smoothed when unenhanced); the
mask resampled from it to the CT's finer grid loses part of the outermost layer of
voxels where the kidney meets fat. Synthetic unenhanced graft CTs (development seeds
1-20): about 40 % of the reference's outer voxel layer next to fat was missing, while
those voxels' median HU (28) was the parenchyma's, fat's (-95) one voxel out. Against
fat the kidney's edge is sharp on the CT's own grid even without contrast (100 HU or
more apart, the voxel noise 15-20 HU), so it is redrawn there at the half-way level; the
edge against muscle, bowel and vessels is left as the search drew it.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage as ndi

from models.components import FACE_CONNECTIVITY, box_around

__all__ = ["fat_level", "grow_rim_by_nearest_side", "redraw_fat_edge"]


def fat_level(hu: np.ndarray, mask: np.ndarray, fat_reference_hu: float,
              floor_hu: float) -> float:
    """The 50 % partial-volume level between the median HU of ``mask`` (its voxels above
    ``floor_hu``) and fat's ``fat_reference_hu``, never below ``floor_hu``."""
    inside = hu[mask]
    inside = inside[inside > floor_hu]
    if inside.size == 0:
        return floor_hu
    return max(floor_hu, (float(np.median(inside)) + fat_reference_hu) / 2.0)


def redraw_fat_edge(mask: np.ndarray, hu: np.ndarray, spacing_zyx: tuple[float, float, float],
                    level: float, reach_mm: float, ceiling_hu: float) -> np.ndarray:
    """``mask`` with its outline against fat moved to ``level`` on ``hu``'s grid.

    Voxels within ``reach_mm`` outside ``mask`` (at least one voxel, along the finely
    sampled axes only: a thick slice is a coarse step) are added when their HU lies
    between ``level`` and ``ceiling_hu`` (bone) and a fat voxel (HU below ``level``)
    touches them: only the layer between the kidney and fat is claimed, not muscle or
    bowel pressed against it. Voxels of the mask's own border below ``level`` are fat and
    dropped. Returns a new array; ``mask`` is unchanged.
    """
    if not mask.any():
        return mask.copy()
    spacing = np.asarray(spacing_zyx, dtype=float)
    fine = spacing <= 1.5 * spacing.min()
    structure = ndi.generate_binary_structure(3, 1)
    for axis in np.nonzero(~fine)[0]:  # no step across a thick slice
        structure[(slice(None),) * axis + ([0, 2],)] = False
    steps = max(1, int(round(reach_mm / float(spacing[fine].max()))))
    box = box_around(mask, margin_mm=0.0, spacing_zyx=spacing, extra_vox=steps + 1)
    sub = mask[box]
    values = hu[box]
    fat = values < level
    tissue = ~fat & (values < ceiling_hu)
    next_to_fat = ndi.binary_dilation(fat, structure=structure)
    grown = sub.copy()
    for _ in range(steps):
        grown |= ndi.binary_dilation(grown, structure=structure) & tissue & next_to_fat
    border = sub & ndi.binary_dilation(~sub, structure=structure)
    grown &= ~(border & fat)
    out = mask.copy()
    out[box] = grown
    return out


def grow_rim_by_nearest_side(mask: np.ndarray, hu: np.ndarray, allowed: np.ndarray,
                             layers: int, *, brighter_is_inside: bool = False,
                             bright_layers: int = 0) -> np.ndarray:
    """``mask`` grown by up to ``layers`` voxel layers (face steps, within ``allowed``),
    each added voxel nearer in HU to the mask's median than to what lies beyond it (or,
    with ``brighter_is_inside``, at least as bright as that median: an enhancing kidney
    is brighter than what surrounds it, and a region holding the medulla of a
    cortico-medullary kidney has its bright cortex beyond it), then by up to
    ``bright_layers`` more layers of voxels at least as bright as that median only.

    What lies beyond a candidate voxel is the mean HU of the next layer out within its
    5 x 5 x 5 neighbourhood: fat, muscle, bowel or a vessel. So a layer lost to the
    candidates' opening comes back where it is at least half kidney against fat (the 50 %
    partial-volume edge), but not where it is muscle pressed against the kidney: a plain
    layer put 4-6 % of iliopsoas into grafts with contrast (synthetic seeds 141, 147 and
    149, nephrographic). Returns a new array.
    """
    if not mask.any() or layers < 1:
        return mask.copy()
    box = box_around(mask, margin_mm=0.0, spacing_zyx=(1.0, 1.0, 1.0),
                     extra_vox=layers + bright_layers + 3)
    grown = mask[box].copy()
    values = hu[box].astype(np.float32)
    free = allowed[box]
    inside = float(np.median(values[grown]))
    face = FACE_CONNECTIVITY
    for _ in range(layers):
        layer = ndi.binary_dilation(grown, structure=face) & ~grown
        beyond = ndi.binary_dilation(grown | layer, structure=face) & ~(grown | layer)
        weight = ndi.uniform_filter(beyond.astype(np.float32), size=5)
        total = ndi.uniform_filter(np.where(beyond, values, 0.0).astype(np.float32), size=5)
        outside = np.divide(total, weight, out=np.full_like(total, np.nan), where=weight > 0)
        nearer = np.abs(values - inside) <= np.abs(values - outside)
        added = layer & free & (nearer | np.isnan(outside)
                                | (brighter_is_inside & (values >= inside)))
        if not added.any():
            break
        grown |= added
    for _ in range(bright_layers):
        added = (ndi.binary_dilation(grown, structure=face) & ~grown & free
                 & (values >= inside))
        if not added.any():
            break
        grown |= added
    out = mask.copy()
    out[box] = grown
    return out
