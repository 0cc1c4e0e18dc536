"""One exception hierarchy for the node; every message names the UID or path concerned."""

from __future__ import annotations

import struct

from pydicom.errors import BytesLengthException, InvalidDicomError

__all__ = [
    "DICOM_READ_ERRORS",
    "ConfigError",
    "DatasetMismatchError",
    "DestinationError",
    "IngestError",
    "KidneyNodeError",
    "ModelFilesError",
    "PipelineError",
    "ReplacementRefusedError",
    "SeriesLoadError",
    "StorageError",
    "TrainingDataError",
]


#: What pydicom raises on a file that is not (valid) DICOM, or on an element whose value
#: does not fit its VR or whose VR is unknown (elements are decoded when first read).
DICOM_READ_ERRORS: tuple[type[Exception], ...] = (
    InvalidDicomError, BytesLengthException, struct.error, EOFError, ValueError, TypeError,
    KeyError, OverflowError, AttributeError, NotImplementedError)


class KidneyNodeError(Exception):
    """Base class of every error the node raises on purpose."""


class ConfigError(KidneyNodeError):
    """The configuration file or an environment override is invalid."""


class IngestError(KidneyNodeError):
    """A received instance cannot be understood (bad or missing attributes).

    Maps to a DICOM 'cannot understand' status (0xC000 range).
    """


class DatasetMismatchError(IngestError):
    """The dataset's SOP Class or Instance UID differs from the C-STORE request's (0xA900)."""


class ReplacementRefusedError(IngestError):
    """A received instance reuses the SOP Instance UID of an object it may not replace:
    one the node generated (a SEG or SR), or one held under another SOP class."""

    def __init__(self, message: str, *, not_authorized: bool) -> None:
        super().__init__(message)
        #: The UID is the node's own (answered 0x0124 Not Authorized); else a SOP class
        #: mismatch (0xA900).
        self.not_authorized = not_authorized


class StorageError(KidneyNodeError):
    """Disk or index failure while storing an instance.

    Maps to a DICOM 'out of resources' status (0xA700).
    """


class SeriesLoadError(KidneyNodeError):
    """A series cannot be assembled into a volume (geometry, missing tags, pixels)."""

    def __init__(self, series_uid: str, message: str) -> None:
        super().__init__(f"series {series_uid}: {message}")
        self.series_uid = series_uid


class PipelineError(KidneyNodeError):
    """A segmentation pipeline cannot run on the given study."""


class DestinationError(KidneyNodeError):
    """Sending a result to a destination failed.

    ``permanent`` tells a refusal that retrying cannot fix (association rejected
    permanently, SOP class or transfer syntax refused) from a transient failure.
    """

    def __init__(self, message: str, *, permanent: bool) -> None:
        super().__init__(message)
        self.permanent = permanent


class PacsError(KidneyNodeError):
    """A query or retrieval from the PACS (prior studies) failed; ``permanent`` when the
    PACS refused in a way retrying cannot fix (association rejected permanently, move
    destination unknown)."""

    def __init__(self, message: str, *, permanent: bool = False) -> None:
        super().__init__(message)
        self.permanent = permanent


class PriorRequestRefused(KidneyNodeError):
    """A request for a patient's earlier studies the node will not send (a Patient ID the
    PACS would read as a wild card)."""


class ModelFilesError(KidneyNodeError):
    """Installed model files are missing, unreadable or differ from their manifest."""

    def __init__(self, path: object, message: str) -> None:
        super().__init__(f"{path}: {message}")
        self.path = path


class TrainingDataError(KidneyNodeError):
    """A training data folder holds no usable case, or a case's files disagree."""

    def __init__(self, path: object, message: str) -> None:
        super().__init__(f"{path}: {message}")
        self.path = path


class AmbiguousPatientError(KidneyNodeError):
    """A Patient ID held under several issuers was named without its issuer."""

    def __init__(self, patient_id: str, issuers: list[str]) -> None:
        super().__init__(f"patient ID {patient_id!r} is held under issuers "
                         f"{', '.join(map(repr, issuers))}")
        self.issuers = issuers
