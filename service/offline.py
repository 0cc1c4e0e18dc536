"""Segment a folder of DICOM files without a server (``kidney-node segment``)."""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from pathlib import Path

from service.config import ClassificationRules, ProcessingSettings, QcSettings
from service.domain import SeriesRole
from service.errors import DICOM_READ_ERRORS, IngestError, PipelineError
from service.jobs.study_plan import (
    LOADED_ROLES,
    image_fingerprint,
    load_study,
    result_uids,
    segmented_phase_images,
)
from service.pipeline.quality import assess_output
from service.pipeline.registry import get_pipeline
from service.scheduler.classify import (
    IMAGE_SOP_CLASSES,
    InstanceFacts,
    choose_pipeline,
    classify_series,
    series_facts,
)
from service.storage.index import InstanceHeader
from service.storage.store import read_header
from service.writers.result import build_result_objects

__all__ = ["OfflineResult", "segment_folder"]

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class OfflineResult:
    #: None when the pipeline made a finding instead of segments (no SEG, no SR).
    seg_path: Path | None
    result_path: Path
    volumes_ml: dict[str, float]
    finding: str | None = None
    #: Quality control by structure: verdict, reasons, signals (as in result.json).
    qc: dict[str, dict] = field(default_factory=dict)


def _headers(input_dir: Path) -> list[tuple[Path, InstanceHeader]]:
    """Each DICOM file under ``input_dir`` with what the node's index would keep of it;
    files that are not DICOM, or that the node would refuse, are skipped (logged)."""
    found = []
    for path in sorted(Path(input_dir).rglob("*")):
        if not path.is_file():
            continue
        try:
            found.append((path, InstanceHeader.from_dataset(read_header(path))))
        except (IngestError, *DICOM_READ_ERRORS) as exc:
            logger.warning("skipping %s: %s", path, exc)
    return found


def segment_folder(
    input_dir: Path,
    out_dir: Path,
    *,
    pipeline_name: str | None,
    rules: ClassificationRules,
    processing: ProcessingSettings,
    device: str,
    qc: QcSettings | None = None,
    ae_title: str = "KIDNEYNODE",
) -> OfflineResult:
    """Classify the series found under ``input_dir``, run a pipeline, write the SEG, the
    SR and ``result.json`` into ``out_dir`` (only ``result.json``, with its ``finding``,
    when the pipeline found nothing to segment).

    The node's path (:mod:`service.jobs.study_plan`): the same series facts and roles as
    the sweep, the same series loaded, and the same derived UIDs (``ae_title``: the
    node's, which names the SR's device) as the node would write for this study.

    Raises
    ------
    PipelineError
        When no series can be segmented (the message says which series were found).
    """
    headers = _headers(input_dir)
    study_uids = {h.study_uid for _p, h in headers}
    if len(study_uids) > 1:
        raise PipelineError(f"{input_dir} holds several studies: {sorted(study_uids)}")
    facts = series_facts(InstanceFacts(h.series_uid, h.modality, h.series_description,
                                       h.protocol_name, h.sop_class_uid, h.temporal_position)
                         for _p, h in headers)
    roles = {f.series_instance_uid: classify_series(f, rules) for f in facts}
    chosen, reason = choose_pipeline(roles, mr_pipeline=processing.mr_pipeline,
                                     ct_pipeline=processing.ct_pipeline,
                                     mr_nocontrast_pipeline=processing.mr_nocontrast_pipeline)
    name = pipeline_name or chosen
    if name is None:
        raise PipelineError(f"{input_dir}: {reason}")
    pipeline = get_pipeline(name, processing)
    study_uid = study_uids.pop()
    paths: dict[SeriesRole, dict[str, list[Path]]] = {}
    for path, header in headers:
        role = roles[header.series_uid]
        if role in LOADED_ROLES:
            paths.setdefault(role, {}).setdefault(header.series_uid, []).append(path)
    fingerprint = image_fingerprint(h.sop_uid for _p, h in headers
                                    if h.sop_class_uid in IMAGE_SOP_CLASSES)
    output = pipeline.run(load_study(study_uid, paths), device=device)
    out_dir.mkdir(parents=True, exist_ok=True)
    result = {
        "study_instance_uid": study_uid,
        "pipeline": pipeline.name,
        "pipeline_version": pipeline.version,
        "device": device,
        "source_series_instance_uid": str(output.reference.datasets[0].SeriesInstanceUID),
    }
    seg_path = None
    quality = assess_output(output, qc or QcSettings())  # no history offline
    if output.segments:
        images = segmented_phase_images(output, paths) if processing.phase_series else []
        uids = result_uids(study_uid, fingerprint, pipeline, ae_title)
        phase_uid = uids.phase_series
        objects = build_result_objects(output, pipeline, processing, uids, quality=quality,
                                       phase_images=images)
        seg, sr = objects.seg, objects.sr
        seg_path = out_dir / "seg.dcm"
        seg.save_as(seg_path, enforce_file_format=True)
        sr_path = out_dir / "sr.dcm"
        sr.save_as(sr_path, enforce_file_format=True)
        if objects.phase_images:
            phase_dir = out_dir / "phase"
            phase_dir.mkdir(exist_ok=True)
            for k, image in enumerate(objects.phase_images, start=1):
                image.save_as(phase_dir / f"IM{k:05d}.dcm", enforce_file_format=True)
            result["phase_series_instance_uid"] = phase_uid
        result.update({
            "seg_sop_instance_uid": str(seg.SOPInstanceUID),
            "seg_file": seg_path.name,
            "sr_sop_instance_uid": str(sr.SOPInstanceUID),
            "sr_file": sr_path.name,
        })
    result.update({
        "volumes_ml": {k: round(v, 3) for k, v in output.volumes_ml.items()},
        "flags": list(output.flags),
        "qc": {k: {"verdict": a.verdict.value, "reasons": list(a.reasons),
                   "signals": dict(a.signals)} for k, a in quality.items()},
        "finding": output.finding,
        "series_roles": {uid: role.value for uid, role in roles.items()},
    })
    result_path = out_dir / "result.json"
    result_path.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    return OfflineResult(seg_path, result_path, dict(output.volumes_ml), output.finding,
                         result["qc"])
