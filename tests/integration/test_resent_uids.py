"""Who may replace what through C-STORE (issue 18): the node's own results never; a held
image not by an object of another SOP class. Driven with DCMTK storescu against the
running node."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest
from pydicom import dcmread
from pydicom.uid import Comprehensive3DSRStorage, CTImageStorage, SegmentationStorage

from tests.peers import node_sending_to_storescp, received, storescu

pytestmark = pytest.mark.integration


def _forged(source: Path, sop_uid: str, out: Path, *, sop_class: str | None = None) -> Path:
    ds = dcmread(source)
    ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = sop_uid
    if sop_class:
        ds.SOPClassUID = ds.file_meta.MediaStorageSOPClassUID = sop_class
    ds.save_as(out, enforce_file_format=True)
    return out


def _digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_nothing_received_replaces_the_nodes_seg_or_an_image_of_another_class(
        make_node, sqlite_url, small_study_dir, tmp_path):
    """A C-STORE reusing the SEG's SOP Instance UID with an MR image was accepted and
    replaced the node's SEG in its archive (then forwarded under the node's AE title)."""
    study = small_study_dir
    with node_sending_to_storescp(make_node, sqlite_url, tmp_path / "dest") as node:
        assert storescu(node.dicom_port, list(study.files)).returncode == 0
        segs = node.wait_for(lambda: received(tmp_path / "dest", SegmentationStorage), 120,
                             "the SEG")
        seg_uid = str(dcmread(segs[0], stop_before_pixels=True).SOPInstanceUID)
        archived = next(Path(node.config["storage"]["root"]).rglob(f"{seg_uid}.dcm"))
        before = _digest(archived)

        image = study.files[0]
        forged = storescu(node.dicom_port, [_forged(image, seg_uid, tmp_path / "seg.dcm")],
                          verbose=True)
        # 0x0124 Refused: Not Authorized (PS3.7 C.5.4); DCMTK prints it as "0x124".
        assert "Store Response (Unknown Status: 0x124)" in forged.stderr, forged.stderr
        assert _digest(archived) == before
        assert dcmread(archived, stop_before_pixels=True).SOPClassUID == SegmentationStorage

        # A PACS sending the study back, the node's results included: acknowledged, and
        # the node's own copy kept.
        (report,) = node.wait_for(lambda: received(tmp_path / "dest", Comprehensive3DSRStorage),
                                  30, "the SR")
        sr_uid = str(dcmread(report, stop_before_pixels=True).SOPInstanceUID)
        archived_sr = next(Path(node.config["storage"]["root"]).rglob(f"{sr_uid}.dcm"))
        sr_before = _digest(archived_sr)
        back = storescu(node.dicom_port, [report], calling="PACS", verbose=True,
                        required_only=True)
        assert "Store Response (Success)" in back.stderr, back.stderr
        assert _digest(archived_sr) == sr_before

        held_uid = str(dcmread(image, stop_before_pixels=True).SOPInstanceUID)
        other = storescu(node.dicom_port, [_forged(image, held_uid, tmp_path / "ct.dcm",
                                                   sop_class=CTImageStorage)],
                         verbose=True)
        assert "Store Response (Error: DataSetDoesNotMatchSOPClass)" in other.stderr, other.stderr
        log = node.log()
    assert "generated; it cannot be replaced from outside" in log
    assert f"held as SOP class {dcmread(image).SOPClassUID}" in log
