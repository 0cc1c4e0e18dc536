"""Adaptive idle sleep of pynetdicom's DUL reactor on the node's associations.

When the reactor finds nothing to do it sleeps ``dul._run_loop_delay`` (1 ms by default),
which delays every PDU that arrives meanwhile and every response the node sends. While an
association carries data the node shortens that sleep to :data:`ACTIVE_POLL_S`; once it
has been quiet for :data:`IDLE_AFTER_S` the default comes back, so an association a peer
keeps open without sending costs what pynetdicom's own does (measured with one association
and its client in one process: 15.7 % of a core at 0.2 ms, 6.5 % at 1 ms).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterable

from pynetdicom import evt
from pynetdicom.association import Association
from pynetdicom.events import Event

__all__ = ["ACTIVE_POLL_S", "ACTIVITY_HANDLER", "IDLE_AFTER_S", "IDLE_POLL_S", "PENDING_POLL_S",
           "UNASSOCIATED_POLL_S", "IdleRelaxer", "mark_active", "mark_pending", "relax_idle"]

ACTIVE_POLL_S = 0.0002
IDLE_POLL_S = 0.001  # pynetdicom's default
IDLE_AFTER_S = 1.0
#: Sleep of a connection that has sent nothing yet (a peer sends its association request
#: at once: it waits at most this), and of one still without an association after
#: :data:`IDLE_AFTER_S` (idle or hostile: 64 of them cost ~1/50 of what they would at
#: the default sleep).
PENDING_POLL_S = 0.005
UNASSOCIATED_POLL_S = 0.05
_STAMP = "kidney_node_active_at"


def mark_active(event: Event) -> None:
    """Event handler (connection open, data received): poll fast on this association."""
    dul = event.assoc.dul
    setattr(dul, _STAMP, time.monotonic())
    if getattr(dul, "_run_loop_delay", None) != ACTIVE_POLL_S:
        dul._run_loop_delay = ACTIVE_POLL_S


ACTIVITY_HANDLER = (evt.EVT_DATA_RECV, mark_active)


def mark_pending(event: Event) -> None:
    """Event handler (connection open, as SCP): poll at :data:`PENDING_POLL_S` until the
    peer sends something."""
    dul = event.assoc.dul
    setattr(dul, _STAMP, time.monotonic())
    dul._run_loop_delay = PENDING_POLL_S


def _requested(assoc: Association) -> bool:
    return getattr(getattr(assoc, "requestor", None), "primitive", None) is not None


def relax_idle(associations: Iterable[Association], *, now: float | None = None) -> int:
    """Give the default sleep back to every association quiet for :data:`IDLE_AFTER_S`,
    :data:`UNASSOCIATED_POLL_S` to a connection where none has been requested; returns how
    many were relaxed now."""
    now = time.monotonic() if now is None else now
    relaxed = 0
    for assoc in associations:
        dul = assoc.dul
        stamp = getattr(dul, _STAMP, None)
        sleep = IDLE_POLL_S if _requested(assoc) else UNASSOCIATED_POLL_S
        if stamp is not None and now - stamp > IDLE_AFTER_S \
                and getattr(dul, "_run_loop_delay", None) != sleep:
            dul._run_loop_delay = sleep
            relaxed += 1
    return relaxed


class IdleRelaxer:
    """A daemon thread calling :func:`relax_idle` on ``associations()``, then ``also()``,
    twice a second."""

    def __init__(self, associations: Callable[[], Iterable[Association]],
                 also: Callable[[], None] | None = None) -> None:
        self._associations = associations
        self._also = also
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="dul-idle-relaxer",
                                        daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(5)

    def _run(self) -> None:
        while not self._stop.wait(IDLE_AFTER_S / 2):
            relax_idle(self._associations())
            if self._also is not None:
                self._also()
