"""Whether the archive's filesystem can take more: free space, read-only, recent faults."""

from __future__ import annotations

import errno
import logging
import os
import threading
import time
from pathlib import Path
from typing import Any

__all__ = ["StorageHealth", "storage_fault"]

logger = logging.getLogger(__name__)

_MB = 1024 * 1024
#: errno values of a disk that takes nothing more: full, over quota, read-only.
_STORAGE_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EROFS})
#: Size of the file written to check that a storage fault is over (bytes): an
#: instance of a few hundred kilobytes, and some room, must fit.
_PROBE_BYTES = _MB


class StorageHealth:
    """The archive's capacity as the SCP and ``/health`` see it.

    A new instance is refused (:meth:`refusal`) while the filesystem is read-only or
    has less than ``min_free_mb`` free, so that the disk never fills under the database
    and the results. A write that failed all the same (:meth:`record_fault`) is reported
    until an instance is stored again or a probe write in ``folder`` succeeds.
    """

    def __init__(self, folder: Path, *, min_free_mb: int) -> None:
        self.folder = Path(folder)
        self.min_free_bytes = min_free_mb * _MB
        self._lock = threading.Lock()
        self._fault: tuple[float, str] | None = None

    def _filesystem(self) -> tuple[os.statvfs_result | None, str | None]:
        """The archive filesystem's statistics, and why it cannot be written at all
        (unreadable, read-only) or ``None``."""
        try:
            st = os.statvfs(self.folder)
        except OSError as exc:
            return None, f"cannot read the filesystem of {self.folder}: {exc}"
        if st.f_flag & os.ST_RDONLY:
            return st, f"the filesystem of {self.folder} is read-only"
        return st, None

    def refusal(self) -> str | None:
        """Why the archive takes nothing now, or ``None``."""
        st, problem = self._filesystem()
        if problem is not None or st is None:
            return problem
        free = st.f_bavail * st.f_frsize
        if free < self.min_free_bytes:
            return (f"{free / _MB:.0f} MB free on the filesystem of {self.folder}, less than "
                    f"storage.min_free_mb ({self.min_free_bytes // _MB})")
        return None

    def record_fault(self, message: str) -> None:
        with self._lock:
            self._fault = (time.time(), message)

    def clear_fault(self) -> None:
        if self._fault is not None:
            with self._lock:
                if self._fault is not None:
                    logger.info("storage writes succeed again (after: %s)", self._fault[1])
                self._fault = None

    def write_problem(self) -> str | None:
        """Why the archive cannot be written now (read-only, or a write failed and a probe
        write still fails), or ``None``. The free-space floor is not one: it keeps room
        for the results of what has been received."""
        return self._filesystem()[1] or self._fault_persists()

    def _fault_persists(self) -> str | None:
        """After a recorded fault, whether a probe write still fails (else the fault is
        cleared)."""
        if self._fault is None:
            return None
        path = self.folder / f".probe-{os.getpid()}-{threading.get_ident()}"
        try:
            with open(path, "wb") as fh:
                fh.write(b"\0" * _PROBE_BYTES)
                fh.flush()
                os.fsync(fh.fileno())
        except OSError as exc:
            return f"a test write in {self.folder} failed: {exc}"
        finally:
            path.unlink(missing_ok=True)
        self.clear_fault()
        return None

    def status(self) -> dict[str, Any]:
        """For ``/health``: free space, floor, read-only, and the problems (empty: ok)."""
        problems = [p for p in (self.refusal() or self._fault_persists(),) if p is not None]
        fault = self._fault
        if fault is not None:
            when = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(fault[0]))
            problems.append(f"last storage fault at {when}: {fault[1]}")
        st, _ = self._filesystem()
        return {"free_mb": None if st is None else round(st.f_bavail * st.f_frsize / _MB, 1),
                "min_free_mb": self.min_free_bytes // _MB,
                "read_only": None if st is None else bool(st.f_flag & os.ST_RDONLY),
                "problems": problems}


def storage_fault(exc: BaseException) -> OSError | None:
    """The full, over-quota or read-only disk behind ``exc`` (itself or one of its
    causes), or ``None``."""
    seen: BaseException | None = exc
    while seen is not None:
        if isinstance(seen, OSError) and seen.errno in _STORAGE_ERRNOS:
            return seen
        seen = seen.__cause__ or seen.__context__
    return None
