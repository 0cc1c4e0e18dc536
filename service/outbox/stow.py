"""STOW-RS client (DICOMweb, PS3.18 10.5): send stored files to a destination's
``{url}/studies``, telling permanent from transient failures as the C-STORE SCU does."""

from __future__ import annotations

import logging
import ssl
import uuid
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import httpx

from service.config import Destination, DicomWebTarget
from service.dicom.scu import failure_is_permanent
from service.errors import DestinationError

__all__ = ["stow_files"]

logger = logging.getLogger(__name__)

#: One request carries at most this many bytes of DICOM (several requests otherwise).
MAX_REQUEST_BYTES = 32 * 1024 * 1024
_REFERENCED = "00081199"  # Referenced SOP Sequence: stored
_FAILED = "00081198"  # Failed SOP Sequence
_SOP_INSTANCE = "00081155"  # Referenced SOP Instance UID
_REASON = "00081197"  # Failure Reason
#: HTTP statuses worth retrying: the server is down, busy or timed out.
_TRANSIENT_HTTP = frozenset({408, 425, 429, 500, 502, 503, 504})


def _batches(paths: Sequence[Path]) -> Iterator[list[Path]]:
    batch: list[Path] = []
    size = 0
    for path in paths:
        length = path.stat().st_size
        if batch and size + length > MAX_REQUEST_BYTES:
            yield batch
            batch, size = [], 0
        batch.append(path)
        size += length
    if batch:
        yield batch


def _body(paths: Sequence[Path]) -> tuple[bytes, str]:
    """The multipart/related body of ``paths`` (Part 10 files as they are) and its
    Content-Type."""
    boundary = uuid.uuid4().hex
    chunks = []
    for path in paths:
        chunks += [f"--{boundary}\r\nContent-Type: application/dicom\r\n\r\n".encode(),
                   path.read_bytes(), b"\r\n"]
    chunks.append(f"--{boundary}--\r\n".encode())
    return b"".join(chunks), f'multipart/related; type="application/dicom"; boundary={boundary}'


def _verify(target: DicomWebTarget, label: str) -> ssl.SSLContext | bool:
    if not target.verify_tls:
        return False
    if target.ca_file is None:
        return True
    try:
        return ssl.create_default_context(cafile=str(target.ca_file))
    except OSError as exc:  # ssl.SSLError included; retried once the file is fixed
        raise DestinationError(f"{label}: cannot load its CA file "
                               f"{target.ca_file}: {exc}", permanent=False) from exc


def _auth_headers(target: DicomWebTarget) -> tuple[dict[str, str], httpx.BasicAuth | None]:
    if target.token is not None:
        return {"Authorization": f"Bearer {target.token.get_secret_value()}"}, None
    if target.username is not None and target.password is not None:
        return {}, httpx.BasicAuth(target.username, target.password.get_secret_value())
    return {}, None


def _uids(answer: dict[str, Any], tag: str) -> dict[str, int | None]:
    """SOP Instance UIDs of the items of sequence ``tag`` in a DICOM JSON answer, each
    with its Failure Reason (None when absent)."""
    found: dict[str, int | None] = {}
    for item in (answer.get(tag) or {}).get("Value") or []:
        uid = ((item.get(_SOP_INSTANCE) or {}).get("Value") or [None])[0]
        reason = ((item.get(_REASON) or {}).get("Value") or [None])[0]
        if uid:
            found[str(uid)] = None if reason is None else int(reason)
    return found


def _answer(response: httpx.Response) -> dict[str, Any]:
    """The DICOM JSON body of a STOW-RS response ({} when there is none or it is not
    JSON; a server may answer XML, which this client does not ask for)."""
    try:
        body = response.json()
    except ValueError:
        return {}
    if isinstance(body, list):  # some servers wrap the one dataset in an array
        body = body[0] if body and isinstance(body[0], dict) else {}
    return body if isinstance(body, dict) else {}


def _outcome(response: httpx.Response, uids: dict[Path, str],
             label: str) -> dict[Path, DestinationError | None]:
    code = response.status_code
    if code in (401, 403):
        raise DestinationError(f"{label} refused the credentials (HTTP {code}): check the "
                               "destination's token or username and password", permanent=True)
    if code in _TRANSIENT_HTTP:
        raise DestinationError(f"{label} answered HTTP {code}", permanent=False)
    answer = _answer(response)
    stored = _uids(answer, _REFERENCED)
    failed = _uids(answer, _FAILED)
    if code not in (200, 202, 409) or (code == 409 and not failed):
        raise DestinationError(f"{label} answered HTTP {code} {response.reason_phrase}: "
                               f"{response.text[:200]!r}", permanent=400 <= code < 500)
    outcome: dict[Path, DestinationError | None] = {}
    for path, uid in uids.items():
        if uid in failed:
            reason = failed[uid]
            outcome[path] = DestinationError(
                f"{label} refused {uid}" + ("" if reason is None else
                                            f" (failure reason 0x{reason:04X})"),
                permanent=reason is None or failure_is_permanent(reason))
        elif uid in stored or (code == 200 and not answer):
            outcome[path] = None  # a 200 without a body stores everything
        else:
            outcome[path] = DestinationError(
                f"{label}: HTTP {code} without {uid} among the stored instances",
                permanent=False)
    return outcome


def stow_files(files: Mapping[Path, str], *, destination: Destination
               ) -> dict[Path, DestinationError | None]:
    """POST ``files`` (path -> SOP Instance UID, as the outbox knows them) to the
    destination's STOW-RS endpoint (several requests when large).

    Returns each path mapped to None (stored) or its :class:`DestinationError`: per
    instance from the answer's Referenced and Failed SOP Sequences; for a whole request
    when the endpoint is unreachable, timed out or answers 5xx (transient), or refuses
    the credentials or is no STOW-RS service (permanent). Raises :class:`DestinationError`
    only when the CA file cannot be loaded (transient).
    """
    target = destination.dicomweb
    if target is None:
        raise ValueError(f"destination {destination.name!r} is not a DICOMweb destination")
    url = target.url if target.url.endswith("/studies") else f"{target.url}/studies"
    headers, auth = _auth_headers(target)
    headers["Accept"] = "application/dicom+json"
    label = destination.label
    outcome: dict[Path, DestinationError | None] = {}
    with httpx.Client(verify=_verify(target, label), timeout=target.timeout_seconds,
                      auth=auth) as client:
        for batch in _batches(list(files)):
            uids = {p: files[p] for p in batch}
            body, content_type = _body(batch)
            try:
                try:
                    response = client.post(url, content=body,
                                           headers={**headers, "Content-Type": content_type})
                except httpx.HTTPError as exc:
                    raise DestinationError(f"{label} unreachable: {exc!r}",
                                           permanent=False) from exc
                outcome.update(_outcome(response, uids, label))
            except DestinationError as exc:  # this batch and the rest share its fate
                outcome.update({p: exc for p in files if p not in outcome})
                break
            logger.debug("STOW-RS of %d instances to %s: HTTP %d", len(batch), label,
                         response.status_code)
    return outcome
