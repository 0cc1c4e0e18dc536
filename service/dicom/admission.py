"""Who may hold the node's DICOM port, and for how long.

pynetdicom counts every open connection against ``maximum_associations``, from its
first byte, including connections that never request an association and those it has
already rejected, and the sockets it accepts have no read time-out. A few idle or stalled
peers could therefore lock the port. The node instead:

- counts only *live* associations (an A-ASSOCIATE-RQ received and not rejected, aborted
  or released) against ``dicom.max_associations`` and, per peer address, against
  ``dicom.max_associations_per_peer``; a request beyond either is rejected (transient,
  local limit exceeded, PS3.8 9.3.4);
- keeps at most ``dicom.max_idle_connections`` other connections (not yet requested, or
  rejected and not yet closed by the peer): a new connection closes the oldest of them;
- gives every accepted socket ``dicom.read_timeout_seconds`` as its time-out, so a peer
  that stops in the middle of a PDU (see :func:`service.dicom.net._recv_exactly`) or of a
  TLS handshake is dropped;
- does the TLS handshake in the connection's own thread, not in the thread that accepts
  connections, so a peer that never completes one blocks nobody else.
"""

from __future__ import annotations

import logging
import socket
import ssl
import threading
import time
import types
from dataclasses import dataclass

from pynetdicom import evt
from pynetdicom.association import Association
from pynetdicom.events import Event
from pynetdicom.transport import AssociationServer, ThreadedAssociationServer

from service.dicom.net import disable_nagle
from service.dicom.polling import mark_pending

__all__ = ["UNLIMITED", "Admission"]

logger = logging.getLogger(__name__)

#: Given to pynetdicom's own ``maximum_associations``, which the node replaces.
UNLIMITED = 1 << 20
#: A-ASSOCIATE-RJ: rejected transient, service provider (presentation), local limit exceeded.
_LOCAL_LIMIT = (0x02, 0x03, 0x02)
#: A connection's DUL leaves its idle state (Sta1) within milliseconds of the connection
#: opening; back in Sta1 after this long (seconds), the connection is over.
_SETTLED_S = 1.0


@dataclass(eq=False)
class _Connection:
    peer: str
    opened: float
    sock: socket.socket
    assoc: Association | None = None

    @property
    def live(self) -> bool:
        """An association has been requested on it and is not over."""
        assoc = self.assoc
        return (assoc is not None and assoc.requestor.primitive is not None
                and not (assoc.is_rejected or assoc.is_aborted or assoc.is_released))

    @property
    def closed(self) -> bool:
        return self.sock.fileno() == -1


def _host(address: tuple | str) -> str:
    host = address[0] if isinstance(address, tuple) else str(address)
    return host.removeprefix("::ffff:")


class Admission:
    """Connection and association limits of one SCP (see the module docstring)."""

    def __init__(self, *, max_associations: int, max_per_peer: int, max_idle: int,
                 read_timeout: float) -> None:
        self.max_associations = max_associations
        self.max_per_peer = max_per_peer
        self.max_idle = max_idle
        self.read_timeout = read_timeout
        self._lock = threading.Lock()
        self._connections: list[_Connection] = []
        self._tls: ssl.SSLContext | None = None

    @property
    def handlers(self) -> list[tuple]:
        """pynetdicom event handlers to bind on the server."""
        return [(evt.EVT_CONN_OPEN, self._on_open), (evt.EVT_CONN_CLOSE, self._on_close),
                (evt.EVT_REQUESTED, self._on_requested)]

    def install(self, server: ThreadedAssociationServer) -> None:
        """Take over how ``server`` accepts connections (before it serves any)."""
        self._tls = server.ssl_context
        admit_next = server.process_request
        server.get_request = types.MethodType(self._accept, server)  # type: ignore[method-assign]
        server.process_request = types.MethodType(  # type: ignore[method-assign]
            lambda srv, request, address: self._admit(srv, request, address, admit_next),
            server)
        server.finish_request = types.MethodType(self._handshake, server)  # type: ignore[method-assign]

    def close_idle(self) -> int:
        """Close every connection that holds no live association (at shutdown)."""
        with self._lock:
            idle = [c for c in self._connections if not c.live]
        for conn in idle:
            self._close(conn, "the node is stopping")
        return len(idle)

    # -- the accepting thread -----------------------------------------------------------
    def _accept(self, server: AssociationServer) -> tuple[socket.socket, tuple]:
        client, address = server.socket.accept()
        client.settimeout(self.read_timeout)
        return client, address

    def _admit(self, server: ThreadedAssociationServer, request: socket.socket,
               address: tuple, admit_next: types.MethodType) -> None:
        conn = _Connection(peer=_host(address), opened=time.monotonic(), sock=request)
        with self._lock:
            self._prune()
            idle = sorted((c for c in self._connections if not c.live),
                          key=lambda c: c.opened)
            evicted = idle[:max(0, len(idle) + 1 - self.max_idle)]
            for old in evicted:
                self._connections.remove(old)
            self._connections.append(conn)
        for old in evicted:
            self._close(old, f"{self.max_idle} connections without an association are "
                             f"open (dicom.max_idle_connections); a new one came from "
                             f"{conn.peer}")
        admit_next(request, address)

    # -- the connection's thread --------------------------------------------------------
    def _handshake(self, server: ThreadedAssociationServer, request: socket.socket,
                   address: tuple) -> None:
        if self._tls is not None:
            with self._lock:  # wrapping detaches ``request``: swap them in one step
                wrapped = self._tls.wrap_socket(request, server_side=True,
                                                do_handshake_on_connect=False)
                for conn in self._connections:
                    if conn.sock is request:
                        conn.sock = wrapped
            try:
                wrapped.do_handshake()  # bounded by the socket's read time-out
            except (OSError, ValueError) as exc:  # ssl.SSLError and time-outs included
                logger.warning("TLS handshake with %s failed: %s", _host(address), exc)
                self._forget(wrapped)
                wrapped.close()
                return
            request = wrapped
        AssociationServer.finish_request(server, request, address)

    # -- association events --------------------------------------------------------------
    def _on_open(self, event: Event) -> None:
        mark_pending(event)
        disable_nagle(event)
        sock = getattr(event.assoc.dul.socket, "socket", None)
        with self._lock:
            for conn in self._connections:
                if conn.sock is sock:
                    conn.assoc = event.assoc
                    return
        logger.warning("connection from %s is not tracked by the node's admission",
                       event.address)

    def _on_close(self, event: Event) -> None:
        with self._lock:
            self._connections = [c for c in self._connections if c.assoc is not event.assoc]

    def _on_requested(self, event: Event) -> None:
        assoc = event.assoc
        with self._lock:
            self._prune()
            mine = next((c for c in self._connections if c.assoc is assoc), None)
            peer = mine.peer if mine is not None else _host(assoc.requestor.address)
            others = [c for c in self._connections if c.live and c.assoc is not assoc]
            from_peer = sum(c.peer == peer for c in others)
        if len(others) >= self.max_associations:
            why = f"{len(others)} associations are open (dicom.max_associations)"
        elif from_peer >= self.max_per_peer:
            why = f"{from_peer} associations from {peer} are open " \
                  "(dicom.max_associations_per_peer)"
        else:
            return
        logger.warning("association from %s (calling AE %r) rejected, local limit "
                       "exceeded: %s", peer, assoc.requestor.primitive.calling_ae_title, why)
        assoc.acse.send_reject(*_LOCAL_LIMIT)
        assoc.kill()

    # -- helpers ---------------------------------------------------------------------------
    def reap(self) -> None:
        """Forget connections that are over (called twice a second)."""
        with self._lock:
            self._prune()

    def _prune(self) -> None:
        """Forget connections that are over (call with the lock held).

        pynetdicom's thread of a connection closed before its association request waits
        ``acse_timeout`` for that request all the same (and does not report the close):
        it is woken here, so that a flood of short connections leaves no threads behind.
        """
        now = time.monotonic()
        kept = []
        for conn in self._connections:
            assoc = conn.assoc
            over = conn.closed or (
                assoc is not None and now - conn.opened > _SETTLED_S
                and assoc.dul.state_machine.current_state == "Sta1")
            if over:
                _wake(conn)
            else:
                kept.append(conn)
        self._connections = kept

    def _forget(self, sock: socket.socket) -> None:
        with self._lock:
            self._connections = [c for c in self._connections if c.sock is not sock]

    def _close(self, conn: _Connection, why: str) -> None:
        logger.warning("closed the connection from %s open %.1f s without an association: "
                       "%s", conn.peer, time.monotonic() - conn.opened, why)
        try:
            # The plain socket's shutdown (also for a TLS socket, whose own would drop
            # its TLS state under the thread reading it): that thread sees the end of the
            # connection and pynetdicom closes it.
            socket.socket.shutdown(conn.sock, socket.SHUT_RDWR)
        except OSError as exc:
            logger.info("connection from %s already gone: %s", conn.peer, exc)
        _wake(conn)


def _wake(conn: _Connection) -> None:
    """End the wait of pynetdicom's association thread for a request that cannot come
    any more (``None`` is read as "no request within acse_timeout")."""
    if conn.assoc is not None and conn.assoc.requestor.primitive is None:
        conn.assoc.dul.to_user_queue.put(None)
