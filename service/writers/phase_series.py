"""The segmented phase of a multi-phase series, as a series of its own for viewers.

Many scanners store a DCE acquisition as one series holding every phase. A SEG of one
phase then references a subset of a 4D series, and OHIF 3.13 (which opens such a series as
a dynamic volume) freezes when it shows the SEG on it, while the same SEG on a series of
that phase alone shows in seconds (issue 17). When the segmented volume is only part of its
series, the node therefore sends copies of that phase's images as a derived series
(:func:`build_phase_series`), and the SEG and SR reference that series; each copy names
its original (Source Image Sequence), so nothing of the provenance is lost.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from copy import deepcopy

from pydicom import Dataset
from pydicom.uid import PYDICOM_IMPLEMENTATION_UID

__all__ = ["build_phase_series", "headers_of"]

#: Attributes that make a copy look like part of a multi-phase acquisition.
_TEMPORAL = ("TemporalPositionIdentifier", "NumberOfTemporalPositions")


def build_phase_series(images: Sequence[Dataset], *, series_instance_uid: str,
                       sop_instance_uid: Callable[[str], str], series_number: int,
                       phase: int | None) -> list[Dataset]:
    """Copies of ``images`` (one phase, Pixel Data included) as one derived series.

    Each copy keeps the pixels, geometry, patient and study of its original, and gets a new
    Series and SOP Instance UID (``sop_instance_uid(original UID)``), Image Type
    DERIVED\\SECONDARY, a Derivation Description and a Source Image Sequence naming the
    original, and no temporal position attributes (a series of one phase)."""
    copies = []
    for image in images:
        copy = deepcopy(image)  # (Dataset.update would share, and so change, its elements)
        original = str(image.SOPInstanceUID)
        copy.SOPInstanceUID = sop_instance_uid(original)
        copy.file_meta.MediaStorageSOPInstanceUID = copy.SOPInstanceUID
        copy.file_meta.ImplementationClassUID = PYDICOM_IMPLEMENTATION_UID
        copy.SeriesInstanceUID = series_instance_uid
        copy.SeriesNumber = series_number
        described = str(image.get("SeriesDescription", "") or image.get("Modality", ""))
        label = f"phase {phase}" if phase is not None else "one phase"
        copy.SeriesDescription = f"{described} {label} (segmented)"[:64]
        kept = list(image.get("ImageType", []))[2:]
        copy.ImageType = ["DERIVED", "SECONDARY", *kept]
        copy.DerivationDescription = (
            f"Images of {label} of series {image.SeriesInstanceUID} "
            f"({described}), copied unchanged so that viewers show the segmentation of "
            "that phase on one 3D volume")[:1024]
        source = Dataset()
        source.ReferencedSOPClassUID = image.SOPClassUID
        source.ReferencedSOPInstanceUID = original
        copy.SourceImageSequence = [source]
        for keyword in _TEMPORAL:
            if keyword in copy:
                delattr(copy, keyword)
        copies.append(copy)
    return copies


def headers_of(images: Sequence[Dataset]) -> tuple[Dataset, ...]:
    """``images`` without their Pixel Data (what the SEG and SR writers read)."""
    headers = []
    for image in images:
        header = Dataset({element.tag: deepcopy(element) for element in image
                          if element.keyword != "PixelData"})
        header.file_meta = deepcopy(image.file_meta)
        headers.append(header)
    return tuple(headers)
