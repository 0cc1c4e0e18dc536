"""Ingest throughput: the node against Orthanc and DCMTK storescp on the same instances.

The same N MR instances of 512 x 512 (16-bit, explicit VR little endian, one series) are
sent by the same DCMTK ``storescu -R`` over one association to each receiver in turn, for
several rounds (node, Orthanc, storescp, node, ...), each receiver starting from an empty
archive every round. TCP_NODELAY=1 is set for the DCMTK peers (Debian's DCMTK, and so
Orthanc, enable Nagle otherwise); the node sets it on its own sockets.

- node: ``kidney-node serve`` on embedded defaults (SQLite index, local archive); after
  each round every instance must be in its index.
- Orthanc: Debian's package, default settings (its own SQLite index and storage); counted
  through its REST API.
- storescp: DCMTK, writes files and indexes nothing.
- pynetdicom: the library alone as the node uses it, writing files and indexing nothing
  (``benchmarks/bare_scp.py``): the ceiling of any pynetdicom-based receiver here.

``--associations N`` splits the instances into N parts sent at once, one storescu
association each (the same files, one run); ``--receivers K`` adds "node xK": K
``kidney-node receive`` processes sharing the DICOM port (``dicom.reuse_port``), one
PostgreSQL index and one archive, with the local RabbitMQ as their broker (issue 21).

The node's resident memory is sampled during its rounds ("flat": the peak of the last
round within 10 % of the first round's peak). Writes ``benchmarks/results/ingest.json``
and ``ingest.md``.

    python -m benchmarks.ingest [--instances 1000] [--rounds 3] [--associations 4 --receivers 2]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack
from pathlib import Path

import numpy as np
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, MRImageStorage
from sqlalchemy import create_engine, func, select, text

from benchmarks.graft_eval import RESULTS, _revision
from service.db.tables import Instance
from service.dicom.uids import new_uid
from tests.conftest import AMQP_URL, PG_ADMIN_URL, free_port
from tests.peers import NodeProcess, dcmtk, node_config, orthanc, peer_env, storescp, wait_port

ROWS = COLS = 512


def write_series(folder: Path, count: int, seed: int = 0) -> list[Path]:
    """``count`` MR slices of 512 x 512 with noise-like pixels, one study and series."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    study, series, frame = new_uid(), new_uid(), new_uid()
    paths = []
    for k in range(count):
        ds = Dataset()
        ds.file_meta = FileMetaDataset()
        ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
        ds.file_meta.MediaStorageSOPClassUID = MRImageStorage
        ds.SOPClassUID = MRImageStorage
        ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = new_uid()
        ds.StudyInstanceUID, ds.SeriesInstanceUID = study, series
        ds.FrameOfReferenceUID = frame
        ds.PatientID, ds.PatientName = "INGEST-BENCH", "Bench^Ingest"
        ds.StudyDate, ds.StudyTime = "20260101", "120000"
        ds.Modality, ds.SeriesNumber, ds.InstanceNumber = "MR", 1, k + 1
        ds.SeriesDescription = "T1 bench"
        ds.ImagePositionPatient = [0.0, 0.0, float(k)]
        ds.ImageOrientationPatient = [1.0, 0.0, 0.0, 0.0, 1.0, 0.0]
        ds.PixelSpacing, ds.SliceThickness = [0.7, 0.7], 1.0
        ds.Rows, ds.Columns = ROWS, COLS
        ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
        ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 12, 11, 0
        ds.PixelData = rng.integers(0, 4096, (ROWS, COLS), dtype=np.uint16).tobytes()
        path = folder / f"{k:05d}.dcm"
        ds.save_as(path, enforce_file_format=True)
        paths.append(path)
    return paths


def _rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


class _Sampler:
    """Samples a process's resident memory every 50 ms while active."""

    def __init__(self, pid: int) -> None:
        self.pid, self.samples = pid, []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            self.samples.append(_rss_mb(self.pid))
            self._stop.wait(0.05)

    def __enter__(self) -> _Sampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


def _send(port: int, called: str, source: Path) -> float:
    """storescu -R over one association; returns the wall time in seconds."""
    cmd = [dcmtk("storescu"), "-R", "-aet", "BENCHSCU", "-aec", called, "+sd", "+r",
           "127.0.0.1", str(port), str(source)]
    t0 = time.perf_counter()
    out = subprocess.run(cmd, env=peer_env(), capture_output=True, text=True, timeout=900)
    wall = time.perf_counter() - t0
    if out.returncode != 0:
        raise RuntimeError(f"storescu to {called} failed ({out.returncode}): "
                           f"{out.stderr[-2000:]}")
    return wall


def _indexed(url: str) -> int:
    """Instances in the index at ``url``."""
    engine = create_engine(url)
    with engine.connect() as conn:
        n = conn.scalar(select(func.count()).select_from(Instance))
    engine.dispose()
    return int(n or 0)


def _send_all(port: int, called: str, sources: list[Path]) -> float:
    """One association per folder of ``sources``, all at once; the wall time until the
    last one ends."""
    if len(sources) == 1:
        return _send(port, called, sources[0])
    t0 = time.perf_counter()
    with ThreadPoolExecutor(len(sources)) as pool:
        list(pool.map(lambda folder: _send(port, called, folder), sources))
    return time.perf_counter() - t0


class _Group:
    """K ``kidney-node receive`` processes on one port (SO_REUSEPORT), one PostgreSQL
    index, one archive, the local RabbitMQ as broker; emptied between rounds."""

    def __init__(self, work: Path, receivers: int) -> None:
        self.work, self.receivers = work / "group", receivers
        self.port = free_port()
        self.prefix = "kn-ingest-" + uuid.uuid4().hex[:8]
        self.nodes: list[NodeProcess] = []
        self.url: str | None = None
        self.start()

    def start(self) -> None:
        if self.work.exists():
            shutil.rmtree(self.work)
        self.work.mkdir(parents=True)
        name = "kn_ingest_" + uuid.uuid4().hex[:8]
        with create_engine(PG_ADMIN_URL, isolation_level="AUTOCOMMIT").connect() as conn:
            conn.execute(text(f'CREATE DATABASE "{name}"'))
        self.url = PG_ADMIN_URL.rsplit("/", 1)[0] + "/" + name
        for k in range(self.receivers):
            folder = self.work / f"r{k}"
            folder.mkdir()
            config = node_config(workdir=folder, database_url=self.url,
                                 dicom_port=self.port, http_port=free_port())
            config["storage"]["root"] = str(self.work / "archive")
            config["dicom"]["reuse_port"] = True
            config["broker"] = {"url": AMQP_URL, "queue_prefix": self.prefix,
                                "queue": "cpu"}
            config["scheduler"].update(stable_age_seconds=3600, sweep_interval_seconds=5)
            config["sender"]["poll_interval_seconds"] = 2
            node = NodeProcess(folder, config, folder / "node.log", command="receive")
            node.start()
            self.nodes.append(node)

    def stop(self) -> None:
        for node in self.nodes:
            node.stop()
        self.nodes = []
        if self.url is not None:
            name = self.url.rsplit("/", 1)[1]
            with create_engine(PG_ADMIN_URL,
                               isolation_level="AUTOCOMMIT").connect() as conn:
                conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
            self.url = None

    def reset(self) -> None:
        self.stop()
        self.start()

    def count(self) -> int:
        return _indexed(self.url)


class _Receivers:
    """The three receivers, each able to empty itself between rounds."""

    def __init__(self, work: Path, stack: ExitStack) -> None:
        self.work = work
        self.node_url = f"sqlite:///{work / 'node' / 'index.sqlite'}"
        self._stack = stack
        self.node = self._start_node()
        stack.callback(lambda: self.node.stop())
        self.orthanc_dir = work / "orthanc"
        self.orthanc = None
        self._start_orthanc()
        self.scp_dir = work / "storescp"
        self.scp_port = free_port()
        stack.enter_context(storescp(self.scp_port, self.scp_dir, ae_title="STORESCP",
                                     mark_received=False))
        self.bare_dir = work / "pynetdicom"
        self.bare_port = free_port()
        bare = subprocess.Popen([sys.executable, "-m", "benchmarks.bare_scp",
                                 str(self.bare_port), str(self.bare_dir)],
                                cwd=Path(__file__).resolve().parents[1])
        stack.callback(lambda: (bare.terminate(), bare.wait(10)))
        wait_port(self.bare_port)

    def _start_node(self) -> NodeProcess:
        folder = self.work / "node"
        if folder.exists():
            shutil.rmtree(folder)
        folder.mkdir(parents=True)
        config = node_config(workdir=folder, database_url=self.node_url,
                             dicom_port=free_port(), http_port=free_port())
        # The embedded defaults' polling intervals (the test config polls faster); no job
        # starts during the run (reception only).
        config["scheduler"].update(stable_age_seconds=3600, sweep_interval_seconds=5)
        config["sender"]["poll_interval_seconds"] = 2
        node = NodeProcess(folder, config, folder / "node.log")
        node.start()
        return node

    def _start_orthanc(self) -> None:
        if self.orthanc_dir.exists():
            shutil.rmtree(self.orthanc_dir)
        self._orthanc_stack = ExitStack()
        self.orthanc = self._orthanc_stack.enter_context(
            orthanc(self.orthanc_dir, dicom_port=free_port(), http_port=free_port(),
                    stable_age=3600))
        self._stack.callback(self._orthanc_stack.close)

    def reset_node(self) -> None:
        self.node.stop()
        self.node = self._start_node()

    def reset_orthanc(self) -> None:
        self._orthanc_stack.close()
        self._start_orthanc()

    def reset_storescp(self) -> None:
        for path in self.scp_dir.iterdir():
            path.unlink()

    def node_count(self) -> int:
        return _indexed(self.node_url)

    def orthanc_count(self) -> int:
        return int(self.orthanc.rest("/statistics")["CountInstances"])

    def storescp_count(self) -> int:
        return sum(1 for _ in self.scp_dir.iterdir())

    def reset_bare(self) -> None:
        for path in self.bare_dir.glob("*.dcm"):
            path.unlink()

    def bare_count(self) -> int:
        return sum(1 for _ in self.bare_dir.glob("*.dcm"))


def run(count: int, rounds: int, work: Path, associations: int = 1,
        receivers: int = 1) -> dict:
    source = work / "source"
    t0 = time.perf_counter()
    paths = write_series(source, count)
    print(f"wrote {count} instances in {time.perf_counter() - t0:.1f} s", flush=True)
    sources = [source]
    if associations > 1:  # the same files, split into one folder per association
        sources = [work / f"part{k}" for k in range(associations)]
        for k, path in enumerate(paths):
            sources[k % associations].mkdir(exist_ok=True)
            path.rename(sources[k % associations] / path.name)
    group_name = f"node x{receivers}"
    walls: dict[str, list[float]] = {"node": [], "orthanc": [], "storescp": [],
                                     "pynetdicom": []}
    if receivers > 1:
        walls = {"node": [], group_name: [], "orthanc": [], "storescp": [],
                 "pynetdicom": []}
    node_rss: list[dict[str, float]] = []
    with ExitStack() as stack:
        rx = _Receivers(work, stack)
        plan: list[tuple[str, Callable[[], int], Callable[[], None]]] = [
            ("node", rx.node_count, rx.reset_node),
            ("orthanc", rx.orthanc_count, rx.reset_orthanc),
            ("storescp", rx.storescp_count, rx.reset_storescp),
            ("pynetdicom", rx.bare_count, rx.reset_bare),
        ]
        if receivers > 1:
            group = _Group(work, receivers)
            stack.callback(group.stop)
            plan.insert(1, (group_name, group.count, group.reset))
        for r in range(rounds):
            for name, counted, reset in plan:
                if r:
                    reset()
                # Start each run with no dirty pages of the source or of the previous
                # receiver (storescp and pynetdicom do not fsync): their write-back would
                # slow the next receiver's fsyncs.
                os.sync()
                if name == "node":
                    port, called = rx.node.dicom_port, "KIDNEYNODE"
                    with _Sampler(rx.node.proc.pid) as sampler:
                        wall = _send_all(port, called, sources)
                    node_rss.append({"start": sampler.samples[0], "peak": max(sampler.samples),
                                     "end": sampler.samples[-1]})
                elif name == group_name:
                    wall = _send_all(group.port, "KIDNEYNODE", sources)
                elif name == "orthanc":
                    wall = _send_all(rx.orthanc.dicom_port, rx.orthanc.aet, sources)
                elif name == "storescp":
                    wall = _send_all(rx.scp_port, "STORESCP", sources)
                else:
                    wall = _send_all(rx.bare_port, "BARESCP", sources)
                n = counted()
                if n != count:
                    raise RuntimeError(f"round {r + 1}: {name} holds {n} of {count} instances")
                walls[name].append(wall)
                print(f"round {r + 1} {name:8s} {wall:6.2f} s  {count / wall:7.1f} inst/s",
                      flush=True)
    per_s = {k: [count / w for w in v] for k, v in walls.items()}
    med = {k: statistics.median(v) for k, v in per_s.items()}
    peaks = [s["peak"] for s in node_rss]
    extra = {}
    if receivers > 1:
        extra = {"receivers": receivers,
                 "group_vs_orthanc": round(med[group_name] / med["orthanc"], 2),
                 "group_vs_node": round(med[group_name] / med["node"], 2)}
    return {
        "instances": count, "rows": ROWS, "columns": COLS, "rounds": rounds,
        "associations": associations, **extra,
        "megabytes": round(sum(p.stat().st_size for f in sources for p in f.iterdir())
                           / 1e6, 1),
        "instances_per_second": {k: [round(x, 1) for x in v] for k, v in per_s.items()},
        "median_instances_per_second": {k: round(v, 1) for k, v in med.items()},
        "node_vs_orthanc": round(med["node"] / med["orthanc"], 2),
        "node_vs_storescp": round(med["node"] / med["storescp"], 2),
        "node_vs_pynetdicom": round(med["node"] / med["pynetdicom"], 2),
        "pynetdicom_vs_storescp": round(med["pynetdicom"] / med["storescp"], 2),
        "node_rss_mb": [{k: round(v, 1) for k, v in s.items()} for s in node_rss],
        "memory_flat": peaks[-1] <= 1.10 * peaks[0],
    }


def _markdown(result: dict) -> str:
    med = result["median_instances_per_second"]
    lines = [
        "# Ingest throughput",
        "",
        f"{result['instances']} MR instances of {result['rows']} x {result['columns']} "
        f"({result['megabytes']} MB), DCMTK `storescu -R` over "
        f"{_associations(result)}, "
        f"{result['rounds']} rounds alternating the receivers, TCP_NODELAY on every side. "
        f"Code {result['code']}.",
        "",
        "| Receiver | Instances/s per round | Median |",
        "|---|---|---|",
    ]
    for name, values in result["instances_per_second"].items():
        lines.append(f"| {name} | {', '.join(f'{v:.1f}' for v in values)} | {med[name]:.1f} |")
    if "receivers" in result:
        lines += ["", f"- node x{result['receivers']} (`kidney-node receive` processes on one "
                  f"port, SO_REUSEPORT, PostgreSQL index) / Orthanc: "
                  f"**{result['group_vs_orthanc']:.2f}x** (target >= 1.0); / one node: "
                  f"{result['group_vs_node']:.2f}x"]
    lines += [
        "",
        f"- node / Orthanc: **{result['node_vs_orthanc']:.2f}x** (target >= 1.0)",
        f"- node / storescp: **{result['node_vs_storescp']:.2f}x** (target >= 0.5)",
        f"- pynetdicom alone (the node's receive path, no header check, fsync or index; "
        f"`benchmarks/bare_scp.py`) / storescp: {result['pynetdicom_vs_storescp']:.2f}x; "
        f"node / pynetdicom alone: {result['node_vs_pynetdicom']:.2f}x",
        "- node resident memory per round (MB, start / peak / end): "
        + "; ".join(f"{s['start']:.0f} / {s['peak']:.0f} / {s['end']:.0f}"
                    for s in result["node_rss_mb"])
        + f" — flat: {'yes' if result['memory_flat'] else 'no'}",
        "",
    ]
    return "\n".join(lines)


def _associations(result: dict) -> str:
    n = result.get("associations", 1)
    return "one association" if n == 1 else f"{n} concurrent associations (the files split " \
        "between them)"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--instances", type=int, default=1000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--associations", type=int, default=1)
    parser.add_argument("--receivers", type=int, default=1,
                        help="also K receive processes sharing the port (PostgreSQL, RabbitMQ)")
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args(argv)
    if args.out is None:
        args.out = RESULTS / ("ingest.json" if args.associations == 1 else
                              f"ingest_{args.associations}assoc.json")
    with tempfile.TemporaryDirectory(prefix="kn-ingest-") as tmp:
        result = run(args.instances, args.rounds, Path(tmp), args.associations,
                     args.receivers)
    result["code"] = _revision()
    print(json.dumps(result, indent=1))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=1) + "\n")
    args.out.with_suffix(".md").write_text(_markdown(result))
    ok = (result["node_vs_orthanc"] >= 1.0 and result["node_vs_storescp"] >= 0.5
          and result["memory_flat"])
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
