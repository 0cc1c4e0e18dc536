"""The running node against peers that misbehave at the DICOM port (issue 18)."""

from __future__ import annotations

import socket
import subprocess
import time
from pathlib import Path

from tests.peers import NodeProcess, dcmtk, peer_env


def _rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise AssertionError(f"no VmRSS for process {pid}")


def _echo(node: NodeProcess, calling: str = "ECHOSCU") -> subprocess.CompletedProcess:
    return subprocess.run([dcmtk("echoscu"), "-aet", calling, "-aec", "KIDNEYNODE", "127.0.0.1",
                           str(node.dicom_port)], env=peer_env(), capture_output=True,
                          text=True, timeout=60)


def _header(pdu_type: int, length: int) -> bytes:
    return bytes([pdu_type, 0]) + length.to_bytes(4, "big")


def _closed_by_node(sock: socket.socket, within_s: float) -> bool:
    sock.settimeout(within_s)
    try:
        return sock.recv(1) == b""
    except TimeoutError:
        return False
    except ConnectionResetError:
        return True


def test_a_header_claiming_4_gib_costs_no_memory_and_the_node_still_answers(
        make_node, sqlite_url):
    """6 bytes announcing a 4 GiB PDU made the node allocate 4 GiB before any data came
    (RSS 965 -> 5,062 MB in the report). An association request of that length is now
    refused at its header; a P-DATA of that length (no maximum announced) costs only
    what arrives, however long the peer stalls."""
    node = make_node(sqlite_url)
    node.start()
    assert node.proc is not None
    assert _echo(node).returncode == 0  # the node's reception is warm
    before = _rss_mb(node.proc.pid)
    request = socket.create_connection(("127.0.0.1", node.dicom_port))
    stalled = socket.create_connection(("127.0.0.1", node.dicom_port))
    try:
        request.sendall(_header(0x01, 0xFFFFFFFF))
        stalled.sendall(_header(0x04, 0xFFFFFFFF) + b"\x00" * 1000)
        assert _closed_by_node(request, within_s=10), "an oversized request was read"
        time.sleep(1.0)
        grown = _rss_mb(node.proc.pid) - before
        assert grown < 50, f"node RSS grew by {grown:.0f} MB"
        echo = _echo(node)
        assert echo.returncode == 0, echo.stderr
    finally:
        request.close()
        stalled.close()
    assert "announced a PDU of type 0x01 and 4294967295 bytes" in node.log()
    assert node.proc.poll() is None


def test_a_p_data_longer_than_the_announced_maximum_is_refused(make_node, sqlite_url):
    """With ``dicom.max_pdu_size`` set, a P-DATA-TF longer than it (PS3.8 D.1) closes the
    connection before it is read."""
    node = make_node(sqlite_url)
    node.config["dicom"]["max_pdu_size"] = 16384
    node.start()
    with socket.create_connection(("127.0.0.1", node.dicom_port)) as sock:
        sock.sendall(_header(0x04, 16385))
        assert _closed_by_node(sock, within_s=10)
    assert "type 0x04 and 16385 bytes, more than the 16384" in node.log()
    assert _echo(node).returncode == 0


def _associate_rq(calling: bytes, called: bytes = b"KIDNEYNODE") -> bytes:
    """An A-ASSOCIATE-RQ PDU built by hand (PS3.8 9.3.2), Verification over Implicit VR
    Little Endian: a peer is free to put any bytes in its AE titles."""
    def item(kind: int, value: bytes) -> bytes:
        return bytes([kind, 0]) + len(value).to_bytes(2, "big") + value

    context = item(0x20, bytes([1, 0, 0, 0]) + item(0x30, b"1.2.840.10008.1.1")
                   + item(0x40, b"1.2.840.10008.1.2"))
    body = (b"\x00\x01\x00\x00" + called.ljust(16) + calling.ljust(16)[:16] + bytes(32)
            + item(0x10, b"1.2.840.10008.3.1.1.1") + context
            + item(0x50, item(0x51, (16384).to_bytes(4, "big"))))
    return _header(0x01, len(body)) + body


def test_a_calling_ae_title_cannot_forge_a_log_line(make_node, sqlite_url):
    """A calling AE title holding a newline was refused, but the newline reached the log
    and began a line of the peer's choosing."""
    node = make_node(sqlite_url, allowed_calling_aets=["STORESCU"])
    node.start()
    with socket.create_connection(("127.0.0.1", node.dicom_port)) as sock:
        sock.sendall(_associate_rq(b"X\nFORGED ERROR"))
        sock.settimeout(10)
        assert sock.recv(6)[:1] in (b"\x03", b"\x07")  # A-ASSOCIATE-RJ or A-ABORT
    node.wait_for(lambda: "FORGED" in node.log(), 10, "the refusal in the log")
    lines = node.log().splitlines()
    assert not [line for line in lines if line.startswith("FORGED")], lines[-5:]
    assert "X\\x0aFORGED ERROR" in node.log()
    assert _echo(node, calling="STORESCU").returncode == 0
