"""Model folders of the cortex ensemble: weights (torch state dicts) and ``manifest.json``.

The manifest records the architecture and its parameters, the software version, the
sha256 of every weight file, the training settings and data summary, and each model's
validation metrics. :func:`load_cortex_ensemble` checks every sha256 before it loads a
weight file, and refuses a folder whose manifest, files or architecture do not match.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from models.cortex_train import TrainedModel
from models.cortex_unet import ARCHITECTURE_NAME, ARCHITECTURE_VERSION, CortexUNet, CortexUNetSpec
from service import __version__
from service.errors import ModelFilesError

__all__ = ["MANIFEST_NAME", "CortexEnsemble", "check_model_dir", "load_cortex_ensemble",
           "sha256_of", "write_model_dir"]

MANIFEST_NAME = "manifest.json"
MANIFEST_FORMAT = "kidney-node cortex ensemble"
MANIFEST_VERSION = 1


def sha256_of(path: Path) -> str:
    """Hex sha256 of a file's bytes."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def write_model_dir(out_dir: Path, trained: list[TrainedModel], *, spec: CortexUNetSpec,
                    training: dict[str, Any]) -> Path:
    """Save the weights and the manifest (written last, atomically); return its path."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    entries = []
    for model in trained:
        path = out_dir / f"{model.name}.pt"
        torch.save(model.state_dict, path)
        entries.append({
            "name": model.name, "file": path.name, "sha256": sha256_of(path),
            "role": model.role, "fold": model.fold, "train_slices": model.train_slices,
            "validation_slices": model.validation_slices,
            "loss_per_epoch": [round(v, 6) for v in model.losses],
            "dice_per_epoch": [round(v, 6) for v in model.dice_per_epoch],
            ("validation_dice" if model.role == "fold" else "training_dice"):
                round(model.dice, 6),
        })
    manifest = {
        "format": MANIFEST_FORMAT, "manifest_version": MANIFEST_VERSION,
        "software_version": __version__,
        "architecture": spec.as_dict(),
        "input": {"size": [192, 192], "spacing_mm": [1.0, 1.0], "hu_window": [-150, 200],
                  "slice_axis": "anterior-posterior (coronal slices)"},
        "aggregation": {"largest_component": "2D per slice, per model", "combine": "median",
                        "threshold": 0.5},
        "pretraining": "none (the paper's COCO pre-training is not reproduced)",
        "training": training,
        "models": entries,
    }
    manifest_path = out_dir / MANIFEST_NAME
    tmp = manifest_path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(manifest, indent=2) + "\n")
    os.replace(tmp, manifest_path)
    return manifest_path


@dataclass
class CortexEnsemble:
    """Loaded networks (eval mode) with the manifest they came from."""

    models: list[CortexUNet]
    spec: CortexUNetSpec
    manifest: dict[str, Any]


def _read_manifest(path: Path) -> dict[str, Any]:
    if not path.is_file():
        raise ModelFilesError(path, "no manifest: not a cortex model folder")
    try:
        manifest = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ModelFilesError(path, f"manifest cannot be read: {exc}") from exc
    arch = manifest.get("architecture", {}) if isinstance(manifest, dict) else {}
    if manifest.get("format") != MANIFEST_FORMAT or not manifest.get("models"):
        raise ModelFilesError(path, f"not a {MANIFEST_FORMAT!r} manifest with models")
    if (arch.get("name"), arch.get("version")) != (ARCHITECTURE_NAME, ARCHITECTURE_VERSION):
        raise ModelFilesError(path, f"architecture {arch.get('name')!r} version "
                              f"{arch.get('version')!r}, expected {ARCHITECTURE_NAME!r} "
                              f"version {ARCHITECTURE_VERSION!r}")
    return manifest


def check_model_dir(model_dir: Path) -> dict[str, Any]:
    """Check a model folder's manifest and every weight file's sha256, without loading.

    Parameters
    ----------
    model_dir : pathlib.Path
        Folder written by :func:`write_model_dir`.

    Returns
    -------
    dict
        The manifest.

    Raises
    ------
    ModelFilesError
        If the manifest is missing or invalid, a weight file is missing, or its sha256
        differs from the manifest's (expected and found are named).
    """
    model_dir = Path(model_dir)
    manifest = _read_manifest(model_dir / MANIFEST_NAME)
    for entry in manifest["models"]:
        path = model_dir / str(entry.get("file", ""))
        if not path.is_file() or path.parent != model_dir:
            raise ModelFilesError(path, "weight file listed in the manifest is missing")
        found = sha256_of(path)
        if found != entry.get("sha256"):
            raise ModelFilesError(path, f"sha256 mismatch: manifest says {entry.get('sha256')}"
                                  f", file has {found}")
    return manifest


def load_cortex_ensemble(model_dir: Path, *, device: str | torch.device = "cpu"
                         ) -> CortexEnsemble:
    """Load a model folder after checking every weight file against the manifest.

    Parameters
    ----------
    model_dir : pathlib.Path
        Folder written by :func:`write_model_dir`.
    device : str or torch.device
        Where the networks are put.

    Returns
    -------
    CortexEnsemble
        The networks in eval mode, in manifest order.

    Raises
    ------
    ModelFilesError
        As :func:`check_model_dir`, and if a file's tensors do not fit the architecture.
    """
    model_dir = Path(model_dir)
    manifest = check_model_dir(model_dir)
    arch = manifest["architecture"]
    try:
        spec = CortexUNetSpec(width=int(arch["width"]), levels=int(arch["levels"]),
                              in_channels=int(arch["in_channels"]))
    except (KeyError, TypeError, ValueError) as exc:
        raise ModelFilesError(model_dir / MANIFEST_NAME, f"bad architecture: {exc}") from exc
    models = []
    for entry in manifest["models"]:
        path = model_dir / str(entry["file"])
        net = CortexUNet(spec)
        try:
            net.load_state_dict(torch.load(path, map_location="cpu", weights_only=True))
        except (RuntimeError, OSError, ValueError) as exc:
            raise ModelFilesError(path, f"weights do not fit {ARCHITECTURE_NAME}: {exc}"
                                  ) from exc
        # Channels-last weights: about twice as fast on CPU (oneDNN), same results.
        models.append(net.to(device, memory_format=torch.channels_last).eval())
    return CortexEnsemble(models=models, spec=spec, manifest=manifest)
