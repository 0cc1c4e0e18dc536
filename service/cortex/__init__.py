"""The renal-cortex ensemble's files: training data folders, model folders and manifests."""

from service.cortex.dataset import CortexCase, find_cases, load_slices
from service.cortex.installed import installed_ensemble
from service.cortex.model_files import (
    MANIFEST_NAME,
    CortexEnsemble,
    check_model_dir,
    load_cortex_ensemble,
    write_model_dir,
)
from service.cortex.train import train_cortex

__all__ = [
    "MANIFEST_NAME",
    "CortexCase",
    "CortexEnsemble",
    "check_model_dir",
    "find_cases",
    "installed_ensemble",
    "load_cortex_ensemble",
    "load_slices",
    "train_cortex",
    "write_model_dir",
]
