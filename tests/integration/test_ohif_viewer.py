"""The node's SEG and SR opened in OHIF Viewer 3.13, read from Orthanc's DICOMweb.

The path a radiologist takes: the study is in Orthanc and goes through the node (storescu),
the node sends its SEG and SR to Orthanc, OHIF reads the study from Orthanc; the SEG is opened by
double-clicking its thumbnail, the SR likewise. Checked from the page: the segments' names
and colours in OHIF's segmentation service; the overlay's pixels on a screenshot of the
viewport, against where the SEG's pixels fall on the canvas (OHIF's own world-to-canvas
mapping) on the slice where each segment is largest, and nothing drawn on a slice the SEG
does not cover; the SR's volumes as OHIF lists and draws them; no error in the page.
"""

from __future__ import annotations

import io
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from pydicom import Dataset, dcmread
from scipy import ndimage as ndi
from scipy.spatial import cKDTree

from service.pipeline.base import (
    GRAFT_LEFT,
    GRAFT_RIGHT,
    KIDNEY,
    KIDNEY_LEFT,
    KIDNEY_RIGHT,
)
from service.synthetic import CtGrid, synthesize_ct, write_ct_study
from service.synthetic.ct_tissues import CtPhase
from tests.conftest import free_port
from tests.peers import OrthancPeer, dciodvfy_errors, orthanc, storescu
from tests.viewer import ROOT, OhifPage, ohif_browser, ohif_site

pytestmark = pytest.mark.integration

REAL_CT = ROOT.parent / "shared" / "data" / "real" / "kidney" / "derived" / \
    "example_ct_dicom_from_nifti"
#: A SEG must display within this many seconds of the double-click (issue 17).
SEG_SECONDS = 30
VOLUME = "118565006"  # SCT "Volume"
SEGMENTS = (KIDNEY, KIDNEY_RIGHT, KIDNEY_LEFT, GRAFT_RIGHT, GRAFT_LEFT)


def _segment_pixels(seg: Dataset) -> dict[str, dict[int, np.ndarray]]:
    """Per source image (SOP Instance UID), per segment number: the patient coordinates
    (mm, n x 3) of the SEG's pixels on that image."""
    pixels = seg.pixel_array.reshape(-1, seg.Rows, seg.Columns)
    fractional = seg.SegmentationType == "FRACTIONAL"
    shared = seg.SharedFunctionalGroupsSequence[0]
    iop = np.asarray(shared.PlaneOrientationSequence[0].ImageOrientationPatient, float)
    row_mm, col_mm = (float(v) for v in shared.PixelMeasuresSequence[0].PixelSpacing)
    found: dict[str, dict[int, np.ndarray]] = {}
    for frame, item in zip(pixels, seg.PerFrameFunctionalGroupsSequence, strict=True):
        inside = frame > (127 if fractional else 0)
        if not inside.any():
            continue
        rows, cols = np.nonzero(inside)
        origin = np.asarray(item.PlanePositionSequence[0].ImagePositionPatient, float)
        world = (origin + np.outer(cols * col_mm, iop[:3]) + np.outer(rows * row_mm, iop[3:]))
        source = item.DerivationImageSequence[0].SourceImageSequence[0].ReferencedSOPInstanceUID
        # One segment: highdicom puts its identification in the shared groups.
        identification = item.get("SegmentIdentificationSequence") \
            or shared.SegmentIdentificationSequence
        number = int(identification[0].ReferencedSegmentNumber)
        found.setdefault(str(source), {})[number] = world
    return found


def _volumes(sr: Dataset) -> list[float]:
    found: list[float] = []

    def walk(items) -> None:  # noqa: ANN001
        for item in items:
            if (item.get("ValueType") == "NUM"
                    and item.ConceptNameCodeSequence[0].CodeValue == VOLUME):
                found.append(float(item.MeasuredValueSequence[0].NumericValue))
            walk(item.get("ContentSequence", []))

    walk(sr.ContentSequence)
    return found


def _check_overlay(ohif: OhifPage, source_uid: str, segments: dict[int, np.ndarray],
                   colours: dict[int, tuple[int, int, int]], *,
                   outline: bool = False) -> dict[str, float]:
    """On image ``source_uid``, the overlay (screenshot with the segments shown minus
    hidden) lies where the SEG's pixels fall on the canvas, covers them, and is tinted
    with each segment's colour; with ``outline`` (an RTSTRUCT's contours) it lies on and
    runs along the border pixels of the segments (``segments`` holds those)."""
    ohif.show_image(source_uid)
    everything = np.vstack(list(segments.values()))
    for _ in range(3):  # until the view held still through both screenshots
        before = ohif.world_to_canvas(everything)
        shown, hidden = ohif.shown_and_hidden()
        if np.allclose(ohif.world_to_canvas(everything), before, atol=0.5):
            break
    changed = np.abs(shown - hidden).sum(axis=-1) > 30
    assert changed.sum() > 20, "nothing drawn where the SEG has pixels"
    canvas = {n: ohif.world_to_canvas(world) for n, world in segments.items()}
    expected = np.vstack(list(canvas.values()))
    # Canvas pixels per image pixel: half a pixel around each pixel centre is its area.
    step = float(np.median(cKDTree(expected).query(expected, k=2)[0][:, 1]))
    ys, xs = np.nonzero(changed)
    reach = (1.0 if outline else 0.75) * step + 2  # a contour runs half a pixel outside
    near, _ = cKDTree(expected).query(np.column_stack([xs, ys]))
    on_segments = float((near <= reach).mean())
    if outline:
        drawn, _ = cKDTree(np.column_stack([xs, ys])).query(expected)
        hit = list(drawn <= reach)
    else:
        hit = [changed[int(round(y)), int(round(x))] for x, y in expected
               if 0 <= round(y) < changed.shape[0] and 0 <= round(x) < changed.shape[1]]
    covered = float(np.mean(hit))
    assert on_segments >= 0.9, f"{1 - on_segments:.0%} of the overlay off the segments"
    assert covered >= 0.9, f"only {covered:.0%} of the segments' pixels drawn"
    if outline:
        return {"on_segments": on_segments, "covered": covered}
    for number, points in canvas.items():
        x = np.clip(np.round(points[:, 0]).astype(int), 0, changed.shape[1] - 1)
        y = np.clip(np.round(points[:, 1]).astype(int), 0, changed.shape[0] - 1)
        tint = (shown[y, x] - hidden[y, x]).mean(axis=0)
        expected_tint = np.asarray(colours[number]) - hidden[y, x].mean(axis=0)
        strong = np.abs(expected_tint) > 20
        assert (np.sign(tint[strong]) == np.sign(expected_tint[strong])).all(), (
            f"segment {number}: overlay tint {tint.round()} is not its colour "
            f"{colours[number]} over the image")
    return {"on_segments": on_segments, "covered": covered}


def _blank_elsewhere(ohif: OhifPage, source_uid: str) -> int:
    ohif.show_image(source_uid)
    shown, hidden = ohif.shown_and_hidden()
    return int((np.abs(shown - hidden).sum(axis=-1) > 30).sum())


def _synthetic_ct(folder: Path) -> list[Path]:
    """A 90 x 90 CT (rows x columns not a multiple of 8: a FRACTIONAL SEG)."""
    ct = synthesize_ct(1, phase=CtPhase.NEPHROGRAPHIC, grid=CtGrid(
        matrix=90, in_plane_spacing_mm=4.0 * 96 / 90, slice_spacing_mm=5.0))
    return list(write_ct_study(folder, ct, patient_id="OHIF-CT").files)


@contextmanager
def _through_node(files: list[Path], make_node, sqlite_url: str, tmp_path: Path,  # noqa: ANN001
                  outputs: list[str] | None = None) -> Iterator[tuple[OrthancPeer, Any]]:
    """Orthanc (DICOMweb on) holding ``files``, which it routes to a node whose destination
    it is (with ``outputs``, else the default); yields Orthanc and the node."""
    with orthanc(tmp_path / "orthanc", dicom_port=free_port(), http_port=free_port(),
                 dicomweb=True) as pacs:
        # The PACS holds the images and routes them to the node, which sends its results back.
        assert storescu(pacs.dicom_port, files, called=pacs.aet).returncode == 0
        destination = {"name": "pacs", "ae_title": pacs.aet, "host": "127.0.0.1",
                       "port": pacs.dicom_port}
        if outputs is not None:
            destination["outputs"] = outputs
        node = make_node(sqlite_url, destinations=[destination])
        node.start()
        assert storescu(node.dicom_port, files).returncode == 0
        yield pacs, node


def _shown_in_ohif(case: str, files: list[Path], make_node, sqlite_url: str,  # noqa: ANN001
                   tmp_path: Path) -> None:
    """``files`` in Orthanc, through the node, results back in Orthanc, opened in OHIF:
    every check of the module notes."""
    study_uid = str(dcmread(files[0], stop_before_pixels=True).StudyInstanceUID)
    with _through_node(files, make_node, sqlite_url, tmp_path) as (pacs, node):
        node.wait_for(lambda: pacs.results_filed(study_uid), 240, "the SEG and SR in Orthanc")
        (seg,) = [dcmread(io.BytesIO(f)) for f in pacs.files(study_uid, "SEG")]
        (sr,) = [dcmread(io.BytesIO(f)) for f in pacs.files(study_uid, "SR")]
        by_image = _segment_pixels(seg)
        names = {int(s.SegmentNumber): str(s.SegmentLabel) for s in seg.SegmentSequence}
        rgb = {spec.text: spec.rgb for spec in SEGMENTS}

        with ohif_site(pacs.http_port, free_port()) as base, ohif_browser(base) as ohif:
            ohif.open_study(study_uid, pacs.series_count(study_uid))
            modalities = {d["modality"] for d in ohif.display_sets()}
            assert {"SEG", "SR"} < modalities, modalities
            seconds = ohif.load_seg()
            assert seconds <= SEG_SECONDS
            shown = {s["index"]: s for s in ohif.segments()}
            assert {i: s["label"] for i, s in shown.items()} == names
            for index, segment in shown.items():
                assert np.abs(np.subtract(segment["color"][:3], rgb[names[index]])).max() <= 2
            colours = {i: tuple(s["color"][:3]) for i, s in shown.items()}
            for number in names:
                # The images where this segment is largest and smallest, every segment on
                # them: the overlay changes with the slice as the SEG does.
                # (the smallest of at least 20 pixels: a few pixels draw too little to judge)
                holding = [uid for uid in by_image if number in by_image[uid]]
                largest = max(holding, key=lambda uid: len(by_image[uid][number]))
                small = [uid for uid in holding if len(by_image[uid][number]) >= 20]
                smallest = min(small, key=lambda uid: len(by_image[uid][number]))
                for source in {largest, smallest}:
                    report = _check_overlay(ohif, source, by_image[source], colours)
                    print(f"{case}, segment {number} ({names[number]}), "
                          f"{len(by_image[source][number])} pixels: {report}")
            in_viewport = ohif.page.evaluate(
                "() => { const g = window.services.viewportGridService.getState();"
                " return window.services.cornerstoneViewportService"
                ".getCornerstoneViewport(g.activeViewportId).getImageIds() }")
            uncovered = [uid for uid in (i.split("/instances/")[1].split("/")[0]
                                         for i in in_viewport) if uid not in by_image]
            if uncovered:  # else the segmentation spans the whole series
                assert _blank_elsewhere(ohif, uncovered[0]) < 20
            assert not ohif.problems(), ohif.problems()

            measurements = ohif.load_sr()
            assert not ohif.problems(), ohif.problems()
            volumes = _volumes(sr)
            assert len(measurements) == len(volumes) == len(names)
            assert all(m["loaded"] for m in measurements), measurements
            listed = sorted(label["value"] for m in measurements for label in m["labels"]
                            if label["label"] == "Volume")
            assert listed == sorted(f"{v:.2f} ml" for v in volumes)
            text = ohif.wait_for_text("Volume: ")
            assert any(f"Volume: {v:.2f} ml" in text for v in volumes), text[-2000:]
            print(f"{case}: SEG shown in {seconds:.1f} s; SR volumes {listed}")


@pytest.mark.parametrize("case", ["real example CT", "synthetic 90 x 90 CT"])
def test_ct_seg_and_sr_display_in_ohif(case: str, make_node, sqlite_url, tmp_path):
    if case == "real example CT":
        files = sorted(REAL_CT.glob("*.dcm"))
        assert files, f"{REAL_CT} missing (../shared beside the repository)"
    else:
        files = _synthetic_ct(tmp_path / "ct")
    _shown_in_ohif(case, files, make_node, sqlite_url, tmp_path)


def test_mr_seg_on_a_dce_of_all_phases_in_one_series_displays_in_ohif(
        make_node, sqlite_url, small_study_dir, tmp_path):
    """Many scanners store a DCE as one series holding every phase (here 4 temporal
    positions in one series): OHIF 3.13 froze on a SEG mapped onto it."""
    _shown_in_ohif("MR, DCE in one series", list(small_study_dir.files), make_node,
                   sqlite_url, tmp_path)


def _border(world: np.ndarray, seg: Dataset) -> np.ndarray:
    """The points of ``world`` (one segment's pixels on one image, n x 3) on its outer
    border."""
    shared = seg.SharedFunctionalGroupsSequence[0]
    row_mm, col_mm = (float(v) for v in shared.PixelMeasuresSequence[0].PixelSpacing)
    iop = np.asarray(shared.PlaneOrientationSequence[0].ImageOrientationPatient, float)
    offset = world - world[0]
    cols = np.round(offset @ iop[:3] / col_mm).astype(int)
    rows = np.round(offset @ iop[3:] / row_mm).astype(int)
    cols, rows = cols - cols.min() + 1, rows - rows.min() + 1
    plane = np.zeros((rows.max() + 2, cols.max() + 2), dtype=bool)
    plane[rows, cols] = True
    # The outer border: the contours are outer outlines (holes, such as the renal sinus
    # of a CT kidney, filled).
    inner = ndi.binary_erosion(ndi.binary_fill_holes(plane))
    return world[~inner[rows, cols]]


def test_rtstruct_output_opens_in_ohif_on_the_kidneys(make_node, sqlite_url, tmp_path):
    """A destination that asks for an RT Structure Set (``outputs``) gets one: valid
    (dciodvfy), and OHIF draws its contours along the kidneys' borders, named and coloured
    as in the SEG."""
    files = sorted(REAL_CT.glob("*.dcm"))
    assert files, f"{REAL_CT} missing (../shared beside the repository)"
    study_uid = str(dcmread(files[0], stop_before_pixels=True).StudyInstanceUID)
    with _through_node(files, make_node, sqlite_url, tmp_path,
                       outputs=["seg", "sr", "rtstruct"]) as (pacs, node):
        node.wait_for(lambda: "RTSTRUCT" in pacs.series_by_modality(study_uid), 240,
                      "the RTSTRUCT in Orthanc")
        (seg,) = [dcmread(io.BytesIO(f)) for f in pacs.files(study_uid, "SEG")]
        (rt,) = pacs.files(study_uid, "RTSTRUCT")
        (tmp_path / "rt.dcm").write_bytes(rt)
        assert dciodvfy_errors(tmp_path / "rt.dcm") == []
        by_image = _segment_pixels(seg)
        names = {int(s.SegmentNumber): str(s.SegmentLabel) for s in seg.SegmentSequence}
        rgb = {spec.text: spec.rgb for spec in SEGMENTS}
        with ohif_site(pacs.http_port, free_port()) as base, ohif_browser(base) as ohif:
            ohif.open_study(study_uid, pacs.series_count(study_uid))
            seconds = ohif.load_seg("RTSTRUCT")
            shown = {s["label"]: s for s in ohif.segments()}
            assert set(shown) == set(names.values())
            for label, segment in shown.items():
                assert np.abs(np.subtract(segment["color"][:3], rgb[label])).max() <= 2
            for number in names:
                holding = [uid for uid in by_image if number in by_image[uid]]
                source = max(holding, key=lambda uid: len(by_image[uid][number]))
                borders = {n: _border(world, seg) for n, world in by_image[source].items()}
                report = _check_overlay(ohif, source, borders, {}, outline=True)
                print(f"RTSTRUCT, {names[number]}: {report}")
            assert not ohif.problems(), ohif.problems()
            print(f"RTSTRUCT shown in {seconds:.1f} s")


def test_overlay_series_opens_in_ohif_with_the_outlines(make_node, sqlite_url, tmp_path):
    """A destination that asks for the colour overlay series (``outputs``) gets one: valid
    Secondary Capture images (dciodvfy) in the source's frame of reference, which OHIF
    lists and shows, the kidneys' outlines drawn in their colours."""
    files = sorted(REAL_CT.glob("*.dcm"))
    assert files, f"{REAL_CT} missing (../shared beside the repository)"
    study_uid = str(dcmread(files[0], stop_before_pixels=True).StudyInstanceUID)
    with _through_node(files, make_node, sqlite_url, tmp_path,
                       outputs=["seg", "sr", "overlay"]) as (pacs, node):
        (seg,) = node.wait_for(lambda: pacs.files(study_uid, "SEG"), 240, "the SEG in Orthanc")
        seg = dcmread(io.BytesIO(seg))
        covered = len(_segment_pixels(seg))  # images the SEG covers; 2 more on each side

        def overlays() -> list[str] | None:
            found = pacs.rest("/tools/find", {"Level": "Instance", "Query": {
                "StudyInstanceUID": study_uid, "SeriesNumber": "9905"}})
            return found if len(found) >= covered else None

        found = node.wait_for(overlays, 120, "the overlay series in Orthanc")
        time.sleep(2)  # the last images of the series
        found = overlays()
        assert covered <= len(found) <= covered + 4
        (tmp_path / "overlay.dcm").write_bytes(pacs.instance_file(found[0]))
        assert dciodvfy_errors(tmp_path / "overlay.dcm") == []
        rgb = {spec.text: spec.rgb for spec in SEGMENTS}
        colours = [rgb[str(s.SegmentLabel)] for s in seg.SegmentSequence]
        with ohif_site(pacs.http_port, free_port()) as base, ohif_browser(base) as ohif:
            ohif.open_study(study_uid, pacs.series_count(study_uid))
            (overlay,) = [d for d in ohif.display_sets()
                          if (d["description"] or "").startswith("Kidney outline")]
            assert overlay["images"] == len(found)
            assert ohif.show_display_set(overlay["uid"]) == len(found)
            ohif.scroll_to(len(found) // 2)
            started = time.monotonic()
            while True:  # software WebGL on a busy machine: the image may come seconds late
                pixels = ohif.canvas_pixels()
                drawn = [int((np.abs(pixels - np.asarray(c)).sum(axis=-1) <= 30).sum())
                         for c in colours]
                if all(n > 30 for n in drawn) or time.monotonic() - started > 30:
                    break
                # A user's "Reset View": on a busy machine OHIF 3.13 at times fits the camera
                # before the stack's geometry is known (parallel scale 22952 mm seen).
                ohif.reset_view()
            print(f"overlay in OHIF: {len(found)} images; canvas pixels of each segment's "
                  f"colour {dict(zip(colours, drawn, strict=True))} after "
                  f"{time.monotonic() - started:.1f} s")
            assert all(n > 30 for n in drawn), drawn
            assert not ohif.problems(), ohif.problems()
