"""Query/retrieve SCU: C-FIND, C-MOVE and C-GET to the PACS (study root), for the
patient's earlier studies (service/priors)."""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass

from pydicom import Dataset
from pynetdicom import AE, build_role
from pynetdicom import evt as events
from pynetdicom.association import Association
from pynetdicom.events import Event
from pynetdicom.sop_class import (
    StudyRootQueryRetrieveInformationModelFind,
    StudyRootQueryRetrieveInformationModelGet,
    StudyRootQueryRetrieveInformationModelMove,
)

from service.config import PacsSettings
from service.dicom.contexts import accepted_transfer_syntaxes
from service.dicom.net import NODELAY_HANDLER
from service.dicom.scu import scu_ae, tls_args
from service.errors import DestinationError, PacsError

__all__ = ["RetrieveOutcome", "find", "get", "move"]

logger = logging.getLogger(__name__)

_PENDING = (0xFF00, 0xFF01)
#: Move destination unknown (PS3.4 C.4.2.1.5).
_MOVE_DESTINATION_UNKNOWN = 0xA801


@dataclass(frozen=True)
class RetrieveOutcome:
    """The final C-MOVE/C-GET response: status and sub-operation counts."""

    status: int
    completed: int
    failed: int
    warning: int

    @property
    def complete(self) -> bool:
        """Every instance arrived (success, or warning without failed sub-operations)."""
        return self.failed == 0 and (self.status == 0x0000 or 0xB000 <= self.status <= 0xBFFF)


@contextmanager
def _association(pacs: PacsSettings, ae: AE, what: str,
                 handlers: Iterable[tuple] = (), **kwargs: object) -> Iterator[Association]:
    try:
        tls = tls_args(pacs.tls, pacs.host, pacs.label)
    except DestinationError as exc:
        raise PacsError(str(exc)) from exc
    assoc = ae.associate(pacs.host, pacs.port, ae_title=pacs.ae_title, tls_args=tls,
                         evt_handlers=[NODELAY_HANDLER, *handlers], **kwargs)
    if not assoc.is_established:
        if assoc.is_rejected:
            result = assoc.acceptor.primitive.result if assoc.acceptor.primitive else None
            hint = ", permanent: is our AE title known there?" if result == 0x01 else ""
            raise PacsError(f"{pacs.label} rejected the {what} association (result {result}"
                            f"{hint})", permanent=result == 0x01)
        raise PacsError(f"{pacs.label} unreachable, or it aborted the {what} association")
    try:
        yield assoc
    finally:
        if assoc.is_established:
            assoc.release()


def find(pacs: PacsSettings, identifier: Dataset, *, calling_aet: str,
         timeout: float) -> list[Dataset]:
    """The PACS's answers to a study-root C-FIND.

    Raises
    ------
    PacsError
        No association, a failure status, or an answer cut short.
    """
    ae = scu_ae(calling_aet, timeout)
    ae.add_requested_context(StudyRootQueryRetrieveInformationModelFind)
    level = str(identifier.get("QueryRetrieveLevel", ""))
    answers: list[Dataset] = []
    with _association(pacs, ae, "C-FIND") as assoc:
        for status, answer in assoc.send_c_find(
                identifier, StudyRootQueryRetrieveInformationModelFind):
            if not status or "Status" not in status:
                raise PacsError(f"{pacs.label}: no answer to C-FIND at {level} level "
                                "(timed out or aborted)")
            code = int(status.Status)
            if code in _PENDING:
                if answer is not None:
                    answers.append(answer)
            elif code != 0x0000:
                raise PacsError(f"{pacs.label} answered 0x{code:04X} to C-FIND at {level} "
                                "level")
    return answers


def _outcome(pacs: PacsSettings, responses: Iterable[tuple[Dataset, Dataset | None]],
             what: str) -> RetrieveOutcome:
    final: Dataset | None = None
    for status, _ in responses:
        if not status or "Status" not in status:
            raise PacsError(f"{pacs.label}: no answer to {what} (timed out or aborted)")
        final = status
        if int(status.Status) not in _PENDING:
            break
    if final is None:
        raise PacsError(f"{pacs.label}: no answer to {what}")
    code = int(final.Status)
    if code == _MOVE_DESTINATION_UNKNOWN:
        raise PacsError(f"{pacs.label} does not know the move destination (0xA801): add the "
                        "node to its modalities, or set prior_studies.retrieve: get",
                        permanent=True)
    return RetrieveOutcome(
        status=code, completed=int(final.get("NumberOfCompletedSuboperations", 0) or 0),
        failed=int(final.get("NumberOfFailedSuboperations", 0) or 0),
        warning=int(final.get("NumberOfWarningSuboperations", 0) or 0))


def move(pacs: PacsSettings, identifier: Dataset, *, calling_aet: str, destination_aet: str,
         timeout: float) -> RetrieveOutcome:
    """C-MOVE of ``identifier``'s instances to ``destination_aet`` (the node itself).

    Raises
    ------
    PacsError
        No association, no final answer, or an unknown move destination.
    """
    ae = scu_ae(calling_aet, timeout)
    ae.add_requested_context(StudyRootQueryRetrieveInformationModelMove)
    with _association(pacs, ae, "C-MOVE") as assoc:
        return _outcome(pacs, assoc.send_c_move(
            identifier, destination_aet, StudyRootQueryRetrieveInformationModelMove),
            f"C-MOVE to {destination_aet}")


def get(pacs: PacsSettings, identifier: Dataset, *, calling_aet: str, timeout: float,
        sop_classes: Iterable[str], store: Callable[[Event], int],
        prepare: Callable[[AE], None] | None = None) -> RetrieveOutcome:
    """C-GET of ``identifier``'s instances over the node's own association: ``store``
    handles each C-STORE the PACS sends (the SCP's handler), for ``sop_classes`` in any
    transfer syntax the node decodes. ``prepare`` adjusts the AE before associating
    (e.g. to stream received data sets into the archive's ``.incoming``).

    Raises
    ------
    PacsError
        No association or no final answer.
    """
    ae = scu_ae(calling_aet, timeout)
    ae.add_requested_context(StudyRootQueryRetrieveInformationModelGet)
    syntaxes = accepted_transfer_syntaxes()
    roles = []
    for sop_class in sop_classes:
        ae.add_requested_context(sop_class, syntaxes)
        roles.append(build_role(sop_class, scp_role=True))
    if prepare is not None:
        prepare(ae)
    with _association(pacs, ae, "C-GET", [(events.EVT_C_STORE, store)],
                      ext_neg=roles) as assoc:
        return _outcome(pacs, assoc.send_c_get(
            identifier, StudyRootQueryRetrieveInformationModelGet), "C-GET")
