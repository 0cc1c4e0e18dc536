"""Segment a folder of DICOM files without a server (``kidney-node segment``)."""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from pathlib import Path

from service.config import ClassificationRules, ProcessingSettings, QcSettings
from service.db.tables import SeriesRole
from service.dicom.uids import new_uid
from service.errors import PipelineError, SeriesLoadError
from service.imaging.series import LoadedSeries, group_by_series, load_series, phase_images
from service.pipeline.base import StudyInput
from service.pipeline.quality import assess_output
from service.pipeline.registry import get_pipeline
from service.scheduler.classify import SeriesFacts, choose_pipeline, classify_series
from service.writers.result import ResultUids, build_result_objects

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


def _facts(series: LoadedSeries) -> SeriesFacts:
    first = series.volumes[0].datasets[0]
    return SeriesFacts(
        series_instance_uid=series.series_instance_uid, modality=series.modality,
        description=series.description, protocol_name=str(first.get("ProtocolName", "")),
        sop_class_uids=frozenset({str(first.SOPClassUID)}),
        n_instances=sum(len(v.datasets) for v in series.volumes),
        n_temporal_positions=len(series.volumes) if len(series.volumes) > 1 else 0)


def segment_folder(
    input_dir: Path,
    out_dir: Path,
    *,
    pipeline_name: str | None,
    rules: ClassificationRules,
    processing: ProcessingSettings,
    device: str,
    qc: QcSettings | None = None,
) -> OfflineResult:
    """Classify the series found under ``input_dir``, run a pipeline, write the SEG, the
    SR and ``result.json`` into ``out_dir`` (only ``result.json``, with its ``finding``,
    when the pipeline found nothing to segment).

    Raises
    ------
    PipelineError
        When no series can be segmented (the message says which series were found).
    """
    files = [p for p in sorted(Path(input_dir).rglob("*")) if p.is_file()]
    groups = group_by_series(files)
    by_role: dict[SeriesRole, list[LoadedSeries]] = {}
    roles: dict[str, SeriesRole] = {}
    study_uids = set()
    for series_uid, paths in groups.items():
        try:
            series = load_series(paths)
        except SeriesLoadError as exc:
            logger.warning("skipping %s", exc)
            continue
        role = classify_series(_facts(series), rules)
        roles[series_uid] = role
        by_role.setdefault(role, []).append(series)
        study_uids.add(str(series.volumes[0].datasets[0].StudyInstanceUID))
    if len(study_uids) > 1:
        raise PipelineError(f"{input_dir} holds several studies: {sorted(study_uids)}")
    chosen, reason = choose_pipeline(roles, mr_pipeline=processing.mr_pipeline,
                                     ct_pipeline=processing.ct_pipeline,
                                     mr_nocontrast_pipeline=processing.mr_nocontrast_pipeline)
    name = pipeline_name or chosen
    if name is None:
        raise PipelineError(f"{input_dir}: {reason}")
    pipeline = get_pipeline(name, processing)
    study_uid = study_uids.pop()
    output = pipeline.run(StudyInput(study_uid, {r: tuple(s) for r, s in by_role.items()}),
                          device=device)
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
        images = []
        if processing.phase_series:
            series_uid = str(output.reference.datasets[0].SeriesInstanceUID)
            images = phase_images(output.reference, groups.get(series_uid, []))
        phase_uid = new_uid()
        objects = build_result_objects(output, pipeline, processing, ResultUids(
            seg_series=new_uid(), seg=new_uid(), sr_series=new_uid(), sr=new_uid(),
            device=new_uid(), phase_series=phase_uid), quality=quality, phase_images=images)
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
