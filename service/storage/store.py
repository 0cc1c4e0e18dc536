"""Store an instance: atomic move into the layout and index in the same unit of work."""

from __future__ import annotations

import logging
import os
import shutil
import socket
import tempfile
import threading
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path

from pydicom import dcmread
from pydicom.dataset import Dataset
from sqlalchemy import select
from sqlalchemy.exc import IntegrityError, SQLAlchemyError
from sqlalchemy.orm import Session, sessionmaker

from service.db.tables import Instance, InstanceOrigin
from service.errors import (
    DICOM_READ_ERRORS,
    DatasetMismatchError,
    IngestError,
    ReplacementRefusedError,
    StorageError,
)
from service.storage.index import (
    IndexOutcome,
    InstanceHeader,
    index_instance,
    insert_into_known_series,
)
from service.storage.layout import INCOMING_DIR, instance_relpath
from service.storage.pixel_check import check_pixel_data

__all__ = ["InstanceStore", "StoredInstance"]

logger = logging.getLogger(__name__)

#: Series remembered for the one-INSERT fast path of indexing.
_KNOWN_SERIES_MAX = 1024

_REQUIRED = ("SOPClassUID", "SOPInstanceUID", "StudyInstanceUID", "SeriesInstanceUID")


class _OwnObjectResent(Exception):  # noqa: N818 - a signal, not an error
    """Raised inside the store: the instance is a copy of one of the node's own objects."""

    def __init__(self, relpath: str) -> None:
        super().__init__(relpath)
        self.relpath = relpath


@dataclass(frozen=True)
class StoredInstance:
    sop_instance_uid: str
    study_instance_uid: str
    path: Path
    is_new: bool


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def read_header(
    path: Path, *, expected_sop_uid: str | None = None, expected_sop_class: str | None = None
) -> Dataset:
    """Read and check the header of a DICOM file; the pixel data is not read, only its
    extent checked (:func:`check_pixel_data`).

    Raises
    ------
    IngestError
        When the file is not DICOM, is truncated, lacks one of the four identifying UIDs
        or has one the index cannot hold (over 64 characters, NUL), or is an image whose
        pixel data is missing, cut short or shorter than its attributes describe;
        :class:`DatasetMismatchError` when it names another SOP Instance UID or SOP
        Class than expected.
    """
    label = expected_sop_uid or str(path)
    with open(path, "rb") as fh:
        try:
            ds = dcmread(fh, stop_before_pixels=True)
            missing = [k for k in _REQUIRED if not str(ds.get(k, "") or "").strip()]
        except DICOM_READ_ERRORS as exc:
            raise IngestError(f"instance {label}: unreadable header: {exc}") from exc
        if missing:
            raise IngestError(
                f"instance {label}: missing required attribute(s) {', '.join(missing)}")
        # The index holds 64 characters per UID and PostgreSQL no NUL: refuse such a UID
        # here (cannot understand) rather than fail to index it (out of resources, retried
        # forever).
        invalid = [k for k in _REQUIRED
                   if len(str(ds.get(k))) > 64 or "\x00" in str(ds.get(k))]
        if invalid:
            raise IngestError(f"instance {label}: {', '.join(invalid)} longer than 64 "
                              "characters or holding a NUL byte")
        if expected_sop_uid is not None and str(ds.SOPInstanceUID) != expected_sop_uid:
            raise DatasetMismatchError(f"instance {expected_sop_uid}: dataset holds SOP "
                                       f"Instance UID {ds.SOPInstanceUID}")
        if expected_sop_class is not None and str(ds.SOPClassUID) != expected_sop_class:
            raise DatasetMismatchError(
                f"instance {label}: dataset's SOP Class {ds.SOPClassUID} differs from the "
                f"request's {expected_sop_class}")
        check_pixel_data(ds, fh, file_size=os.fstat(fh.fileno()).st_size, label=label)
    return ds


class InstanceStore:
    """The node's archive: files under ``root``, their index in the database."""

    def __init__(self, root: Path, sessions: sessionmaker[Session], *,
                 shared: bool = False) -> None:
        """``shared``: several processes, on several machines, use this archive (a
        scaled-out node): each writes its partial files in its own folder under
        ``.incoming`` (``<host>-<pid>``), so one process's start-up clears only its own
        and those of processes of this host that are gone."""
        self.root = Path(root).resolve()
        self.sessions = sessions
        self.incoming = self.root / INCOMING_DIR
        if shared:
            self.incoming = self.incoming / f"{socket.gethostname()}-{os.getpid()}"
        self.shared = shared
        self.incoming.mkdir(parents=True, exist_ok=True)
        # Series UID -> (series pk, study pk) of series indexed lately (rows are never
        # deleted while the node runs; a stale entry would fail its INSERT and be dropped).
        self._known_series: OrderedDict[str, tuple[int, int]] = OrderedDict()
        self._cache_lock = threading.Lock()
        self._engine = sessions.kw["bind"]

    def discard_incoming(self) -> int:
        """Delete what receptions cut short left in ``.incoming`` (never acknowledged, so
        the sender still has them). Only while nothing is being received: at start-up."""
        count = 0
        folders = [self.incoming]
        if self.shared:  # the folders of this host's processes that are gone
            host = socket.gethostname()
            for folder in self.incoming.parent.iterdir():
                name, _, pid = folder.name.rpartition("-")
                if (folder.is_dir() and folder != self.incoming and name == host
                        and pid.isdigit() and not process_exists(int(pid))):
                    folders.append(folder)
        for folder in folders:
            for leftover in folder.iterdir():
                if leftover.is_file():
                    leftover.unlink(missing_ok=True)
                    count += 1
            if folder != self.incoming:
                folder.rmdir()
        if count:
            logger.warning("discarded %d partial file(s) of interrupted receptions in %s",
                           count, self.incoming)
        return count

    def path_of(self, relpath: str) -> Path:
        return self.root / relpath

    def store_file(
        self,
        temp_path: Path,
        *,
        expected_sop_uid: str | None = None,
        expected_sop_class: str | None = None,
        calling_aet: str | None = None,
        origin: InstanceOrigin = InstanceOrigin.RECEIVED,
        peer_address: str | None = None,
    ) -> StoredInstance:
        """Move a complete DICOM file (with file meta) into the archive and index it.

        The file is fsynced, renamed into place and indexed in one transaction; only
        when this returns is the instance safe to acknowledge.

        Raises
        ------
        IngestError
            The dataset cannot be understood (the file is left where it was);
            :class:`DatasetMismatchError` when it contradicts the request.
        StorageError
            Disk or database failure; nothing is half-stored.
        """
        ds = read_header(temp_path, expected_sop_uid=expected_sop_uid,
                         expected_sop_class=expected_sop_class)
        try:
            header = InstanceHeader.from_dataset(ds)
        except DICOM_READ_ERRORS as exc:  # e.g. a Patient ID whose VR says 8-byte floats
            raise IngestError(f"instance {expected_sop_uid or temp_path}: unreadable header: "
                              f"{exc}") from exc
        tsyntax = str(getattr(ds.file_meta, "TransferSyntaxUID", "") or "")
        rel = instance_relpath(header.study_uid, header.series_uid, header.sop_uid)
        final = self.root / rel
        existed = final.exists()
        if existed:  # checked before the file is touched
            try:
                own = self._check_replacement(header, origin)
            except SQLAlchemyError as exc:
                raise StorageError(f"instance {header.sop_uid}: cannot look it up: {exc}"
                                   ) from exc
            if own is not None:
                return self._kept_own(header, own, calling_aet)
        try:
            final.parent.mkdir(parents=True, exist_ok=True)
            with open(temp_path, "rb+") as fh:
                os.fsync(fh.fileno())
                stat = os.fstat(fh.fileno())
            size = stat.st_size
            if stat.st_dev == final.parent.stat().st_dev:
                os.replace(temp_path, final)
            else:  # another filesystem: copy next to the target, then rename
                staged = self.incoming / (final.name + ".part")
                shutil.copyfile(temp_path, staged)
                with open(staged, "rb+") as fh:
                    os.fsync(fh.fileno())
                os.replace(staged, final)
            _fsync_dir(final.parent)
        except OSError as exc:
            raise StorageError(f"instance {header.sop_uid}: cannot write {final}: {exc}") from exc
        try:
            outcome = self._index(header, rel.as_posix(), size, tsyntax, calling_aet, origin,
                                  peer_address)
        except ReplacementRefusedError:
            if not existed:
                final.unlink(missing_ok=True)
            raise
        except _OwnObjectResent as own:
            if not existed:
                final.unlink(missing_ok=True)
            return self._kept_own(header, own.relpath, calling_aet)
        except SQLAlchemyError as exc:
            if not existed:
                final.unlink(missing_ok=True)
            raise StorageError(f"instance {header.sop_uid}: cannot index: {exc}") from exc
        if outcome.moved_from is not None:
            # The index now points at the new file: the old one is a leftover.
            (self.root / outcome.moved_from).unlink(missing_ok=True)
        logger.info("stored %s instance %s (study %s)%s", header.modality, header.sop_uid,
                    header.study_uid, "" if outcome.is_new else " again (idempotent)")
        return StoredInstance(header.sop_uid, header.study_uid, final, outcome.is_new)

    def store_dataset(self, ds: Dataset, *, origin: InstanceOrigin) -> StoredInstance:
        """Write an in-memory dataset (e.g. a SEG made here) into the archive."""
        fd, name = tempfile.mkstemp(suffix=".dcm", dir=self.incoming)
        os.close(fd)
        tmp = Path(name)
        try:
            ds.save_as(tmp, enforce_file_format=True)
            return self.store_file(tmp, expected_sop_uid=str(ds.SOPInstanceUID), origin=origin)
        finally:
            tmp.unlink(missing_ok=True)

    def _index(self, header: InstanceHeader, rel: str, size: int, tsyntax: str,
               calling_aet: str | None, origin: InstanceOrigin,
               peer_address: str | None = None) -> IndexOutcome:
        fields = dict(relpath=rel, size_bytes=size, transfer_syntax_uid=tsyntax,
                      calling_aet=calling_aet, origin=origin, peer_address=peer_address)
        known = self._known_series.get(header.series_uid)
        if known is not None:
            # Most instances join a series indexed a moment ago: one INSERT. A resend
            # violates the unique SOP Instance UID and takes the full path below.
            try:
                with self._engine.begin() as conn:
                    insert_into_known_series(conn, header, series_pk=known[0],
                                             study_pk=known[1], **fields)
                return IndexOutcome(True, *known)
            except IntegrityError:
                self._known_series.pop(header.series_uid, None)
        own = self._check_replacement(header, origin)
        if own is not None:
            raise _OwnObjectResent(own)
        for attempt in range(3):
            try:
                with self.sessions.begin() as session:
                    outcome = index_instance(session, header, **fields)
                self._remember(header.series_uid, outcome.series_pk, outcome.study_pk)
                return outcome
            except IntegrityError:
                # Another association created the same patient/study/series/instance
                # at the same moment: the retry finds it.
                if attempt == 2:
                    raise
        raise AssertionError("unreachable")

    def _check_replacement(self, header: InstanceHeader, origin: InstanceOrigin
                           ) -> str | None:
        """Refuse a received instance that would replace what it may not: an object the
        node generated under another SOP class, or a received instance held under another
        SOP class. A copy of one of the node's own objects (same SOP class: a PACS sending
        a study back, results included) is acknowledged but never replaces the node's:
        its held path is returned. A resend of a received instance of the same SOP class
        replaces it (a corrected image; an identical resend is idempotent): ``None``."""
        if origin is not InstanceOrigin.RECEIVED:
            return None
        with self.sessions() as session:
            held = session.execute(
                select(Instance.origin, Instance.sop_class_uid, Instance.path)
                .where(Instance.sop_instance_uid == header.sop_uid)).first()
        if held is None:
            return None
        if held.origin != InstanceOrigin.RECEIVED:
            if held.sop_class_uid == header.sop_class_uid:
                return str(held.path)
            raise ReplacementRefusedError(
                f"instance {header.sop_uid}: this SOP Instance UID is an object the node "
                f"generated; it cannot be replaced from outside", not_authorized=True)
        if held.sop_class_uid != header.sop_class_uid:
            raise ReplacementRefusedError(
                f"instance {header.sop_uid}: held as SOP class {held.sop_class_uid}; an "
                f"instance of {header.sop_class_uid} cannot replace it", not_authorized=False)
        return None

    def _kept_own(self, header: InstanceHeader, relpath: str,
                  calling_aet: str | None) -> StoredInstance:
        logger.info("instance %s from %s is one of the node's own results: acknowledged, "
                    "the node's copy kept", header.sop_uid, calling_aet)
        return StoredInstance(header.sop_uid, header.study_uid, self.root / relpath, False)

    def _remember(self, series_uid: str, series_pk: int, study_pk: int) -> None:
        with self._cache_lock:
            self._known_series[series_uid] = (series_pk, study_pk)
            self._known_series.move_to_end(series_uid)
            while len(self._known_series) > _KNOWN_SERIES_MAX:
                self._known_series.popitem(last=False)


def process_exists(pid: int) -> bool:
    """Whether a process of this id runs on this host."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's
        return True
    return True
