"""Graft volume over time: changes between studies and the alerts they raise.

Rules (per patient and structure; documented in the README):

* **Order.** Studies by study date, then study time, then Study Instance UID; a study
  without a date cannot be placed in time and comes after the dated ones.
* **Baseline.** The study marked as baseline, else the first study in that order.
* **Changes.** For every study, the change of volume from the previous study and from the
  baseline, in ml and in % of the earlier volume (``None`` where there is no earlier
  study, and for the baseline itself).
* **Alert.** A study whose volume fell by more than ``fall_from_previous_pct`` (default
  10 %) from the previous study, or by more than ``fall_from_baseline_pct`` (default 15 %)
  from the baseline. Each alert says which rule fired.
* **Quality control.** Only measurements whose verdict is in ``verdicts_used`` (default
  ``pass``), or that were never assessed (written before quality control existed), are
  *in the trend*: they alone are "the previous study", the default baseline, and raise
  alerts. The others are listed with their verdict, ``in_trend`` false, their changes
  from the trend's measurements for information, and never an alert. A baseline marked
  by hand is the baseline whatever its verdict.
* **Review.** A person's word outranks quality control: a measurement a reader accepted
  or corrected (a corrected SEG: its volume is the reader's) is in the trend whatever the
  verdict; one a reader rejected is not (listed, like a measurement quality control did
  not accept).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from service.config import TrendSettings

__all__ = ["AlertRules", "Measurement", "TrendPoint", "counts_in_trend", "volume_trend"]


@dataclass(frozen=True)
class AlertRules:
    """Falls in % that raise an alert (positive numbers)."""

    fall_from_previous_pct: float = 10.0
    fall_from_baseline_pct: float = 15.0
    #: Quality-control verdicts of the measurements the trend uses.
    verdicts_used: tuple[str, ...] = ("pass",)

    @classmethod
    def from_settings(cls, trends: TrendSettings) -> AlertRules:
        """The rules of the node's ``trends`` settings."""
        return cls(trends.alert_fall_from_previous_pct, trends.alert_fall_from_baseline_pct,
                   trends.verdicts_used)


@dataclass(frozen=True)
class Measurement:
    """The reported volume of one structure in one study."""

    study_instance_uid: str
    study_date: dt.date | None
    study_time: str | None
    structure: str
    volume_ml: float
    baseline: bool = False
    #: "pass", "review", "fail", or None when not assessed.
    qc_verdict: str | None = None
    qc_reasons: tuple[str, ...] = ()
    #: The review that stands: "accepted", "rejected", "corrected", or None.
    review: str | None = None


@dataclass(frozen=True)
class TrendPoint:
    """A measurement with its changes and alert."""

    study_instance_uid: str
    study_date: str | None
    study_time: str | None
    structure: str
    volume_ml: float
    baseline: bool
    change_from_previous_ml: float | None
    change_from_previous_pct: float | None
    change_from_baseline_ml: float | None
    change_from_baseline_pct: float | None
    alert: bool
    alert_reasons: tuple[str, ...]
    qc_verdict: str | None = None
    qc_reasons: tuple[str, ...] = ()
    #: Whether the measurement counts in the trend (its review, else its verdict).
    in_trend: bool = True
    review: str | None = None

    def as_dict(self) -> dict[str, Any]:
        row = asdict(self)
        row["alert_reasons"] = list(self.alert_reasons)
        row["qc_reasons"] = list(self.qc_reasons)
        return row


def _order(m: Measurement) -> tuple:
    return (m.study_date is None, m.study_date or dt.date.min, m.study_time or "",
            m.study_instance_uid)


def _change(new: float, old: float | None) -> tuple[float | None, float | None]:
    if old is None:
        return None, None
    delta = new - old
    return round(delta, 3), (round(100.0 * delta / old, 2) if old > 0 else None)


def volume_trend(
    measurements: Iterable[Measurement], rules: AlertRules = AlertRules()
) -> list[TrendPoint]:
    """Trend points of every structure, ordered by structure then time (see module notes)."""
    by_structure: dict[str, list[Measurement]] = {}
    for m in measurements:
        by_structure.setdefault(m.structure, []).append(m)
    points: list[TrendPoint] = []
    for structure in sorted(by_structure):
        series = sorted(by_structure[structure], key=_order)
        used = [m for m in series if _in_trend(m, rules)]
        marked = [m for m in series if m.baseline]
        baseline = marked[0] if marked else (used[0] if used else None)
        previous: Measurement | None = None
        for m in series:
            in_trend = _in_trend(m, rules)
            prev_ml, prev_pct = _change(m.volume_ml, previous.volume_ml if previous else None)
            is_base = m is baseline
            base_ml, base_pct = _change(
                m.volume_ml, None if is_base or baseline is None else baseline.volume_ml)
            reasons = []
            if in_trend and prev_pct is not None and prev_pct < -rules.fall_from_previous_pct:
                reasons.append(f"fell {-prev_pct:.1f} % since the previous study "
                               f"(threshold {rules.fall_from_previous_pct:g} %)")
            if in_trend and base_pct is not None and base_pct < -rules.fall_from_baseline_pct:
                reasons.append(f"fell {-base_pct:.1f} % since the baseline "
                               f"(threshold {rules.fall_from_baseline_pct:g} %)")
            points.append(TrendPoint(
                m.study_instance_uid,
                m.study_date.isoformat() if m.study_date else None,
                m.study_time, structure, round(m.volume_ml, 3), is_base,
                prev_ml, prev_pct, base_ml, base_pct, bool(reasons), tuple(reasons),
                m.qc_verdict, m.qc_reasons, in_trend, m.review))
            if in_trend:
                previous = m
    return points


def counts_in_trend(qc_verdict: str | None, review: str | None,
                    verdicts_used: Iterable[str]) -> bool:
    """Whether a measurement is in the trend: a reader's review decides, else quality
    control (a verdict in ``verdicts_used``, or none: not assessed)."""
    if review in ("accepted", "corrected"):
        return True
    if review == "rejected":
        return False
    return qc_verdict is None or qc_verdict in verdicts_used


def _in_trend(m: Measurement, rules: AlertRules) -> bool:
    return counts_in_trend(m.qc_verdict, m.review, rules.verdicts_used)
