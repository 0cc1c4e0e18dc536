"""Copies of a study under new identities: many distinct studies from one (tests and
benchmarks of throughput)."""

from __future__ import annotations

from pathlib import Path

from pydicom import dcmread
from pydicom.uid import generate_uid

__all__ = ["study_copies"]


def study_copies(files: list[Path], folder: Path, count: int) -> list[list[Path]]:
    """``count`` copies of the study of ``files`` in ``folder`` (created), each with new
    Study, Series and SOP Instance UIDs and its own Patient ID (``COPY-0001``...)."""
    out: list[list[Path]] = []
    for n in range(count):
        uids: dict[str, str] = {}
        study_dir = folder / f"study{n:03d}"
        study_dir.mkdir(parents=True)
        copies = []
        for i, path in enumerate(files):
            ds = dcmread(path)
            for key in ("StudyInstanceUID", "SeriesInstanceUID", "FrameOfReferenceUID"):
                if key in ds:
                    old = str(ds.data_element(key).value)
                    setattr(ds, key, uids.setdefault(old, generate_uid()))
            ds.SOPInstanceUID = generate_uid()
            ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
            ds.PatientID = f"COPY-{n + 1:04d}"
            copies.append(study_dir / f"{i:04d}.dcm")
            ds.save_as(copies[-1])
        out.append(copies)
    return out
