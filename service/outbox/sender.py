"""The outbox: every result object is queued per destination and sent until delivered."""

from __future__ import annotations

import datetime as dt
import logging
from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path

from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from service.config import Destination, SenderSettings
from service.db.tables import OutboxItem, SendState, utcnow
from service.dicom.scu import send_files
from service.errors import DestinationError
from service.outbox.stow import stow_files

__all__ = ["backoff_seconds", "drain_outbox", "enqueue", "requeue_failed"]

logger = logging.getLogger(__name__)


def backoff_seconds(attempts: int, settings: SenderSettings) -> float:
    """Exponential back-off: initial × 2^(attempts-1), capped."""
    return min(settings.retry_initial_seconds * 2 ** max(attempts - 1, 0),
               settings.retry_max_seconds)


def enqueue(
    session: Session,
    *,
    sop_instance_uid: str,
    relpath: str,
    destinations: Sequence[Destination],
    job_pk: int | None,
) -> list[OutboxItem]:
    """Queue one stored object for every destination (once per destination). No commit."""
    items = []
    for dest in destinations:
        exists = session.scalar(select(OutboxItem.id).where(
            OutboxItem.sop_instance_uid == sop_instance_uid,
            OutboxItem.destination == dest.name))
        if exists is not None:
            continue
        ae_title, host, port = dest.address
        item = OutboxItem(job_pk=job_pk, sop_instance_uid=sop_instance_uid, path=relpath,
                          destination=dest.name, ae_title=ae_title, host=host, port=port)
        session.add(item)
        items.append(item)
    return items


def requeue_failed(session: Session, destination: str) -> int:
    """Put the items that failed permanently for ``destination`` back in the queue (once
    the cause is fixed: credentials, a refused AE title); how many. No commit."""
    rows = session.scalars(select(OutboxItem).where(
        OutboxItem.destination == destination, OutboxItem.state == SendState.FAILED)).all()
    for row in rows:
        row.state, row.next_attempt_at = SendState.PENDING, utcnow()
        logger.info("requeued %s for %s (it had failed: %s)", row.sop_instance_uid,
                    destination, row.last_error)
    return len(rows)


def drain_outbox(
    sessions: sessionmaker[Session],
    *,
    storage_root: Path,
    settings: SenderSettings,
    calling_aet: str,
    destinations: Sequence[Destination],
    batch: int = 50,
) -> int:
    """Send the items that are due, one association per destination; returns how many
    were delivered. Failures are recorded with a back-off (transient) or as FAILED
    (permanent, shown to the operator).

    Each item goes to its destination *as configured now*, found by name: its current
    address and AE title, and its TLS settings (an item queued before the destination
    moved follows it; the outbox row keeps where it was last sent). An item whose
    destination is no longer configured waits (back-off, with that reason as its last
    error) rather than going to an address the configuration no longer names; it goes
    out if the destination comes back.
    """
    configured = {dest.name: dest for dest in destinations}
    now = utcnow()
    # Leased: the items taken are not due again for a while, so another receiver's sender
    # (a scaled-out node) skips them; one that dies mid-send leaves them due once the
    # lease ends (sent again, same UIDs). SKIP LOCKED on PostgreSQL: two senders never
    # take the same row in the same moment.
    lease = dt.timedelta(seconds=max(300.0, 4 * settings.timeout_seconds))
    with sessions.begin() as session:
        due = session.scalars(
            select(OutboxItem)
            .where(OutboxItem.state == SendState.PENDING, OutboxItem.next_attempt_at <= now)
            .order_by(OutboxItem.id).limit(batch).with_for_update(skip_locked=True)).all()
        for item in due:
            item.next_attempt_at = now + lease
    groups: dict[str, list[OutboxItem]] = defaultdict(list)
    for item in due:
        groups[item.destination].append(item)
    delivered = 0
    for name, items in groups.items():
        paths = {storage_root / item.path: item for item in items}
        dest = configured.get(name)
        if dest is None:
            gone = DestinationError(f"destination {name!r} is no longer configured",
                                    permanent=False)
            delivered += _record(sessions, paths, dict.fromkeys(paths, gone), settings)
            continue
        missing = [p for p in paths if not p.exists()]
        try:
            outcome: dict[Path, DestinationError | None] = {
                p: DestinationError(f"file {p} of {paths[p].sop_instance_uid} is missing",
                                    permanent=True) for p in missing}
            present = [p for p in paths if p not in missing]
            if present and dest.dicomweb is not None:
                outcome.update(stow_files({p: paths[p].sop_instance_uid for p in present},
                                          destination=dest))
            elif present:
                outcome.update(send_files(present, destination=dest, calling_aet=calling_aet,
                                          timeout=settings.timeout_seconds))
        except DestinationError as exc:
            outcome = dict.fromkeys(paths, exc)
        delivered += _record(sessions, paths, outcome, settings, dest)
    return delivered


def _record(sessions: sessionmaker[Session], paths: dict[Path, OutboxItem],
            outcome: dict[Path, DestinationError | None], settings: SenderSettings,
            dest: Destination | None = None) -> int:
    delivered = 0
    now = utcnow()
    with sessions.begin() as session:
        for path, item in paths.items():
            row = session.get(OutboxItem, item.id)
            if row is None:
                continue
            row.attempts += 1
            if dest is not None:
                row.ae_title, row.host, row.port = dest.address
            error = outcome.get(path)
            if error is None:
                logger.info("sent %s to %s", row.sop_instance_uid,
                            row.destination if dest is None else dest.label)
                row.state = SendState.SENT
                row.sent_at = now
                row.last_error = None
                delivered += 1
            elif error.permanent:
                row.state = SendState.FAILED
                row.last_error = str(error)
                logger.error("giving up sending %s to %s: %s", row.sop_instance_uid,
                             row.destination, error)
            else:
                delay = backoff_seconds(row.attempts, settings)
                row.next_attempt_at = now + dt.timedelta(seconds=delay)
                row.last_error = str(error)
                logger.warning("sending %s to %s failed (attempt %d), retry in %.0f s: %s",
                               row.sop_instance_uid, row.destination, row.attempts, delay,
                               error)
    return delivered
