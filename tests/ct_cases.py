"""Small synthetic CT cases for the CT pipeline tests: a stand-in kidney method built
from the ground truth, and a folder of tiny untrained cortex networks."""

from __future__ import annotations

from collections.abc import Callable, Collection
from pathlib import Path

import numpy as np
import SimpleITK as sitk
import torch

from models.cortex_train import TrainedModel
from models.cortex_unet import CortexUNet, CortexUNetSpec
from models.ct_kidneys import CtKidneyConfig, CtKidneys, FoundKidney
from service.cortex.model_files import write_model_dir

SIDES = {"right": 1, "left": 2}


def truth_on(image: sitk.Image, labels_path: Path) -> np.ndarray:
    """Ground-truth labels (1 = right, 2 = left) resampled onto ``image``'s grid, (z, y, x)."""
    truth = sitk.Resample(sitk.ReadImage(str(labels_path)), image, sitk.Transform(),
                          sitk.sitkNearestNeighbor)
    return sitk.GetArrayFromImage(truth).astype(np.uint8)


def fake_segmenter(kidneys_path: Path, *, sides: Collection[str] = ("right", "left"),
                   touches_edge: bool = False
                   ) -> Callable[[sitk.Image, CtKidneyConfig | None], CtKidneys]:
    """A stand-in for ``segment_ct_kidneys`` that returns the true masks of ``sides``."""

    def segment(ct: sitk.Image, config: CtKidneyConfig | None = None) -> CtKidneys:
        labels = truth_on(ct, kidneys_path)
        voxel_ml = float(np.prod(ct.GetSpacing())) / 1000.0
        found = {}
        for side, value in SIDES.items():
            mask = labels == value
            if side in sides and mask.any():
                found[side] = FoundKidney(side=side, mask=mask, volume_ml=mask.sum() * voxel_ml,
                                          score=0.9, touches_edge=touches_edge)
        reasons = {side: f"fake: no {side} candidate" for side in SIDES if side not in found}
        return CtKidneys(right=found.get("right"), left=found.get("left"), reasons=reasons)

    return segment


def fake_cortex(cortex_path: Path) -> Callable[..., np.ndarray]:
    """A stand-in for ``segment_cortex`` that returns the true cortex of the found kidneys."""

    def segment(ct: sitk.Image, kidneys: sitk.Image, models, *, device="cpu"):  # noqa: ANN001, ANN202, ARG001
        cortex = truth_on(ct, cortex_path)
        present = sitk.GetArrayViewFromImage(kidneys)
        return np.where(np.isin(cortex, np.unique(present[present > 0])), cortex, 0).astype(
            np.uint8)

    return segment


def tiny_model_dir(out_dir: Path, *, n: int = 2, width: int = 2,
                   constant_logit: float | None = None) -> Path:
    """A cortex model folder of ``n`` untrained networks (manifest and sha256 included).

    With ``constant_logit`` each network's output layer is set to give that logit at every
    pixel (zero weights, that bias): a predictable network, e.g. +10 calls everything in
    the crop cortex, so what reaches the SEG is what the aggregation and the kidney margin
    leave of it.
    """
    spec = CortexUNetSpec(width=width)
    torch.manual_seed(0)
    nets = [CortexUNet(spec) for _ in range(n)]
    if constant_logit is not None:
        for net in nets:
            with torch.no_grad():
                net.head.weight.zero_()
                net.head.bias.fill_(constant_logit)
    trained = [TrainedModel(name=f"model_{i}", role="all", fold=None,
                            state_dict=net.state_dict(), train_slices=1,
                            validation_slices=0, losses=[0.5], dice_per_epoch=[0.0])
               for i, net in enumerate(nets)]
    write_model_dir(out_dir, trained, spec=spec, training={"note": "untrained, for tests"})
    return out_dir
