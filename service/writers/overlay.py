"""A colour overlay series for viewers that show neither SEG nor SR (issue 17, item 4).

The source slices that hold a segment (and ``margin_slices`` on each side), each as an
RGB Secondary Capture image: the slice in grey (CT: soft-tissue window 40/400; MR: the
1st to 99.5th percentile of those slices), each segment's outline in its display colour
(the SEG's), and burnt in at the top: "DERIVED - NOT FOR DIAGNOSIS", each segment's name
and volume, and the quality-control verdict when it is not "pass".

Which IOD: the CT and MR Image IODs allow MONOCHROME pixels only, and Enhanced MR Color
has no CT counterpart; the Secondary Capture Image IOD takes RGB from any modality and
every viewer shows it. It has no plane geometry, so the source's Frame of Reference UID,
Image Position/Orientation (Patient), Pixel Spacing and Slice Thickness are added as
Standard Extended attributes (PS3.4 B.1.3): the series stays in the source's frame of
reference, so viewers that sync scrolling or cross-reference lines can use it. Image Type
DERIVED\\SECONDARY, Burned In Annotation YES, a Derivation Description, and each image's
Source Image Sequence naming the slice it shows. Images narrower than ``min_columns`` are
upsampled by a whole factor so the text is legible (geometry adjusted: the same field of
view, finer pixels).
"""

from __future__ import annotations

import datetime as dt
import math
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
import SimpleITK as sitk
from PIL import Image, ImageDraw, ImageFont
from pydicom import Dataset
from pydicom.uid import ExplicitVRLittleEndian, SecondaryCaptureImageStorage
from scipy import ndimage as ndi

from models.qc import Verdict
from service.dicom.uids import derived_uid
from service.pipeline.base import PipelineOutput
from service.pipeline.quality import Assessment
from service.writers.seg import MANUFACTURER, copy_patient_study

__all__ = ["OverlayOptions", "build_overlay_series"]

#: Copied from the source slice besides its patient and study.
_GEOMETRY = ("FrameOfReferenceUID", "Modality", "ImageOrientationPatient", "SliceThickness")
_NOTICE = "DERIVED - NOT FOR DIAGNOSIS"


@dataclass(frozen=True)
class OverlayOptions:
    series_instance_uid: str
    series_number: int
    software_version: str
    #: Slices without a segment kept on each side of those with one.
    margin_slices: int = 2
    #: Narrower images are upsampled by a whole factor to at least this width.
    min_columns: int = 256


def _grey(pixels: np.ndarray, modality: str) -> np.ndarray:
    """0-255 grey levels: CT soft-tissue window (40/400), else 1st-99.5th percentile."""
    if modality == "CT":
        low, high = 40 - 200.0, 40 + 200.0
    else:
        low, high = (float(v) for v in np.percentile(pixels, [1, 99.5]))
    scaled = (pixels - low) / max(high - low, 1e-6)
    return np.clip(np.round(scaled * 255), 0, 255).astype(np.uint8)


def _font(size: int) -> ImageFont.ImageFont | ImageFont.FreeTypeFont:
    try:
        return ImageFont.load_default(size=size)
    except (ImportError, OSError, TypeError):  # no FreeType: Pillow's bitmap font
        return ImageFont.load_default()


def _render(grey: np.ndarray, masks: list[np.ndarray], colours: list[tuple[int, int, int]],
            lines: list[tuple[str, tuple[int, int, int]]], factor: int) -> np.ndarray:
    """One slice: grey (rows, columns) upsampled ``factor`` times, each mask's outline in
    its colour, then the text ``lines`` at the top left; RGB (rows, columns, 3) uint8."""
    big = np.kron(grey, np.ones((factor, factor), dtype=np.uint8))
    rgb = np.repeat(big[..., None], 3, axis=-1)
    width = max(1, factor // 2)
    for mask, colour in zip(masks, colours, strict=True):
        if not mask.any():
            continue
        up = np.kron(mask, np.ones((factor, factor), dtype=bool))
        border = up & ~ndi.binary_erosion(up, iterations=width)
        rgb[border] = colour
    image = Image.fromarray(rgb)
    draw = ImageDraw.Draw(image)
    size = max(9, image.width // 36)
    font = _font(size)
    y = 2
    for text, colour in lines:
        draw.text((3, y), text, fill=colour, font=font, stroke_width=1, stroke_fill=(0, 0, 0))
        y += size + 3
    return np.asarray(image)


def _header(source: Dataset, options: OverlayOptions, index: int, factor: int,
            now: dt.datetime, pipeline_name: str) -> Dataset:
    ds = Dataset()
    copy_patient_study(source, ds, _GEOMETRY)
    ds.SOPClassUID = SecondaryCaptureImageStorage
    ds.SOPInstanceUID = derived_uid(options.series_instance_uid, str(source.SOPInstanceUID))
    ds.SeriesInstanceUID = options.series_instance_uid
    ds.SeriesNumber, ds.InstanceNumber = options.series_number, index + 1
    ds.SeriesDescription = "Kidney outline - derived, not for diagnosis"
    ds.SeriesDate = ds.ContentDate = ds.DateOfSecondaryCapture = now.strftime("%Y%m%d")
    ds.SeriesTime = ds.ContentTime = ds.TimeOfSecondaryCapture = now.strftime("%H%M%S")
    ds.Manufacturer, ds.ManufacturerModelName = MANUFACTURER, f"{MANUFACTURER} {pipeline_name}"
    ds.SoftwareVersions = options.software_version
    ds.SecondaryCaptureDeviceManufacturer = MANUFACTURER
    ds.SecondaryCaptureDeviceManufacturerModelName = f"{MANUFACTURER} overlay"
    ds.SecondaryCaptureDeviceSoftwareVersions = options.software_version
    ds.ConversionType = "WSD"
    ds.ImageType = ["DERIVED", "SECONDARY"]
    ds.BurnedInAnnotation = "YES"
    ds.DerivationDescription = (f"{source.get('Modality', '')} slice with the kidney "
                                f"outline and volume by {pipeline_name} burnt in; for "
                                "checking the outline only, not for diagnosis")[:1024]
    ds.ImageComments = "NOT FOR DIAGNOSIS: derived image with the kidney outline burnt in"
    reference = Dataset()
    reference.ReferencedSOPClassUID = source.SOPClassUID
    reference.ReferencedSOPInstanceUID = source.SOPInstanceUID
    ds.SourceImageSequence = [reference]
    ds.PatientOrientation = ""
    row_mm, col_mm = (float(v) for v in source.PixelSpacing)
    iop = np.asarray(source.ImageOrientationPatient, dtype=float)
    # The first fine pixel's centre: half a coarse pixel minus half a fine one back.
    shift = (0.5 - 0.5 / factor)
    origin = (np.asarray(source.ImagePositionPatient, dtype=float)
              - shift * col_mm * iop[:3] - shift * row_mm * iop[3:])
    ds.ImagePositionPatient = [round(float(v), 4) for v in origin]
    ds.PixelSpacing = [row_mm / factor, col_mm / factor]
    ds.Rows, ds.Columns = int(source.Rows) * factor, int(source.Columns) * factor
    ds.SamplesPerPixel, ds.PhotometricInterpretation, ds.PlanarConfiguration = 3, "RGB", 0
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 8, 8, 7, 0
    ds.file_meta = Dataset()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.file_meta.MediaStorageSOPClassUID = ds.SOPClassUID
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    return ds


def build_overlay_series(output: PipelineOutput, *, pipeline_name: str,
                         options: OverlayOptions,
                         quality: Mapping[str, Assessment] | None = None) -> list[Dataset]:
    """The overlay images of ``output`` (see the module notes), in slice order."""
    quality = quality or {}
    sources = list(output.reference.datasets)
    stack = output.segment_stack()
    holding = np.flatnonzero(stack.any(axis=(1, 2, 3)))
    if holding.size == 0:
        raise ValueError("nothing to outline: every segment is empty")
    first = max(int(holding[0]) - options.margin_slices, 0)
    last = min(int(holding[-1]) + options.margin_slices, len(sources) - 1)
    pixels = sitk.GetArrayFromImage(output.reference.image)[first:last + 1]
    grey = _grey(pixels, str(sources[0].get("Modality", "")))
    factor = max(1, math.ceil(options.min_columns / int(sources[0].Columns)))
    lines = [(_NOTICE, (255, 255, 0))]
    for spec in output.segments:
        qc = quality.get(spec.structure)
        verdict = "" if qc is None or qc.verdict is Verdict.PASS \
            else f" (QC {qc.verdict.value.upper()})"
        lines.append((f"{spec.text}: {output.volumes_ml[spec.structure]:.1f} ml{verdict}",
                      spec.rgb))
    colours = [spec.rgb for spec in output.segments]
    # Kidneys are paired: General Series Laterality (2C) unless Image Laterality says it.
    sides = {{"24028007": "R", "7771000": "L"}[spec.laterality.value]
             for spec in output.segments if spec.laterality is not None}
    laterality = ("B" if len(sides) == 2 else sides.pop()) if sides else None
    now = dt.datetime.now()
    images = []
    for offset, z in enumerate(range(first, last + 1)):
        rgb = _render(grey[offset], [stack[z, ..., k] for k in range(stack.shape[-1])],
                      colours, lines, factor)
        ds = _header(sources[z], options, offset, factor, now, pipeline_name)
        if laterality is None:
            ds.Laterality = ""  # unknown: a graft whose side the method does not give
        else:
            ds.ImageLaterality = laterality
        ds.PixelData = rgb.tobytes()
        images.append(ds)
    return images
