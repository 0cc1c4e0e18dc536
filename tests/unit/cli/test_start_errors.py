"""A careless configuration stops ``kidney-node serve`` at once, with a message naming the
key and never a traceback or a secret (issue 18). Run as the operator runs it."""

from __future__ import annotations

import os
import socket
import subprocess
from pathlib import Path

import pytest
import yaml

from tests.conftest import free_port
from tests.peers import NODE_BIN


def _serve(tmp_path: Path, changes: dict, env: dict | None = None,
           command: tuple[str, ...] = ("serve",)) -> subprocess.CompletedProcess:
    config = {"database": {"url": f"sqlite:///{tmp_path / 'index.sqlite'}"},
              "storage": {"root": str(tmp_path / "storage")},
              "dicom": {"host": "127.0.0.1", "port": free_port()},
              "http": {"host": "127.0.0.1", "port": free_port()},
              "processing": {"device": "cpu"}}
    for key, value in changes.items():
        section, _, name = key.rpartition(".")
        (config.setdefault(section, {}) if section else config)[name] = value
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(config))
    return subprocess.run([str(NODE_BIN), "--config", str(path), *command], cwd=tmp_path,
                          capture_output=True, text=True, timeout=120,
                          env={**os.environ, **(env or {})})


@pytest.mark.parametrize(("changes", "message"), [
    ({"processing.mr_pipeline": "mri-nothing"},
     "processing.mr_pipeline: unknown pipeline 'mri-nothing'; known: "),
    ({"processing.ct_pipeline": "ct-nothing"}, "processing.ct_pipeline: unknown pipeline"),
    ({"processing.device": "tpu"}, "processing.device: Value error, must be auto, cpu, cuda"),
    ({"log_level": "LOUD"}, "log_level: Value error, must be one of DEBUG, INFO, WARNING"),
    ({"storage.root": "/proc/kidney-node"}, "storage.root: cannot use /proc/kidney-node"),
    ({"database.url": "postgresql+psycopg://kn:s3cret@127.0.0.1:1/none"},
     "database.url: cannot open the database at postgresql+psycopg://kn:***@127.0.0.1:1/none"),
], ids=["mr-pipeline", "ct-pipeline", "device", "log-level", "storage-root", "database-down"])
def test_a_bad_setting_stops_the_start_naming_its_key(tmp_path, changes, message):
    run = _serve(tmp_path, changes)
    assert run.returncode == 2, run.stderr
    assert message in run.stderr
    assert "Traceback" not in run.stderr and "s3cret" not in run.stderr


def test_an_http_port_in_use_stops_the_start(tmp_path):
    """uvicorn, binding in its own thread, failed there and left the node running
    without its API."""
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen(1)
        port = taken.getsockname()[1]
        run = _serve(tmp_path, {"http.port": port})
    assert run.returncode == 2, run.stderr
    assert f"http.port: cannot listen on 127.0.0.1:{port}" in run.stderr
    assert "Traceback" not in run.stderr


def test_an_all_digit_token_from_the_environment_is_a_token_and_never_printed(tmp_path):
    digits = {"KIDNEY_NODE_HTTP__TOKEN": "4815162342108000"}
    ok = _serve(tmp_path, {"http.host": "0.0.0.0"}, env=digits, command=("db", "upgrade"))
    assert ok.returncode == 0, ok.stderr
    short = _serve(tmp_path, {"http.host": "0.0.0.0"},
                   env={"KIDNEY_NODE_HTTP__TOKEN": "48151623"}, command=("db", "upgrade"))
    assert short.returncode == 2
    assert "http.token: String should have at least 16 characters" in short.stderr
    assert "48151623" not in short.stderr


@pytest.mark.parametrize("command", ["receive", "worker"])
def test_the_scaled_out_roles_need_a_broker(tmp_path, command):
    run = _serve(tmp_path, {}, command=(command,))
    assert run.returncode == 2, run.stderr
    assert f"kidney-node {command} needs broker.url (amqp://...)" in run.stderr
    assert "Traceback" not in run.stderr


def test_a_worker_refuses_an_unknown_queue(tmp_path):
    run = _serve(tmp_path, {"broker.url": "amqp://kn:s3cret@127.0.0.1:1//"},
                 command=("worker", "--queues", "gpu,tpu"))
    assert run.returncode == 2, run.stderr
    assert "--queues: gpu and/or cpu, got 'gpu,tpu'" in run.stderr
    assert "s3cret" not in run.stderr
