"""JPEG Extended (process 2 & 4) decoding through DCMTK's ``dcmdjpeg``.

12-bit JPEG Extended, the variant MR and CT use, has no permissively licensed Python
decoder (pydicom's GDCM and Pillow plugins fail on it; the one that works,
pylibjpeg-libjpeg, is GPLv3). DCMTK (BSD licence) decodes it: where ``dcmdjpeg`` is
installed, the node accepts the syntax and decodes such files with it.
"""

from __future__ import annotations

import shutil
import subprocess
import tempfile
from pathlib import Path

import numpy as np
import pydicom
from pydicom.pixels import pixel_array
from pydicom.uid import JPEGExtended12Bit

__all__ = ["DCMDJPEG", "dcmtk_decodes", "decode_jpeg_extended"]

#: Where the node looks for DCMTK's decoder (Debian package dcmtk).
DCMDJPEG = "dcmdjpeg"
_TIMEOUT_S = 60


def _tool() -> str | None:
    return shutil.which(DCMDJPEG, path="/usr/bin:/usr/local/bin") or shutil.which(DCMDJPEG)


def dcmtk_decodes(transfer_syntax: str) -> bool:
    """Whether this machine decodes ``transfer_syntax`` with DCMTK (JPEG Extended only)."""
    return transfer_syntax == JPEGExtended12Bit and _tool() is not None


def decode_jpeg_extended(ds: pydicom.Dataset) -> np.ndarray:
    """The stored pixel values of a JPEG Extended dataset, decoded by ``dcmdjpeg``.

    Raises
    ------
    ValueError
        When DCMTK is missing or fails on the data (its message included).
    """
    tool = _tool()
    if tool is None:
        raise ValueError(f"JPEG Extended needs DCMTK's {DCMDJPEG}, which is not installed")
    with tempfile.TemporaryDirectory(prefix="kn-jpeg-") as tmp:
        source, target = Path(tmp) / "in.dcm", Path(tmp) / "out.dcm"
        ds.save_as(source, enforce_file_format=True)
        try:
            out = subprocess.run([tool, str(source), str(target)], capture_output=True,
                                 text=True, timeout=_TIMEOUT_S, check=False)
        except subprocess.TimeoutExpired as exc:
            raise ValueError(f"{DCMDJPEG} did not finish in {_TIMEOUT_S} s") from exc
        if out.returncode != 0 or not target.exists():
            raise ValueError(f"{DCMDJPEG} failed ({out.returncode}): "
                             f"{(out.stderr or out.stdout).strip()[-500:]}")
        return pixel_array(pydicom.dcmread(target))
