"""A radiologist's correction becomes the record, through the running node (issue 17,
item 5): the node's SEG reaches the PACS (DCMTK storescp), a reader's edit of it comes
back by C-STORE (DCMTK storescu), and within a sweep the trend reports the reader's
volume, the history lists both, and no job is made; then a reader rejects the other
kidney's result on the patient page (Chromium) and it leaves the trend, and accepts it
through the API and it comes back."""

from __future__ import annotations

import time

import numpy as np
import pytest
from pydicom import dcmread
from pydicom.sr.codedict import codes
from pydicom.uid import SegmentationStorage

from service.imaging.series import load_series
from service.synthetic import CtGrid, synthesize_ct, write_ct_study
from tests.peers import node_sending_to_storescp, received, storescu
from tests.reader_segs import ReaderSegment, reader_seg
from tests.segs import segment_masks
from tests.viewer import ohif_browser

pytestmark = pytest.mark.integration


def test_a_readers_corrected_seg_and_a_rejection_change_the_trend(make_node, sqlite_url,
                                                                   tmp_path):
    study = write_ct_study(tmp_path / "ct", synthesize_ct(1, grid=CtGrid.small()),
                           patient_id="IT-REVIEW")
    uid = study.study_instance_uid
    with node_sending_to_storescp(make_node, sqlite_url, tmp_path / "pacs") as node:
        assert storescu(node.dicom_port, list(study.files)).returncode == 0
        (seg_path,) = node.wait_for(lambda: received(tmp_path / "pacs", SegmentationStorage),
                                    90, "the node's SEG at the PACS")
        automatic = {r["structure"]: r for r in node.wait_for(
            lambda: node.get("/api/patients/IT-REVIEW/volumes"), 30, "the trend")}
        volume = load_series(list(study.files)).volumes[0]
        masks = segment_masks(seg_path, volume)
        # The reader takes the top two slices off the right kidney and saves the SEG.
        edited = masks["Right kidney"].copy()
        edited[np.flatnonzero(edited.any(axis=(1, 2)))[-2:]] = False
        seg = reader_seg(volume.datasets, [
            ReaderSegment("Right kidney", edited, codes.SCT.Kidney, codes.SCT.Right)])
        corrected_path = tmp_path / "corrected.dcm"
        seg.save_as(corrected_path, enforce_file_format=True)
        sent = storescu(node.dicom_port, [corrected_path], calling="PACS", required_only=True)
        assert sent.returncode == 0, sent.stderr

        def corrected() -> dict | None:
            rows = node.get("/api/patients/IT-REVIEW/volumes")
            right = next(r for r in rows if r["structure"] == "kidney_right")
            return right if right["measurement"] == "corrected" else None

        started = time.monotonic()
        right = node.wait_for(corrected, 10, "the corrected volume in the trend")
        print(f"corrected volume in the trend {time.monotonic() - started:.1f} s after the "
              f"C-STORE (sweep every 0.5 s): {right['volume_ml']} ml, automatic "
              f"{right['automatic_volume_ml']} ml")
        expected = edited.sum() * np.prod(volume.image.GetSpacing()) / 1000.0
        assert right["volume_ml"] == pytest.approx(expected, rel=1e-6)
        assert right["automatic_volume_ml"] == automatic["kidney_right"]["volume_ml"]
        assert right["volume_ml"] < right["automatic_volume_ml"]
        assert (right["reviewed_by"], right["review_device"]) == ("DOE^JANE",
                                                                  "OHIF Viewer 3.13.2")
        history = node.get("/api/patient/history?id=IT-REVIEW")
        of_right = [(h["kind"], h["reported"]) for h in history
                    if h["structure"] == "kidney_right"]
        assert of_right == [("automatic", False), ("corrected", True)]
        summary = node.study(uid)
        assert len(summary["jobs"]) == 1  # the SEG made no job
        assert summary["reviews"][0]["origin"] == "PACS"

        # A reader rejects the left kidney's result on the patient page, in a browser.
        with ohif_browser(node.api) as browser:
            page = browser.page
            page.goto(f"{node.api}/patient?id=IT-REVIEW&issuer=")
            row = page.locator('tr[data-structure="kidney_left"]')
            row.get_by_label("reviewer").fill("Dr Reader")
            with page.expect_response(lambda r: "/patient/review" in r.url) as answer:
                row.get_by_role("button", name="reject").click()
            assert answer.value.status == 303, (answer.value.status, answer.value.text())
            page.wait_for_selector('tr[data-structure="kidney_left"][data-review="rejected"]')
            shown = page.locator('tr[data-structure="kidney_left"] td.reviewed').inner_text()
            assert "rejected by Dr Reader" in shown and "(web page)" in shown
            assert not browser.problems(), browser.problems()
        rows = {r["structure"]: r for r in node.get("/api/patients/IT-REVIEW/volumes")}
        assert not rows["kidney_left"]["in_trend"] and rows["kidney_right"]["in_trend"]
        listed = node.get("/api/patients")
        assert listed[0]["latest_volumes_ml"] == {"kidney_right": right["volume_ml"]}
        # Then accepts it after all, through the API: it is back in the trend.
        (accepted,) = node.post(f"/api/studies/{uid}/reviews", {
            "decision": "accept", "reviewer": "Dr Reader", "structure": "kidney_left"})
        assert accepted["action"] == "accepted" and accepted["device"] == "API"
        rows = {r["structure"]: r for r in node.get("/api/patients/IT-REVIEW/volumes")}
        assert rows["kidney_left"]["in_trend"] and rows["kidney_left"]["review"] == "accepted"
        kinds = [h["kind"] for h in node.get("/api/patient/history?id=IT-REVIEW")
                 if h["structure"] == "kidney_left"]
        assert kinds == ["automatic", "rejected", "accepted"]
        log = node.log()
    assert "kidney_right corrected by 'DOE^JANE'" in log
    assert dcmread(corrected_path).Manufacturer == "OHIF"
