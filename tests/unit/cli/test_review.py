"""`kidney-node review`, `history` and `audit` on a populated index (SQLite)."""

import json

from service.cli import main


def test_a_rejection_from_the_cli_leaves_the_trend_and_the_history_keeps_it(index_env,
                                                                            capsys):
    assert main(["review", "1.3", "reject", "--by", "Dr Who", "--comment", "bowel"]) == 0
    assert "kidney rejected by Dr Who" in capsys.readouterr().out
    assert main(["volumes", "P1", "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert [r["in_trend"] for r in rows] == [True, True, False]
    assert not rows[2]["alert"] and rows[2]["review_device"] == "CLI"
    assert main(["volumes", "P1"]) == 0
    assert "rejected by Dr Who" in capsys.readouterr().out
    assert main(["history", "P1"]) == 0
    table = capsys.readouterr().out.splitlines()
    assert "rejected" in table[-1] and "bowel" in table[-1] and "Dr Who" in table[-1]
    assert main(["history", "P1", "--json"]) == 0
    assert [h["kind"] for h in json.loads(capsys.readouterr().out)].count("automatic") == 4


def test_a_review_the_node_cannot_record_says_why(index_env, capsys):
    assert main(["review", "9.9", "accept", "--by", "R"]) == 1
    assert "not known" in capsys.readouterr().err
    assert main(["history", "nobody"]) == 1


def test_the_audit_lists_what_was_sent_and_who_read(index_env, populated_index, capsys):
    from sqlalchemy import select

    from service.db import Job, Study
    from service.db.audit import record_access
    from service.db.tables import OutboxItem, SendState

    with populated_index.begin() as session:
        job = session.scalar(select(Job).join(Study).where(Study.study_instance_uid == "1.1"))
        session.add(OutboxItem(job_pk=job.id, sop_instance_uid="1.1.9", path="x.dcm",
                               destination="pacs", ae_title="PACS", host="10.0.0.5", port=104,
                               state=SendState.FAILED, attempts=3, last_error="refused"))
        record_access(session, user="alice", client="10.0.0.9", method="GET",
                      path="/api/patients/P1/volumes", patient_id="P1",
                      study_instance_uid=None, status=200)
    assert main(["audit", "sent", "--study", "1.1", "--json"]) == 0
    (sent,) = json.loads(capsys.readouterr().out)
    assert (sent["destination"], sent["address"], sent["state"], sent["last_error"]) == (
        "pacs", "10.0.0.5:104", "failed", "refused")
    assert main(["audit", "sent", "--study", "1.2", "--json"]) == 0
    assert json.loads(capsys.readouterr().out) == []
    assert main(["audit", "access", "--patient", "P1"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 2 and "alice" in lines[1] and "/api/patients/P1/volumes" in lines[1]
    assert main(["audit", "access", "--user", "bob"]) == 0
    assert "nothing recorded" in capsys.readouterr().out
