"""Reception check of an image's pixel data, without decoding it: the element is there, the
file holds all of it (every fragment up to the sequence delimiter when encapsulated), and an
uncompressed one is as long as Rows x Columns x frames x samples at Bits Allocated."""

from __future__ import annotations

import struct
from typing import BinaryIO

from pydicom.dataset import Dataset
from pydicom.uid import UID

from service.errors import IngestError

__all__ = ["check_pixel_data", "native_pixel_bytes"]

_UNDEFINED = 0xFFFFFFFF
_PIXEL_TAGS = {(0x7FE0, 0x0010): "Pixel Data", (0x7FE0, 0x0008): "Float Pixel Data",
               (0x7FE0, 0x0009): "Double Float Pixel Data"}
_ITEM, _SEQUENCE_END = (0xFFFE, 0xE000), (0xFFFE, 0xE0DD)
#: Explicit VRs with a 2-byte reserved field and a 4-byte length (PS3.5 7.1.2).
_LONG_VRS = {b"OB", b"OW", b"OF", b"OD", b"OL", b"OV", b"UN", b"SQ", b"UT", b"UC", b"UR"}


def native_pixel_bytes(ds: Dataset) -> int | None:
    """Bytes of uncompressed pixel data the Image Pixel attributes call for (PS3.5 8.1.1);
    None when one of them is missing or not a positive number. YBR_FULL_422 keeps two
    values per pixel, its chroma halved horizontally (PS3.3 C.7.6.3.1.2)."""
    try:
        rows, cols = int(ds.Rows), int(ds.Columns)
        bits = int(ds.BitsAllocated)
        samples = int(ds.get("SamplesPerPixel", 1) or 1)
        frames = int(ds.get("NumberOfFrames", 1) or 1)
    except (AttributeError, TypeError, ValueError):
        return None
    if min(rows, cols, bits, samples, frames) <= 0:
        return None
    if samples == 3 and str(ds.get("PhotometricInterpretation", "")).strip() == "YBR_FULL_422":
        samples = 2
    return (rows * cols * samples * frames * bits + 7) // 8


def check_pixel_data(ds: Dataset, fh: BinaryIO, *, file_size: int, label: str) -> None:
    """Refuse an image whose pixel data is missing, cut short, or shorter than its
    attributes describe.

    ``ds`` was read from ``fh`` with ``stop_before_pixels``, which leaves ``fh`` at the
    pixel data element (or at the end of the file). Objects without Rows (SR,
    presentation states, ...) are not images and pass; so does a deflated dataset, whose
    pixel data lies inside the compressed stream that pydicom inflated whole.

    Raises
    ------
    IngestError
        Naming the instance (``label``) and what is wrong.
    """
    syntax = UID(str(getattr(ds.file_meta, "TransferSyntaxUID", "") or ""))
    if "Rows" not in ds or not syntax or syntax.is_deflated:
        return
    endian = "<" if syntax.is_little_endian else ">"
    start = fh.tell()
    head = fh.read(8)
    if len(head) < 8:
        raise IngestError(f"instance {label}: an image without pixel data")
    group, element = struct.unpack(endian + "HH", head[:4])
    name = _PIXEL_TAGS.get((group, element))
    if name is None:
        raise IngestError(f"instance {label}: an image without pixel data")
    if syntax.is_implicit_VR:
        (length,) = struct.unpack(endian + "L", head[4:8])
        value_at = start + 8
    elif head[4:6] in _LONG_VRS:
        raw = fh.read(4)
        if len(raw) < 4:
            raise IngestError(f"instance {label}: the file ends inside the {name} header")
        (length,) = struct.unpack(endian + "L", raw)
        value_at = start + 12
    else:
        (length,) = struct.unpack(endian + "H", head[6:8])
        value_at = start + 8
    if length == _UNDEFINED:
        _check_fragments(fh, value_at, file_size, endian, label)
        return
    if value_at + length > file_size:
        raise IngestError(f"instance {label}: {name} cut short: "
                          f"{max(0, file_size - value_at)} of the {length} bytes its header "
                          "declares")
    needed = native_pixel_bytes(ds)
    if name == "Pixel Data" and needed is not None and length < needed:
        raise IngestError(
            f"instance {label}: pixel data holds {length} bytes but Rows {ds.Rows} x "
            f"Columns {ds.Columns} x {ds.get('NumberOfFrames', 1) or 1} frame(s) x "
            f"{ds.get('SamplesPerPixel', 1)} sample(s) at {ds.BitsAllocated} bits need "
            f"{needed}")


def _check_fragments(fh: BinaryIO, at: int, file_size: int, endian: str, label: str) -> None:
    """Walk the items of encapsulated pixel data (PS3.5 A.4) up to the sequence delimiter,
    without reading the fragments themselves."""
    while True:
        fh.seek(at)
        head = fh.read(8)
        if len(head) < 8:
            raise IngestError(f"instance {label}: encapsulated pixel data cut short (the file "
                              "ends before its sequence delimiter)")
        group, element, length = struct.unpack(endian + "HHL", head)
        if (group, element) == _SEQUENCE_END:
            return
        if (group, element) != _ITEM or length == _UNDEFINED:
            raise IngestError(f"instance {label}: encapsulated pixel data holds a "
                              f"({group:04X},{element:04X}) element where an item belongs")
        at += 8 + length
        if at > file_size:
            raise IngestError(f"instance {label}: encapsulated pixel data cut short (a "
                              "fragment runs past the end of the file)")
