"""A PNG of the mask's contour over its source image on a few slices, for a quick check."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import highdicom as hd
import numpy as np
import pydicom
import SimpleITK as sitk

from service.errors import KidneyNodeError
from service.imaging.series import load_series
from service.reports import new_figure, png_bytes

__all__ = ["choose_slices", "preview_png", "render_preview", "seg_masks_by_source"]


def seg_masks_by_source(seg: hd.seg.Segmentation) -> dict[str, np.ndarray]:
    """Union of the SEG's segments per referenced source SOP Instance UID (bool 2D)."""
    frames = seg.pixel_array
    if frames.ndim == 2:
        frames = frames[None]
    masks: dict[str, np.ndarray] = {}
    for frame, group in zip(frames, seg.PerFrameFunctionalGroupsSequence, strict=True):
        uid = str(group.DerivationImageSequence[0].SourceImageSequence[0]
                  .ReferencedSOPInstanceUID)
        previous = masks.get(uid)
        masks[uid] = frame > 0 if previous is None else previous | (frame > 0)
    return masks


def choose_slices(mask: np.ndarray, count: int = 3) -> list[int]:
    """Up to ``count`` slice indices spread over the mask's extent along axis 0, the
    middle pick replaced by the slice of largest area; all slices when fewer."""
    area = mask.reshape(len(mask), -1).sum(axis=1)
    present = np.flatnonzero(area)
    if present.size <= count:
        return present.tolist()
    picks = [int(present[round(q * (present.size - 1))]) for q in np.linspace(0.15, 0.85, count)]
    picks[count // 2] = int(np.argmax(area))
    return sorted(set(picks))


def render_preview(image: np.ndarray, mask: np.ndarray, slices: Sequence[int], *,
                   pixel_aspect: float, title: str) -> bytes:
    """The mask's outline (red) over ``image`` (z, y, x) on ``slices``, cropped around the
    mask with a margin, grey levels windowed at the 1st-99th percentile of the crop."""
    fig = new_figure(3.2 * max(len(slices), 1), 3.6)
    rows, cols = np.nonzero(mask[list(slices)].any(axis=0)) if slices else ([], [])
    if len(rows):
        pad_r = max(16, (rows.max() - rows.min()) // 2)
        pad_c = max(16, (cols.max() - cols.min()) // 2)
        r0, r1 = max(rows.min() - pad_r, 0), min(rows.max() + pad_r + 1, image.shape[1])
        c0, c1 = max(cols.min() - pad_c, 0), min(cols.max() + pad_c + 1, image.shape[2])
    else:
        r0, r1, c0, c1 = 0, image.shape[1], 0, image.shape[2]
    crop = image[list(slices), r0:r1, c0:c1] if slices else image[:1]
    low, high = np.percentile(crop, [1, 99]) if crop.size else (0.0, 1.0)
    for k, z in enumerate(slices):
        ax = fig.add_subplot(1, len(slices), k + 1)
        ax.imshow(image[z, r0:r1, c0:c1], cmap="gray", vmin=low, vmax=max(high, low + 1e-6),
                  aspect=pixel_aspect, interpolation="nearest")
        ax.contour(mask[z, r0:r1, c0:c1].astype(float), levels=[0.5], colors="red",
                   linewidths=1.0)
        ax.set_title(f"slice {z + 1} of {image.shape[0]}", fontsize=8)
        ax.set_axis_off()
    fig.suptitle(title, fontsize=9)
    return png_bytes(fig)


def seg_source_series(seg_path: Path) -> str:
    """Series Instance UID of the series a stored SEG is on (its Referenced Series)."""
    header = pydicom.dcmread(seg_path, stop_before_pixels=True,
                             specific_tags=["ReferencedSeriesSequence"])
    series = header.get("ReferencedSeriesSequence") or []
    if not series or "SeriesInstanceUID" not in series[0]:
        raise KidneyNodeError(f"{seg_path.name}: the SEG names no referenced series")
    return str(series[0].SeriesInstanceUID)


def preview_png(source_paths: Sequence[Path], seg_path: Path, *, title: str,
                count: int = 3) -> bytes:
    """Load a stored SEG and its source series and render :func:`render_preview`.

    Raises
    ------
    KidneyNodeError
        When no volume of the source series holds the slices the SEG references.
    """
    seg = hd.seg.segread(seg_path)
    by_source = seg_masks_by_source(seg)
    series = load_series(list(source_paths))
    volume = max(series.volumes, key=lambda v: sum(str(d.SOPInstanceUID) in by_source
                                                  for d in v.datasets))
    uids = [str(d.SOPInstanceUID) for d in volume.datasets]
    if not any(uid in by_source for uid in uids):
        raise KidneyNodeError(f"SEG {seg.SOPInstanceUID}: none of its source slices is in "
                              f"series {series.series_instance_uid}")
    image = sitk.GetArrayFromImage(volume.image)
    mask = np.zeros(image.shape, dtype=bool)
    for z, uid in enumerate(uids):
        if uid in by_source:
            mask[z] = by_source[uid]
    spacing_x, spacing_y = volume.image.GetSpacing()[:2]
    return render_preview(image, mask, choose_slices(mask, count),
                          pixel_aspect=spacing_y / spacing_x, title=title)
