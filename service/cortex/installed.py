"""The node's installed cortex ensemble: files checked on every use, loaded once per process."""

from __future__ import annotations

import hashlib
import json
import threading
from pathlib import Path

from service.cortex.model_files import CortexEnsemble, check_model_dir, load_cortex_ensemble

__all__ = ["installed_ensemble", "weights_id"]

_lock = threading.Lock()
#: (folder, device) -> (manifest as JSON, ensemble): a changed manifest loads again.
_loaded: dict[tuple[Path, str], tuple[str, CortexEnsemble]] = {}


def installed_ensemble(model_dir: Path, *, device: str) -> CortexEnsemble:
    """The ensemble of ``model_dir`` on ``device``.

    Every call checks the manifest and the sha256 of every weight file (a few MB, well
    under a second); the networks themselves are loaded once per process and folder, and
    again only when the manifest changed.

    Parameters
    ----------
    model_dir : pathlib.Path
        Folder written by ``kidney-node train cortex``.
    device : str
        Where the networks are put ("cpu", "cuda", ...).

    Returns
    -------
    CortexEnsemble
        The networks in eval mode on ``device``.

    Raises
    ------
    ModelFilesError
        If the manifest is missing or invalid, or a weight file is missing, differs from
        its sha256 in the manifest or does not fit the architecture.
    """
    folder = Path(model_dir).resolve()
    manifest = json.dumps(check_model_dir(folder), sort_keys=True)
    with _lock:
        cached = _loaded.get((folder, device))
        if cached is None or cached[0] != manifest:
            cached = (manifest, load_cortex_ensemble(folder, device=device))
            _loaded[(folder, device)] = cached
        return cached[1]


def weights_id(ensemble: CortexEnsemble) -> str:
    """Short identifier of the ensemble's weights (sha256 over the files' sha256, 12 hex)."""
    digest = hashlib.sha256()
    for entry in ensemble.manifest["models"]:
        digest.update(str(entry["sha256"]).encode() + b"\n")
    return digest.hexdigest()[:12]
