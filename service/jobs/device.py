"""Which compute device the pipelines run on."""

from __future__ import annotations

import logging

__all__ = ["resolve_device"]

logger = logging.getLogger(__name__)


def resolve_device(setting: str) -> str:
    """``"auto"`` becomes ``"cuda"`` when torch sees a GPU, else ``"cpu"``; others pass."""
    if setting != "auto":
        return setting
    try:
        import torch
    except ImportError:  # torch is a dependency, but the baselines do not need it
        logger.warning("torch is not installed: running on the CPU")
        return "cpu"
    return "cuda" if torch.cuda.is_available() else "cpu"
