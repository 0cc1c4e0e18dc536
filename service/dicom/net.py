"""Socket options and TLS of the node's associations, as SCP and as SCU."""

from __future__ import annotations

import logging
import socket
import ssl
import time
from pathlib import Path

import pydicom.config
from pynetdicom import _config, evt
from pynetdicom.events import Event
from pynetdicom.transport import AssociationSocket

from service.dicom.polling import mark_active

__all__ = ["CONTROL_PDU_LIMIT", "MIN_RATE", "NODELAY_HANDLER", "PduTooLargeError",
           "client_tls_context", "configure_reception", "disable_nagle", "pdu_limit",
           "server_tls_context", "set_nodelay"]

logger = logging.getLogger(__name__)


def set_nodelay(event: Event) -> None:
    """EVT_CONN_OPEN handler: disable Nagle's algorithm on the association's socket and
    start it on the short reactor sleep of :mod:`service.dicom.polling`.

    pynetdicom never sets TCP_NODELAY; without it, each small PDU can wait ~40 ms for
    the peer's delayed ACK.
    """
    mark_active(event)
    disable_nagle(event)


def disable_nagle(event: Event) -> None:
    """Set TCP_NODELAY on the socket of ``event``'s association."""
    sock = getattr(getattr(event.assoc.dul, "socket", None), "socket", None)
    if sock is None:
        logger.warning("no socket on association %s to set TCP_NODELAY", event.assoc.name)
        return
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)


NODELAY_HANDLER = (evt.EVT_CONN_OPEN, set_nodelay)


#: Largest PDU other than P-DATA-TF the node reads (bytes). Association requests,
#: acceptances and the fixed-size PDUs are a few kilobytes (128 presentation contexts of
#: ten transfer syntaxes each come to about 40 KB).
CONTROL_PDU_LIMIT = 1 << 20
#: The PDU body is read into a buffer that grows with what has arrived, from this size
#: (bytes): a peer that announces a length and sends nothing costs nothing.
_FIRST_READ = 1 << 16
_P_DATA_TF = 0x04
#: Slowest sustained rate (bytes/s) at which a PDU may arrive once begun.
MIN_RATE = 64 * 1024


class PduTooLargeError(ConnectionError):
    """A peer announced a PDU longer than the node accepts; the connection is closed."""


def pdu_limit(pdu_type: int, maximum_pdu_size: int) -> int | None:
    """Longest PDU body (bytes) the node reads for ``pdu_type``; ``None``: no limit.

    A P-DATA-TF may be as long as the Maximum Length the node announced
    (``maximum_pdu_size``, PS3.8 D.1; 0 announces none); every other PDU at most
    :data:`CONTROL_PDU_LIMIT`.
    """
    if pdu_type == _P_DATA_TF:
        return maximum_pdu_size or None
    return CONTROL_PDU_LIMIT


def _recv_exactly(self: AssociationSocket, nr_bytes: int) -> bytearray:
    """``nr_bytes`` from the association's socket, read straight into one buffer (fewer
    system calls and copies than pynetdicom's 4 KiB reads); fewer bytes when the peer
    closes the connection first, as pynetdicom's own ``recv``.

    With a time-out on the socket (the node's SCP sets ``dicom.read_timeout_seconds``),
    each read waits at most that long, and the whole PDU must arrive within it plus one
    second per :data:`MIN_RATE` bytes: a peer that trickles a PDU byte by byte is
    dropped (:class:`TimeoutError`, which pynetdicom answers by closing the connection).

    pynetdicom reads each PDU as its 6-byte header, then the length that header
    announces: the header's type is kept on the socket, and a body longer than
    :func:`pdu_limit` allows is refused (:class:`PduTooLargeError`, which pynetdicom
    answers by closing the connection) before anything is allocated. The buffer grows as
    data arrives, never ahead of it by more than its own size.
    """
    header = nr_bytes == 6 and getattr(self, "_kn_pdu_type", None) is None
    if not header:
        pdu_type = getattr(self, "_kn_pdu_type", None)
        self._kn_pdu_type = None  # type: ignore[attr-defined]
        if pdu_type is not None:
            limit = pdu_limit(pdu_type, int(getattr(self.assoc.ae, "maximum_pdu_size", 0)))
            if limit is not None and nr_bytes > limit:
                logger.warning("peer %s announced a PDU of type 0x%02X and %d bytes, more "
                               "than the %d the node accepts: connection closed",
                               _peer(self), pdu_type, nr_bytes, limit)
                raise PduTooLargeError(f"PDU of {nr_bytes} bytes refused (limit {limit})")
    budget = self.socket.gettimeout()
    deadline = None if budget is None else time.monotonic() + budget + nr_bytes / MIN_RATE
    buffer = bytearray(min(nr_bytes, _FIRST_READ))
    received = 0
    while received < nr_bytes:
        if received == len(buffer):
            buffer.extend(bytes(min(len(buffer), nr_bytes - len(buffer))))
        with memoryview(buffer) as view:
            n = self.socket.recv_into(view[received:], len(buffer) - received)
        if n == 0:
            break
        received += n
        if deadline is not None and received < nr_bytes and time.monotonic() > deadline:
            logger.warning("peer %s sent %d of %d bytes of a PDU in %.0f s: connection "
                           "closed", _peer(self), received, nr_bytes,
                           budget + nr_bytes / MIN_RATE)
            raise TimeoutError(f"PDU of {nr_bytes} bytes not received in time")
    if received < nr_bytes:
        del buffer[received:]
    if header:
        self._kn_pdu_type = buffer[0] if received == 6 else None  # type: ignore[attr-defined]
    return buffer


def _peer(sock: AssociationSocket) -> str:
    try:
        host, port = sock.socket.getpeername()[:2]
    except OSError:
        return "(gone)"
    return f"{host}:{port}"


def configure_reception() -> None:
    """The process-wide DICOM settings, all here, set once at start-up (the node's
    :class:`~service.node.Node`; tests that run an SCP of their own call it too). For
    fast, safe reception (measured by ``benchmarks/ingest.py``):

    - pynetdicom streams each received data set to a file (chunked reception), which
      :mod:`service.dicom.incoming` supplies in the archive's ``.incoming``;
    - every pynetdicom association socket reads PDUs with :func:`_recv_exactly`;
    - pynetdicom's standard logging handlers, which format every PDU and DIMSE message,
      are not bound while the ``pynetdicom`` logger is above INFO (the node keeps it at
      WARNING; see :mod:`service.logs`);
    - pydicom does not validate values on reading: a wrong value is the sender's, the
      node keeps it as received and checks what it uses.
    """
    _config.STORE_RECV_CHUNKED_DATASET = True
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
