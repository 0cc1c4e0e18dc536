"""Concurrent reception: 8 associations of 250 instances each into a running node.

Each association (a pynetdicom SCU in its own thread, TCP_NODELAY on) sends 250 small MR
instances of its own series; every C-STORE's response time is measured. Afterwards the
node's index must hold every instance exactly once. Prints and writes the throughput, the
response-time percentiles and the counts.

    python -m benchmarks.load [--associations 8] [--instances 250] [--database-url URL]

Default database: SQLite in a temporary folder (the embedded default). Exit status 1 when
an instance is lost, refused or indexed twice.
"""

from __future__ import annotations

import argparse
import copy
import json
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

from pydicom import dcmread
from pydicom.data import get_testdata_file
from pynetdicom import AE
from sqlalchemy import create_engine, func, select

from benchmarks.graft_eval import RESULTS, _revision
from benchmarks.stats import percentile
from service.db.tables import Instance
from service.dicom.net import NODELAY_HANDLER
from service.dicom.uids import new_uid
from tests.conftest import free_port
from tests.peers import NodeProcess, node_config


def _series(count: int) -> list:
    template = dcmread(get_testdata_file("MR_small.dcm"))
    study, series = new_uid(), new_uid()
    out = []
    for k in range(count):
        ds = copy.deepcopy(template)
        ds.StudyInstanceUID, ds.SeriesInstanceUID = study, series
        ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = new_uid()
        ds.InstanceNumber = k + 1
        out.append(ds)
    return out


def _sender(port: int, datasets: list, times: list[float], statuses: list[int]) -> None:
    ae = AE(ae_title="LOADSCU")
    ae.add_requested_context(datasets[0].SOPClassUID, datasets[0].file_meta.TransferSyntaxUID)
    assoc = ae.associate("127.0.0.1", port, ae_title="KIDNEYNODE",
                         evt_handlers=[NODELAY_HANDLER])
    if not assoc.is_established:
        statuses.extend([-1] * len(datasets))
        return
    try:
        for ds in datasets:
            t0 = time.perf_counter()
            status = assoc.send_c_store(ds)
            times.append(time.perf_counter() - t0)
            statuses.append(int(status.Status) if status and "Status" in status else -1)
    finally:
        assoc.release()


def run(associations: int, instances: int, database_url: str | None, work: Path) -> dict:
    url = database_url or f"sqlite:///{work / 'index.sqlite'}"
    config = node_config(workdir=work, database_url=url, dicom_port=free_port(),
                         http_port=free_port())
    config["scheduler"]["stable_age_seconds"] = 3600  # measure reception, not the jobs
    node = NodeProcess(work, config, work / "node.log")
    node.start()
    try:
        batches = [_series(instances) for _ in range(associations)]
        times: list[list[float]] = [[] for _ in batches]
        statuses: list[list[int]] = [[] for _ in batches]
        threads = [threading.Thread(target=_sender, args=(node.dicom_port, b, t, s))
                   for b, t, s in zip(batches, times, statuses, strict=True)]
        t0 = time.perf_counter()
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        wall = time.perf_counter() - t0
    finally:
        node.stop()
    engine = create_engine(url)
    sent = {str(ds.SOPInstanceUID) for b in batches for ds in b}
    with engine.connect() as conn:
        rows = conn.execute(select(Instance.sop_instance_uid, func.count())
                            .group_by(Instance.sop_instance_uid)).all()
    engine.dispose()
    indexed = {uid: n for uid, n in rows}
    flat = sorted(t * 1000 for ts in times for t in ts)

    return {
        "associations": associations, "instances_per_association": instances,
        "database": url.split(":")[0], "wall_seconds": round(wall, 2),
        "instances_per_second": round(len(sent) / wall, 1),
        "response_ms": {"mean": round(statistics.mean(flat), 2),
                        **{f"p{q}": round(percentile(flat, q), 2) for q in (50, 95, 99)},
                        "max": round(flat[-1], 2)},
        "not_success": sum(1 for ss in statuses for s in ss if s != 0),
        "lost": len(sent - indexed.keys()),
        "indexed_more_than_once": sum(1 for uid in sent if indexed.get(uid, 0) > 1),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--associations", type=int, default=8)
    parser.add_argument("--instances", type=int, default=250)
    parser.add_argument("--database-url", default=None)
    parser.add_argument("--out", type=Path, default=RESULTS / "load.json")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="kn-load-") as tmp:
        result = run(args.associations, args.instances, args.database_url, Path(tmp))
    result["code"] = _revision()
    print(json.dumps(result, indent=1))
    results = json.loads(args.out.read_text()) if args.out.exists() else {}
    results[result["database"]] = result
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=1) + "\n")
    ok = result["lost"] == result["not_success"] == result["indexed_more_than_once"] == 0
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
