"""Real-world DICOM files sent through the node: the shared part of the corpus tests.

A corpus is a folder of files with a ``dicom_catalog.tsv`` (columns ``file``, ``sop``,
``ts``, ``pydicom_decode``, …, as written for ``../shared/data/real/dicom-corpus``). Each
file is sent to an in-process :class:`StorageSCP` with DCMTK's ``dcmsend``, in its own
transfer syntax; when ``dcmsend`` cannot send it at all (it cannot read the file, does not
know the syntax, or sends a request the node aborts) it is sent again with pynetdicom as
the SCU, so the node still sees it. Each file's outcome is then checked against the node:

- *stored*: Success, an Instance row, the archived file holds the SOP Instance UID sent
  in the syntax the index records, and when the catalog says pydicom decodes the file,
  the archived copy decodes too, to the original's pixels (to their shape where the
  sender transcoded an uncompressed file);
- *refused (status)*: 0xA900 or 0xC000, the index unchanged, and an error line from the
  node naming the SOP Instance UID (or, for a file lacking identifying attributes, their
  names);
- *refused (negotiation)*: no presentation context accepted, and indeed the file's SOP
  class or transfer syntax is not among the node's contexts;
- *aborted* (with a log line) or *not sent*: the index unchanged.

Files sharing a SOP Instance UID are sent one after the other, each checked before the
next replaces it in the archive; one of another SOP class than the instance held must be
refused with 0xA900 (docs/conformance.md: it never replaces it), good or not.

A file is **good** (:meth:`CorpusFile.why_not_good` is ``None``) when neither the catalog
nor the file shows anything wrong with it: pydicom reads its header; it has File Meta
Information (catalog ``ts`` is not ``(no meta)``); the catalog names its SOP class
(``sop`` not empty); its dataset is encoded as its transfer syntax says (pydicom does not
have to fall back to the other VR encoding); its transfer syntax is not one the node
documents as refused (:data:`REFUSED_SYNTAXES`); the catalog does not report a decode
failure (``pydicom_decode`` is ``ok …`` or ``no pixel data``); its SOP Class UID is a
storage SOP class (pynetdicom's list) and not retired; and it carries the four
identifying UIDs (SOP Class, SOP Instance, Study Instance, Series Instance; Type 1 in
every storage IOD). Every good file must end stored: no good file is lost. Files that are
not good may end either way, but always as above.
"""

from __future__ import annotations

import csv
import logging
import os
import re
import subprocess
import tempfile
import threading
import time
import warnings
from collections import Counter, defaultdict
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from pydicom import dcmread
from pydicom.data import get_testdata_file
from pydicom.dataset import Dataset
from pydicom.errors import InvalidDicomError
from pydicom.uid import UID, generate_uid
from pynetdicom import AE
from pynetdicom.service_class import StorageServiceClass
from pynetdicom.sop_class import uid_to_service_class
from sqlalchemy import select

from service.config import DicomSettings
from service.db import Instance, Series, make_engine, make_sessionmaker, upgrade
from service.dicom.contexts import accepted_transfer_syntaxes, scp_contexts
from service.dicom.net import configure_reception
from service.dicom.scp import StorageSCP
from service.errors import SeriesLoadError
from service.imaging.dcmtk_decode import dcmtk_decodes, decode_jpeg_extended
from service.imaging.series import load_series
from service.storage import InstanceStore
from tests.peers import ROOT, dcmtk, peer_env

__all__ = [
    "CATALOG",
    "REFUSED_SYNTAXES",
    "SHARED_CORPUS",
    "SUBSET",
    "CorpusFile",
    "LogCapture",
    "Outcome",
    "Swept",
    "assert_node_alive",
    "catalog_rows",
    "check_enhanced",
    "check_series_loading",
    "corpus_files",
    "running_node",
    "send_and_check",
    "summary",
    "sweep",
    "swept_corpus",
]

CATALOG = "dicom_catalog.tsv"
#: The corpus of issue 5, next to the repository (absent from a fresh clone).
SHARED_CORPUS = Path(os.environ.get("KIDNEY_NODE_DICOM_CORPUS")
                     or ROOT.parent / "shared" / "data" / "real" / "dicom-corpus")
#: The few files of it copied into the repository (see PROVENANCE.md there).
SUBSET = ROOT / "tests" / "data" / "dicom_corpus"

#: Catalog ``ts`` values the node refuses at negotiation, by design (README, Reception).
#: (JPEG Extended is accepted: DCMTK, installed with the test peers, decodes it.)
REFUSED_SYNTAXES = {
    "1.2.840.10008.1.2.8.1": "Deflated Image Frame Compression: no pydicom decoder",
}
_IDENTIFYING = ("SOPClassUID", "SOPInstanceUID", "StudyInstanceUID", "SeriesInstanceUID")
_READ_ERRORS = (InvalidDicomError, OSError, EOFError, ValueError, KeyError, TypeError,
                AttributeError, NotImplementedError)
#: Statuses a corpus file may be refused with (0xA700 is for disk/database failures).
_REFUSAL_STATUSES = {0xA900: "dataset mismatch", 0xC000: "cannot understand"}


@dataclass(frozen=True)
class CorpusFile:
    """One catalogued file and what pydicom reads of its header."""

    relpath: str
    path: Path
    catalog: dict[str, str]
    sop_class_uid: str = ""
    sop_instance_uid: str = ""
    meta_sop_instance_uid: str = ""
    transfer_syntax_uid: str = ""
    missing: tuple[str, ...] = ()
    misencoded: str = ""
    read_error: str = ""

    @classmethod
    def read(cls, root: Path, row: dict[str, str]) -> CorpusFile:
        path = root / row["file"]
        try:
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always")
                ds = dcmread(path, stop_before_pixels=True, force=True)
                values = {k: str(ds.get(k, "") or "").strip() for k in _IDENTIFYING}
                meta = ds.get("file_meta") or Dataset()
                meta_uid = str(meta.get("MediaStorageSOPInstanceUID", "") or "")
                syntax = str(meta.get("TransferSyntaxUID", "") or "")
        except _READ_ERRORS as exc:
            return cls(row["file"], path, row, read_error=f"{type(exc).__name__}: {exc}")
        # pydicom falls back to the other VR encoding when the dataset contradicts its
        # transfer syntax (e.g. implicit VR under JPEG Baseline); senders do not.
        misencoded = next((str(w.message) for w in caught
                           if re.search(r"Expected \w+ VR, but found", str(w.message))), "")
        return cls(row["file"], path, row, values["SOPClassUID"], values["SOPInstanceUID"],
                   meta_uid, syntax, tuple(k for k, v in values.items() if not v), misencoded)

    @property
    def decodable(self) -> bool:
        """The catalog says pydicom decodes its pixels."""
        return self.catalog["pydicom_decode"].startswith("ok")

    @property
    def sent_uids(self) -> set[str]:
        """SOP Instance UIDs a sender may put in the request (dataset's, else meta's)."""
        return {u for u in (self.sop_instance_uid, self.meta_sop_instance_uid) if u}

    def why_not_good(self) -> str | None:
        """``None`` for a good file (module docstring), else why it may be refused."""
        ts, decode = self.catalog["ts"], self.catalog["pydicom_decode"]
        sop = UID(self.sop_class_uid)
        if self.read_error:
            return f"pydicom cannot read it ({self.read_error[:60]})"
        if ts == "(no meta)":
            return "no File Meta Information"
        if not self.catalog["sop"]:
            return "catalog: no SOP class (not read as a storage object)"
        if self.misencoded:
            return f"dataset encoding contradicts its transfer syntax ({self.misencoded[:60]})"
        if ts in REFUSED_SYNTAXES:
            return REFUSED_SYNTAXES[ts]
        if not (decode.startswith("ok") or decode == "no pixel data"):
            return f"catalog: {decode[:60]}"
        if not sop.is_valid or uid_to_service_class(sop) is not StorageServiceClass:
            return f"not a storage SOP class ({self.sop_class_uid or 'none'})"
        if sop.is_retired:
            return f"retired SOP class {sop.name}"
        if self.missing:
            return f"lacks {', '.join(self.missing)}"
        return None


def catalog_rows(root: Path) -> list[dict[str, str]]:
    with open(root / CATALOG, newline="") as fh:
        return list(csv.DictReader(fh, delimiter="\t"))


def corpus_files(root: Path) -> tuple[list[CorpusFile], list[str]]:
    """The catalogued files present under ``root``, and those the catalog lists but the
    folder lacks."""
    rows = catalog_rows(root)
    present = [row for row in rows if (root / row["file"]).is_file()]
    absent = [row["file"] for row in rows if not (root / row["file"]).is_file()]
    return [CorpusFile.read(root, row) for row in present], absent


class LogCapture(logging.Handler):
    """Collects WARNING+ records of the node's and pynetdicom's loggers, from any thread."""

    LOGGERS = ("service", "pynetdicom")

    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)

    def since(self, mark: int, logger_prefix: str = "") -> list[str]:
        return [r.getMessage() for r in self.records[mark:] if r.name.startswith(logger_prefix)]

    @contextmanager
    def attached(self) -> Iterator[LogCapture]:
        loggers = [logging.getLogger(name) for name in self.LOGGERS]
        levels = [lg.level for lg in loggers]
        for lg in loggers:
            lg.addHandler(self)
            if lg.getEffectiveLevel() > logging.WARNING:
                lg.setLevel(logging.WARNING)
        try:
            yield self
        finally:
            for lg, level in zip(loggers, levels, strict=True):
                lg.removeHandler(self)
                lg.setLevel(level)


@contextmanager
def running_node(workdir: Path) -> Iterator[tuple[int, InstanceStore]]:
    """An in-process SCP on a fresh SQLite index and archive under ``workdir``."""
    url = f"sqlite:///{workdir / 'index.sqlite'}"
    upgrade(url)
    engine = make_engine(url)
    store = InstanceStore(workdir / "archive", make_sessionmaker(engine))
    saved_tempdir = tempfile.tempdir
    configure_reception()  # the node's process-wide DICOM settings
    scp = StorageSCP(DicomSettings(host="127.0.0.1", port=0), store)
    try:
        yield scp.start(), store
    finally:
        scp.stop()
        engine.dispose()
        tempfile.tempdir = saved_tempdir


@dataclass
class Outcome:
    """What became of one file; ``problems`` lists every check that failed."""

    file: CorpusFile
    kind: str  # stored | refused-status | refused-negotiation | aborted | not-sent
    sender: str
    status: int | None = None
    detail: str = ""
    first_try: str = ""  # dcmsend's outcome when pynetdicom sent the file again
    problems: list[str] = field(default_factory=list)
    #: The SOP class under which the node already held the file's SOP Instance UID, when
    #: another than the file's (the file must then be refused: not a lost good file).
    held_as: str | None = None

    def line(self) -> str:
        """``kind status sender file``, then why it is not good and what went on."""
        status = "" if self.status is None else f"0x{self.status:04X}"
        notes = [f"not good: {why}" for why in [self.file.why_not_good()] if why]
        notes += [f"dcmsend first: {self.first_try[:110]}"] if self.first_try else []
        notes += [self.detail] if self.detail and self.kind != "stored" else []
        head = f"{self.kind:<19} {status:<6} {self.sender:<10} {self.file.relpath}"
        return "\n".join([head, *(f"{'':>37}{n}" for n in notes)])


def _dcmsend(port: int, item: CorpusFile, report: Path) -> tuple[str, int | None, str]:
    """Send with DCMTK in the file's own syntax; (kind, status, detail)."""
    # +f: also files without meta header; -nuc: let the node judge malformed UIDs.
    out = subprocess.run(
        [dcmtk("dcmsend"), "-v", "--decompress-never", "+f", "-nuc", "-aet", "CORPUS",
         "-aec", "KIDNEYNODE", "+crf", str(report), "127.0.0.1", str(port), str(item.path)],
        env=peer_env(), capture_output=True, text=True, timeout=120)
    text = out.stdout + out.stderr
    found = re.search(r"DIMSE Status\s*:\s*0x([0-9a-fA-F]{4})", report.read_text()
                      if report.exists() else "")
    if found:
        status = int(found.group(1), 16)
        return ("stored" if status == 0 else "refused-status"), status, ""
    if "no acceptable presentation context" in text.lower():
        return "refused-negotiation", None, "no presentation context accepted"
    if "peer aborted association" in text.lower():
        return "aborted", None, "association aborted by the node"
    errors = [ln[3:] for ln in text.splitlines() if ln.startswith(("E: ", "F: "))]
    return "not-sent", None, ("; ".join(errors) or f"dcmsend exit {out.returncode}")


def _pynetdicom_send(port: int, item: CorpusFile) -> tuple[str, int | None, str]:
    """Send the dataset as pydicom reads it (UN elements resolved); (kind, status, detail)."""
    try:
        ds = dcmread(item.path, force=True)
        syntax, sop_class = ds.file_meta.TransferSyntaxUID, ds.SOPClassUID
        ae = AE(ae_title="CORPUS")
        ae.add_requested_context(sop_class, syntax)
    except _READ_ERRORS as exc:
        return "not-sent", None, f"pynetdicom: {type(exc).__name__}: {exc}"
    assoc = ae.associate("127.0.0.1", port, ae_title="KIDNEYNODE")
    if not assoc.is_established:
        return "refused-negotiation", None, "association rejected or aborted"
    try:
        if not assoc.accepted_contexts:
            return "refused-negotiation", None, "no presentation context accepted"
        try:
            answer = assoc.send_c_store(ds)
        except _READ_ERRORS as exc:
            return "not-sent", None, f"pynetdicom: {type(exc).__name__}: {exc}"
    finally:
        if assoc.is_established:
            assoc.release()
    if "Status" not in answer:
        return "aborted", None, "no C-STORE response"
    status = int(answer.Status)
    return ("stored" if status == 0 else "refused-status"), status, ""


def _row(store: InstanceStore, uids: set[str]) -> list[tuple]:
    with store.sessions() as s:
        return [tuple(r) for r in s.execute(
            select(Instance.sop_instance_uid, Instance.path, Instance.size_bytes,
                   Instance.transfer_syntax_uid).where(Instance.sop_instance_uid.in_(uids)))]


def _held_class(store: InstanceStore, sop_instance_uid: str) -> str | None:
    with store.sessions() as s:
        return s.scalar(select(Instance.sop_class_uid)
                        .where(Instance.sop_instance_uid == sop_instance_uid))


def _pixels(ds: Dataset) -> np.ndarray:
    """Pixels as the node decodes them: DCMTK for JPEG Extended, pydicom otherwise."""
    if dcmtk_decodes(str(ds.file_meta.TransferSyntaxUID)):
        return decode_jpeg_extended(ds)
    return ds.pixel_array


def _check_stored(store: InstanceStore, item: CorpusFile, problems: list[str]) -> None:
    rows = _row(store, {item.sop_instance_uid})
    if not rows:
        problems.append(f"Success but no Instance row for {item.sop_instance_uid}")
        return
    _, relpath, _, syntax = rows[0]
    stored = dcmread(store.path_of(relpath))
    if str(stored.SOPInstanceUID) != item.sop_instance_uid:
        problems.append(f"archived file holds SOP Instance UID {stored.SOPInstanceUID}")
    if str(stored.file_meta.TransferSyntaxUID) != syntax:
        problems.append("index and archived file disagree on the transfer syntax")
    if not item.decodable:
        return
    original = dcmread(item.path, force=True)
    try:
        pixels, expected = _pixels(stored), _pixels(original)
    except _READ_ERRORS + (RuntimeError,) as exc:
        problems.append(f"pixels of the archived copy do not decode: {exc}")
        return
    # Values must match where the file arrived in its own syntax; DCMTK may transcode
    # an uncompressed file (and swaps 32-bit OW big endian data as 16-bit words).
    if syntax == item.transfer_syntax_uid and not np.array_equal(pixels, expected):
        problems.append("archived pixels differ from the original's")
    elif pixels.shape != expected.shape:
        problems.append(f"archived pixels have shape {pixels.shape}, not {expected.shape}")


def _check(outcome: Outcome, store: InstanceStore, before: list[tuple],
           messages: list[str], node_messages: list[str]) -> None:
    item, problems = outcome.file, outcome.problems
    if outcome.kind == "stored":
        _check_stored(store, item, problems)
        return
    if _row(store, item.sent_uids) != before:
        problems.append("refused, yet the index changed")
    if outcome.kind == "refused-status":
        if outcome.status not in _REFUSAL_STATUSES:
            problems.append(f"unexpected status 0x{outcome.status:04X}")
        named = [m for m in node_messages if any(u in m for u in item.sent_uids)]
        if not named:
            problems.append("no node log line names the refused instance")
        elif item.missing and not all(k in named[0] for k in item.missing):
            problems.append(f"log line does not name the missing {item.missing}: {named[0]}")
        outcome.detail = named[0] if named else outcome.detail
    elif outcome.kind == "refused-negotiation":
        offered = {cx.abstract_syntax: cx.transfer_syntax for cx in scp_contexts()}
        if item.transfer_syntax_uid in accepted_transfer_syntaxes() \
                and item.sop_class_uid in offered:
            problems.append("refused at negotiation though its SOP class and syntax are "
                            "among the node's contexts")
    elif outcome.kind == "aborted" and not messages:
        problems.append("association aborted without a log line")


def send_and_check(port: int, store: InstanceStore, log: LogCapture, item: CorpusFile,
                   report: Path) -> Outcome:
    """Send one file (dcmsend, then pynetdicom if dcmsend could not) and check the result."""
    before = _row(store, item.sent_uids)
    held_as = _held_class(store, item.sop_instance_uid)
    mark = len(log.records)
    kind, status, detail = _dcmsend(port, item, report)
    outcome = Outcome(item, kind, "dcmsend", status, detail)
    if kind in ("aborted", "not-sent"):
        first = f"{kind}: {detail}"[:300]
        kind, status, detail = _pynetdicom_send(port, item)
        outcome = Outcome(item, kind, "pynetdicom", status, detail, first_try=first)
    _check(outcome, store, before, log.since(mark), log.since(mark, "service"))
    if held_as is not None and held_as != item.sop_class_uid:
        outcome.held_as = held_as
        # docs/conformance.md: an instance of another SOP class never replaces one held.
        if (outcome.kind, outcome.status) != ("refused-status", 0xA900):
            outcome.problems.append(f"the node holds this SOP Instance UID as {held_as}: "
                                    f"expected 0xA900, got {outcome.kind}")
    elif outcome.kind != "stored" and item.why_not_good() is None:
        outcome.problems.append("a good file was not stored")
    return outcome


def sweep(files: Sequence[CorpusFile], port: int, store: InstanceStore, log: LogCapture,
          workdir: Path, *, workers: int = 4) -> list[Outcome]:
    """Send and check every file, ``workers`` associations at a time.

    Files sharing a SOP Instance UID go through one worker, in order: a resend replaces
    the archived copy, so each is checked before the next arrives.
    """
    groups: dict[str, list[tuple[int, CorpusFile]]] = defaultdict(list)
    for i, item in enumerate(files):
        groups[item.sop_instance_uid or item.relpath].append((i, item))
    results: dict[int, Outcome] = {}
    lock = threading.Lock()

    def run(group: list[tuple[int, CorpusFile]]) -> None:
        for i, item in group:
            outcome = send_and_check(port, store, log, item, workdir / f"report-{i}.txt")
            with lock:
                results[i] = outcome

    # pydicom warns about many of these files (invalid UIDs, odd lengths…): silenced here,
    # for the node's threads as well as the workers (warning filters are process-wide).
    with warnings.catch_warnings(), ThreadPoolExecutor(workers) as pool:
        warnings.simplefilter("ignore")
        list(pool.map(run, groups.values()))
    return [results[i] for i in range(len(files))]


def summary(outcomes: Sequence[Outcome]) -> str:
    """One line per file, then the counts per outcome."""
    counts = Counter(o.kind for o in outcomes)
    lines = [o.line() for o in sorted(outcomes, key=lambda o: (o.kind, o.file.relpath))]
    lines.append("totals: " + ", ".join(f"{k} {n}" for k, n in sorted(counts.items()))
                 + f" (of {len(outcomes)} files)")
    return "\n".join(lines)


@dataclass
class Swept:
    """A node that has been sent a whole corpus, and what became of each file."""

    port: int
    store: InstanceStore
    log: LogCapture
    workdir: Path
    outcomes: list[Outcome]

    def outcome(self, relpath: str) -> Outcome:
        return next(o for o in self.outcomes if o.file.relpath == relpath)


@contextmanager
def swept_corpus(root: Path, workdir: Path) -> Iterator[Swept]:
    """Start a node, sweep the corpus at ``root`` through it and print the summary; the
    node keeps running until the context exits."""
    files, absent = corpus_files(root)
    log = LogCapture()
    with log.attached(), running_node(workdir) as (port, store):
        start = time.monotonic()
        outcomes = sweep(files, port, store, log, workdir)
        print(f"\n{summary(outcomes)}\n{len(files)} files swept in "
              f"{time.monotonic() - start:.1f} s"
              + (f"; the catalog lists {len(absent)} more, absent here" if absent else ""))
        yield Swept(port, store, log, workdir, outcomes)


def check_series_loading(store: InstanceStore) -> tuple[dict[str, str], list[str]]:
    """Load every archived series; returns (series UID -> result, problems).

    A series loads, with one slice per frame, or is refused with a
    :class:`SeriesLoadError`; a series holding an enhanced (multi-frame) instance that is
    refused gets a message naming its SOP class and saying it is not supported.
    """
    with store.sessions() as s:
        rows = s.execute(select(Series.series_instance_uid, Instance.path,
                                Instance.sop_class_uid).join(Instance.series)).all()
    by_series: dict[str, list[tuple[Path, str]]] = defaultdict(list)
    for series_uid, relpath, sop_class in rows:
        by_series[series_uid].append((store.path_of(relpath), sop_class))
    results: dict[str, str] = {}
    problems: list[str] = []
    for series_uid, members in sorted(by_series.items()):
        enhanced = {UID(c).name for _, c in members if UID(c).name.startswith("Enhanced")}
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                loaded = load_series([p for p, _ in members])
        except SeriesLoadError as exc:
            results[series_uid] = f"refused: {exc}"
            if enhanced and not (all(n in str(exc) for n in enhanced)
                                 and "not supported" in str(exc)):
                problems.append(f"{series_uid}: enhanced {enhanced} refused unclearly: {exc}")
            continue
        except Exception as exc:  # noqa: BLE001 - anything else is the bug looked for
            problems.append(f"{series_uid}: {type(exc).__name__} escaped load_series: {exc}")
            continue
        shape = loaded.volumes[0].image.GetSize()
        results[series_uid] = f"loaded: {len(loaded.volumes)} phase(s) of {shape}"
        frames = sum(int(dcmread(p, stop_before_pixels=True).get("NumberOfFrames") or 1)
                     for p, _ in members)
        if sum(v.image.GetSize()[2] for v in loaded.volumes) != frames:
            problems.append(f"{series_uid}: {frames} frame(s) but {results[series_uid]}")
    return results, problems


def check_enhanced(store: InstanceStore, outcomes: Sequence[Outcome]) -> tuple[int, list[str]]:
    """Enhanced multi-frame files: stored when good, and at load either loaded with one
    slice per frame or refused naming the SOP class; (files checked, problems)."""
    problems: list[str] = []
    checked = 0
    for outcome in outcomes:
        item = outcome.file
        name = UID(item.sop_class_uid).name
        if not name.startswith("Enhanced"):
            continue
        checked += 1
        if outcome.kind != "stored":
            if item.why_not_good() is None and outcome.held_as is None:
                problems.append(f"{item.relpath}: good {name} file not stored")
            continue
        (_, relpath, _, _), = _row(store, {item.sop_instance_uid})
        try:
            loaded = load_series([store.path_of(relpath)])
        except SeriesLoadError as exc:
            if name not in str(exc) or "not supported" not in str(exc):
                problems.append(f"{item.relpath}: unclear refusal: {exc}")
            continue
        frames = int(item.catalog["frames"] or 1)
        if sum(v.image.GetSize()[2] for v in loaded.volumes) != frames:
            problems.append(f"{item.relpath}: {frames} frames loaded as {loaded.volumes}")
    return checked, problems


def assert_node_alive(port: int, store: InstanceStore, workdir: Path) -> None:
    """The node answers C-ECHO and stores a fresh valid instance."""
    echo = subprocess.run([dcmtk("echoscu"), "-aec", "KIDNEYNODE", "127.0.0.1", str(port)],
                          env=peer_env(), capture_output=True, text=True, timeout=60)
    assert echo.returncode == 0, f"C-ECHO failed: {echo.stdout}{echo.stderr}"
    ds = dcmread(get_testdata_file("CT_small.dcm"))
    ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
    fresh = workdir / "fresh.dcm"
    ds.save_as(fresh, enforce_file_format=True)
    sent = subprocess.run([dcmtk("dcmsend"), "-aec", "KIDNEYNODE", "127.0.0.1", str(port),
                           str(fresh)], env=peer_env(), capture_output=True, text=True,
                          timeout=60)
    assert sent.returncode == 0, f"fresh instance not sent: {sent.stdout}{sent.stderr}"
    assert _row(store, {str(ds.SOPInstanceUID)}), "fresh instance not indexed"
