"""The volume trend of one patient as a PNG (matplotlib, no pyplot global state)."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Mapping
from typing import Any

from service.reports import new_figure, png_bytes

__all__ = ["trend_png"]


def trend_png(rows: Iterable[Mapping[str, Any]], *, title: str) -> bytes:
    """Volume (ml) against study date, one line per structure.

    ``rows`` are trend rows (:func:`service.db.queries.patient_trend`): ``study_date``
    (ISO date or None), ``structure``, ``volume_ml``, ``alert``, ``baseline``. The baseline
    is drawn as a square, studies with an alert as red rings, measurements left out of the
    trend by quality control (``in_trend`` false) as crosses off the line; undated studies
    are left out of the plot (they cannot be placed in time) and counted in the caption.
    """
    fig = new_figure(7.0, 3.6)
    ax = fig.add_subplot()
    by_structure: dict[str, list[Mapping[str, Any]]] = {}
    undated = 0
    for row in rows:
        if not row.get("study_date"):
            undated += 1
            continue
        by_structure.setdefault(str(row["structure"]), []).append(row)
    for structure, points in sorted(by_structure.items()):
        points = sorted(points, key=lambda r: r["study_date"])
        used = [r for r in points if r.get("in_trend", True)]
        dates = [dt.date.fromisoformat(r["study_date"]) for r in used]
        volumes = [float(r["volume_ml"]) for r in used]
        (line,) = ax.plot(dates, volumes, marker="o", label=structure)
        for r in points:
            if not r.get("in_trend", True):  # shown apart, never joined to the line
                ax.plot([dt.date.fromisoformat(r["study_date"])], [float(r["volume_ml"])],
                        marker="x", markersize=9, color=line.get_color(), linewidth=0)
        for date, volume, r in zip(dates, volumes, used, strict=True):
            if r.get("baseline"):
                ax.plot([date], [volume], marker="s", markersize=9, color=line.get_color(),
                        fillstyle="none")
            if r.get("alert"):
                ax.plot([date], [volume], marker="o", markersize=14, color="red",
                        fillstyle="none", linewidth=0)
    ax.set_ylabel("volume (ml)")
    ax.set_xlabel("study date")
    ax.set_title(title, fontsize=10, parse_math=False)  # a "$" in a Patient ID is text
    ax.grid(True, alpha=0.3)
    if by_structure:
        ax.legend(loc="best", fontsize=8)
        top = max(float(r["volume_ml"]) for pts in by_structure.values() for r in pts)
        ax.set_ylim(0, top * 1.12 if top > 0 else 1.0)
    else:
        ax.text(0.5, 0.5, "no dated measurement", ha="center", va="center",
                transform=ax.transAxes)
    caption = ("square: baseline; red ring: alert; cross: not in the trend (quality "
               "control or a reader)")
    if undated:
        caption += f"; {undated} undated measurement(s) not shown"
    fig.text(0.01, 0.01, caption, fontsize=7, color="0.4")
    fig.autofmt_xdate()
    fig.subplots_adjust(bottom=0.27)  # the dates' labels, the axis title, then the caption
    return png_bytes(fig)
