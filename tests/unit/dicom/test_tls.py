"""DICOM over TLS on the SCP, against DCMTK's TLS options, with a test CA made here."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
from pydicom.data import get_testdata_file
from sqlalchemy import func, select

from service.config import DicomSettings, TlsSettings
from service.db import Instance, make_engine, make_sessionmaker, upgrade
from service.dicom.scp import StorageSCP
from service.errors import ConfigError
from service.storage import InstanceStore
from tests.peers import dcmtk, peer_env
from tests.pki import make_pki


@pytest.fixture(scope="module")
def pki(tmp_path_factory) -> Path:
    """A test CA with a server and a client certificate, and a rogue CA with a client."""
    return make_pki(tmp_path_factory.mktemp("pki"))


@pytest.fixture
def tls_node(tmp_path, sqlite_url, pki):
    upgrade(sqlite_url)
    store = InstanceStore(tmp_path / "archive", make_sessionmaker(make_engine(sqlite_url)))
    started = []

    def start(**tls) -> int:
        settings = DicomSettings(host="127.0.0.1", port=0, tls=TlsSettings(
            cert_file=pki / "server.pem", key_file=pki / "server.key", **tls))
        scp = StorageSCP(settings, store)
        started.append(scp)
        return scp.start()

    yield start, store
    for scp in started:
        scp.stop()


def _dcmtk(tool: str, port: int, *options: str, files: tuple[str, ...] = ()):
    return subprocess.run([dcmtk(tool), *options, "-aec", "KIDNEYNODE", "127.0.0.1", str(port),
                           *files], env=peer_env(), capture_output=True, text=True, timeout=60)


def test_tls_with_server_certificate(tls_node, pki):
    start, store = tls_node
    port = start()
    trust = ("+tla", "+cf", str(pki / "ca.pem"))
    assert _dcmtk("echoscu", port, *trust).returncode == 0
    assert _dcmtk("echoscu", port).returncode != 0  # plain TCP to a TLS port
    # A client that checks the server against another CA refuses the node.
    assert _dcmtk("echoscu", port, "+tla", "+cf", str(pki / "rogue-ca.pem")).returncode != 0
    sent = _dcmtk("storescu", port, *trust, files=(get_testdata_file("MR_small.dcm"),))
    assert sent.returncode == 0, sent.stderr
    with store.sessions() as s:
        assert s.scalar(select(func.count(Instance.id))) == 1


def test_mutual_tls_requires_a_client_certificate_from_our_ca(tls_node, pki):
    start, _ = tls_node
    port = start(ca_file=pki / "ca.pem", require_client_cert=True)
    trust = ("+cf", str(pki / "ca.pem"))
    anonymous = _dcmtk("echoscu", port, "+tla", *trust)
    assert anonymous.returncode != 0
    client = _dcmtk("echoscu", port, "+tls", str(pki / "client.key"), str(pki / "client.pem"),
                    "-pw", *trust)
    assert client.returncode == 0, client.stderr
    rogue = _dcmtk("echoscu", port, "+tls", str(pki / "rogue.key"), str(pki / "rogue.pem"),
                   "-pw", *trust)
    assert rogue.returncode != 0


def test_unreadable_certificate_is_a_clear_configuration_error(tmp_path, sqlite_url, pki):
    store = InstanceStore(tmp_path / "archive", make_sessionmaker(make_engine(sqlite_url)))
    settings = DicomSettings(host="127.0.0.1", port=0, tls=TlsSettings(
        cert_file=tmp_path / "missing.pem", key_file=pki / "server.key"))
    with pytest.raises(ConfigError, match="dicom.tls"):
        StorageSCP(settings, store).start()
    with pytest.raises(ValueError, match="require_client_cert needs"):
        TlsSettings(cert_file=pki / "server.pem", key_file=pki / "server.key",
                    require_client_cert=True)


@pytest.fixture
def tls_storescp(tmp_path, pki):
    """DCMTK storescp on TLS with the test CA's server certificate; ``peer`` is its peer
    authentication option (-rc: a client certificate from our CA required; -ic: none)."""
    from tests.conftest import free_port
    from tests.peers import wait_port

    procs = []

    def start(peer: str) -> tuple[int, Path]:
        port, out = free_port(), tmp_path / f"received{len(procs)}"
        out.mkdir()
        procs.append(subprocess.Popen(
            [dcmtk("storescp"), "+tls", "server.key", "server.pem", "+cf", "ca.pem", peer,
             "-aet", "TLSDEST", "-od", str(out), str(port)], cwd=pki, env=peer_env(),
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
        wait_port(port)
        return port, out

    yield start
    for proc in procs:
        proc.terminate()
        proc.wait(10)


def _send_over_tls(port: int, pki: Path, **tls) -> Path:
    from service.config import Destination, DestinationTls
    from service.dicom.scu import send_files

    path = Path(get_testdata_file("CT_small.dcm"))
    destination = Destination(name="tls", ae_title="TLSDEST", host="127.0.0.1", port=port,
                              tls=DestinationTls(**tls))
    outcome = send_files([path], destination=destination, calling_aet="KIDNEYNODE", timeout=10)
    assert outcome == {path: None}
    return path


def test_results_go_out_over_tls_checked_against_the_ca(tls_storescp, pki):
    port, out = tls_storescp("-ic")
    _send_over_tls(port, pki, ca_file=pki / "ca.pem")
    assert len(list(out.iterdir())) == 1


def test_mutual_tls_as_scu_presents_the_node_certificate(tls_storescp, pki):
    from service.errors import DestinationError

    port, out = tls_storescp("-rc")
    with pytest.raises(DestinationError, match="TLS handshake failed") as refused:
        _send_over_tls(port, pki, ca_file=pki / "ca.pem")  # no client certificate
    assert refused.value.permanent is False
    _send_over_tls(port, pki, ca_file=pki / "ca.pem", cert_file=pki / "client.pem",
                   key_file=pki / "client.key")
    assert len(list(out.iterdir())) == 1


def test_a_destination_with_an_untrusted_certificate_gets_nothing(tls_storescp, pki):
    from service.errors import DestinationError

    port, out = tls_storescp("-ic")
    with pytest.raises(DestinationError, match="TLS handshake failed"):
        _send_over_tls(port, pki, ca_file=pki / "rogue-ca.pem")
    assert list(out.iterdir()) == []


def test_tls_destination_settings_are_checked(tmp_path, pki):
    from pydantic import ValidationError

    from service.config import Destination, DestinationTls
    from service.dicom.scu import send_files
    from service.errors import DestinationError

    with pytest.raises(ValidationError, match="both cert_file and key_file"):
        DestinationTls(ca_file=pki / "ca.pem", cert_file=pki / "client.pem")
    destination = Destination(name="tls", ae_title="TLSDEST", host="127.0.0.1", port=104,
                              tls=DestinationTls(ca_file=tmp_path / "missing.pem"))
    with pytest.raises(DestinationError, match="cannot load its TLS CA") as failed:
        send_files([Path(get_testdata_file("CT_small.dcm"))], destination=destination,
                   calling_aet="KIDNEYNODE", timeout=5)
    assert failed.value.permanent is False  # delivered once the files are fixed
