"""`kidney-node review` and `kidney-node history` on a populated index (SQLite)."""

import json

import pytest

from service.cli import main


@pytest.fixture
def database_url(sqlite_url):
    return sqlite_url


@pytest.fixture
def index_env(monkeypatch, populated_index, database_url):
    monkeypatch.setenv("KIDNEY_NODE_DATABASE__URL", database_url)
    monkeypatch.delenv("KIDNEY_NODE_CONFIG", raising=False)


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
