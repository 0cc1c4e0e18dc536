"""Socket options and TLS of the node's associations, as SCP and as SCU."""

from __future__ import annotations

import logging
import socket
import ssl
from pathlib import Path

import pydicom.config
from pynetdicom import _config, evt
from pynetdicom.events import Event
from pynetdicom.transport import AssociationSocket

from service.dicom.polling import mark_active

__all__ = ["NODELAY_HANDLER", "client_tls_context", "configure_reception", "server_tls_context",
           "set_nodelay"]

logger = logging.getLogger(__name__)


def set_nodelay(event: Event) -> None:
    """EVT_CONN_OPEN handler: disable Nagle's algorithm on the association's socket and
    start it on the short reactor sleep of :mod:`service.dicom.polling`.

    pynetdicom never sets TCP_NODELAY; without it, each small PDU can wait ~40 ms for
    the peer's delayed ACK.
    """
    mark_active(event)
    sock = getattr(getattr(event.assoc.dul, "socket", None), "socket", None)
    if sock is None:
        logger.warning("no socket on association %s to set TCP_NODELAY", event.assoc.name)
        return
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)


NODELAY_HANDLER = (evt.EVT_CONN_OPEN, set_nodelay)


def _recv_exactly(self: AssociationSocket, nr_bytes: int) -> bytearray:
    """``nr_bytes`` from the association's socket, read straight into one buffer (fewer
    system calls and copies than pynetdicom's 4 KiB reads); fewer bytes when the peer
    closes the connection first, as pynetdicom's own ``recv``."""
    buffer = bytearray(nr_bytes)
    view = memoryview(buffer)
    received = 0
    while received < nr_bytes:
        n = self.socket.recv_into(view[received:], nr_bytes - received)
        if n == 0:
            break
        received += n
    view.release()
    if received < nr_bytes:
        del buffer[received:]
    return buffer


def configure_reception() -> None:
    """Process-wide switches for fast reception (measured by ``benchmarks/ingest.py``):

    - every pynetdicom association socket reads PDUs with :func:`_recv_exactly`;
    - pynetdicom's standard logging handlers, which format every PDU and DIMSE message,
      are not bound while the ``pynetdicom`` logger is above INFO (the node keeps it at
      WARNING; see :mod:`service.logs`);
    - pydicom does not validate values on reading: a wrong value is the sender's, the
      node keeps it as received and checks what it uses.
    """
    if AssociationSocket.recv is not _recv_exactly:
        AssociationSocket.recv = _recv_exactly  # type: ignore[method-assign]
    if not logging.getLogger("pynetdicom").isEnabledFor(logging.INFO):
        _config.LOG_HANDLER_LEVEL = "none"
    pydicom.config.settings.reading_validation_mode = pydicom.config.IGNORE


def server_tls_context(cert_file: Path, key_file: Path, *, ca_file: Path | None,
                       require_client_cert: bool) -> ssl.SSLContext:
    """TLS context of the SCP: TLS 1.2 or newer, the node's certificate and key; with
    ``require_client_cert`` a peer must present a certificate signed by ``ca_file``.

    Raises
    ------
    OSError, ssl.SSLError
        When a file is missing or the key does not match the certificate.
    """
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.load_cert_chain(certfile=str(cert_file), keyfile=str(key_file))
    if ca_file is not None:
        context.load_verify_locations(cafile=str(ca_file))
    context.verify_mode = ssl.CERT_REQUIRED if require_client_cert else (
        ssl.CERT_OPTIONAL if ca_file is not None else ssl.CERT_NONE)
    return context


def client_tls_context(ca_file: Path, *, cert_file: Path | None = None,
                       key_file: Path | None = None, check_hostname: bool = True
                       ) -> ssl.SSLContext:
    """TLS context of the node as SCU: TLS 1.2 or newer, the peer's certificate verified
    against ``ca_file`` (and its name against the host when ``check_hostname``); the
    node's own certificate for mutual TLS when ``cert_file``/``key_file`` are given.

    Raises
    ------
    OSError, ssl.SSLError
        When a file is missing or the key does not match the certificate.
    """
    context = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=str(ca_file))
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.check_hostname = check_hostname
    if cert_file is not None:
        context.load_cert_chain(certfile=str(cert_file),
                                keyfile=None if key_file is None else str(key_file))
    return context
