"""A radiologist corrects the node's segmentation in OHIF Viewer 3.13.2 and stores it; the
PACS (Orthanc) routes the new SEG to the node, which makes it the record (issue 17, item 5).

The path a reader takes: the node's SEG opens in OHIF from Orthanc; the reader erases the
right kidney on the slices where the node took in too much (here: the last quarter),
and saves with OHIF's "Store Segmentation" (its dialog, Save), which STOWs a new SEG to
Orthanc; Orthanc sends it to the node (C-STORE). Within a sweep the node's trend reports
the reader's volume for the right kidney, computed here independently from the SEG OHIF
wrote; the history lists the automatic and the corrected volume; no job is made. OHIF
stores every segment it holds: the left kidney, untouched, comes back at the node's volume
as the reader's.
"""

from __future__ import annotations

import io

import numpy as np
import pytest
from pydicom import dcmread

from service.imaging.series import load_series
from tests.conftest import free_port
from tests.viewer import ohif_browser, ohif_site

from .test_ohif_viewer import _synthetic_ct, _through_node

pytestmark = pytest.mark.integration

#: Erase one segment's pixels on the last quarter of its slices (OHIF's labelmap images, as
#: a brush would), and tell OHIF the data changed; returns what was removed. First every
#: source image is loaded (a reader scrolls through the series; OHIF's store refuses a
#: segmentation whose source images are not all in its cache).
_ERASE = """async (label) => {
  const cs = window.cornerstone, tools = window.cornerstoneTools;
  const seg = window.services.segmentationService.getSegmentations()[0];
  const index = Object.values(seg.segments).filter(Boolean)
    .find(s => s.label === label).segmentIndex;
  const labelmap = tools.segmentation.state.getSegmentation(seg.segmentationId)
    .representationData.Labelmap;
  await Promise.all((labelmap.referencedImageIds || [])
    .map(id => cs.imageLoader.loadAndCacheImage(id)));
  const holding = [];
  labelmap.imageIds.forEach((imageId, k) => {
    const pixels = cs.cache.getImage(imageId).getPixelData();
    if (pixels.some(v => v === index)) holding.push(k);
  });
  let removed = 0;
  for (const k of holding.slice(-Math.max(2, Math.floor(holding.length / 4)))) {
    const image = cs.cache.getImage(labelmap.imageIds[k]);
    const pixels = image.getPixelData();
    for (let i = 0; i < pixels.length; i++)
      if (pixels[i] === index) { image.voxelManager.setAtIndex(i, 0); removed++; }
  }
  tools.segmentation.triggerSegmentationEvents
    .triggerSegmentationDataModified(seg.segmentationId);
  return {segmentationId: seg.segmentationId, index, removed, slices: holding.length};
}"""


def _segment_voxels(seg, number: int) -> int:  # noqa: ANN001
    """Pixels of segment ``number`` in a SEG on distinct planes: LABELMAP (the value is
    the segment number) or the node's own (frames per segment, FRACTIONAL or BINARY)."""
    frames = seg.pixel_array.reshape(-1, seg.Rows, seg.Columns)
    shared = seg.SharedFunctionalGroupsSequence[0]
    planes: dict[tuple, np.ndarray] = {}
    for frame, item in zip(frames, seg.PerFrameFunctionalGroupsSequence, strict=True):
        key = tuple(round(float(v), 2) for v in item.PlanePositionSequence[0]
                    .ImagePositionPatient)
        if seg.SegmentationType == "LABELMAP":
            mask = frame == number
        else:
            ident = (item.get("SegmentIdentificationSequence")
                     or shared.SegmentIdentificationSequence)[0]
            if int(ident.ReferencedSegmentNumber) != number:
                continue
            mask = frame > (127 if seg.SegmentationType == "FRACTIONAL" else 0)
        planes[key] = planes.get(key, np.zeros_like(mask)) | mask
    return int(sum(m.sum() for m in planes.values()))


def test_a_segmentation_corrected_in_ohif_becomes_the_record(make_node, sqlite_url,
                                                             tmp_path):
    files = _synthetic_ct(tmp_path / "ct")
    study_uid = str(dcmread(files[0], stop_before_pixels=True).StudyInstanceUID)
    with _through_node(files, make_node, sqlite_url, tmp_path) as (pacs, node):
        node.wait_for(lambda: pacs.results_filed(study_uid), 240, "the SEG and SR in Orthanc")
        (ours,) = [dcmread(io.BytesIO(f)) for f in pacs.files(study_uid, "SEG")]
        automatic = {r["structure"]: r for r in node.get("/api/patient/volumes?id=OHIF-CT")}
        with ohif_site(pacs.http_port, free_port()) as base, ohif_browser(base) as ohif:
            ohif.open_study(study_uid, pacs.series_count(study_uid))
            ohif.load_seg()
            erased = ohif.page.evaluate(_ERASE, "Right kidney")
            assert erased["removed"] > 0, erased
            ohif.page.evaluate(
                "(id) => { window.__stored = window.commandsManager.runCommand("
                "'storeSegmentation', {segmentationId: id}, 'SEGMENTATION'); }",
                erased["segmentationId"])
            ohif.page.get_by_role("button", name="Save").click(timeout=30_000)
            stored = ohif.page.evaluate(
                "() => Promise.resolve(window.__stored).then(ds => ds && "
                "({sop: ds.SOPInstanceUID, sopClass: ds.SOPClassUID}))")
            assert not ohif.problems(), ohif.problems()
        print(f"OHIF erased {erased} and stored {stored}")
        segs = node.wait_for(lambda: (lambda f: f if len(f) == 2 else None)(
            [dcmread(io.BytesIO(f)) for f in pacs.files(study_uid, "SEG")]), 30,
            "OHIF's SEG in Orthanc")
        (edited,) = [s for s in segs if s.SOPInstanceUID != ours.SOPInstanceUID]
        # The PACS routes the reader's SEG to the node.
        (orthanc_id,) = pacs.rest("/tools/find", {"Level": "Instance", "Query": {
            "SOPInstanceUID": str(edited.SOPInstanceUID)}})
        pacs.rest("/modalities/node", {"AET": "KIDNEYNODE", "Host": "127.0.0.1",
                                       "Port": node.dicom_port}, method="PUT")
        pacs.rest("/modalities/node/store", {"Resources": [orthanc_id],
                                             "Synchronous": True})

        def corrected() -> dict | None:
            rows = node.get("/api/patient/volumes?id=OHIF-CT")
            right = next(r for r in rows if r["structure"] == "kidney_right")
            return right if right["measurement"] == "corrected" else None

        right = node.wait_for(corrected, 10, "the corrected volume in the trend")
        history = node.get("/api/patient/history?id=OHIF-CT")
        summary = node.study(study_uid)
    number = next(int(s.SegmentNumber) for s in edited.SegmentSequence
                  if s.SegmentLabel == "Right kidney")
    spacing = load_series(files).volumes[0].image.GetSpacing()
    expected = _segment_voxels(edited, number) * float(np.prod(spacing)) / 1000.0
    ours_number = next(int(s.SegmentNumber) for s in ours.SegmentSequence
                       if s.SegmentLabel == "Right kidney")
    before = _segment_voxels(ours, ours_number) * float(np.prod(spacing)) / 1000.0
    print(f"OHIF SEG: {edited.SOPClassUID} {edited.SegmentationType} "
          f"{edited.file_meta.TransferSyntaxUID}; right kidney automatic "
          f"{automatic['kidney_right']['volume_ml']} ml (SEG {before:.2f} ml), corrected "
          f"{right['volume_ml']} ml (expected {expected:.2f} ml); device "
          f"{right['review_device']!r}")
    assert right["volume_ml"] == pytest.approx(expected, abs=1e-3)
    assert right["automatic_volume_ml"] == automatic["kidney_right"]["volume_ml"]
    removed_ml = erased["removed"] * float(np.prod(spacing)) / 1000.0
    assert right["volume_ml"] == pytest.approx(before - removed_ml, abs=0.05 * before)
    kinds = [(h["kind"], h["reported"]) for h in history if h["structure"] == "kidney_right"]
    assert kinds == [("automatic", False), ("corrected", True)]
    # OHIF stores every segment it holds: the left kidney, kept as it was, is the
    # reader's too now, with the same volume.
    left = [(h["kind"], h["volume_ml"], h["reported"]) for h in history
            if h["structure"] == "kidney_left"]
    print(f"left kidney: {left}")
    assert [(k, r) for k, _v, r in left] == [("automatic", False), ("corrected", True)]
    assert left[1][1] == pytest.approx(left[0][1], abs=1e-3)
    assert len(summary["jobs"]) == 1
