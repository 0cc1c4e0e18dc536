from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.conftest import free_port
from tests.peers import NodeProcess, node_config


@pytest.fixture
def make_node(tmp_path: Path) -> Iterator[Callable[..., NodeProcess]]:
    """Build (not start) test nodes; every one is stopped at teardown."""
    nodes: list[NodeProcess] = []

    def factory(database_url: str, **overrides) -> NodeProcess:  # noqa: ANN003
        workdir = tmp_path / f"node{len(nodes)}"
        workdir.mkdir()
        config = node_config(workdir=workdir, database_url=database_url,
                             dicom_port=free_port(), http_port=free_port(), **overrides)
        node = NodeProcess(workdir=workdir, config=config, log_path=workdir / "node.log")
        nodes.append(node)
        return node

    yield factory
    for node in nodes:
        node.stop()


@pytest.fixture(scope="session")
def small_study_dir(tmp_path_factory: pytest.TempPathFactory):  # noqa: ANN201
    """One small synthetic DCE + T2 study on disk, shared by the integration tests."""
    from service.synthetic import write_mr_study

    return write_mr_study(tmp_path_factory.mktemp("study"), patient_id="IT-0001", seed=3)
