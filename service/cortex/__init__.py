"""The renal-cortex ensemble's files: training data folders, model folders and manifests."""

from service.cortex.dataset import CortexCase, find_cases, load_slices
from service.cortex.model_files import (
    MANIFEST_NAME,
    CortexEnsemble,
    load_cortex_ensemble,
    write_model_dir,
)
from service.cortex.train import train_cortex

__all__ = [
    "MANIFEST_NAME",
    "CortexCase",
    "CortexEnsemble",
    "find_cases",
    "load_cortex_ensemble",
    "load_slices",
    "train_cortex",
    "write_model_dir",
]
