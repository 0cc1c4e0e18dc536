"""Training data folders: ``<case>_ct.nii.gz`` + ``<case>_cortex.nii.gz`` [+ kidneys].

``<case>_kidneys.nii.gz`` (optional) labels the kidneys, 1 = right and 2 = left; the crops
are placed around each label. Without it they are placed around the cortex mask's
components (:func:`models.cortex_data.kidney_regions`).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from models.cortex_data import case_slices
from models.cortex_train import SliceSet
from service.errors import TrainingDataError

__all__ = ["CortexCase", "find_cases", "load_slices"]

logger = logging.getLogger(__name__)

_CT_SUFFIX = "_ct.nii.gz"


@dataclass(frozen=True)
class CortexCase:
    """The files of one training case."""

    name: str
    ct: Path
    cortex: Path
    kidneys: Path | None


def find_cases(data_dir: Path) -> list[CortexCase]:
    """Cases of a training folder, sorted by name.

    Raises
    ------
    TrainingDataError
        If the folder does not exist, holds no ``*_ct.nii.gz``, or a CT lacks its cortex.
    """
    data_dir = Path(data_dir)
    if not data_dir.is_dir():
        raise TrainingDataError(data_dir, "not a folder")
    cases = []
    for ct in sorted(data_dir.glob(f"*{_CT_SUFFIX}")):
        name = ct.name[: -len(_CT_SUFFIX)]
        cortex = data_dir / f"{name}_cortex.nii.gz"
        if not cortex.is_file():
            raise TrainingDataError(ct, f"no cortex mask {cortex.name} next to it")
        kidneys = data_dir / f"{name}_kidneys.nii.gz"
        cases.append(CortexCase(name, ct, cortex, kidneys if kidneys.is_file() else None))
    if not cases:
        raise TrainingDataError(data_dir, f"no case (*{_CT_SUFFIX} with *_cortex.nii.gz)")
    return cases


def _read(path: Path, like: sitk.Image | None = None) -> sitk.Image:
    try:
        image = sitk.ReadImage(str(path))
    except RuntimeError as exc:
        raise TrainingDataError(path, f"cannot be read: {exc}") from exc
    if image.GetDimension() != 3:
        raise TrainingDataError(path, f"expected a 3D image, got {image.GetDimension()}D")
    if like is not None and (
            image.GetSize() != like.GetSize()
            or not np.allclose(image.GetOrigin(), like.GetOrigin(), atol=1e-3)
            or not np.allclose(image.GetSpacing(), like.GetSpacing(), atol=1e-4)
            or not np.allclose(image.GetDirection(), like.GetDirection(), atol=1e-4)):
        raise TrainingDataError(path, "grid (size, origin, spacing, direction) differs from "
                                f"its CT's: size {image.GetSize()} vs {like.GetSize()}")
    return image


def load_slices(cases: list[CortexCase], *, size: int = 192, spacing_mm: float = 1.0
                ) -> tuple[SliceSet, list[dict[str, object]]]:
    """Coronal training slices of every case, and a per-case summary for the manifest.

    Raises
    ------
    TrainingDataError
        If a file cannot be read, a mask's grid differs from its CT's, or no case gives
        any slice.
    """
    images, masks, groups, summary = [], [], [], []
    for index, case in enumerate(cases):
        ct = _read(case.ct)
        cortex = _read(case.cortex, ct)
        kidneys = _read(case.kidneys, ct) if case.kidneys else None
        if not sitk.GetArrayViewFromImage(cortex).any():
            raise TrainingDataError(case.cortex, "cortex mask is empty")
        img, msk = case_slices(ct, cortex, kidneys, size=size, spacing_mm=spacing_mm)
        logger.info("case %s: %d coronal slices (%s)", case.name, len(img),
                    "crops around the kidney labels" if kidneys else "crops around the cortex")
        images.append(img)
        masks.append(msk)
        groups.append(np.full(len(img), index))
        summary.append({"case": case.name, "slices": len(img),
                        "kidney_mask": case.kidneys is not None,
                        "ct_size": list(ct.GetSize()), "ct_spacing_mm": list(ct.GetSpacing())})
    data = SliceSet(np.concatenate(images), np.concatenate(masks), np.concatenate(groups)) \
        if sum(len(i) for i in images) else None
    if data is None:
        raise TrainingDataError(cases[0].ct.parent, "no coronal slice through any kidney")
    return data, summary
