"""The query/retrieve SCP handlers (PS3.4 C): C-FIND, C-GET and C-MOVE over the archive,
patient root and study root. The SCP's own AE title and address checks apply, as for
C-STORE; C-MOVE sends only to ``dicom.move_destinations``. Each request that reaches
patient data is written to the access log (who: the calling AE title; from where; what:
the level and keys; one row per patient touched)."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from pathlib import Path

from pydicom import Dataset, dcmread
from pydicom import uid as tsuid
from pynetdicom import build_context
from pynetdicom.events import Event
from pynetdicom.presentation import PresentationContext

from service.config import DicomSettings
from service.db.audit import record_access
from service.dicom.query import Matches, QueryError, search
from service.storage import InstanceStore

__all__ = ["QueryRetrieve"]

logger = logging.getLogger(__name__)

PENDING = 0xFF00
CANCELLED = 0xFE00
#: Identifier does not match SOP Class (PS3.4 C.4.1.1.4).
BAD_IDENTIFIER = 0xA900
#: Unable to process.
UNABLE = 0xC000
_UNCOMPRESSED = (tsuid.ExplicitVRLittleEndian, tsuid.ImplicitVRLittleEndian)


def _contexts(matches: Matches) -> list[PresentationContext]:
    """Storage contexts for a C-MOVE's association: each SOP class with the transfer
    syntaxes it is stored in, then the uncompressed ones (at most 128 contexts)."""
    contexts = []
    for sop_class, stored in list(matches.syntaxes().items())[:128]:
        contexts.append(build_context(sop_class, [*sorted(stored - set(_UNCOMPRESSED)),
                                                  *_UNCOMPRESSED]))
    return contexts


class QueryRetrieve:
    def __init__(self, settings: DicomSettings, store: InstanceStore) -> None:
        self.settings = settings
        self.store = store

    def _search(self, event: Event, what: str) -> Matches:
        """The identifier's matches, logged and audited as read by the requestor."""
        identifier = event.identifier
        requestor = event.assoc.requestor
        with self.store.sessions.begin() as session:
            matches = search(session, identifier, self.store.root)
            keys = "; ".join(f"{e.keyword}={e.value}" for e in identifier
                             if e.keyword and e.keyword != "QueryRetrieveLevel" and e.value)
            for patient_id, studies in matches.patients().items():
                record_access(session, user=str(requestor.ae_title),
                              client=str(requestor.address), method=what.split()[0],
                              path=f"{what} {matches.level} {keys}".strip(),
                              patient_id=patient_id,
                              study_instance_uid=next(iter(studies)) if len(studies) == 1
                              else None, status=0)
        logger.info("%s %s from %s: %d match(es)", what, matches.level, requestor.ae_title,
                    len(matches.groups))
        return matches

    def handle_find(self, event: Event) -> Iterator[tuple[int, Dataset | None]]:
        """EVT_C_FIND: one pending answer per matching entity."""
        try:
            answers = self._search(event, "C-FIND").answers(event.identifier,
                                                            self.settings.ae_title)
        except QueryError as exc:
            logger.error("C-FIND from %s refused: %s", event.assoc.requestor.ae_title, exc)
            yield BAD_IDENTIFIER, None
            return
        for answer in answers:
            if event.is_cancelled:
                yield CANCELLED, None
                return
            yield PENDING, answer

    def _datasets(self, event: Event, paths: list[Path]) -> Iterator[object]:
        for path in paths:
            if event.is_cancelled:
                yield CANCELLED, None
                return
            try:
                yield PENDING, dcmread(path)
            except (OSError, ValueError) as exc:
                logger.error("cannot read %s for a retrieve: %s", path, exc)
                yield UNABLE, None
                return

    def handle_get(self, event: Event) -> Iterator[object]:
        """EVT_C_GET: the matching instances over the requestor's own association."""
        try:
            paths = self._search(event, "C-GET").paths(self.store.root)
        except QueryError as exc:
            logger.error("C-GET from %s refused: %s", event.assoc.requestor.ae_title, exc)
            yield 1
            yield BAD_IDENTIFIER, None
            return
        yield len(paths)
        yield from self._datasets(event, paths)

    def handle_move(self, event: Event) -> Iterator[object]:
        """EVT_C_MOVE: the matching instances to a known AE, over a new association."""
        target = str(event.move_destination.decode("ascii", "replace")
                     if isinstance(event.move_destination, bytes)
                     else event.move_destination).strip()
        known = {d.ae_title: d for d in self.settings.move_destinations}
        calling = event.assoc.requestor.ae_title
        if target not in known:
            logger.error("C-MOVE from %s to %r refused: not in dicom.move_destinations",
                         calling, target)
            yield None, None
            return
        try:
            matches = self._search(event, f"C-MOVE to {target}")
        except QueryError as exc:
            logger.error("C-MOVE from %s refused: %s", calling, exc)
            raise
        paths = matches.paths(self.store.root)
        dest = known[target]
        yield dest.host, dest.port, {"contexts": _contexts(matches) or None}
        yield len(paths)
        yield from self._datasets(event, paths)
