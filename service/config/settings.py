"""Typed, frozen settings. Defaults are the embedded ones (SQLite, ``./var``)."""

from __future__ import annotations

import ipaddress
import re
from pathlib import Path
from typing import Literal
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator, model_validator

__all__ = [
    "ClassificationRules",
    "CtSettings",
    "DatabaseSettings",
    "Destination",
    "DicomWebTarget",
    "DicomSettings",
    "HttpSettings",
    "PacsSettings",
    "PriorStudiesSettings",
    "ProcessingSettings",
    "QcSettings",
    "SchedulerSettings",
    "SenderSettings",
    "Settings",
    "StorageSettings",
    "TrendSettings",
]

_AE_RE = re.compile(r"^[\x20-\x5b\x5d-\x7e]{1,16}$")  # PS3.5 AE VR: no backslash, <= 16 chars


def _check_ae(value: str) -> str:
    stripped = value.strip()
    if not stripped or not _AE_RE.match(value):
        raise ValueError(f"AE title must be 1-16 printable characters without '\\', got {value!r}")
    return stripped


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class TlsSettings(_Frozen):
    """DICOM over TLS on the SCP (PS3.15 B.9 style: the node presents its certificate)."""

    cert_file: Path  # PEM certificate (chain) of the node
    key_file: Path  # PEM private key, unencrypted
    #: PEM bundle of the CAs whose client certificates are trusted (mutual TLS).
    ca_file: Path | None = None
    #: Refuse peers without a certificate signed by ``ca_file``.
    require_client_cert: bool = False

    @model_validator(mode="after")
    def _ca_for_clients(self) -> TlsSettings:
        if self.require_client_cert and self.ca_file is None:
            raise ValueError("dicom.tls.require_client_cert needs dicom.tls.ca_file")
        return self


class MoveDestination(_Frozen):
    """An AE the node's C-MOVE SCP may send to (a C-MOVE names it by its AE title)."""

    ae_title: str
    host: str
    port: int = Field(ge=1, le=65535)

    _ae = field_validator("ae_title")(classmethod(lambda cls, v: _check_ae(v)))


class DicomSettings(_Frozen):
    ae_title: str = "KIDNEYNODE"
    host: str = "0.0.0.0"  # noqa: S104 - a DICOM node listens on the network by design
    port: int = Field(default=11112, ge=0, le=65535)  # 0: any free port
    #: Several receiver processes on this host listen on the same port (SO_REUSEPORT,
    #: Linux): the kernel spreads new associations across them, so concurrent
    #: associations use more than one core. Every process sharing the port must set it.
    reuse_port: bool = False
    allowed_calling_aets: tuple[str, ...] = ()
    #: The AEs a C-MOVE may send to (query/retrieve SCP); any other is refused (0xA801).
    move_destinations: tuple[MoveDestination, ...] = ()
    #: Live associations at once, in all and from one peer address; a request beyond
    #: either is rejected (transient, local limit exceeded).
    max_associations: int = Field(default=16, ge=1)
    max_associations_per_peer: int = Field(default=8, ge=1)
    #: Connections without a live association (not yet requested, or rejected and not
    #: yet closed by the peer) kept at once; a new connection closes the oldest.
    max_idle_connections: int = Field(default=32, ge=1)
    max_pdu_size: int = Field(default=0, ge=0)
    network_timeout_seconds: float = Field(default=60.0, gt=0)
    #: Longest wait for what a peer must send next: its association request once
    #: connected, the rest of a PDU once begun, its part of a TLS handshake.
    read_timeout_seconds: float = Field(default=30.0, gt=0)

    _ae = field_validator("ae_title")(classmethod(lambda cls, v: _check_ae(v)))

    #: Peer addresses allowed to connect (IPs or networks such as "10.1.0.0/16");
    #: empty = any. Others are refused at TCP level, before any association.
    allowed_peer_addresses: tuple[str, ...] = ()
    #: DICOM over TLS; None = plain TCP.
    tls: TlsSettings | None = None

    @field_validator("allowed_calling_aets")
    @classmethod
    def _check_aets(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        return tuple(_check_ae(v) for v in value)

    @field_validator("allowed_peer_addresses")
    @classmethod
    def _check_networks(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        for item in value:
            try:
                ipaddress.ip_network(item, strict=False)
            except ValueError as exc:
                raise ValueError(f"not an IP address or network: {item!r}") from exc
        return value


class RetentionSettings(_Frozen):
    """Purge of received source images (service/storage/retention.py). Results (SEG, SR,
    the node's copies of a segmented phase), readers' SEGs and every volume are kept."""

    #: Source images of studies last received more than this many days ago are purged;
    #: None: never (the default).
    source_days: int | None = Field(default=None, ge=1)
    #: Log what would be purged, delete nothing (the first runs of a new setting).
    dry_run: bool = True
    #: How often the scheduler runs the purge.
    interval_hours: float = Field(default=24.0, gt=0)


class StorageSettings(_Frozen):
    root: Path = Path("var/storage")
    #: Below this much free space (MB) on the archive's filesystem, C-STOREs are refused
    #: with 0xA700 before anything is written, and /health says "degraded".
    min_free_mb: int = Field(default=512, ge=0)
    retention: RetentionSettings = RetentionSettings()


class DatabaseSettings(_Frozen):
    url: str = "sqlite:///var/kidney-node.sqlite"


class ClassificationRules(_Frozen):
    """How a series gets its role. Patterns are case-insensitive regular expressions
    searched in SeriesDescription (and ProtocolName)."""

    dce_patterns: tuple[str, ...] = (r"dce", r"dyn", r"perf", r"twist", r"tricks", r"vibe.*dyn",
                                     r"contrast", r"\bgd\b", r"gado")
    t2_patterns: tuple[str, ...] = (r"\bt2", r"t2w", r"haste", r"tse", r"ssfse", r"space")
    #: T1-weighted series without contrast dynamics, Dixon images included (in-phase,
    #: opposed-phase, water, fat). DCE is matched first, so "t1 vibe dyn" stays DCE; a
    #: series matching both the T1 and the T2 patterns is T1 only when its text holds
    #: "t1" and no "t2".
    t1_patterns: tuple[str, ...] = (r"\bt1", r"t1w", r"vibe", r"dixon", r"\bin[-_ ]?phase",
                                    r"\bout[-_ ]?phase", r"\bopp", r"\bin\b", r"\bwater\b",
                                    r"\bfat\b", r"_[wf]$", r"\blava", r"\bflash", r"\bfl3d",
                                    r"\bthrive", r"\bquick3d")
    exclude_patterns: tuple[str, ...] = (r"\bsub", r"mip", r"localizer", r"scout", r"survey",
                                         r"\bmpr\b", r"derived")
    #: An MR series with at least this many temporal positions is DCE even without a name match.
    dce_min_temporal_positions: int = Field(default=2, ge=2)


class SchedulerSettings(_Frozen):
    stable_age_seconds: float = Field(default=60.0, ge=0)
    sweep_interval_seconds: float = Field(default=5.0, gt=0)
    #: Jobs interrupted by a restart are retried at most this many times in all.
    max_attempts: int = Field(default=3, ge=1)
    #: A job whose results the disk refused (full, read-only) is queued again, not failed,
    #: and jobs wait at least this long, then until a test write succeeds.
    storage_retry_seconds: float = Field(default=60.0, gt=0)


class GraftSettings(_Frozen):
    """Settings of the ``mri-graft`` pipelines (see models/graft.py and models/dce.py)."""

    #: DCE input of the method: "last" phase (the paper's single DCE volume), "mean-post"
    #: or "max-post" of the phases after the first (pre-contrast) one, or "phases": the
    #: last phase plus every other post-contrast phase as extra network channels.
    dce_volume: Literal["last", "mean-post", "max-post", "phases"] = "phases"
    #: Iteration guard on CUDA; the paper's stop (|loss change| < 0.005) usually ends first.
    max_iterations: int = Field(default=500, ge=1)
    #: CPU profile: the ROI is resampled to at most this many voxels for the clustering.
    cpu_working_voxels: int = Field(default=80_000, ge=1000)
    #: CPU profile: iteration guard.
    cpu_max_iterations: int = Field(default=80, ge=1)
    #: mri-graft-nc: T1 (Dixon) series of a study without contrast are further input
    #: channels of the T2 (registered to it); False (default): the T2 alone. On the same
    #: ten synthetic studies (seeds 10-19) T2 + Dixon gave mean Dice 0.47, the T2 alone
    #: 0.67 (benchmarks/results/graft_nocontrast_dixon.md). A study without T2 always
    #: uses its other T1 images as channels of the in-phase one.
    nocontrast_t1: bool = False


class CtSettings(_Frozen):
    """Settings of the ``ct-kidneys`` pipeline (see service/pipeline/ct_kidneys.py)."""

    #: Folder of the renal-cortex ensemble (``kidney-node train cortex --out``). Its
    #: manifest and every weight file's sha256 are checked at start-up and before each
    #: job. None: the kidneys only, no cortex segments.
    cortex_models_dir: Path | None = None
    #: CT series with fewer slices (localizers, single slabs) are not segmented.
    min_slices: int = Field(default=10, ge=3)
    #: Also search the pelvis for a kidney graft (models/ct_graft.py): a graft found is a
    #: segment of its own ("graft", with its side). False: the native kidneys only.
    search_graft: bool = True


_DEVICE = re.compile(r"^(auto|cpu|cuda(:\d+)?|mps)$")
_LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")


class ProcessingSettings(_Frozen):
    #: "auto" picks CUDA when torch sees it, else CPU; or "cpu", "cuda", "cuda:1", "mps".
    device: str = "auto"

    @field_validator("device")
    @classmethod
    def _known_device(cls, value: str) -> str:
        if not _DEVICE.match(value):
            raise ValueError("must be auto, cpu, cuda, cuda:N or mps")
        return value

    mr_pipeline: str = "mri-graft"
    #: Pipeline of studies with a CT series and no DCE series.
    ct_pipeline: str = "ct-kidneys"
    #: Pipeline of MR studies with T2 and/or T1 (Dixon) series but no DCE series and no
    #: CT series (gadolinium withheld): the graft method without contrast.
    mr_nocontrast_pipeline: str = "mri-graft-nc"
    graft: GraftSettings = GraftSettings()
    ct: CtSettings = CtSettings()
    #: Leave frames without any segmented pixel out of the SEG (highdicom default).
    omit_empty_frames: bool = True
    series_number: int = Field(default=9901, ge=1)
    #: Series Number of the volume report (DICOM SR) sent with each SEG.
    sr_series_number: int = Field(default=9902, ge=1)
    #: When the segmented phase is only part of its series (a DCE stored as one series of
    #: all phases), send copies of that phase as a derived series and reference it from
    #: the SEG and SR: OHIF 3.13 freezes on a SEG of one phase of a 4D series.
    phase_series: bool = True
    #: Series Number of that derived series.
    phase_series_number: int = Field(default=9903, ge=1)
    #: Series Number of the RT Structure Set, for destinations whose outputs include it.
    rtstruct_series_number: int = Field(default=9904, ge=1)
    #: Series Number of the colour overlay series, for destinations whose outputs include it.
    overlay_series_number: int = Field(default=9905, ge=1)
    content_creator: str = "KIDNEY^NODE"


class SenderSettings(_Frozen):
    retry_initial_seconds: float = Field(default=5.0, gt=0)
    retry_max_seconds: float = Field(default=600.0, gt=0)
    poll_interval_seconds: float = Field(default=2.0, gt=0)
    ae_title: str | None = None  # calling AE of the SCU; defaults to dicom.ae_title
    timeout_seconds: float = Field(default=30.0, gt=0)


class DestinationTls(_Frozen):
    """DICOM over TLS to a destination: the peer's certificate must chain to ``ca_file``
    (and name ``host`` when ``check_hostname``); ``cert_file`` + ``key_file`` are the
    node's client certificate for peers that require one (mutual TLS)."""

    ca_file: Path
    cert_file: Path | None = None
    key_file: Path | None = None
    check_hostname: bool = True

    @model_validator(mode="after")
    def _pair(self) -> DestinationTls:
        if (self.cert_file is None) != (self.key_file is None):
            raise ValueError("destinations[].tls: set both cert_file and key_file, or neither")
        return self


#: What a destination can be sent: the SEG, the SR of the volumes, an RT Structure Set of
#: the same contours (for systems that show RT structures but no SEG), a colour overlay
#: series (the slices with the outlines and volumes burnt in, for viewers that show
#: neither SEG nor SR).
ResultOutput = Literal["seg", "sr", "rtstruct", "overlay"]


class DicomWebTarget(_Frozen):
    """A DICOMweb STOW-RS destination (PS3.18 10.5): results are POSTed to
    ``{url}/studies``. ``token`` (a bearer token) or ``username`` + ``password`` (basic
    auth); over https the server's certificate is checked against ``ca_file`` (else the
    system's CAs) unless ``verify_tls`` is off."""

    url: str
    token: SecretStr | None = None
    username: str | None = None
    password: SecretStr | None = None
    ca_file: Path | None = None
    verify_tls: bool = True
    timeout_seconds: float = Field(default=60.0, gt=0)

    @field_validator("url")
    @classmethod
    def _http_url(cls, value: str) -> str:
        parts = urlsplit(value)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"must be an http:// or https:// URL, got {value!r}")
        if parts.username or parts.password:
            raise ValueError("put credentials in token or username/password, not in the URL")
        return value.rstrip("/")

    @model_validator(mode="after")
    def _one_auth(self) -> DicomWebTarget:
        if self.token is not None and (self.username or self.password):
            raise ValueError("destinations[].dicomweb: a token or a username and password, "
                             "not both")
        if (self.username is None) != (self.password is None):
            raise ValueError("destinations[].dicomweb: set both username and password")
        if self.ca_file is not None and not self.url.startswith("https://"):
            raise ValueError("destinations[].dicomweb: ca_file needs an https:// url")
        return self

    @property
    def host(self) -> str:
        return urlsplit(self.url).hostname or ""

    @property
    def port(self) -> int:
        parts = urlsplit(self.url)
        return parts.port or (443 if parts.scheme == "https" else 80)


class Destination(_Frozen):
    """Where results go: a DICOM AE (``ae_title``, ``host``, ``port``, optionally over
    ``tls``) or a DICOMweb STOW-RS endpoint (``dicomweb``)."""

    name: str = Field(min_length=1, max_length=64)
    ae_title: str | None = None
    host: str | None = None
    port: int | None = Field(default=None, ge=1, le=65535)
    tls: DestinationTls | None = None
    dicomweb: DicomWebTarget | None = None
    #: The result objects this destination gets (a segmented phase's copies, which the
    #: others reference, go to every destination).
    outputs: tuple[ResultOutput, ...] = Field(default=("seg", "sr"), min_length=1)

    @field_validator("ae_title")
    @classmethod
    def _ae(cls, value: str | None) -> str | None:
        return None if value is None else _check_ae(value)

    @model_validator(mode="after")
    def _dimse_or_dicomweb(self) -> Destination:
        dimse = (self.ae_title, self.host, self.port)
        if self.dicomweb is not None:
            if any(v is not None for v in dimse) or self.tls is not None:
                raise ValueError(f"destination {self.name!r}: dicomweb, or ae_title/host/port"
                                 "[/tls], not both")
        elif any(v is None for v in dimse):
            missing = [k for k, v in zip(("ae_title", "host", "port"), dimse, strict=True)
                       if v is None]
            raise ValueError(f"destination {self.name!r}: {', '.join(missing)} missing (a "
                             "DICOM destination needs ae_title, host and port; a STOW-RS "
                             "one, dicomweb.url instead)")
        return self

    @property
    def address(self) -> tuple[str, str, int]:
        """(AE title, host, port) as the outbox records it; a STOW-RS endpoint has no AE
        title (empty) and its URL's host and port."""
        if self.dicomweb is not None:
            return "", self.dicomweb.host, self.dicomweb.port
        assert self.ae_title is not None and self.host is not None and self.port is not None
        return self.ae_title, self.host, self.port

    @property
    def label(self) -> str:
        """How logs and errors name it."""
        if self.dicomweb is not None:
            return f"{self.name} (STOW-RS {self.dicomweb.url})"
        tls = "" if self.tls is None else ", TLS"
        return f"{self.name} ({self.ae_title}@{self.host}:{self.port}{tls})"


class PacsSettings(_Frozen):
    """The PACS the node asks for a patient's earlier studies (C-FIND, then C-MOVE or
    C-GET), optionally over TLS (its certificate checked against ``tls.ca_file``)."""

    ae_title: str
    host: str
    port: int = Field(ge=1, le=65535)
    tls: DestinationTls | None = None

    _ae = field_validator("ae_title")(classmethod(lambda cls, v: _check_ae(v)))

    @property
    def label(self) -> str:
        return f"PACS {self.ae_title}@{self.host}:{self.port}" + (
            "" if self.tls is None else " (TLS)")


class PriorStudiesSettings(_Frozen):
    """Fetching a patient's earlier studies from the PACS (service/priors), so that the
    trend starts at the earliest one. Off while ``pacs`` is not set."""

    pacs: PacsSettings | None = None
    #: "move": C-MOVE to the node's own AE (the PACS must know it as a modality);
    #: "get": C-GET, the PACS sends on the node's own association (no route needed).
    retrieve: Literal["move", "get"] = "move"
    #: The AE title the PACS knows the node by, as C-MOVE destination; default
    #: ``dicom.ae_title``.
    move_destination: str | None = None
    #: Ask when a patient is measured for the first time (else only on demand).
    on_first_measurement: bool = True
    #: Studies holding one of these modalities are looked at.
    modalities: tuple[str, ...] = ("MR", "CT")
    #: Only studies of the last this many years (None: all).
    lookback_years: float | None = Field(default=15.0, gt=0)
    #: Send the Issuer of Patient ID in queries and drop answers of another issuer.
    match_issuer: bool = True
    #: Studies retrieved at once, and at most this many started in any hour.
    max_concurrent_retrievals: int = Field(default=1, ge=1, le=8)
    max_studies_per_hour: int = Field(default=12, ge=1)
    #: A failed query or retrieval is tried again after ``retry_seconds``, doubling up to
    #: 6 hours; a query until it is answered, a study's retrieval ``max_attempts`` times.
    retry_seconds: float = Field(default=300.0, gt=0)
    max_attempts: int = Field(default=5, ge=1)
    poll_interval_seconds: float = Field(default=10.0, gt=0)
    #: Association and DIMSE timeouts; a retrieval may take ``retrieve_timeout_seconds``.
    timeout_seconds: float = Field(default=30.0, gt=0)
    retrieve_timeout_seconds: float = Field(default=1800.0, gt=0)

    @field_validator("move_destination")
    @classmethod
    def _move_ae(cls, value: str | None) -> str | None:
        return None if value is None else _check_ae(value)

    @field_validator("modalities")
    @classmethod
    def _upper(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        return tuple(v.strip().upper() for v in value if v.strip())


_LOOPBACK = re.compile(r"^(127\.\d+\.\d+\.\d+|::1|localhost)$")


class HttpSettings(_Frozen):
    host: str = "127.0.0.1"
    port: int = Field(default=8080, ge=0, le=65535)
    enabled: bool = True
    #: Bearer token of the API and pages; required when ``host`` is not a loopback address
    #: (set it with KIDNEY_NODE_HTTP__TOKEN rather than in a file others can read).
    token: str | None = Field(default=None, min_length=16)
    #: Record every read of patient data (who, when, what) in the index's access log.
    audit_reads: bool = True
    #: Request header naming the user, set by the reverse proxy that authenticates them
    #: (e.g. "X-Remote-User"); recorded as who read. None: the client address only.
    audit_user_header: str | None = None

    @field_validator("token", mode="before")
    @classmethod
    def _token_as_text(cls, value: object) -> object:
        # From the environment an all-digit token arrives parsed as a number.
        return str(value) if isinstance(value, int | float) and not isinstance(value, bool) \
            else value

    @model_validator(mode="after")
    def _token_off_loopback(self) -> HttpSettings:
        if self.enabled and self.token is None and not _LOOPBACK.match(self.host):
            raise ValueError(f"http.host {self.host!r} is not a loopback address: set "
                             "http.token (at least 16 characters) to serve the API there")
        return self


class QcSettings(_Frozen):
    """Quality control of every result (models/qc.py): a verdict per segment, ``pass``,
    ``review`` or ``fail``, from its measured signals. ``review`` limits bound what is
    plausible, ``fail`` limits what no kidney can be. Chosen on generated cases
    (``python -m benchmarks.qc_eval``); see the README."""

    enabled: bool = True
    #: Volume (ml) of a whole kidney or graft.
    volume_ml_review: tuple[float, float] = (40.0, 500.0)
    volume_ml_fail: tuple[float, float] = (5.0, 1000.0)
    #: Volume (ml) of a native kidney on CT (atrophic native kidneys of a transplant
    #: recipient are small).
    native_volume_ml_review: tuple[float, float] = (15.0, 450.0)
    #: Volume (ml) of a renal cortex segment; cortex gets no shape checks.
    cortex_volume_ml_review: tuple[float, float] = (5.0, 300.0)
    #: Diameter of the largest ball inside the mask (mm).
    thickness_mm_review: float = Field(default=18.0, ge=0)
    thickness_mm_fail: float = Field(default=8.0, ge=0)
    #: Longest principal extent (mm).
    length_mm_review: tuple[float, float] = (45.0, 200.0)
    #: Mask volume over its convex hull's volume.
    solidity_review: float = Field(default=0.70, ge=0, le=1)
    solidity_fail: float = Field(default=0.45, ge=0, le=1)
    #: Share of the mask in its largest connected component.
    main_share_review: float = Field(default=0.95, ge=0, le=1)
    #: Share of the mask's surface on the first/last row, column or slice of the grid.
    edge_share_review: float = Field(default=0.03, ge=0, le=1)
    edge_share_fail: float = Field(default=0.15, ge=0, le=1)
    #: Inside/outside band contrast in units of their robust spread.
    contrast_review: float = Field(default=1.0, ge=0)
    #: Gradient on the mask's surface over the gradient inside it.
    gradient_ratio_review: float = Field(default=1.2, ge=0)
    #: The same limit for a result flagged ``no-contrast`` (0: not checked). On a T2
    #: without fat suppression the graft's border against fat is no edge: on held-out
    #: synthetic T2-only results the ratio was 0.49-0.83 for Dice >= 0.85 and 0.95-1.15
    #: for Dice < 0.3 (benchmarks/results/graft_nocontrast.md), the reverse of its use.
    nocontrast_gradient_ratio_review: float = Field(default=0.0, ge=0)
    #: Change from the patient's previous accepted study (%) above which a volume is
    #: not plausible between follow-ups.
    change_pct_review: float = Field(default=35.0, gt=0)


class BrokerSettings(_Frozen):
    """Scale-out (docs/operations.md): jobs handed to ``kidney-node worker`` processes
    through a Celery broker. With no ``url`` the node runs every job itself, as before."""

    #: ``amqp://user:password@host:5672/vhost`` (RabbitMQ); None: one process does all.
    url: SecretStr | None = None
    #: Prefix of the queue names: ``<prefix>.gpu`` and ``<prefix>.cpu``.
    queue_prefix: str = Field(default="kidney-node", pattern=r"^[A-Za-z0-9_.-]+$")
    #: The queue new jobs are published to: ``gpu`` (workers with CUDA take it) or ``cpu``.
    queue: Literal["gpu", "cpu"] = "gpu"
    #: A job published to the GPU queue and not taken for this long is published to the
    #: CPU queue too (a CPU worker runs it with the CPU profile); None: never.
    cpu_fallback_seconds: float | None = Field(default=None, gt=0)
    #: Workers write a heartbeat this often; one silent for ``heartbeat_timeout_seconds``
    #: is ``lost``, and the job it was running is queued again.
    heartbeat_seconds: float = Field(default=10.0, gt=0)
    heartbeat_timeout_seconds: float = Field(default=60.0, gt=0)
    #: A queued job not taken this long after it was published is published again (a
    #: message lost with the broker, or a receiver that died between commit and publish).
    republish_seconds: float = Field(default=600.0, gt=0)

    @model_validator(mode="after")
    def _timeout_after_heartbeat(self) -> BrokerSettings:
        if self.heartbeat_timeout_seconds <= 2 * self.heartbeat_seconds:
            raise ValueError("heartbeat_timeout_seconds must exceed twice heartbeat_seconds")
        return self


class TrendSettings(_Frozen):
    """Alert thresholds of the volume trend (see service/trends.py)."""

    #: A fall of more than this % from the previous study raises an alert.
    alert_fall_from_previous_pct: float = Field(default=10.0, gt=0)
    #: A fall of more than this % from the baseline study raises an alert.
    alert_fall_from_baseline_pct: float = Field(default=15.0, gt=0)
    #: Quality-control verdicts whose results the trend's changes, baseline and alerts
    #: use; the others are listed, marked, and never averaged in. Results written
    #: before quality control existed (not assessed) are used as before.
    verdicts_used: tuple[Literal["pass", "review", "fail"], ...] = ("pass",)


class Settings(_Frozen):
    dicom: DicomSettings = DicomSettings()
    storage: StorageSettings = StorageSettings()
    database: DatabaseSettings = DatabaseSettings()
    scheduler: SchedulerSettings = SchedulerSettings()
    processing: ProcessingSettings = ProcessingSettings()
    sender: SenderSettings = SenderSettings()
    destinations: tuple[Destination, ...] = ()
    classification: ClassificationRules = ClassificationRules()
    http: HttpSettings = HttpSettings()
    trends: TrendSettings = TrendSettings()
    qc: QcSettings = QcSettings()
    prior_studies: PriorStudiesSettings = PriorStudiesSettings()
    broker: BrokerSettings = BrokerSettings()
    log_level: str = "INFO"
    #: "text": one line per message; "json": one JSON object per line (time, level,
    #: logger, message, exception), for a log collector.
    log_format: Literal["text", "json"] = "text"

    @field_validator("log_level")
    @classmethod
    def _known_level(cls, value: str) -> str:
        if value.upper() not in _LOG_LEVELS:
            raise ValueError(f"must be one of {', '.join(_LOG_LEVELS)}")
        return value.upper()

    @field_validator("destinations")
    @classmethod
    def _unique_names(cls, value: tuple[Destination, ...]) -> tuple[Destination, ...]:
        names = [d.name for d in value]
        if len(names) != len(set(names)):
            raise ValueError(f"destination names must be unique, got {names}")
        return value
