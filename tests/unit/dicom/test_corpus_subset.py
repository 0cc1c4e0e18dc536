"""Twelve real-world files (tests/data/dicom_corpus, see its PROVENANCE.md) sent to the node
with DCMTK, or pynetdicom where DCMTK cannot send them: each is stored and decodable, or
refused cleanly, as ``tests/dicom_corpus.py`` defines; the node goes on. Runs without
``../shared``; ``tests/integration/test_dicom_corpus.py`` does the same on the whole corpus.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from pydicom import dcmread
from pydicom.uid import generate_uid

from service.errors import SeriesLoadError
from service.imaging.series import load_series
from tests.dicom_corpus import (
    SUBSET,
    CorpusFile,
    Swept,
    assert_node_alive,
    catalog_rows,
    check_enhanced,
    check_series_loading,
    send_and_check,
    swept_corpus,
)

#: What each file must become: (outcome, sender that got it there, status).
EXPECTED = {
    "pydicom_data/emri_small_big_endian.dcm": ("stored", "dcmsend", 0x0000),
    "pydicom_data/HTJ2K_08_RGB.dcm": ("refused-status", "pynetdicom", 0xC000),
    "pydicom_data/liver_deflate.dcm": ("refused-negotiation", "dcmsend", None),
    "pydicom_data/JLSL_08_07_0_1F.dcm": ("refused-status", "dcmsend", 0xC000),
    "pydicom_test_files/rtdose_rle_1frame.dcm": ("stored", "pynetdicom", 0x0000),
    "pydicom_test_files/JPEG2000-embedded-sequence-delimiter.dcm": ("stored", "dcmsend", 0),
    "pydicom_test_files/MR_truncated.dcm": ("refused-status", "pynetdicom", 0xC000),
    "pydicom_test_files/SC_rgb_jpeg.dcm": ("not-sent", "pynetdicom", None),
    **{f"dicom2nifti/hitachi/anatomical/001/00{i}.dcm": ("stored", "dcmsend", 0)
       for i in range(1, 5)},
}


@pytest.fixture(scope="module")
def swept(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Swept]:
    assert {r["file"] for r in catalog_rows(SUBSET)} == set(EXPECTED)
    with swept_corpus(SUBSET, tmp_path_factory.mktemp("corpus-subset")) as swept:
        yield swept


def test_each_file_is_stored_or_cleanly_refused(swept: Swept) -> None:
    problems = [f"{o.file.relpath}: {p}" for o in swept.outcomes for p in o.problems]
    assert not problems, "\n".join(problems)
    got = {o.file.relpath: (o.kind, o.sender, o.status) for o in swept.outcomes}
    assert got == EXPECTED
    # DCMTK's failures that pynetdicom's retry stands in for: the abort on the request
    # with a bogus SOP Class UID, and the truncated file it will not send.
    assert swept.outcome("pydicom_test_files/rtdose_rle_1frame.dcm").first_try.startswith(
        "aborted")
    assert "larger (8192) than remaining" in swept.outcome(
        "pydicom_test_files/MR_truncated.dcm").first_try
    assert "StudyInstanceUID, SeriesInstanceUID" in swept.outcome(
        "pydicom_data/JLSL_08_07_0_1F.dcm").detail
    # Re-encoded by pynetdicom, the cut Pixel Data declares its real length: too short for
    # 64 x 64 at 16 bits, refused at reception.
    assert "pixel data holds 8130 bytes" in swept.outcome(
        "pydicom_test_files/MR_truncated.dcm").detail


def test_enhanced_mr_is_stored_and_refused_at_load_by_name(swept: Swept) -> None:
    checked, problems = check_enhanced(swept.store, swept.outcomes)
    assert checked == 1 and not problems, problems
    item = swept.outcome("pydicom_data/emri_small_big_endian.dcm").file
    (path,) = swept.store.root.glob(f"*/*/{item.sop_instance_uid}.dcm")
    assert dcmread(path).pixel_array.shape == (10, 64, 64)
    with pytest.raises(SeriesLoadError, match=r"Enhanced MR Image Storage .*not supported"):
        load_series([path])


def test_undecodable_stored_files_are_refused_at_load(swept: Swept) -> None:
    results, problems = check_series_loading(swept.store)
    assert not problems, problems
    by_sop = {o.file.sop_instance_uid: o.file.relpath for o in swept.outcomes}
    loaded = [r for r in results.values() if r.startswith("loaded")]
    assert loaded == ["loaded: 1 phase(s) of (64, 64, 4)"]  # the four Hitachi slices
    for relpath in ("pydicom_test_files/JPEG2000-embedded-sequence-delimiter.dcm",):
        uid = next(u for u, r in by_sop.items() if r == relpath)
        assert any(uid in r and "cannot be decoded" in r for r in results.values()), results


def test_htj2k_with_its_identifiers_is_stored_and_decodes(swept: Swept, tmp_path: Path) -> None:
    """HTJ2K is accepted: the corpus file, given the Study and Series Instance UIDs it
    lacks (and a new SOP Instance UID), is stored as received and decodes."""
    (row,) = [r for r in catalog_rows(SUBSET) if r["file"].endswith("HTJ2K_08_RGB.dcm")]
    ds = dcmread(SUBSET / row["file"])
    ds.StudyInstanceUID, ds.SeriesInstanceUID = generate_uid(), generate_uid()
    ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
    ds.save_as(tmp_path / "htj2k.dcm", enforce_file_format=True)
    item = CorpusFile.read(tmp_path, {**row, "file": "htj2k.dcm"})
    assert item.why_not_good() is None
    outcome = send_and_check(swept.port, swept.store, swept.log, item, tmp_path / "report.txt")
    assert (outcome.kind, outcome.sender, outcome.problems) == ("stored", "pynetdicom", [])
    assert "DIMSE Unsupported transfer syntax" in outcome.first_try  # DCMTK 3.6.7


def test_the_node_still_serves_after_the_subset(swept: Swept) -> None:
    assert_node_alive(swept.port, swept.store, swept.workdir)
