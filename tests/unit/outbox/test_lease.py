"""Several receivers drain one outbox (a scaled-out node): an item one sender is sending
is not taken by another; a sender that dies mid-send leaves it due again after the lease."""

import datetime as dt

import pytest

from service.config import Destination, SenderSettings
from service.db.tables import OutboxItem, SendState, utcnow
from service.outbox import sender
from service.outbox.sender import drain_outbox, enqueue

DEST = Destination(name="pacs", ae_title="PACS", host="127.0.0.1", port=104)
SETTINGS = SenderSettings(timeout_seconds=30)


def _queue(sessions, n):
    with sessions.begin() as s:
        for i in range(n):
            enqueue(s, sop_instance_uid=f"1.2.{i}", relpath=f"r/{i}.dcm",
                    destinations=[DEST], job_pk=None)


def _drain(sessions, tmp_path):
    return drain_outbox(sessions, storage_root=tmp_path, settings=SETTINGS,
                        calling_aet="KN", destinations=[DEST])


def test_an_item_being_sent_is_not_taken_by_another_sender(migrated_sessions, tmp_path,
                                                            monkeypatch):
    _queue(migrated_sessions, 3)
    for i in range(3):
        (tmp_path / "r").mkdir(exist_ok=True)
        (tmp_path / "r" / f"{i}.dcm").write_bytes(b"x")
    calls = []

    def send_files(paths, **_):
        calls.append(sorted(p.name for p in paths))
        if len(calls) == 1:  # while the first sender sends, a second one drains
            assert _drain(migrated_sessions, tmp_path) == 0
        return dict.fromkeys(paths)

    monkeypatch.setattr(sender, "send_files", send_files)
    assert _drain(migrated_sessions, tmp_path) == 3
    assert calls == [["0.dcm", "1.dcm", "2.dcm"]]  # the second sender sent nothing
    with migrated_sessions() as s:
        assert {(r.state, r.attempts) for r in s.query(OutboxItem)} == {(SendState.SENT, 1)}


def test_a_sender_that_died_mid_send_leaves_the_items_due_after_the_lease(
        migrated_sessions, tmp_path, monkeypatch):
    _queue(migrated_sessions, 1)

    def dies(paths, **_):
        raise SystemExit("killed")  # the process ends: nothing recorded

    monkeypatch.setattr(sender, "send_files", dies)
    (tmp_path / "r").mkdir()
    (tmp_path / "r" / "0.dcm").write_bytes(b"x")
    with pytest.raises(SystemExit):
        _drain(migrated_sessions, tmp_path)
    with migrated_sessions() as s:
        (item,) = s.query(OutboxItem).all()
        due = item.next_attempt_at.replace(tzinfo=dt.UTC) if item.next_attempt_at.tzinfo \
            is None else item.next_attempt_at
    lease = (due - utcnow()).total_seconds()
    assert 290 <= lease <= 300 and item.state is SendState.PENDING
