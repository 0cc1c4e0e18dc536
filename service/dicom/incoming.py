"""The files pynetdicom streams received C-STORE data sets into.

pynetdicom writes each data set, fragment by fragment, into a ``NamedTemporaryFile``
it creates itself. When the disk refused a write (full, read-only, over quota), the
exception ended the association with an A-ABORT, so the sender saw no status; and the
files of receptions cut short stayed in ``.incoming`` until the next start. Here, on the
SCP's associations, each data set goes into an :class:`IncomingFile` instead:

- a write the disk refuses is recorded, not raised; the rest of the data set is read
  and dropped, and the C-STORE handler answers 0xA700 (out of resources);
- while :class:`~service.storage.space.StorageHealth` refuses new instances (free space
  below the floor, read-only filesystem) nothing is written at all;
- a file whose association ended before the handler took it is deleted within a second
  (:meth:`Incoming.sweep`).
"""

from __future__ import annotations

import logging
import os
import tempfile
import threading
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

from pynetdicom import dimse_messages

__all__ = ["Incoming", "IncomingFile", "discard_file", "install"]

logger = logging.getLogger(__name__)

_ATTRIBUTE = "kidney_node_incoming"


def discard_file(path: Path) -> None:
    """Delete a received file no longer needed; a filesystem that refuses (read-only)
    is logged, and the node's start-up clears ``.incoming`` later."""
    try:
        path.unlink(missing_ok=True)
    except OSError as exc:
        logger.warning("cannot delete %s: %s", path, exc)


class IncomingFile:
    """Write-only file of one received data set (what pynetdicom uses of its temporary
    file: ``name``, ``write``, ``file.flush``, ``close``)."""

    def __init__(self, folder: Path, refusal: str | None) -> None:
        self.owner = threading.current_thread()
        self.failure = refusal
        self.size = 0
        self.closed = False
        self._fd: int | None = None
        self.file = self
        if refusal is None:
            try:
                self._fd, self.name = tempfile.mkstemp(suffix=".dcm", dir=folder)
                return
            except OSError as exc:
                self.failure = f"cannot create a file in {folder}: {exc}"
        self.name = str(folder / f"refused-{uuid.uuid4().hex}.dcm")  # never created

    def write(self, data: bytes | bytearray | memoryview) -> int:
        with memoryview(data) as view:
            length = len(view)
            if self._fd is not None:
                try:
                    while view:
                        view = view[os.write(self._fd, view):]
                except OSError as exc:
                    self._fail(f"cannot write {self.name}: {exc}")
        self.size += length
        return length

    def flush(self) -> None:
        """Nothing buffered: each write is a system call."""

    def close(self) -> None:
        """pynetdicom's close, after the C-STORE handler (pynetdicom then deletes it)."""
        self.closed = True
        self._close_fd()

    def discard(self) -> None:
        """Close and delete: what the disk refused, or a reception cut short."""
        self._close_fd()
        discard_file(Path(self.name))

    def _close_fd(self) -> None:
        if self._fd is not None:
            fd, self._fd = self._fd, None
            try:
                os.close(fd)
            except OSError as exc:
                self.failure = self.failure or f"cannot close {self.name}: {exc}"

    def _fail(self, message: str) -> None:
        self.failure = message
        logger.error("%s; the rest of this data set is dropped", message)
        self.discard()


class Incoming:
    """The :class:`IncomingFile` objects of one SCP (``folder``: its ``.incoming``)."""

    def __init__(self, folder: Path, refusal: Callable[[], str | None]) -> None:
        self.folder = Path(folder)
        self._refusal = refusal
        self._lock = threading.Lock()
        self._open: list[IncomingFile] = []

    def open(self) -> IncomingFile:
        refusal = self._refusal()
        if refusal is not None:
            logger.error("C-STORE data set not stored: %s", refusal)
        incoming = IncomingFile(self.folder, refusal)
        with self._lock:
            self._open.append(incoming)
        return incoming

    def sweep(self) -> int:
        """Delete the files of receptions whose association has ended before the data
        set was complete; returns how many."""
        with self._lock:
            self._open = [f for f in self._open if not f.closed]
            cut = [f for f in self._open if not f.owner.is_alive()]
            self._open = [f for f in self._open if f.owner.is_alive()]
        for incoming in cut:
            logger.warning("reception cut short after %d bytes: %s deleted", incoming.size,
                           incoming.name)
            incoming.discard()
        return len(cut)


def _reception_file(*args: Any, **kwargs: Any) -> Any:  # noqa: ANN401 - as tempfile's
    """pynetdicom's ``NamedTemporaryFile``: an :class:`IncomingFile` on an association of
    an AE given an :class:`Incoming` by :func:`install`, else the standard one."""
    assoc = getattr(threading.current_thread(), "assoc", None)  # pynetdicom's DUL thread
    incoming = getattr(getattr(assoc, "ae", None), _ATTRIBUTE, None)
    if isinstance(incoming, Incoming):
        return incoming.open()
    return tempfile.NamedTemporaryFile(*args, **kwargs)  # noqa: SIM115 - pynetdicom's own


def install(ae: object, incoming: Incoming) -> None:
    """Received data sets of ``ae``'s associations go through ``incoming``."""
    setattr(ae, _ATTRIBUTE, incoming)
    dimse_messages.NamedTemporaryFile = _reception_file  # type: ignore[attr-defined]
