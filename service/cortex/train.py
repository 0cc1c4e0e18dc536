"""``kidney-node train cortex``: training folder in, model folder out."""

from __future__ import annotations

import logging
import time
from dataclasses import asdict
from pathlib import Path

import numpy as np

from models.cortex_train import TrainConfig, train_ensemble
from models.cortex_unet import CortexUNetSpec
from service.cortex.dataset import find_cases, load_slices
from service.cortex.model_files import write_model_dir
from service.errors import TrainingDataError

__all__ = ["train_cortex"]

logger = logging.getLogger(__name__)


def train_cortex(data_dir: Path, out_dir: Path, *, epochs: int = 30, width: int = 8,
                 seed: int = 0, fold_models: int = 5, full_models: int = 2) -> Path:
    """Train the cortex ensemble on a data folder and write the model folder.

    Parameters
    ----------
    data_dir : pathlib.Path
        Folder of ``<case>_ct.nii.gz`` + ``<case>_cortex.nii.gz`` (+ ``_kidneys``).
    out_dir : pathlib.Path
        Model folder to write (created if needed).
    epochs, width, seed : int
        Epochs per network, top-level channel count, random seed.
    fold_models, full_models : int
        Networks trained on random folds and on all data (the paper: 5 and 2).

    Returns
    -------
    pathlib.Path
        The written ``manifest.json``.

    Raises
    ------
    TrainingDataError
        If the data folder holds no usable case, or too few slices for the folds.
    """
    t0 = time.perf_counter()
    cases = find_cases(data_dir)
    data, cases_summary = load_slices(cases)
    if len(data.images) < max(fold_models, 1):
        raise TrainingDataError(data_dir, f"{len(data.images)} coronal slices, too few for "
                                f"{fold_models} folds")
    config = TrainConfig(spec=CortexUNetSpec(width=width), epochs=epochs, seed=seed,
                         fold_models=fold_models, full_models=full_models)
    logger.info("training %d + %d networks (width %d, %d epochs) on %d slices of %d cases",
                fold_models, full_models, width, epochs, len(data.images), len(cases))
    trained = train_ensemble(data, config)
    training = {
        "data_dir": str(Path(data_dir).resolve()), "cases": cases_summary,
        "slices": int(len(data.images)),
        "cortex_pixel_fraction": round(float(np.mean(data.masks)), 6),
        "epochs": epochs, "seed": seed, "optimizer": "Adam", "lr": config.lr,
        "batch_size": config.batch_size, "loss": "binary cross-entropy",
        "fold_models": fold_models, "full_models": full_models,
        "folds": "over cases" if len(cases) >= fold_models else "over slices",
        "augmentation": asdict(config.augment) if config.augment else None,
        "seconds": round(time.perf_counter() - t0, 1),
    }
    path = write_model_dir(out_dir, trained, spec=config.spec, training=training)
    logger.info("wrote %s (%d networks) in %.0f s", path, len(trained),
                time.perf_counter() - t0)
    return path
