"""Issue 19: the container image built by ``docker/build-local.sh``, run and checked from
outside the container.

The container runs under podman in its own network namespace (slirp4netns), its DICOM
and HTTP ports published on the host, its archive and index in a podman volume. From the
host, with the project's own DICOM code:

1. C-ECHO answers; a synthetic DCE + T2 study is stored (every C-STORE Success);
2. ``/health`` answers on the published HTTP port when a token is set, and the job of the
   study succeeds (the image's torch segments it);
3. the node runs as uid 1000, not root, and its files are in the volume;
4. after the container is removed, a new one on the same volume still lists the result;
5. without a token, the HTTP API listens on the container's loopback only: the published
   port gives nothing, C-ECHO still answers;
6. on PostgreSQL (``--postgres``, the host's server reached from the container, as
   compose.yaml has it): the node migrates a new database and indexes what it stores.

Writes ``<out>.md`` (default ``benchmarks/results/image``) with the image size, the build
time given (``--build-seconds``, from ``make image``) and the times measured.

    python -m benchmarks.image_check [--image localhost/kidney-node:latest]
        [--build-seconds S] [--out PATH]

Exit status 1 when a check fails. Needs root, podman, runc and slirp4netns (``make image``
installs them); podman is run with ``docker/podman-sandbox.conf`` where this machine's
kernel needs it (no cgroup v2, no raising of resource limits).
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path

from pynetdicom import AE
from pynetdicom.sop_class import Verification

from service.config import Destination
from service.dicom.scu import send_files
from service.synthetic import write_mr_study

ROOT = Path(__file__).resolve().parents[1]
PODMAN = ["podman", "--runtime", "runc", "--cgroup-manager", "cgroupfs",
          "--storage-driver", "vfs"]


def _podman(*args: str, check: bool = True, both: bool = False) -> str:
    """podman's output (``both``: stdout and stderr, as ``podman logs`` splits the
    container's two streams)."""
    env = {**os.environ, "CONTAINERS_CONF": str(ROOT / "docker" / "podman-sandbox.conf")}
    out = subprocess.run([*PODMAN, *args], capture_output=True, text=True, env=env,
                         timeout=600)
    if check and out.returncode != 0:
        raise RuntimeError(f"podman {' '.join(args)}: {out.stderr.strip()}")
    return (out.stdout + out.stderr if both else out.stdout).strip()


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _echo(port: int) -> bool:
    ae = AE(ae_title="IMAGECHECK")
    ae.add_requested_context(Verification)
    ae.acse_timeout = ae.network_timeout = ae.connection_timeout = 5
    assoc = ae.associate("127.0.0.1", port, ae_title="KIDNEYNODE")
    if not assoc.is_established:
        return False
    status = assoc.send_c_echo()
    assoc.release()
    return bool(status) and status.Status == 0


def _store_study(port: int, patient_id: str) -> dict:
    """A synthetic DCE + T2 study sent to the container; each file's error or None."""
    with tempfile.TemporaryDirectory() as tmp:
        study = write_mr_study(Path(tmp), patient_id=patient_id)
        node = Destination(name="node", ae_title="KIDNEYNODE", host="127.0.0.1", port=port)
        return send_files(list(study.files), destination=node, calling_aet="IMAGECHECK",
                          timeout=60)


def _get(url: str, token: str | None) -> tuple[int, object]:
    request = urllib.request.Request(url)
    if token:
        request.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(request, timeout=5) as resp:  # noqa: S310
            return resp.status, json.load(resp)
    except urllib.error.HTTPError as exc:
        return exc.code, None


def _wait(predicate, timeout: float, what: str):  # noqa: ANN001, ANN202
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            value = predicate()
        except OSError:
            value = None
        if value:
            return value
        time.sleep(1)
    raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")


def _host_address() -> str:
    """An address of this host other than loopback: what a client elsewhere would use."""
    found = subprocess.run(["hostname", "-I"], capture_output=True, text=True).stdout.split()
    return found[0] if found else "127.0.0.1"


def _run(image: str, name: str, volume: str, dicom: int, http: int,
         token: str | None) -> None:
    env = ["-e", f"KIDNEY_NODE_HTTP__TOKEN={token}"] if token else []
    _podman("run", "-d", "--name", name, "--network", "slirp4netns",
            "-p", f"{dicom}:11112", "-p", f"{http}:8080", "-v", f"{volume}:/opt/kidney-node/var",
            *env, image)


def _with_postgres(image: str, url: str, names: list[str], token: str) -> dict[str, object]:
    """The node in the container on the host's PostgreSQL (what compose.yaml sets up): a
    new database, migrated by the node at start, holds what it receives."""
    from sqlalchemy import create_engine, text
    from sqlalchemy.engine import make_url

    server = make_url(url)
    database = f"kidney_image_check_{secrets.token_hex(3)}"
    admin = create_engine(server, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{database}"'))
    # The container reaches the host's loopback as 10.0.2.2 (slirp4netns).
    inside = server.set(host="10.0.2.2", database=database)
    dicom, http = _free_port(), _free_port()
    names.append("kn-check-pg")
    try:
        _podman("run", "-d", "--name", names[-1],
                "--network", "slirp4netns:allow_host_loopback=true",
                "-p", f"{dicom}:11112", "-p", f"{http}:8080",
                "-e", f"KIDNEY_NODE_DATABASE__URL={inside.render_as_string(hide_password=False)}",
                "-e", f"KIDNEY_NODE_HTTP__TOKEN={token}", image)
        _wait(lambda: _echo(dicom), 300, "C-ECHO of the container on PostgreSQL")
        outcome = _store_study(dicom, "IMAGE-PG")
        assert all(e is None for e in outcome.values()), "C-STORE failures on PostgreSQL"
        engine = create_engine(server.set(database=database))
        with engine.connect() as conn:
            count = conn.execute(text("SELECT count(*) FROM instances")).scalar_one()
        engine.dispose()
        assert count == len(outcome), (count, len(outcome))
        _podman("rm", "-f", names[-1])
        names.pop()
        return {"postgresql_instances_indexed": count}
    finally:
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)'))
        admin.dispose()


def check(image: str, postgres: str | None = None) -> dict[str, object]:
    checks: dict[str, object] = {}
    volume = f"kidney-node-check-{secrets.token_hex(3)}"
    names: list[str] = []
    token = secrets.token_urlsafe(24)
    host = _host_address()
    _podman("volume", "create", volume)
    try:
        dicom, http = _free_port(), _free_port()
        names.append("kn-check-1")
        t0 = time.monotonic()
        _run(image, names[-1], volume, dicom, http, token)
        _wait(lambda: _echo(dicom), 300, "C-ECHO")
        checks["start_to_echo_s"] = round(time.monotonic() - t0, 1)
        t0 = time.monotonic()
        outcome = _store_study(dicom, "IMAGE-0001")
        failed = [str(e) for e in outcome.values() if e is not None]
        assert not failed, f"C-STORE failures: {failed[:3]}"
        checks["stored_instances"] = len(outcome)
        checks["store_s"] = round(time.monotonic() - t0, 1)
        api = f"http://{host}:{http}"
        status, health = _get(f"{api}/health", token)
        assert status == 200, f"/health from {host}: HTTP {status}"
        checks["health"] = health
        t0 = time.monotonic()
        jobs = _wait(lambda: [j for j in _get(f"{api}/api/jobs", token)[1] or []
                              if j["state"] in ("succeeded", "failed")], 900, "the job")
        assert jobs[0]["state"] == "succeeded", jobs[0]
        checks["job_s"] = round(time.monotonic() - t0, 1)
        checks["pipeline"] = jobs[0]["pipeline"]
        checks["uid"] = _podman("exec", names[-1], "id", "-u")
        assert checks["uid"] == "1000", checks["uid"]
        mount = Path(_podman("volume", "inspect", volume, "--format", "{{.Mountpoint}}"))
        files = [p for p in mount.rglob("*") if p.is_file()]
        owners = {p.stat().st_uid for p in files}
        assert len(files) > len(outcome) and owners == {1000}, (len(files), owners)
        checks["volume_files"] = len(files)
        _podman("rm", "-f", names[-1])
        names.pop()

        # A new container on the same volume: the result is still there.
        dicom, http = _free_port(), _free_port()
        names.append("kn-check-2")
        _run(image, names[-1], volume, dicom, http, token)
        _wait(lambda: _echo(dicom), 300, "C-ECHO of the second container")
        api = f"http://{host}:{http}"
        patients = _wait(lambda: _get(f"{api}/api/patients", token)[1], 60, "patients")
        assert [p["patient_id"] for p in patients] == ["IMAGE-0001"], patients
        checks["kept_on_volume"] = True
        _podman("rm", "-f", names[-1])
        names.pop()

        # Without a token: DICOM answers, HTTP stays inside the container.
        dicom, http = _free_port(), _free_port()
        names.append("kn-check-3")
        _run(image, names[-1], volume, dicom, http, None)
        _wait(lambda: _echo(dicom), 300, "C-ECHO without a token")
        try:
            status = _get(f"http://{host}:{http}/health", None)[0]
        except OSError as exc:
            status = f"no answer ({type(exc).__name__})"
        assert status != 200, "the API answered outside the container without a token"
        checks["http_without_token"] = status
        logs = _podman("logs", names[-1], both=True)
        assert "listens on the container's loopback only" in logs
        _podman("rm", "-f", names[-1])
        names.pop()
        if postgres is not None:
            checks.update(_with_postgres(image, postgres, names, token))
    except AssertionError as exc:
        logs = _podman("logs", names[-1], check=False, both=True) if names else ""
        raise AssertionError(f"{exc}\ncontainer log (end):\n{logs[-3000:]}") from None
    finally:
        for name in names:
            _podman("rm", "-f", name, check=False)
        _podman("volume", "rm", "-f", volume, check=False)
    return checks


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--image", default="localhost/kidney-node:latest")
    parser.add_argument("--build-seconds", type=float)
    parser.add_argument("--postgres", default="postgresql+psycopg://postgres@127.0.0.1:5432/"
                        "postgres", help="a PostgreSQL server on this host the container "
                        "may use (a database is created and dropped); '' to skip")
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "image")
    args = parser.parse_args(argv)
    size = int(_podman("image", "inspect", args.image, "--format", "{{.Size}}"))
    try:
        checks = check(args.image, args.postgres or None)
    except AssertionError as exc:
        print(f"image check failed: {exc}", file=sys.stderr)
        return 1
    lines = [
        "# Container image (issue 19)", "",
        f"`{args.image}`, built by `make image` (docker/build-local.sh: buildah, vfs, chroot "
        "isolation, on a debootstrap base of Debian bookworm) and checked from outside by "
        "`python -m benchmarks.image_check` (podman, slirp4netns network).", "",
        "| Measure | Value |", "|---|---|",
        f"| Image size | {size / 2**20:.0f} MiB |",
        f"| Build time | {'' if args.build_seconds is None else f'{args.build_seconds:.0f} s'} |",
    ]
    lines += [f"| {k} | {v} |" for k, v in checks.items()]
    args.out.with_suffix(".md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
