"""The DUL reactor polls fast while an association carries data, at pynetdicom's default
once it has been quiet."""

from __future__ import annotations

import time
from types import SimpleNamespace

from pynetdicom import AE
from pynetdicom.sop_class import Verification

from service.config import DicomSettings
from service.db import make_engine, make_sessionmaker, upgrade
from service.dicom.polling import (
    ACTIVE_POLL_S,
    IDLE_AFTER_S,
    IDLE_POLL_S,
    PENDING_POLL_S,
    UNASSOCIATED_POLL_S,
    relax_idle,
)
from service.dicom.scp import StorageSCP
from service.storage import InstanceStore


def _assoc(delay: float, stamp: float | None, *, requested: bool = True) -> SimpleNamespace:
    dul = SimpleNamespace(_run_loop_delay=delay)
    if stamp is not None:
        dul.kidney_node_active_at = stamp
    primitive = object() if requested else None
    return SimpleNamespace(dul=dul, requestor=SimpleNamespace(primitive=primitive))


def test_only_associations_quiet_for_long_enough_are_relaxed():
    now = 100.0
    busy = _assoc(ACTIVE_POLL_S, now - IDLE_AFTER_S / 2)
    quiet = _assoc(ACTIVE_POLL_S, now - IDLE_AFTER_S * 2)
    unknown = _assoc(ACTIVE_POLL_S, None)  # not one of the node's: left alone
    assert relax_idle([busy, quiet, unknown], now=now) == 1
    assert busy.dul._run_loop_delay == ACTIVE_POLL_S
    assert quiet.dul._run_loop_delay == IDLE_POLL_S
    assert unknown.dul._run_loop_delay == ACTIVE_POLL_S
    assert relax_idle([quiet], now=now) == 0  # already relaxed


def test_a_quiet_connection_without_an_association_sleeps_longest():
    """64 idle connections at the default sleep would cost several cores (issue 18)."""
    now = 100.0
    fresh = _assoc(PENDING_POLL_S, now - IDLE_AFTER_S / 2, requested=False)
    idle = _assoc(PENDING_POLL_S, now - IDLE_AFTER_S * 2, requested=False)
    assert relax_idle([fresh, idle], now=now) == 1
    assert fresh.dul._run_loop_delay == PENDING_POLL_S
    assert idle.dul._run_loop_delay == UNASSOCIATED_POLL_S > IDLE_POLL_S


def test_an_open_quiet_association_goes_back_to_the_default_sleep(tmp_path, sqlite_url):
    upgrade(sqlite_url)
    store = InstanceStore(tmp_path / "archive", make_sessionmaker(make_engine(sqlite_url)))
    scp = StorageSCP(DicomSettings(host="127.0.0.1", port=0), store)
    port = scp.start()
    ae = AE(ae_title="PEER")
    ae.add_requested_context(Verification)
    assoc = ae.associate("127.0.0.1", port, ae_title="KIDNEYNODE")
    try:
        assert assoc.is_established
        assert assoc.send_c_echo().Status == 0x0000
        (served,) = scp._server.active_associations
        assert served.dul._run_loop_delay == ACTIVE_POLL_S
        deadline = time.monotonic() + IDLE_AFTER_S * 4
        while served.dul._run_loop_delay != IDLE_POLL_S and time.monotonic() < deadline:
            time.sleep(0.05)
        assert served.dul._run_loop_delay == IDLE_POLL_S
        assert assoc.send_c_echo().Status == 0x0000  # data again: fast again
        assert served.dul._run_loop_delay == ACTIVE_POLL_S
    finally:
        assoc.release()
        scp.stop()
