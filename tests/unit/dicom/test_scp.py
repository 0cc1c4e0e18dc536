"""The SCP's statuses, with a real pynetdicom SCU over loopback."""

from __future__ import annotations

import socket

import pytest
from pydicom import dcmread
from pydicom.data import get_testdata_file
from pynetdicom import AE, evt
from sqlalchemy import func, select

from service.config import DicomSettings
from service.db import Instance, make_engine, make_sessionmaker, upgrade
from service.dicom.scp import DimseStatus, StorageSCP
from service.storage import InstanceStore


def _scp(tmp_path, url):
    store = InstanceStore(tmp_path / "archive", make_sessionmaker(make_engine(url)))
    scp = StorageSCP(DicomSettings(host="127.0.0.1", port=0), store)
    return scp, scp.start(), store


@pytest.fixture
def running(tmp_path, sqlite_url):
    upgrade(sqlite_url)
    scp, port, store = _scp(tmp_path, sqlite_url)
    yield port, store
    scp.stop()


def _send(port, ds, handlers=()):
    ae = AE(ae_title="TESTSCU")
    ae.add_requested_context(ds.SOPClassUID)
    assoc = ae.associate("127.0.0.1", port, ae_title="KIDNEYNODE", evt_handlers=list(handlers))
    assert assoc.is_established
    try:
        return int(assoc.send_c_store(ds).Status)
    finally:
        assoc.release()


def test_store_succeeds_and_sets_tcp_nodelay(running):
    port, store = running
    seen = []

    def check(event):
        seen.append(event.assoc.dul.socket.socket.getsockopt(socket.IPPROTO_TCP,
                                                               socket.TCP_NODELAY))

    ds = dcmread(get_testdata_file("MR_small.dcm"))
    assert _send(port, ds) == DimseStatus.SUCCESS
    with store.sessions() as s:
        assert s.scalar(select(func.count(Instance.id))) == 1
    # Our SCU side too: the same handler the node binds, then a check after it.
    from service.dicom.net import NODELAY_HANDLER

    assert _send(port, ds, [NODELAY_HANDLER, (evt.EVT_CONN_OPEN, check)]) == 0
    assert seen == [1]


def test_missing_study_uid_cannot_be_understood(running, caplog):
    port, _ = running
    ds = dcmread(get_testdata_file("MR_small.dcm"))
    del ds.StudyInstanceUID
    assert _send(port, ds) == DimseStatus.CANNOT_UNDERSTAND
    assert ds.SOPInstanceUID in caplog.text and "StudyInstanceUID" in caplog.text


def test_unreachable_database_is_out_of_resources_and_keeps_no_file(tmp_path, caplog):
    scp, port, store = _scp(tmp_path, "postgresql+psycopg://nobody@127.0.0.1:1/none")
    try:
        ds = dcmread(get_testdata_file("MR_small.dcm"))
        assert _send(port, ds) == DimseStatus.OUT_OF_RESOURCES
    finally:
        scp.stop()
    assert "cannot index" in caplog.text and ds.SOPInstanceUID in caplog.text
    assert not list(store.root.rglob("*.dcm"))  # not acknowledged, not half-stored


def test_peer_address_allow_list_refuses_others_before_any_association(tmp_path, sqlite_url,
                                                                        caplog):
    import subprocess

    from tests.peers import dcmtk, peer_env

    upgrade(sqlite_url)
    store = InstanceStore(tmp_path / "archive", make_sessionmaker(make_engine(sqlite_url)))

    def echo(port):
        return subprocess.run([dcmtk("echoscu"), "-aec", "KIDNEYNODE", "127.0.0.1", str(port)],
                              env=peer_env(), capture_output=True, text=True, timeout=30)

    for allowed, ok in ((("10.0.0.0/8",), False), (("127.0.0.0/8", "::1"), True)):
        scp = StorageSCP(DicomSettings(host="127.0.0.1", port=0,
                                       allowed_peer_addresses=allowed), store)
        port = scp.start()
        caplog.clear()
        try:
            with caplog.at_level("WARNING", logger="service.dicom.scp"):
                result = echo(port)
        finally:
            scp.stop()
        assert (result.returncode == 0) is ok, result.stderr
        refused = "connection from 127.0.0.1" in caplog.text
        assert refused is not ok


def test_peer_allow_list_entries_are_validated():
    from pydantic import ValidationError

    assert DicomSettings(allowed_peer_addresses=("192.168.1.0/24", "10.0.0.5", "::1"))
    with pytest.raises(ValidationError, match="not an IP address or network"):
        DicomSettings(allowed_peer_addresses=("pacs.example.org",))


def test_database_down_refuses_with_out_of_resources_and_keeps_no_file(tmp_path):
    """The index is unreachable (PostgreSQL on a port nobody listens on): the instance is
    refused with 0xA700, so the sender keeps it and retries, and no orphan file stays."""
    import subprocess

    from tests.conftest import free_port
    from tests.peers import dcmtk, peer_env

    url = f"postgresql+psycopg://postgres@127.0.0.1:{free_port()}/nothing?connect_timeout=2"
    store = InstanceStore(tmp_path / "archive", make_sessionmaker(make_engine(url)))
    scp = StorageSCP(DicomSettings(host="127.0.0.1", port=0), store)
    port = scp.start()
    try:
        sent = subprocess.run([dcmtk("storescu"), "-v", "-aec", "KIDNEYNODE", "127.0.0.1",
                               str(port), get_testdata_file("MR_small.dcm")], env=peer_env(),
                              capture_output=True, text=True, timeout=60)
    finally:
        scp.stop()
    assert "Refused: OutOfResources" in sent.stdout + sent.stderr, sent.stdout + sent.stderr
    assert not [p for p in (tmp_path / "archive").rglob("*.dcm")
                if ".incoming" not in p.parts]


def test_unknown_sop_class_is_refused_at_negotiation_and_the_node_goes_on(running):
    """A SOP class that is no storage class of the node gets no presentation context
    (result 0x03, abstract syntax not supported); alone it ends the association, beside a
    known class it is left out, and the node goes on storing."""
    port, store = running
    unknown = "1.2.826.0.1.3680043.8.498.424242"  # no storage SOP class of PS3.4
    negotiated: list[list[tuple[str, int]]] = []

    def record(event):
        negotiated.append([(str(cx.abstract_syntax), cx.result)
                           for cx in event.assoc.rejected_contexts])

    ae = AE(ae_title="TESTSCU")
    ae.add_requested_context(unknown)
    alone = ae.associate("127.0.0.1", port, ae_title="KIDNEYNODE",
                         evt_handlers=[(evt.EVT_ACCEPTED, record)])
    assert not alone.is_established and alone.is_aborted
    assert negotiated == [[(unknown, 0x03)]]

    ds = dcmread(get_testdata_file("MR_small.dcm"))
    odd = dcmread(get_testdata_file("MR_small.dcm"))
    odd.SOPClassUID = odd.file_meta.MediaStorageSOPClassUID = unknown
    odd.SOPInstanceUID = odd.file_meta.MediaStorageSOPInstanceUID = "1.2.826.0.1.3680043.8.498.7"
    ae = AE(ae_title="TESTSCU")
    ae.add_requested_context(unknown)
    ae.add_requested_context(ds.SOPClassUID)
    assoc = ae.associate("127.0.0.1", port, ae_title="KIDNEYNODE",
                         evt_handlers=[(evt.EVT_ACCEPTED, record)])
    assert assoc.is_established
    try:
        assert negotiated[-1] == [(unknown, 0x03)]
        assert [str(cx.abstract_syntax) for cx in assoc.accepted_contexts] == [ds.SOPClassUID]
        with pytest.raises(ValueError, match="No presentation context"):
            assoc.send_c_store(odd)
        assert int(assoc.send_c_store(ds).Status) == DimseStatus.SUCCESS
    finally:
        assoc.release()
    with store.sessions() as s:
        assert s.scalars(select(Instance.sop_instance_uid)).all() == [ds.SOPInstanceUID]


def test_an_scp_will_not_start_without_the_process_wide_dicom_settings(tmp_path, sqlite_url,
                                                                        monkeypatch):
    from pynetdicom import _config

    monkeypatch.setattr(_config, "STORE_RECV_CHUNKED_DATASET", False)
    with pytest.raises(RuntimeError, match="configure_reception"):
        _scp(tmp_path, sqlite_url).start()
