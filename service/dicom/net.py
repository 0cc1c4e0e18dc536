"""Socket options for the node's associations, as SCP and as SCU."""

from __future__ import annotations

import logging
import socket

from pynetdicom import evt
from pynetdicom.events import Event

__all__ = ["NODELAY_HANDLER", "set_nodelay"]

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
