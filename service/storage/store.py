"""Store an instance: atomic move into the layout and index in the same unit of work."""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

from pydicom import dcmread
from pydicom.dataset import Dataset
from pydicom.errors import InvalidDicomError
from sqlalchemy.exc import IntegrityError, SQLAlchemyError
from sqlalchemy.orm import Session, sessionmaker

from service.db.tables import InstanceOrigin
from service.errors import DatasetMismatchError, IngestError, StorageError
from service.storage.index import InstanceHeader, index_instance
from service.storage.layout import INCOMING_DIR, instance_relpath

__all__ = ["InstanceStore", "StoredInstance"]

logger = logging.getLogger(__name__)

_REQUIRED = ("SOPClassUID", "SOPInstanceUID", "StudyInstanceUID", "SeriesInstanceUID")


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
    """Read and check the header of a DICOM file (pixels are not read).

    Raises
    ------
    IngestError
        When the file is not DICOM, is truncated in its header, lacks one of the
        four identifying UIDs, or names another SOP Instance UID than expected.
    """
    label = expected_sop_uid or str(path)
    try:
        ds = dcmread(path, stop_before_pixels=True)
        missing = [k for k in _REQUIRED if not str(ds.get(k, "") or "").strip()]
    except (InvalidDicomError, EOFError, ValueError, TypeError, KeyError, OverflowError,
            AttributeError, NotImplementedError) as exc:
        raise IngestError(f"instance {label}: unreadable header: {exc}") from exc
    if missing:
        raise IngestError(f"instance {label}: missing required attribute(s) {', '.join(missing)}")
    if expected_sop_uid is not None and str(ds.SOPInstanceUID) != expected_sop_uid:
        raise DatasetMismatchError(
            f"instance {expected_sop_uid}: dataset holds SOP Instance UID {ds.SOPInstanceUID}")
    if expected_sop_class is not None and str(ds.SOPClassUID) != expected_sop_class:
        raise DatasetMismatchError(
            f"instance {label}: dataset's SOP Class {ds.SOPClassUID} differs from the "
            f"request's {expected_sop_class}")
    return ds


class InstanceStore:
    """The node's archive: files under ``root``, their index in the database."""

    def __init__(self, root: Path, sessions: sessionmaker[Session]) -> None:
        self.root = Path(root).resolve()
        self.sessions = sessions
        self.incoming = self.root / INCOMING_DIR
        self.incoming.mkdir(parents=True, exist_ok=True)

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
        header = InstanceHeader.from_dataset(ds)
        tsyntax = str(getattr(ds.file_meta, "TransferSyntaxUID", "") or "")
        rel = instance_relpath(header.study_uid, header.series_uid, header.sop_uid)
        final = self.root / rel
        try:
            final.parent.mkdir(parents=True, exist_ok=True)
            existed = final.exists()
            with open(temp_path, "rb+") as fh:
                os.fsync(fh.fileno())
            size = temp_path.stat().st_size
            if temp_path.stat().st_dev == final.parent.stat().st_dev:
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
            is_new = self._index(header, rel.as_posix(), size, tsyntax, calling_aet, origin)
        except SQLAlchemyError as exc:
            if not existed:
                final.unlink(missing_ok=True)
            raise StorageError(f"instance {header.sop_uid}: cannot index: {exc}") from exc
        logger.info("stored %s instance %s (study %s)%s", header.modality, header.sop_uid,
                    header.study_uid, "" if is_new else " again (idempotent)")
        return StoredInstance(header.sop_uid, header.study_uid, final, is_new)

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
               calling_aet: str | None, origin: InstanceOrigin) -> bool:
        for attempt in range(3):
            try:
                with self.sessions.begin() as session:
                    return index_instance(session, header, relpath=rel, size_bytes=size,
                                          transfer_syntax_uid=tsyntax, calling_aet=calling_aet,
                                          origin=origin)
            except IntegrityError:
                # Another association created the same patient/study/series/instance
                # at the same moment: the retry finds it.
                if attempt == 2:
                    raise
        raise AssertionError("unreachable")
