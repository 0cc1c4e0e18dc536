"""One way through a study, for the node's job runner and ``kidney-node segment`` alike:
the fingerprint of its images, the series each role loads (and which must load), and
the UIDs of the objects a result is written as. The same study gives the same result,
SEG UIDs included, either way (tests/integration/test_one_path.py).
"""

from __future__ import annotations

import hashlib
import logging
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path

from pydicom import Dataset

from service.dicom.uids import derived_uid
from service.domain import SeriesRole
from service.errors import SeriesLoadError
from service.imaging.series import LoadedSeries, load_series, phase_images
from service.pipeline.base import Pipeline, PipelineOutput, StudyInput
from service.writers.result import ResultUids

__all__ = ["LOADED_ROLES", "image_fingerprint", "load_study", "result_uids",
           "segmented_phase_images"]

logger = logging.getLogger(__name__)

#: Roles a pipeline may read; series of other roles are not loaded.
LOADED_ROLES = (SeriesRole.DCE, SeriesRole.T2, SeriesRole.T1, SeriesRole.CT)
#: Every series of these roles must load, or the study fails.
_REQUIRED_ROLES = (SeriesRole.DCE,)
#: One series of these roles must load: the others (a CT localizer, an enhanced
#: multi-frame reformat) are skipped with a warning.
_ONE_NEEDED_ROLES = (SeriesRole.CT,)


def image_fingerprint(sop_instance_uids: Iterable[str]) -> str:
    """SHA-256 of the sorted SOP Instance UIDs of a study's received images: a study sent
    again unchanged has the same one (and is not processed again)."""
    digest = hashlib.sha256()
    for uid in sorted(sop_instance_uids):
        digest.update(uid.encode() + b"\n")
    return digest.hexdigest()


def load_study(study_uid: str, paths: Mapping[SeriesRole, Mapping[str, Sequence[Path]]]
               ) -> StudyInput:
    """The series of ``paths`` (role -> series UID -> files) loaded for a pipeline.

    Raises
    ------
    SeriesLoadError
        A DCE series does not load, or no CT series does (others are skipped, logged).
    """
    loaded: dict[SeriesRole, list[LoadedSeries]] = defaultdict(list)
    for role, by_series in paths.items():
        if role not in LOADED_ROLES:
            continue
        errors: list[SeriesLoadError] = []
        for series_uid, files in sorted(by_series.items()):
            try:
                loaded[role].append(load_series(list(files)))
            except SeriesLoadError as exc:
                if role in _REQUIRED_ROLES:
                    raise
                errors.append(exc)
                logger.warning("study %s: skipping %s series %s: %s", study_uid, role.value,
                               series_uid, exc)
        if errors and role in _ONE_NEEDED_ROLES and not loaded[role]:
            raise errors[0]
    return StudyInput(study_uid, {r: tuple(s) for r, s in loaded.items()})


def result_uids(study_uid: str, fingerprint: str, pipeline: Pipeline, ae_title: str
                ) -> ResultUids:
    """The UIDs of a result's objects, derived from the study, its images and the
    pipeline's version: a job run again (after a crash) writes the same objects."""
    key = (study_uid, fingerprint, pipeline.name, pipeline.version)
    return ResultUids(
        seg_series=derived_uid(*key, "seg-series"), seg=derived_uid(*key, "seg"),
        sr_series=derived_uid(*key, "sr-series"), sr=derived_uid(*key, "sr"),
        device=derived_uid(ae_title, "device"),
        phase_series=derived_uid(*key, "phase-series"),
        rtstruct_series=derived_uid(*key, "rtstruct-series"),
        rtstruct=derived_uid(*key, "rtstruct"),
        overlay_series=derived_uid(*key, "overlay-series"))


def segmented_phase_images(output: PipelineOutput,
                           paths: Mapping[SeriesRole, Mapping[str, Sequence[Path]]]
                           ) -> list[Dataset]:
    """The images (with pixels) of the phase ``output`` was segmented on, when that phase
    is only part of its series (a DCE of every phase in one series): they are sent as a
    series of their own (:mod:`service.writers.phase_series`). Empty otherwise."""
    series_uid = str(output.reference.datasets[0].SeriesInstanceUID)
    return phase_images(output.reference, [
        path for by_series in paths.values() for path in by_series.get(series_uid, ())])
