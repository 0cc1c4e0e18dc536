"""Transfer syntaxes on reception: DCMTK sends files of pydicom's test set (an installed
dependency, so no data of ../shared is needed) in their own encodings; each is stored as
received and decodes, or is refused with a clear status, and the node goes on."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
from pydicom import dcmread
from pydicom import uid as tsuid
from pydicom.data import get_testdata_file
from sqlalchemy import select

from service.config import DicomSettings
from service.db import Instance, make_engine, make_sessionmaker, upgrade
from service.dicom.contexts import accepted_transfer_syntaxes
from service.dicom.scp import StorageSCP
from service.storage import InstanceStore
from tests.peers import dcmtk, peer_env

#: Compressed (and deflated) files, sent in their own syntax (pydicom's test files, MIT;
#: origins in their README.txt).
COMPRESSED = [
    "image_dfl.dcm",  # deflated explicit VR little endian
    "MR_small_RLE.dcm",  # RLE lossless
    "MR_small_jpeg_ls_lossless.dcm",  # JPEG-LS lossless
    "JPEGLSNearLossless_16.dcm",  # JPEG-LS near-lossless (Study/Series UIDs added here)
    "MR_small_jp2klossless.dcm",  # JPEG 2000 lossless
    "JPEG2000.dcm",  # JPEG 2000
    "SC_rgb_jpeg_dcmtk.dcm",  # JPEG baseline
    "SC_rgb_jpeg_gdcm.dcm",  # JPEG lossless, first-order prediction
]
#: Uncompressed encodings on the wire: the file, storescu's proposal option, the syntax.
UNCOMPRESSED = [
    ("MR_small.dcm", "-xe", tsuid.ExplicitVRLittleEndian),
    ("MR_small_implicit.dcm", "-xi", tsuid.ImplicitVRLittleEndian),
    ("MR_small_bigendian.dcm", "-xb", tsuid.ExplicitVRBigEndian),
]


@pytest.fixture(scope="module")
def node(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("ts")
    url = f"sqlite:///{tmp / 'index.sqlite'}"
    upgrade(url)
    store = InstanceStore(tmp / "archive", make_sessionmaker(make_engine(url)))
    scp = StorageSCP(DicomSettings(host="127.0.0.1", port=0), store)
    port = scp.start()
    yield port, store
    scp.stop()


def _dcmsend(port: int, path: Path) -> subprocess.CompletedProcess:
    # --decompress-never: propose the file's own transfer syntax only, so the node must
    # take it as is.
    return subprocess.run([dcmtk("dcmsend"), "-v", "--decompress-never", "-aec",
                           "KIDNEYNODE", "127.0.0.1", str(port), str(path)], env=peer_env(),
                          capture_output=True, text=True, timeout=60)


def _stored(store: InstanceStore, sop_uid: str):
    with store.sessions() as s:
        return s.execute(select(Instance.path, Instance.transfer_syntax_uid).where(
            Instance.sop_instance_uid == sop_uid)).one_or_none()


def _with_uids(name: str, folder: Path) -> Path:
    """The test file, with Study and Series Instance UIDs added where it has none (under a
    new SOP Instance UID: the original stays a file to refuse)."""
    ds = dcmread(get_testdata_file(name))
    if "StudyInstanceUID" in ds and "SeriesInstanceUID" in ds:
        return Path(get_testdata_file(name))
    ds.StudyInstanceUID = "1.2.826.0.1.3680043.8.498.1"
    ds.SeriesInstanceUID = "1.2.826.0.1.3680043.8.498.2"
    ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = "1.2.826.0.1.3680043.8.498.3"
    out = folder / name
    ds.save_as(out, enforce_file_format=True)
    return out


@pytest.mark.parametrize("name", COMPRESSED)
def test_compressed_files_are_stored_as_received_and_decode(node, name, tmp_path):
    port, store = node
    source = _with_uids(name, tmp_path)
    original = dcmread(source)
    syntax = str(original.file_meta.TransferSyntaxUID)
    assert syntax in accepted_transfer_syntaxes(), f"{syntax} has no decoder installed"
    sent = _dcmsend(port, source)
    assert sent.returncode == 0 and "ERROR" not in sent.stdout + sent.stderr, sent.stderr
    row = _stored(store, str(original.SOPInstanceUID))
    assert row is not None and row.transfer_syntax_uid == syntax
    stored = dcmread(store.path_of(row.path))
    assert str(stored.file_meta.TransferSyntaxUID) == syntax
    assert stored.pixel_array.shape == original.pixel_array.shape


@pytest.mark.parametrize(("name", "option", "syntax"), UNCOMPRESSED)
def test_uncompressed_encodings_on_the_wire(node, name, option, syntax):
    port, store = node
    source = Path(get_testdata_file(name))
    original = dcmread(source)
    sent = subprocess.run([dcmtk("storescu"), option, "-aec", "KIDNEYNODE", "127.0.0.1",
                           str(port), str(source)], env=peer_env(), capture_output=True,
                          text=True, timeout=60)
    assert sent.returncode == 0, sent.stderr
    row = _stored(store, str(original.SOPInstanceUID))
    assert row is not None and row.transfer_syntax_uid == syntax
    assert dcmread(store.path_of(row.path)).pixel_array.shape == original.pixel_array.shape


def test_jpeg_extended_is_accepted_and_decoded_by_dcmtk(node):
    from service.imaging.dcmtk_decode import decode_jpeg_extended

    port, store = node
    source = Path(get_testdata_file("JPGExtended.dcm"))  # 12-bit process 4
    assert tsuid.JPEGExtended12Bit in accepted_transfer_syntaxes()  # dcmtk is installed
    sent = _dcmsend(port, source)
    assert sent.returncode == 0 and "ERROR" not in sent.stdout + sent.stderr, sent.stderr
    row = _stored(store, str(dcmread(source).SOPInstanceUID))
    assert row is not None and row.transfer_syntax_uid == tsuid.JPEGExtended12Bit
    stored = dcmread(store.path_of(row.path))
    with pytest.raises(Exception, match="Unable to decode"):
        _ = stored.pixel_array  # pydicom's own plugins cannot: DCMTK does it
    pixels = decode_jpeg_extended(stored)
    assert pixels.shape == (stored.Rows, stored.Columns)
    assert 0 <= pixels.min() < pixels.max() < 2 ** stored.BitsStored


def test_without_dcmtk_jpeg_extended_is_refused_at_negotiation(node, monkeypatch):
    import service.imaging.dcmtk_decode as dcmtk_decode
    from service.dicom.contexts import scp_contexts

    monkeypatch.setattr(dcmtk_decode, "DCMDJPEG", "no-such-dcmdjpeg")
    monkeypatch.setattr(dcmtk_decode, "_tool", lambda: None)
    assert tsuid.JPEGExtended12Bit not in accepted_transfer_syntaxes()
    assert all(tsuid.JPEGExtended12Bit not in cx.transfer_syntax for cx in scp_contexts())
    with pytest.raises(ValueError, match="needs DCMTK's no-such-dcmdjpeg"):
        dcmtk_decode.decode_jpeg_extended(dcmread(get_testdata_file("JPGExtended.dcm")))


def test_missing_identifiers_and_truncation_are_refused_and_the_node_goes_on(node, tmp_path,
                                                                             caplog):
    port, store = node
    bare = Path(get_testdata_file("JPEGLSNearLossless_16.dcm"))  # no Study/Series UIDs
    uid = str(dcmread(bare, stop_before_pixels=True).SOPInstanceUID)
    with caplog.at_level("ERROR", logger="service.dicom.scp"):
        refused = _dcmsend(port, bare)
    assert "CannotUnderstand" in refused.stdout + refused.stderr  # status 0xC000
    assert uid in caplog.text and "StudyInstanceUID" in caplog.text
    assert _stored(store, uid) is None
    truncated = tmp_path / "cut.dcm"
    data = Path(get_testdata_file("MR_small.dcm")).read_bytes()
    truncated.write_bytes(data[: len(data) // 2])
    cut = _dcmsend(port, truncated)
    assert cut.returncode != 0 or "ERROR" in cut.stdout + cut.stderr
    ok = _dcmsend(port, Path(get_testdata_file("CT_small.dcm")))
    assert ok.returncode == 0 and "ERROR" not in ok.stdout + ok.stderr
    assert _stored(store, str(dcmread(get_testdata_file("CT_small.dcm")).SOPInstanceUID))
