"""Socket options and TLS of the node's associations, as SCP and as SCU."""

from __future__ import annotations

import logging
import socket
import ssl
from pathlib import Path

from pynetdicom import evt
from pynetdicom.events import Event

__all__ = ["NODELAY_HANDLER", "server_tls_context", "set_nodelay"]

logger = logging.getLogger(__name__)


def set_nodelay(event: Event) -> None:
    """EVT_CONN_OPEN handler: disable Nagle's algorithm on the association's socket.

    pynetdicom never sets TCP_NODELAY; without it, each small PDU can wait ~40 ms for
    the peer's delayed ACK.
    """
    sock = getattr(getattr(event.assoc.dul, "socket", None), "socket", None)
    if sock is None:
        logger.warning("no socket on association %s to set TCP_NODELAY", event.assoc.name)
        return
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)


NODELAY_HANDLER = (evt.EVT_CONN_OPEN, set_nodelay)


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
