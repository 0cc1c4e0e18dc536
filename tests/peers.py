"""Real peers for the integration tests: the node as a process, DCMTK tools."""

from __future__ import annotations

import base64
import json
import os
import shutil
import signal
import subprocess
import sys
import time
import urllib.request
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import yaml
from pydicom import Dataset, dcmread
from pydicom.uid import MRImageStorage, generate_uid
from sqlalchemy import select

from service.db import Instance, make_engine, make_sessionmaker

ROOT = Path(__file__).resolve().parents[1]
DCMTK = Path("/usr/bin")
NODE_BIN = Path(sys.executable).parent / "kidney-node"
#: Prefix of the empty file :func:`storescp` writes beside each object it has received.
RECEIVED_MARK = ".received."


def dcmtk(tool: str) -> str:
    """Full path of a DCMTK tool (pynetdicom's apps of the same name shadow them on PATH)."""
    path = DCMTK / tool
    if not path.exists():
        pytest.fail(f"{path} missing: `make test` installs Debian's dcmtk")
    return str(path)


def peer_env() -> dict[str, str]:
    """Environment for DCMTK peers: Nagle off, as for the node's own sockets."""
    return {**os.environ, "TCP_NODELAY": "1"}


@dataclass
class NodeProcess:
    workdir: Path
    config: dict[str, Any]
    log_path: Path
    proc: subprocess.Popen | None = None
    extra_env: dict[str, str] = field(default_factory=dict)
    #: ``serve``, or ``receive`` for a receiver of a scaled-out node.
    command: str = "serve"

    @property
    def dicom_port(self) -> int:
        return int(self.config["dicom"]["port"])

    @property
    def api(self) -> str:
        return f"http://127.0.0.1:{self.config['http']['port']}"

    def cli(self, *args: str, check: bool = True) -> subprocess.CompletedProcess:
        return subprocess.run([str(NODE_BIN), "--config", str(self.workdir / "config.yaml"),
                               *args], cwd=self.workdir, capture_output=True, text=True,
                              check=check, timeout=120)

    def start(self, timeout: float = 60.0) -> None:
        (self.workdir / "config.yaml").write_text(yaml.safe_dump(self.config))
        log = open(self.log_path, "ab")  # noqa: SIM115 - closed with the process
        self.proc = subprocess.Popen(
            [str(NODE_BIN), "--config", str(self.workdir / "config.yaml"), self.command],
            cwd=self.workdir, stdout=log, stderr=subprocess.STDOUT,
            env={**os.environ, **self.extra_env})
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"node exited with {self.proc.returncode}:\n{self.log()}")
            try:
                self.get("/health")
                return
            except OSError:
                time.sleep(0.2)
        raise RuntimeError(f"node did not come up in {timeout} s:\n{self.log()}")

    def get(self, path: str) -> Any:
        with urllib.request.urlopen(self.api + path, timeout=5) as resp:  # noqa: S310
            return json.load(resp)

    def post(self, path: str, body: dict[str, Any]) -> Any:
        request = urllib.request.Request(self.api + path, data=json.dumps(body).encode(),
                                         headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(request, timeout=5) as resp:  # noqa: S310
            return json.load(resp)

    def study(self, uid: str) -> dict[str, Any] | None:
        try:
            return self.get(f"/api/studies/{uid}")
        except urllib.error.HTTPError as exc:
            if exc.code == 404:
                return None
            raise

    def wait_for(self, predicate, timeout: float, what: str) -> Any:  # noqa: ANN001
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            value = predicate()
            if value:
                return value
            time.sleep(0.3)
        raise AssertionError(f"timed out after {timeout} s waiting for {what}\n{self.log()}")

    def kill(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(10)

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.kill()

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")[-6000:] if self.log_path.exists() else ""


def node_config(*, workdir: Path, database_url: str, dicom_port: int, http_port: int,
                destinations: list[dict[str, Any]] | None = None,
                allowed_calling_aets: list[str] | None = None,
                mr_pipeline: str = "mri-watershed") -> dict[str, Any]:
    """A config for a test node: quick trigger and retries, tiny back-off.

    The MR pipeline is the fast watershed baseline unless a test asks for another: the
    tests of the node's plumbing do not need the slower default ``mri-graft``.
    """
    return {
        "dicom": {"ae_title": "KIDNEYNODE", "host": "127.0.0.1", "port": dicom_port,
                  "allowed_calling_aets": allowed_calling_aets or []},
        "storage": {"root": str(workdir / "storage")},
        "database": {"url": database_url},
        "scheduler": {"stable_age_seconds": 1.5, "sweep_interval_seconds": 0.5},
        "sender": {"retry_initial_seconds": 0.5, "retry_max_seconds": 2,
                   "poll_interval_seconds": 0.5, "timeout_seconds": 10},
        "processing": {"device": "cpu", "mr_pipeline": mr_pipeline},
        "destinations": destinations or [],
        "http": {"host": "127.0.0.1", "port": http_port},
        "log_level": "INFO",
    }


@contextmanager
def node_sending_to_storescp(make_node, database_url: str, dest: Path, *,  # noqa: ANN001
                             processing: dict[str, Any] | None = None):  # noqa: ANN201
    """A started test node (``make_node`` fixture) whose one destination is a DCMTK
    storescp writing into ``dest``; ``processing`` keys are merged into its settings."""
    from tests.conftest import free_port

    dest_port = free_port()
    with storescp(dest_port, dest):
        node = make_node(database_url, destinations=[
            {"name": "dest", "ae_title": "DEST", "host": "127.0.0.1", "port": dest_port}])
        node.config["processing"].update(processing or {})
        node.start()
        yield node


@contextmanager
def storescp(port: int, out_dir: Path, ae_title: str = "DEST", *,  # noqa: ANN201
             mark_received: bool = True, tls_pki: Path | None = None):
    """DCMTK storescp accepting everything into ``out_dir``; ``mark_received``: each whole
    object marked for :func:`received` (a shell per object: off for throughput runs);
    ``tls_pki``: TLS only, with the server certificate of :func:`tests.pki.make_pki`'s
    folder (no client certificate asked)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    mark = ["-xcr", f"touch '#p/{RECEIVED_MARK}#f'"] if mark_received else []
    tls = ["+tls", "server.key", "server.pem", "+cf", "ca.pem", "-ic"] if tls_pki else []
    proc = subprocess.Popen([dcmtk("storescp"), *tls, "-aet", ae_title, "+xa", "-od",
                             str(out_dir.resolve()), *mark, str(port)], cwd=tls_pki,
                            env=peer_env(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        wait_port(port)
        yield proc
    finally:
        proc.terminate()
        proc.wait(10)


def result_count(study: Any) -> int:
    """Objects the node sends for a synthetic MR study (``write_mr_study``): the SEG and the
    SR, and the segmented phase's copies when its DCE is one series of every phase."""
    from service.imaging.series import group_by_series

    if len(study.dce_series_uids) != 1 or len(study.phase_times_s) < 2:
        return 2
    dce = group_by_series(study.files)[study.dce_series_uids[0]]
    return 2 + len(dce) // len(study.phase_times_s)


def phase_copies(folder: Path) -> dict[str, Dataset]:
    """Headers of the derived MR images (the node's copies of a segmented phase) received
    in ``folder``, by SOP Instance UID."""
    copies = {}
    for path in received(folder, MRImageStorage):
        ds = dcmread(path, stop_before_pixels=True)
        if "DERIVED" in ds.get("ImageType", []):
            copies[str(ds.SOPInstanceUID)] = ds
    return copies


def received(folder: Path, sop_class_uid: str) -> list[Path]:
    """The objects of ``sop_class_uid`` that :func:`storescp` has finished writing into
    ``folder``. storescp writes each object under its final name, so a poll can find one
    half-written (pydicom reads a truncated file without complaint); its reception command
    marks each object once it is whole."""
    whole = [folder / mark.name.removeprefix(RECEIVED_MARK)
             for mark in folder.glob(f"{RECEIVED_MARK}*")]
    return sorted(path for path in whole
                  if dcmread(path, stop_before_pixels=True).SOPClassUID == sop_class_uid)


def wait_port(port: int, timeout: float = 10.0) -> None:
    import socket

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.1)
    raise RuntimeError(f"nothing listens on port {port}")


def storescu(port: int, files: list[Path], *, calling: str = "STORESCU",
             called: str = "KIDNEYNODE", verbose: bool = False,
             required_only: bool = False, no_halt: bool = False
             ) -> subprocess.CompletedProcess:
    """DCMTK storescu over one association; ``verbose``: with each response's status;
    ``required_only``: propose only the files' own SOP classes (-R: also those, such as
    SEG and SR, missing from storescu's default list); ``no_halt``: go on after a
    refused instance (-nh)."""
    options = (["-v"] if verbose else []) + (["-R"] if required_only else []) \
        + (["-nh"] if no_halt else [])
    return subprocess.run([dcmtk("storescu"), *options, "-aet", calling,
                           "-aec", called, "127.0.0.1", str(port), *map(str, files)],
                          env=peer_env(), capture_output=True, text=True, timeout=300)


def dciodvfy_errors(path: Path) -> list[str]:
    """Error lines dciodvfy prints for ``path`` (dicom3tools)."""
    tool = shutil.which("dciodvfy") or "/usr/bin/dciodvfy"
    out = subprocess.run([tool, str(path)], capture_output=True, text=True, timeout=60)
    return [line for line in (out.stdout + out.stderr).splitlines() if line.startswith("Error")]


def chromium_dom(url: str, *, budget_ms: int = 5000) -> str:
    """The DOM of ``url`` after Debian's headless chromium loaded it and ran its scripts."""
    tool = shutil.which("chromium") or "/usr/bin/chromium"
    if not Path(tool).exists():
        pytest.fail(f"{tool} missing: `make test` installs Debian's chromium")
    out = subprocess.run(
        [tool, "--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
         f"--virtual-time-budget={budget_ms}", "--dump-dom", url],
        capture_output=True, text=True, timeout=120)
    if out.returncode != 0 or "<html" not in out.stdout:
        raise AssertionError(f"chromium failed on {url} ({out.returncode}):\n{out.stderr[-3000:]}")
    return out.stdout


@dataclass
class OrthancPeer:
    """A running Orthanc (Debian package): its DICOM AE and its REST API."""

    aet: str
    dicom_port: int
    http_port: int
    #: (user, password) when Orthanc asks for HTTP basic authentication.
    user: tuple[str, str] | None = None

    def _request(self, path: str, data: bytes | None = None,
                 method: str | None = None) -> urllib.request.Request:
        request = urllib.request.Request(f"http://127.0.0.1:{self.http_port}{path}",
                                         data=data, method=method or ("POST" if data else "GET"))
        if self.user is not None:
            token = base64.b64encode(":".join(self.user).encode()).decode()
            request.add_header("Authorization", f"Basic {token}")
        return request

    def rest(self, path: str, body: Any = None, method: str | None = None) -> Any:
        data = None if body is None else json.dumps(body).encode()
        with urllib.request.urlopen(self._request(path, data, method),  # noqa: S310
                                    timeout=10) as resp:
            answer = resp.read()
        return json.loads(answer) if answer.strip() else None

    def upload(self, files: list[Path]) -> None:
        """Store Part 10 files through the REST API (``POST /instances``)."""
        for path in files:
            with urllib.request.urlopen(self._request("/instances", path.read_bytes()),  # noqa: S310
                                        timeout=30) as resp:
                resp.read()

    def files(self, study_instance_uid: str, modality: str) -> list[bytes]:
        """The Part 10 files of the study's instances of ``modality``."""
        found = self.rest("/tools/find", {"Level": "Instance", "Query": {
            "StudyInstanceUID": study_instance_uid, "Modality": modality}})
        return [self.instance_file(instance) for instance in found]

    def instance_file(self, orthanc_id: str) -> bytes:
        """The Part 10 file of one instance (Orthanc's ID)."""
        request = self._request(f"/instances/{orthanc_id}/file")
        with urllib.request.urlopen(request, timeout=30) as resp:  # noqa: S310
            return resp.read()

    def series_by_modality(self, study_instance_uid: str) -> dict[str, int]:
        """Number of series per Modality that Orthanc files under the study."""
        found = self.rest("/tools/find", {"Level": "Series", "Expand": True,
                                          "Query": {"StudyInstanceUID": study_instance_uid}})
        counts: dict[str, int] = {}
        for series in found:
            modality = series["MainDicomTags"].get("Modality", "")
            counts[modality] = counts.get(modality, 0) + 1
        return counts

    def series_count(self, study_instance_uid: str) -> int:
        return sum(self.series_by_modality(study_instance_uid).values())

    def results_filed(self, study_instance_uid: str) -> dict[str, int] | None:
        """:meth:`series_by_modality` once a SEG and an SR are there, else None."""
        counts = self.series_by_modality(study_instance_uid)
        return counts if {"SEG", "SR"} <= counts.keys() else None


@contextmanager
def orthanc(workdir: Path, *, dicom_port: int, http_port: int, aet: str = "ORTHANC",  # noqa: ANN201
            modalities: dict[str, list[Any]] | None = None, lua: str | None = None,
            stable_age: int = 2, dicomweb: bool = False, user: tuple[str, str] | None = None,
            verbose: bool = False, tls_pki: Path | None = None):
    """Debian's Orthanc with its own storage and index under ``workdir``, default settings
    otherwise (any calling AE may store), REST on loopback; ``modalities``
    (name -> [AET, host, port]) and a Lua script (``lua``) for routing; with ``dicomweb``
    its DICOMweb plugin (Debian's orthanc-dicomweb) at ``/dicom-web/``, else no plugin;
    with ``user`` (name, password) its HTTP side asks for that basic authentication;
    ``verbose``: its log says each DICOM request it serves (``--verbose``); ``tls_pki``:
    its DICOM port speaks TLS only, with the server certificate of
    :func:`tests.pki.make_pki`'s folder, and asks peers for a certificate of its CA."""
    tool = Path("/usr/sbin/Orthanc")
    if not tool.exists():
        pytest.fail(f"{tool} missing: `make test` installs Debian's orthanc")
    workdir.mkdir(parents=True, exist_ok=True)
    config = {"Name": "kidney-node-test", "StorageDirectory": str(workdir / "db"),
              "IndexDirectory": str(workdir / "db"), "HttpPort": http_port,
              "DicomPort": dicom_port, "DicomAet": aet, "RemoteAccessAllowed": False,
              "AuthenticationEnabled": False, "Plugins": [],
              "DicomModalities": modalities or {}, "StableAge": stable_age}
    if dicomweb:
        plugin = Path("/usr/share/orthanc/plugins/libOrthancDicomWeb.so")
        if not plugin.exists():
            pytest.fail(f"{plugin} missing: `make test` installs Debian's orthanc-dicomweb")
        config["Plugins"] = [str(plugin)]
        config["DicomWeb"] = {"Enable": True, "Root": "/dicom-web/"}
    if tls_pki is not None:
        config.update({"DicomTlsEnabled": True,
                       "DicomTlsCertificate": str(tls_pki / "server.pem"),
                       "DicomTlsPrivateKey": str(tls_pki / "server.key"),
                       "DicomTlsTrustedCertificates": str(tls_pki / "ca.pem"),
                       "DicomTlsRemoteCertificateRequired": True})
    if user is not None:
        config["AuthenticationEnabled"] = True
        config["RegisteredUsers"] = {user[0]: user[1]}
    if lua is not None:
        (workdir / "routing.lua").write_text(lua)
        config["LuaScripts"] = [str(workdir / "routing.lua")]
    (workdir / "orthanc.json").write_text(json.dumps(config))
    log = open(workdir / "orthanc.log", "wb")  # noqa: SIM115 - closed below
    proc = subprocess.Popen([str(tool), *(["--verbose"] if verbose else []),
                             str(workdir / "orthanc.json")], env=peer_env(),
                            stdout=log, stderr=subprocess.STDOUT)
    peer = OrthancPeer(aet, dicom_port, http_port, user)
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                peer.rest("/system")
                break
            except OSError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError("Orthanc did not start:\n" + (
                        workdir / "orthanc.log").read_text(errors="replace")[-3000:]) from None
                time.sleep(0.2)
        yield peer
    finally:
        proc.terminate()
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            proc.kill()
        log.close()


def rss_mb(pid: int) -> float:
    """Resident memory of process ``pid`` (MB), from /proc."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise AssertionError(f"no VmRSS for process {pid}")


def fresh_copies(files: list[Path], folder: Path, count: int) -> list[Path]:
    """``count`` instances in ``folder`` (created) under new SOP Instance UIDs, cycling
    through ``files``."""
    folder.mkdir()
    out = []
    for i in range(count):
        ds = dcmread(files[i % len(files)])
        ds.SOPInstanceUID = generate_uid()
        ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
        out.append(folder / f"{i:03d}.dcm")
        ds.save_as(out[-1])
    return out


def indexed_instances(database_url: str) -> dict[str, str]:
    """SOP Instance UID -> archive-relative path of every instance the node indexed;
    fails on a UID indexed twice."""
    engine = make_engine(database_url)
    try:
        with make_sessionmaker(engine)() as s:
            rows = s.execute(select(Instance.sop_instance_uid, Instance.path)).all()
    finally:
        engine.dispose()
    counted: dict[str, str] = {}
    for uid, path in rows:
        assert uid not in counted, f"{uid} indexed twice"
        counted[uid] = path
    return counted
