import re
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def _hadolint() -> str:
    found = Path(sys.executable).parent / "hadolint"
    return str(found) if found.exists() else shutil.which("hadolint")


def test_dockerfile_passes_hadolint():
    out = subprocess.run([_hadolint(), "--failure-threshold", "info", str(ROOT / "Dockerfile")],
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stdout + out.stderr


def test_dockerfile_installs_and_runs_like_the_makefile():
    text = (ROOT / "Dockerfile").read_text()
    assert "make install" in text
    assert 'ENTRYPOINT ["/opt/kidney-node/docker/entrypoint.sh"]' in text
    assert "EXPOSE 11112 8080" in text
    # The working directory belongs to the user who installs into it.
    assert re.search(r"install -d -o 1000 -g 1000 /opt/kidney-node", text)
    assert text.index("install -d -o 1000") < text.index("USER 1000:1000") \
        < text.index("make install")


def _entrypoint(tmp_path: Path, **env: str) -> list[str]:
    """What docker/entrypoint.sh starts: a stub kidney-node beside it prints its HTTP host
    and arguments."""
    (tmp_path / "docker").mkdir(parents=True)
    shutil.copy(ROOT / "docker" / "entrypoint.sh", tmp_path / "docker" / "entrypoint.sh")
    stub = tmp_path / ".venv" / "bin" / "kidney-node"
    stub.parent.mkdir(parents=True)
    stub.write_text('#!/bin/sh\necho "host=$KIDNEY_NODE_HTTP__HOST args=$*"\n')
    stub.chmod(0o755)
    out = subprocess.run(["sh", str(tmp_path / "docker" / "entrypoint.sh"), "serve"],
                         env={"PATH": "/usr/bin:/bin", **env}, capture_output=True,
                         text=True, timeout=30, check=True)
    return [out.stdout.strip(), out.stderr.strip()]


def test_the_image_serves_http_outside_the_container_only_with_a_token(tmp_path):
    out, err = _entrypoint(tmp_path / "a", KIDNEY_NODE_HTTP__TOKEN="x" * 24)
    assert out == "host=0.0.0.0 args=--config config/kidney-node.yaml serve" and not err
    out, err = _entrypoint(tmp_path / "b")
    assert out.startswith("host=127.0.0.1 ") and "loopback only" in err
    out, _ = _entrypoint(tmp_path / "c", KIDNEY_NODE_HTTP__HOST="10.0.0.5")
    assert out.startswith("host=10.0.0.5 ")


def _compose_env(service: dict) -> dict[str, str]:
    """A service's environment with compose's ${VAR...} filled as a .env would."""
    values = {"POSTGRES_PASSWORD": "pg-secret", "RABBITMQ_PASSWORD": "mq-secret",
              "KIDNEY_NODE_HTTP__TOKEN": "a-token-of-16-chars-or-more"}
    return {key: re.sub(r"\$\{(\w+)[^}]*\}", lambda m: values.get(m.group(1), "cpu"), value)
            for key, value in service.get("environment", {}).items()}


def test_compose_files_configure_valid_nodes_of_each_role():
    """compose.yaml (all-in-one) and compose.scale.yaml (receiver + workers on RabbitMQ):
    each node's environment, read by the node's own loader with the shipped config, gives
    valid settings, with a broker exactly where the role needs one."""
    import yaml

    from service.config.loading import load_settings

    roles = {}
    for name in ("compose.yaml", "compose.scale.yaml"):
        services = yaml.safe_load((ROOT / name).read_text())["services"]
        for service_name, service in services.items():
            if not str(service.get("image", "")).startswith("kidney-node"):
                continue
            command = service.get("command", ["serve"])
            settings = load_settings(ROOT / "config" / "kidney-node.yaml",
                                     environ=_compose_env(service))
            roles[service_name] = (command[0], settings)
    assert {k: v[0] for k, v in roles.items()} == {
        "node": "serve", "receiver": "receive", "worker": "worker", "gpu-worker": "worker"}
    assert roles["node"][1].broker.url is None
    for name in ("receiver", "worker", "gpu-worker"):
        broker = roles[name][1].broker
        assert broker.url.get_secret_value() == "amqp://kidney_node:mq-secret@broker:5672/"
        assert roles[name][1].database.url.startswith("postgresql+psycopg://kidney_node:")
    assert roles["gpu-worker"][1].processing.device == "cuda"
