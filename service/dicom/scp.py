"""The node's SCP: C-ECHO, C-STORE of every storage SOP class, and query/retrieve
(C-FIND, C-GET, C-MOVE: service/dicom/retrieve.py)."""

from __future__ import annotations

import enum
import ipaddress
import logging
import socket
import socketserver
import threading
import types
from pathlib import Path

from pynetdicom import AE, _config, evt
from pynetdicom.events import Event
from pynetdicom.transport import ThreadedAssociationServer

from service.config import DicomSettings
from service.dicom.admission import UNLIMITED, Admission
from service.dicom.contexts import scp_contexts
from service.dicom.incoming import Incoming, discard_file
from service.dicom.incoming import install as install_incoming
from service.dicom.net import server_tls_context
from service.dicom.polling import ACTIVITY_HANDLER, IdleRelaxer
from service.dicom.retrieve import QueryRetrieve
from service.errors import (
    ConfigError,
    DatasetMismatchError,
    IngestError,
    ReplacementRefusedError,
    StorageError,
)
from service.metrics import NodeMetrics
from service.storage import InstanceStore
from service.storage.space import StorageHealth

__all__ = ["DimseStatus", "StorageSCP", "peer_allowed"]

logger = logging.getLogger(__name__)

class DimseStatus(enum.IntEnum):
    """DIMSE statuses the handlers answer (PS3.4 B.2.3, PS3.7 C.4.2)."""

    SUCCESS = 0x0000
    OUT_OF_RESOURCES = 0xA700
    NOT_AUTHORIZED = 0x0124
    DATASET_MISMATCH = 0xA900
    CANNOT_UNDERSTAND = 0xC000


class SharedPortServer(ThreadedAssociationServer):
    """An association server whose port other processes of this host may bind too
    (``dicom.reuse_port``): the kernel gives each new connection to one of them."""

    def server_bind(self) -> None:
        self.socket.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        super().server_bind()

    def shutdown(self) -> None:
        # Started by hand, not by AE.start_server: not in the AE's list of servers.
        socketserver.BaseServer.shutdown(self)
        self.server_close()


class StorageSCP:
    """Receives instances into an :class:`InstanceStore`.

    Each C-STORE is streamed by pynetdicom into a temporary file under the store's
    ``.incoming`` folder, moved into place and indexed; only then is Success sent.
    """

    def __init__(self, settings: DicomSettings, store: InstanceStore,
                 health: StorageHealth | None = None,
                 metrics: NodeMetrics | None = None) -> None:
        self.settings = settings
        self.store = store
        self.metrics = metrics or NodeMetrics()  # one of its own when the node gives none
        self.health = health or StorageHealth(store.incoming, min_free_mb=0)
        self.incoming = Incoming(store.incoming, self.health.refusal)
        self.query = QueryRetrieve(settings, store)
        self._server: ThreadedAssociationServer | None = None

    def _make_ae(self) -> AE:
        ae = AE(ae_title=self.settings.ae_title)
        for cx in scp_contexts():  # (the supported_contexts setter drops the roles)
            ae.add_supported_context(cx.abstract_syntax, cx.transfer_syntax,
                                     scu_role=cx.scu_role, scp_role=cx.scp_role)
        ae.require_called_aet = True
        if self.settings.allowed_calling_aets:
            ae.require_calling_aet = list(self.settings.allowed_calling_aets)
        ae.maximum_associations = UNLIMITED  # the node's own limits: self.admission
        ae.maximum_pdu_size = self.settings.max_pdu_size
        ae.network_timeout = self.settings.network_timeout_seconds
        ae.acse_timeout = self.settings.read_timeout_seconds
        ae.dimse_timeout = self.settings.network_timeout_seconds
        install_incoming(ae, self.incoming)
        return ae

    def start(self) -> int:
        """Start listening in background threads; returns the bound port.

        Raises
        ------
        RuntimeError
            :func:`~service.dicom.net.configure_reception` has not run: data sets would be
            received in memory, not into the archive's ``.incoming``.
        """
        if not _config.STORE_RECV_CHUNKED_DATASET:
            raise RuntimeError("the process-wide DICOM settings are not set: call "
                               "service.dicom.net.configure_reception() at start-up")
        ae = self._make_ae()
        settings = self.settings
        self.admission = Admission(
            max_associations=settings.max_associations,
            max_per_peer=settings.max_associations_per_peer,
            max_idle=settings.max_idle_connections, read_timeout=settings.read_timeout_seconds)
        handlers = [
            (evt.EVT_C_STORE, self.handle_store),
            (evt.EVT_C_ECHO, _handle_echo),
            (evt.EVT_C_FIND, self.query.handle_find),
            (evt.EVT_C_GET, self.query.handle_get),
            (evt.EVT_C_MOVE, self.query.handle_move),
            (evt.EVT_REJECTED, self._rejected),
            (evt.EVT_ACCEPTED, self._accepted),
            *self.admission.handlers,
            ACTIVITY_HANDLER,
        ]
        tls = self.settings.tls
        try:
            context = None if tls is None else server_tls_context(
                tls.cert_file, tls.key_file, ca_file=tls.ca_file,
                require_client_cert=tls.require_client_cert)
        except OSError as exc:  # ssl.SSLError included
            raise ConfigError(f"dicom.tls: cannot load the certificate, key or CA: {exc}") \
                from exc
        address = (self.settings.host, self.settings.port)
        if self.settings.reuse_port:
            self._server = ae.make_server(address, evt_handlers=handlers,
                                          ssl_context=context, server_class=SharedPortServer)
            threading.Thread(target=self._server.serve_forever, name="AcceptorServer",
                             daemon=True).start()
        else:
            self._server = ae.start_server(address, block=False, evt_handlers=handlers,
                                           ssl_context=context)
        self.admission.install(self._server)
        if self.settings.allowed_peer_addresses:
            networks = [ipaddress.ip_network(n, strict=False)
                        for n in self.settings.allowed_peer_addresses]
            # socketserver asks verify_request before handing a connection to a thread.
            self._server.verify_request = types.MethodType(  # type: ignore[method-assign]
                lambda _server, request, address: self._peer_allowed(address, networks),
                self._server)
        server = self._server
        self._relaxer = IdleRelaxer(lambda: server.active_associations, self._housekeeping)
        self._relaxer.start()
        port = self._server.server_address[1]
        logger.info("DICOM SCP %s listening on %s:%s%s (calling AEs allowed: %s; peers: %s)",
                    self.settings.ae_title, self.settings.host, port,
                    "" if tls is None else (" over TLS, client certificate "
                                            + ("required" if tls.require_client_cert
                                               else "not required")),
                    ", ".join(self.settings.allowed_calling_aets) or "any",
                    ", ".join(self.settings.allowed_peer_addresses) or "any")
        return port

    def stop(self) -> None:
        if self._server is not None:
            self._relaxer.stop()
            self._server.shutdown()
            self.admission.close_idle()
            self._server = None

    def _housekeeping(self) -> None:
        self.admission.reap()
        self.incoming.sweep()

    def _peer_allowed(self, address: tuple,
                      networks: list[ipaddress.IPv4Network | ipaddress.IPv6Network]) -> bool:
        allowed = peer_allowed(address, networks)
        if not allowed:
            self.metrics.association("refused")
        return allowed

    def _accepted(self, event: Event) -> None:
        self.metrics.association("accepted")

    def _rejected(self, event: Event) -> None:
        _log_rejected(event)
        self.metrics.association("rejected")

    def handle_store(self, event: Event) -> int:
        """EVT_C_STORE: store the streamed file; map our errors to DIMSE statuses."""
        status = self._store(event)
        self.metrics.store_answered(status)
        return status

    def _store(self, event: Event) -> int:
        sop_uid = str(event.request.AffectedSOPInstanceUID)
        sop_class = str(event.request.AffectedSOPClassUID)
        # The peer: the association's requestor, or on a C-GET the node made (prior
        # studies), the PACS that accepted it.
        peer = event.assoc.acceptor if event.assoc.is_requestor else event.assoc.requestor
        calling = peer.ae_title
        path = Path(event.dataset_path)
        failure = getattr(getattr(event.request, "_dataset_file", None), "failure", None)
        if failure is not None:  # the disk refused it, or the archive takes nothing now
            logger.error("could not store %s from %s: %s", sop_uid, calling, failure)
            self.health.record_fault(failure)
            discard_file(path)
            return DimseStatus.OUT_OF_RESOURCES
        try:
            self.store.store_file(path, expected_sop_uid=sop_uid, expected_sop_class=sop_class,
                                  calling_aet=calling,
                                  peer_address=str(peer.address))
        except ReplacementRefusedError as exc:
            logger.error("refused C-STORE of %s from %s: %s", sop_uid, calling, exc)
            return (DimseStatus.NOT_AUTHORIZED if exc.not_authorized
                    else DimseStatus.DATASET_MISMATCH)
        except DatasetMismatchError as exc:
            logger.error("refused C-STORE of %s from %s: %s", sop_uid, calling, exc)
            return DimseStatus.DATASET_MISMATCH
        except IngestError as exc:
            logger.error("refused C-STORE of %s from %s: %s", sop_uid, calling, exc)
            return DimseStatus.CANNOT_UNDERSTAND
        except StorageError as exc:
            logger.error("could not store %s from %s: %s", sop_uid, calling, exc)
            self.health.record_fault(str(exc))
            return DimseStatus.OUT_OF_RESOURCES
        finally:
            discard_file(path)
        self.health.clear_fault()
        return DimseStatus.SUCCESS


def peer_allowed(address: tuple, networks: list[ipaddress.IPv4Network | ipaddress.IPv6Network]
                 ) -> bool:
    """Whether the peer at ``address`` (host, port, ...) lies in one of ``networks``;
    a refusal is logged with the address."""
    try:
        ip = ipaddress.ip_address(address[0])
    except ValueError:
        ip = None
    if ip is not None and isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped:
        ip = ip.ipv4_mapped
    if ip is not None and any(ip in n for n in networks if n.version == ip.version):
        return True
    logger.warning("connection from %s:%s refused: address not in dicom.allowed_peer_addresses",
                   address[0], address[1] if len(address) > 1 else "?")
    return False


def _handle_echo(event: Event) -> int:
    logger.info("C-ECHO from %s", event.assoc.requestor.ae_title)
    return DimseStatus.SUCCESS


def _log_rejected(event: Event) -> None:
    req = event.assoc.requestor
    logger.warning("association rejected: calling AE %r from %s:%s, called AE %r",
                   req.ae_title, req.address, req.port, event.assoc.acceptor.ae_title)
