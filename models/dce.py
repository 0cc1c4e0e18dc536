"""Which DCE volume feeds the graft method: one phase or a combination of the phases.

The paper works on "the DCE volume" without saying which phase. The choices here, all
on phases in time order with the first one taken as the pre-contrast mask image:

* ``last``: the latest phase (nephrographic/excretory: the parenchyma is enhanced and
  the vessels have washed out, the situation of the paper's Fig. 3);
* ``mean-post``: the voxel-wise mean of every phase after the first, a less noisy image
  in which vessels, bright only early, weigh less than the parenchyma, bright throughout;
* ``max-post``: the voxel-wise maximum after the first phase (vessels stay bright: kept
  for the ablation);
* ``phases``: the last phase as the main volume (ROI, kidney choice) and every other
  post-contrast phase as a further input channel of the network (early fusion over time,
  an extension of the paper: a bowel wall or a vessel that is as bright as the kidney in
  one phase differs from it in its enhancement over time).

With a single phase every choice returns it. The evaluation benchmark measures them.
"""

from __future__ import annotations

from collections.abc import Sequence
from enum import StrEnum

import numpy as np

__all__ = ["DceVolume", "combine_phases", "network_inputs"]


class DceVolume(StrEnum):
    """How the DCE phases are combined into the volume the method segments."""

    LAST = "last"
    MEAN_POST = "mean-post"
    MAX_POST = "max-post"
    PHASES = "phases"


def combine_phases(phases: Sequence[np.ndarray], *, how: DceVolume | str) -> np.ndarray:
    """Combine DCE phases (time order, same grid) into one float32 volume.

    Raises
    ------
    ValueError
        No phase, phases of different shapes, or an unknown ``how``.
    """
    how = DceVolume(how)
    if not phases:
        raise ValueError("no DCE phase to combine")
    shapes = {np.shape(p) for p in phases}
    if len(shapes) != 1:
        raise ValueError(f"DCE phases have different shapes: {sorted(shapes)}")
    if len(phases) == 1 or how in (DceVolume.LAST, DceVolume.PHASES):
        return np.asarray(phases[-1], dtype=np.float32)
    post = np.stack([np.asarray(p, dtype=np.float32) for p in phases[1:]])
    return post.mean(axis=0) if how is DceVolume.MEAN_POST else post.max(axis=0)


def network_inputs(n_phases: int, *, how: DceVolume | str) -> tuple[int, ...]:
    """Indices of the phases that join the main DCE volume as extra network channels.

    Only ``phases`` adds any: every phase after the first (pre-contrast) and before the
    last (the main volume).
    """
    if DceVolume(how) is not DceVolume.PHASES:
        return ()
    return tuple(range(1, n_phases - 1))
