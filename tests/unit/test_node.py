"""Node start-up: the configured cortex model folder is checked before anything opens."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from service.cli import main
from service.config import CtSettings, DicomSettings, HttpSettings, ProcessingSettings, Settings
from service.config.settings import DatabaseSettings, StorageSettings
from service.errors import ModelFilesError
from service.node import Node
from tests.ct_cases import tiny_model_dir


def _settings(tmp_path: Path, models: Path | None) -> Settings:
    return Settings(
        dicom=DicomSettings(host="127.0.0.1", port=0),
        storage=StorageSettings(root=tmp_path / "storage"),
        database=DatabaseSettings(url=f"sqlite:///{tmp_path / 'index.sqlite'}"),
        processing=ProcessingSettings(device="cpu", ct=CtSettings(cortex_models_dir=models)),
        http=HttpSettings(enabled=False))


def test_a_tampered_weight_file_refuses_the_start(tmp_path, caplog):
    folder = tiny_model_dir(tmp_path / "m")
    (folder / "model_1.pt").write_bytes(b"tampered")
    node = Node(_settings(tmp_path, folder))
    with caplog.at_level(logging.ERROR), pytest.raises(ModelFilesError, match="sha256 mismatch"):
        node.start()
    assert "refusing to start: processing.ct.cortex_models_dir: " in caplog.text
    assert str(folder / "model_1.pt") in caplog.text
    assert not node.scheduler.running  # refused before the database, ports or jobs


def test_serve_exits_with_the_error(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("KIDNEY_NODE_DATABASE__URL", f"sqlite:///{tmp_path / 'index.sqlite'}")
    monkeypatch.setenv("KIDNEY_NODE_PROCESSING__CT__CORTEX_MODELS_DIR", str(tmp_path / "none"))
    monkeypatch.setenv("KIDNEY_NODE_HTTP__ENABLED", "false")
    monkeypatch.setenv("KIDNEY_NODE_DICOM__PORT", "0")
    assert main(["serve"]) == 2
    assert "no manifest: not a cortex model folder" in capsys.readouterr().err


def test_start_with_and_without_an_ensemble_says_which(tmp_path, caplog):
    for models in (None, tiny_model_dir(tmp_path / "m")):
        node = Node(_settings(tmp_path / ("with" if models else "without"), models))
        with caplog.at_level(logging.INFO):
            node.start()
        node.stop()
    assert "no cortex ensemble configured (processing.ct.cortex_models_dir)" in caplog.text
    assert "CT: cortex ensemble of 2 networks at" in caplog.text
