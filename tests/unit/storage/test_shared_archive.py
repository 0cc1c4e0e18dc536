"""An archive shared by several processes (a scaled-out node): each keeps its partial
files in its own folder, and a start clears only its own and those of this host's
processes that are gone."""

import os
import socket
import subprocess
import sys

from service.db import make_engine, make_sessionmaker, upgrade
from service.storage import InstanceStore
from service.storage.layout import INCOMING_DIR


def test_each_process_clears_its_own_and_the_dead_ones_partial_files(tmp_path, sqlite_url):
    upgrade(sqlite_url)
    engine = make_engine(sqlite_url)
    try:
        store = InstanceStore(tmp_path / "archive", make_sessionmaker(engine), shared=True)
        incoming = tmp_path / "archive" / INCOMING_DIR
        assert store.incoming == incoming / f"{socket.gethostname()}-{os.getpid()}"
        dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                              capture_output=True, text=True, check=True).stdout.strip()
        folders = {
            "own": store.incoming,
            "dead": incoming / f"{socket.gethostname()}-{dead}",
            "alive": incoming / f"{socket.gethostname()}-{os.getppid()}",
            "other host": incoming / f"elsewhere-{dead}",
        }
        for folder in folders.values():
            folder.mkdir(exist_ok=True)
            (folder / "partial.dcm").write_bytes(b"x")
        (incoming / "single-process.dcm").write_bytes(b"x")
        assert store.discard_incoming() == 2
        assert not folders["dead"].exists()
        assert not (folders["own"] / "partial.dcm").exists() and folders["own"].is_dir()
        for kept in ("alive", "other host"):
            assert (folders[kept] / "partial.dcm").exists()
        assert (incoming / "single-process.dcm").exists()
    finally:
        engine.dispose()
