"""C-STORE SCU: send files to a destination, telling permanent from transient failures."""

from __future__ import annotations

import logging
import ssl
from collections.abc import Sequence
from pathlib import Path

from pydicom import dcmread
from pydicom import uid as tsuid
from pynetdicom import AE

from service.config import Destination, DestinationTls
from service.dicom.net import NODELAY_HANDLER, client_tls_context
from service.errors import DestinationError

__all__ = ["failure_is_permanent", "scu_ae", "send_files", "tls_args"]

logger = logging.getLogger(__name__)

_UNCOMPRESSED = (tsuid.ExplicitVRLittleEndian, tsuid.ImplicitVRLittleEndian)


def failure_is_permanent(status: int) -> bool:
    """Out of resources (0xA7xx) is worth retrying; a refusal of the data is not."""
    return not 0xA700 <= status <= 0xA7FF


def scu_ae(calling_aet: str, timeout: float) -> AE:
    """The node's AE as SCU, every timeout (association, DIMSE, network, connect) set."""
    ae = AE(ae_title=calling_aet)
    ae.acse_timeout = timeout
    ae.dimse_timeout = timeout
    ae.network_timeout = timeout
    ae.connection_timeout = timeout
    return ae


def tls_args(tls: DestinationTls | None, host: str, label: str
             ) -> tuple[ssl.SSLContext, str] | None:
    """pynetdicom's ``tls_args`` for an association to ``host`` (None: plain TCP).

    Raises
    ------
    DestinationError
        The CA, certificate or key cannot be loaded (transient: retried once fixed).
    """
    if tls is None:
        return None
    try:
        context = client_tls_context(tls.ca_file, cert_file=tls.cert_file,
                                     key_file=tls.key_file, check_hostname=tls.check_hostname)
    except OSError as exc:  # ssl.SSLError included
        # Retried (with back-off): the item goes out once the files are fixed.
        raise DestinationError(f"{label}: cannot load its TLS CA, certificate or key: {exc}",
                               permanent=False) from exc
    return context, host


def send_files(
    paths: Sequence[Path], *, destination: Destination, calling_aet: str, timeout: float
) -> dict[Path, DestinationError | None]:
    """Send ``paths`` over one association.

    Returns
    -------
    dict
        Each path mapped to None (stored, success or warning status) or the
        :class:`DestinationError` for that file.

    Raises
    ------
    DestinationError
        When no association could be made; ``permanent`` is True when the peer rejected
        it permanently (e.g. our AE title is not known there).
    """
    datasets = {p: dcmread(p) for p in paths}
    ae = scu_ae(calling_aet, timeout)
    for sop_class, ts in {(str(d.SOPClassUID), str(d.file_meta.TransferSyntaxUID))
                          for d in datasets.values()}:
        syntaxes = [ts] + [u for u in _UNCOMPRESSED if u != ts]
        ae.add_requested_context(sop_class, syntaxes)
    label = destination.label
    ae_title, host, port = destination.address
    assoc = ae.associate(host, port, ae_title=ae_title, evt_handlers=[NODELAY_HANDLER],
                         tls_args=tls_args(destination.tls, host, label))
    if not assoc.is_established:
        if assoc.is_rejected:
            result = assoc.acceptor.primitive.result if assoc.acceptor.primitive else None
            permanent = result == 0x01
            raise DestinationError(
                f"{label} rejected the association ({'permanent' if permanent else 'transient'}"
                f", result {result})", permanent=permanent)
        raise DestinationError(
            f"{label} unreachable or aborted the association"
            + ("" if destination.tls is None else " (or the TLS handshake failed: see the "
               "log for the certificate check)"), permanent=False)
    outcome: dict[Path, DestinationError | None] = {}
    try:
        for path, ds in datasets.items():
            uid = ds.SOPInstanceUID
            if not assoc.is_established:
                outcome[path] = DestinationError(f"{label}: association lost before {uid}",
                                                 permanent=False)
                continue
            try:
                status = assoc.send_c_store(ds)
            except ValueError as exc:  # no accepted context for this SOP class / syntax
                outcome[path] = DestinationError(f"{label} refused {uid}: {exc}", permanent=True)
                continue
            if not status or "Status" not in status:
                outcome[path] = DestinationError(
                    f"{label}: no response to C-STORE of {uid}", permanent=False)
                continue
            code = int(status.Status)
            if code == 0x0000 or 0xB000 <= code <= 0xBFFF:
                outcome[path] = None
                logger.debug("sent %s to %s (status 0x%04X)", uid, label, code)
            else:
                outcome[path] = DestinationError(
                    f"{label} answered 0x{code:04X} to C-STORE of {uid}",
                    permanent=failure_is_permanent(code))
    finally:
        if assoc.is_established:
            assoc.release()
    return outcome
