"""A scaled-out node (issue 21): two receivers and three workers on one PostgreSQL, one
archive and a real RabbitMQ, with a worker and a receiver killed (SIGKILL) mid-work.

What the user sees must hold: every instance a receiver acknowledged is stored once;
every study has exactly one succeeded job and one result; every result reaches the
destination (storescp).
"""

from __future__ import annotations

import os
import signal
import subprocess
import threading
import time
import urllib.request
from pathlib import Path

import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families
from pydicom import dcmread
from pydicom.uid import Comprehensive3DSRStorage, SegmentationStorage
from sqlalchemy import func, select

from service.db import make_engine, make_sessionmaker
from service.db.tables import Job, JobState, OutboxItem, Result, Study, Worker
from service.synthetic.copies import study_copies
from tests.conftest import free_port
from tests.peers import (
    NODE_BIN,
    NodeProcess,
    indexed_instances,
    node_config,
    received,
    result_count,
    storescp,
    storescu,
)

pytestmark = pytest.mark.integration

STUDIES = 30


class _Worker:
    """``kidney-node worker`` as a process."""

    def __init__(self, config: Path, name: str, log: Path) -> None:
        self.config, self.name, self.log_path = config, name, log
        self.proc: subprocess.Popen | None = None

    def start(self) -> None:
        log = open(self.log_path, "ab")  # noqa: SIM115 - closed with the process
        self.proc = subprocess.Popen(
            [str(NODE_BIN), "--config", str(self.config), "worker", "--name", self.name],
            stdout=log, stderr=subprocess.STDOUT, cwd=self.config.parent)
        deadline = time.monotonic() + 60
        while "ready." not in self.log_path.read_text(errors="replace"):
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"worker {self.name} did not start:\n{self.log()}")
            time.sleep(0.2)

    def kill(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(10)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.kill()

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")[-4000:]


def test_two_receivers_three_workers_lose_nothing_when_killed(
        postgres_url, rabbitmq, small_study_dir, tmp_path):
    amqp, prefix = rabbitmq
    studies = study_copies(list(small_study_dir.files), tmp_path / "studies", STUDIES)
    archive = tmp_path / "archive"
    dest_dir, dest_port = tmp_path / "dest", free_port()
    engine = make_engine(postgres_url)
    sessions = make_sessionmaker(engine)
    receivers: list[NodeProcess] = []
    workers: list[_Worker] = []
    with storescp(dest_port, dest_dir):
        try:
            for n in range(2):
                workdir = tmp_path / f"receiver{n}"
                workdir.mkdir()
                config = node_config(
                    workdir=workdir, database_url=postgres_url, dicom_port=free_port(),
                    http_port=free_port(), destinations=[
                        {"name": "dest", "ae_title": "DEST", "host": "127.0.0.1",
                         "port": dest_port}])
                config["storage"]["root"] = str(archive)
                # Stable after 30 s: a study cut by the receiver's death is resent whole
                # before it is looked at. (With 10 s, on a slower day, the last of 15 cut
                # studies, resent one after another, came back after their first part had
                # become a job: two jobs for one study, as the node rightly does for
                # instances that arrive after a study's job.)
                config["scheduler"].update(stable_age_seconds=30, max_attempts=5)
                config["broker"] = {"url": amqp, "queue_prefix": prefix, "queue": "cpu",
                                    "heartbeat_seconds": 1, "heartbeat_timeout_seconds": 4,
                                    "republish_seconds": 60}
                receivers.append(NodeProcess(workdir=workdir, config=config,
                                             log_path=workdir / "node.log",
                                             command="receive"))
                receivers[-1].start()
            worker_config = tmp_path / "worker.yaml"
            worker_config.write_text(yaml.safe_dump(receivers[0].config))
            workers = [_Worker(worker_config, f"w{n}", tmp_path / f"w{n}.log")
                       for n in range(3)]
            for worker in workers:
                worker.start()

            # 30 studies sent at once: half to each receiver, three associations each.
            outcomes: dict[int, subprocess.CompletedProcess] = {}

            def send(indices: list[int], receiver: NodeProcess) -> None:
                for i in indices:
                    outcomes[i] = storescu(receiver.dicom_port, studies[i])

            threads = [threading.Thread(target=send, args=(list(range(k, STUDIES, 6)),
                                                           receivers[k % 2]))
                       for k in range(6)]
            for thread in threads:
                thread.start()
            time.sleep(3)  # receptions under way
            receivers[1].kill()
            for thread in threads[1::2]:  # receiver 1's: their sends fail at once
                thread.join()
            receivers[1].start()
            cut = sorted(i for i, r in outcomes.items() if r.returncode != 0)
            print(f"receiver 1 killed: {len(cut)} studies' sends cut")
            assert cut, "the kill came after every reception ended"
            for i in cut:  # the sender still holds whatever was not acknowledged
                assert storescu(receivers[1].dicom_port, studies[i]).returncode == 0
            for thread in threads[::2]:
                thread.join()

            def running_on(name: str) -> int | None:
                with sessions() as s:
                    return s.scalar(select(Job.id).where(Job.state == JobState.RUNNING,
                                                         Job.worker == name))

            # A worker killed during a job.
            killed_job = receivers[0].wait_for(lambda: running_on("w0"), 120,
                                               "a job running on w0")
            workers[0].kill()
            print(f"worker w0 killed while running job {killed_job}")
            workers[0].start()  # the same name: its earlier process's job is queued again

            # A worker drained (SIGTERM) during a job: it finishes that job, then stops.
            drained_job = receivers[0].wait_for(lambda: running_on("w2"), 120,
                                                "a job running on w2")
            workers[2].stop()
            print(f"worker w2 drained while running job {drained_job}: exit "
                  f"{workers[2].proc.returncode}")
            assert workers[2].proc.returncode == 0, workers[2].log()

            def all_done() -> bool:
                with sessions() as s:
                    open_jobs = s.scalar(select(func.count(Job.id)).where(
                        Job.state.in_([JobState.QUEUED, JobState.RUNNING])))
                    done = s.scalar(select(func.count(Job.id)).where(
                        Job.state == JobState.SUCCEEDED))
                return open_jobs == 0 and done >= STUDIES

            receivers[0].wait_for(all_done, 300, "every study's job to end")
            with sessions() as s:
                jobs = s.execute(select(Study.study_instance_uid, Job.state, Job.worker,
                                        Job.attempts, Job.id)
                                 .join(Job, Job.study_pk == Study.id)).all()
                results = s.execute(select(Study.study_instance_uid, Result.seg_sop_instance_uid)
                                    .join(Result, Result.study_pk == Study.id)).all()
                worker_rows = {w.name: w for w in s.scalars(select(Worker))}
            uids = {str(dcmread(files[0], stop_before_pixels=True).StudyInstanceUID)
                    for files in studies}
            per_study = {uid: [j for j in jobs if j[0] == uid] for uid in uids}
            assert {uid: len(j) for uid, j in per_study.items() if len(j) != 1} == {}, \
                [j for j in per_study.values() if len(j) != 1]  # one job per study
            assert all(state is JobState.SUCCEEDED for _, state, *_ in jobs), jobs
            assert sorted(uid for uid, _ in results) == sorted(uids)  # one result each
            by_worker = {name: sum(1 for j in jobs if j[2] == name) for name in worker_rows}
            print(f"jobs per worker: {by_worker}")
            (again,) = [j for j in jobs if j[4] == killed_job]
            assert again[3] == 2, again  # run twice: killed, then to its end
            (drained,) = [j for j in jobs if j[4] == drained_job]
            assert drained[2:4] == ("w2", 1), drained  # finished by w2, once
            assert worker_rows["w0"].state == "alive"
            assert worker_rows["w2"].state == "stopped"

            # Every instance acknowledged is stored once (indexed_instances fails on a UID
            # indexed twice), its file in the shared archive.
            stored = indexed_instances(postgres_url)
            sent = {str(dcmread(f, stop_before_pixels=True).SOPInstanceUID)
                    for files in studies for f in files}
            assert sent <= set(stored)
            assert all((archive / stored[uid]).is_file() for uid in sent)
            leftovers = [p for p in (archive / ".incoming").rglob("*") if p.is_file()]
            print(f"partial files left in .incoming: {len(leftovers)}")

            # Every result reaches the destination (a resend after a kill would be the
            # same SOP Instance UID: counted once).
            def delivered() -> tuple[set[str], set[str]] | None:
                segs = {str(dcmread(p, stop_before_pixels=True).SOPInstanceUID)
                        for p in received(dest_dir, SegmentationStorage)}
                srs = {str(dcmread(p, stop_before_pixels=True).SOPInstanceUID)
                       for p in received(dest_dir, Comprehensive3DSRStorage)}
                return (segs, srs) if len(segs) >= STUDIES and len(srs) >= STUDIES else None

            segs, srs = receivers[0].wait_for(delivered, 120, "every SEG and SR delivered")
            assert segs == {seg for _, seg in results}
            assert len(srs) == STUDIES
            # Two receivers' senders drain one outbox (one item, one sender at a time:
            # tests/unit/outbox/test_lease.py); storescp takes one association at a time,
            # so the other sender's may time out and be retried.
            with sessions() as s:
                sends = s.execute(select(OutboxItem.state, OutboxItem.attempts)).all()
            assert len(sends) == STUDIES * result_count(small_study_dir)  # SEG, SR, phase
            assert {state.value for state, _ in sends} == {"sent"}
            tries = sorted({a for _, a in sends})
            print("outbox items by attempts: "
                  f"{ {a: sum(1 for _, n in sends if n == a) for a in tries} }")
            health = receivers[0].get("/api/workers")
            assert {w["name"]: w["state"] for w in health} == {
                "w0": "alive", "w1": "alive", "w2": "stopped"}
        finally:
            for worker in workers:
                worker.stop()
            for receiver in receivers:
                receiver.stop()
            engine.dispose()
            for worker in workers:
                if worker.proc is not None and worker.proc.returncode not in (0, -9, None):
                    print(worker.log())
    assert os.path.isdir(archive)


def test_receivers_on_one_port_share_the_associations(postgres_url, rabbitmq,
                                                       small_study_dir, tmp_path):
    """``dicom.reuse_port``: two receiver processes listen on one port; the kernel gives
    each new association to one of them, and both store into the one index. A process
    without the setting cannot take the port."""
    amqp, prefix = rabbitmq
    port = free_port()
    receivers = []
    try:
        for n in range(3):
            workdir = tmp_path / f"receiver{n}"
            workdir.mkdir()
            config = node_config(workdir=workdir, database_url=postgres_url, dicom_port=port,
                                 http_port=free_port())
            config["storage"]["root"] = str(tmp_path / "archive")
            config["dicom"]["reuse_port"] = n < 2
            config["broker"] = {"url": amqp, "queue_prefix": prefix, "queue": "cpu"}
            receivers.append(NodeProcess(workdir=workdir, config=config,
                                         log_path=workdir / "node.log", command="receive"))
        for receiver in receivers[:2]:
            receiver.start()
        with pytest.raises(RuntimeError, match=f"dicom.port: cannot listen on .*:{port}"):
            receivers[2].start()
        files = sorted(small_study_dir.files)[:32]
        for i in range(16):  # one association each, from a new source port
            assert storescu(port, files[2 * i:2 * i + 2]).returncode == 0
        accepted = []
        for receiver in receivers[:2]:
            with urllib.request.urlopen(receiver.api + "/metrics", timeout=5) as resp:  # noqa: S310
                text = resp.read().decode()
            accepted.append(sum(
                s.value for family in text_string_to_metric_families(text)
                for s in family.samples
                if s.name == "kidney_node_associations_total"
                and s.labels.get("outcome") == "accepted"))
        print(f"associations per receiver: {accepted}")
        assert sum(accepted) == 16 and min(accepted) > 0
        stored = indexed_instances(postgres_url)
        assert {str(dcmread(f, stop_before_pixels=True).SOPInstanceUID) for f in files} \
            <= set(stored)
    finally:
        for receiver in receivers:
            receiver.stop()


def test_a_gpu_job_no_gpu_worker_takes_runs_on_a_cpu_worker_when_allowed(
        postgres_url, rabbitmq, small_study_dir, tmp_path):
    """broker.queue gpu with cpu_fallback_seconds: no GPU worker runs; after the wait the
    job is published to the CPU queue, a CPU worker runs it, and the result says so."""
    amqp, prefix = rabbitmq
    workdir = tmp_path / "receiver"
    workdir.mkdir()
    config = node_config(workdir=workdir, database_url=postgres_url, dicom_port=free_port(),
                         http_port=free_port())
    config["broker"] = {"url": amqp, "queue_prefix": prefix, "queue": "gpu",
                        "cpu_fallback_seconds": 3}
    receiver = NodeProcess(workdir=workdir, config=config, log_path=workdir / "node.log",
                           command="receive")
    worker = _Worker(workdir / "config.yaml", "cpu-only", tmp_path / "worker.log")
    try:
        receiver.start()
        worker.start()
        assert storescu(receiver.dicom_port, list(small_study_dir.files)).returncode == 0
        uid = small_study_dir.study_instance_uid
        study = receiver.wait_for(lambda: (s := receiver.study(uid)) and s["results"] and s,
                                  120, "the result")
        (job,) = study["jobs"]
        assert (job["queue"], job["worker"], job["device"]) == ("gpu+cpu", "cpu-only", "cpu")
        assert "cpu-profile" in study["results"][0]["flags"]
        assert "no GPU worker took it in 3 s" in receiver.log()
    finally:
        worker.stop()
        receiver.stop()
