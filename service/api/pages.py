"""Server-rendered HTML pages for clinicians: the patient list and a patient's trend."""

from __future__ import annotations

import base64
import hashlib
from collections.abc import Iterable, Mapping
from html import escape
from typing import Any
from urllib.parse import quote, urlencode

__all__ = ["HANDLER_SHA256", "STYLE_SHA256", "api_docs_page", "patient_list_page", "patient_page",
           "patient_query"]

_STYLE = """
body { font-family: sans-serif; margin: 1.5em; color: #222; }
table { border-collapse: collapse; margin-top: 1em; }
th, td { border: 1px solid #ccc; padding: 0.3em 0.6em; text-align: right; }
th { background: #f2f2f2; }
td.text, th.text { text-align: left; }
tr.alert td { background: #fde2e2; }
tr.review td { background: #fff4d6; }
.muted { color: #777; font-size: 0.85em; }
form.review { display: flex; gap: 0.3em; }
form.review input[type=text] { width: 9em; }
"""


#: The trend image's two event handlers (they mark the page for a browser test and a
#: reader's tools); allowed by their hashes ('unsafe-hashes'), no other script runs.
_CHART_LOADED = "document.body.dataset.chart='loaded'"
_CHART_ERROR = "document.body.dataset.chart='error'"


def _csp_hash(text: str) -> str:
    return f"'sha256-{base64.b64encode(hashlib.sha256(text.encode()).digest()).decode()}'"


HANDLER_SHA256 = f"{_csp_hash(_CHART_LOADED)} {_csp_hash(_CHART_ERROR)}"
#: The pages' one inline style, as a Content-Security-Policy source (no other style runs).
STYLE_SHA256 = _csp_hash(_STYLE)


def _page(title: str, body: str) -> str:
    return (f"<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\">"
            f"<title>{escape(title)}</title><style>{_STYLE}</style></head>"
            f"<body>{body}</body></html>")


def _number(value: float | None, unit: str = "", signed: bool = False) -> str:
    if value is None:
        return "&ndash;"
    return f"{value:+.1f}{unit}" if signed else f"{value:.1f}{unit}"


def _change(row: Mapping[str, Any], versus: str) -> str:
    ml, pct = row.get(f"change_from_{versus}_ml"), row.get(f"change_from_{versus}_pct")
    if ml is None:
        return "&ndash;"
    return f"{_number(ml, ' ml', signed=True)} ({_number(pct, ' %', signed=True)})"


def patient_query(patient_id: str, issuer: str) -> str:
    """``id=…&issuer=…`` naming one patient in a URL: reaches every Patient ID, also an
    empty one, "..", or one holding "/" (which a path segment cannot carry)."""
    return urlencode({"id": patient_id, "issuer": issuer})


def _patient_name(patient_id: str, issuer: str) -> str:
    name = patient_id if patient_id else "(no Patient ID)"
    return f"{name} (issuer {issuer})" if issuer else name


def _reviewed(row: Mapping[str, Any]) -> str:
    """Who said what about the measurement, and the node's own volume if a reader's
    replaced it."""
    review = row.get("review")
    if not review:
        return "automatic, not reviewed"
    who = escape(str(row.get("reviewed_by") or "unknown reader"))
    when = escape(str(row.get("reviewed_at") or "")[:16].replace("T", " "))
    device = escape(str(row.get("review_device") or ""))
    text = f"{escape(str(review))} by {who} {when}" + (f" ({device})" if device else "")
    if review == "corrected" and row.get("automatic_volume_ml") is not None:
        text += f"; automatic {_number(row['automatic_volume_ml'], ' ml')}"
    return text


def _review_form(row: Mapping[str, Any], patient_id: str, issuer: str) -> str:
    """Accept or reject the row's automatic result (the reviewer's name is required)."""
    if row.get("measurement") == "corrected" or row.get("job_id") is None:
        return ""
    hidden = "".join(
        f"<input type=\"hidden\" name=\"{k}\" value=\"{escape(str(v))}\">"
        for k, v in (("id", patient_id), ("issuer", issuer),
                     ("study", row["study_instance_uid"]), ("structure", row["structure"])))
    return (f"<form class=\"review\" method=\"post\" action=\"/patient/review\">{hidden}"
            "<input type=\"text\" name=\"reviewer\" placeholder=\"your name\" required "
            "aria-label=\"reviewer\">"
            "<button type=\"submit\" name=\"decision\" value=\"accept\">accept</button>"
            "<button type=\"submit\" name=\"decision\" value=\"reject\">reject</button>"
            "</form>")


def patient_page(patient_id: str, issuer: str, rows: Iterable[Mapping[str, Any]]) -> str:
    """Trend chart, then one table row per study and structure with its changes, alert,
    quality flags, review (and a form to accept or reject it) and a link to the mask
    preview of that study."""
    query = patient_query(patient_id, issuer)
    name = _patient_name(patient_id, issuer)
    lines = []
    for r in rows:
        uid = str(r["study_instance_uid"])
        reasons = "; ".join(r.get("alert_reasons") or [])
        alert = f"ALERT: {escape(reasons)}" if r.get("alert") else ""
        flags = ", ".join(r.get("flags") or [])
        baseline = " (baseline)" if r.get("baseline") else ""
        verdict = str(r.get("qc_verdict") or "not assessed")
        qc = verdict + ("" if r.get("in_trend", True) else ", not in trend")
        if r.get("qc_reasons"):
            qc += ": " + "; ".join(r["qc_reasons"])
        css = "alert" if r.get("alert") else ("review" if not r.get("in_trend", True) else "ok")
        lines.append(
            f"<tr class=\"{css}\" data-study=\"{escape(uid)}\" "
            f"data-structure=\"{escape(str(r['structure']))}\" "
            f"data-qc=\"{escape(verdict)}\" data-review=\"{escape(str(r.get('review') or ''))}\">"
            f"<td class=\"text\">{escape(r.get('study_date') or 'undated')}{baseline}</td>"
            f"<td class=\"text\">{escape(str(r['structure']))}</td>"
            f"<td>{_number(r['volume_ml'])}</td>"
            f"<td>{_change(r, 'previous')}</td><td>{_change(r, 'baseline')}</td>"
            f"<td class=\"text\">{alert}</td>"
            f"<td class=\"text qc\">{escape(qc)}</td>"
            f"<td class=\"text\">{escape(flags)}</td>"
            f"<td class=\"text reviewed\">{_reviewed(r)}"
            f"{_review_form(r, patient_id, issuer)}</td>"
            f"<td class=\"text\"><a href=\"/api/studies/{quote(uid, safe='')}/preview.png\">"
            f"mask preview</a></td></tr>")
    body = (
        f"<h1>Patient {escape(name)}</h1>"
        f"<p><a href=\"/\">all patients</a></p>"
        f"<img id=\"trend\" alt=\"volume trend of patient {escape(name)}\" "
        f"src=\"{escape(f'/api/patient/volumes.png?{query}')}\" "
        f"onload=\"{_CHART_LOADED}\" onerror=\"{_CHART_ERROR}\">"
        "<table id=\"measurements\"><thead><tr><th>study date</th><th>structure</th>"
        "<th>volume (ml)</th><th>change from previous</th><th>change from baseline</th>"
        "<th>alert</th><th>quality control</th><th>method flags</th><th class=\"text\">review</th>"
        "<th>check</th></tr>"
        "</thead><tbody>" + "".join(lines) + "</tbody></table>"
        "<p class=\"muted\">Volumes from the node's latest result per study, or a "
        "reader's corrected segmentation (a SEG sent to the node) where there is one. "
        "Changes are relative to the earlier volume; the alert thresholds are in the "
        "node's settings. A measurement that quality control did not accept, or that a "
        "reader rejected, is listed but left out of the trend (its previous study, "
        "baseline and alerts); one a reader accepted or corrected counts. Every "
        "measurement and review is kept: <a href=\"/api/patient/history?"
        f"{escape(query)}\">history</a>.</p>")
    return _page(f"kidney-node: patient {name}", body)


def patient_list_page(patients: Iterable[Mapping[str, Any]]) -> str:
    """Patients, latest study first, with their latest volumes and alert state."""
    lines = []
    for p in patients:
        latest = ", ".join(f"{escape(k)} {v:.1f} ml"
                           for k, v in sorted((p.get("latest_volumes_ml") or {}).items()))
        lines.append(
            f"<tr class=\"{'alert' if p.get('alert') else 'ok'}\">"
            f"<td class=\"text\"><a href=\"{escape(_patient_href(p))}\">"
            f"{escape(_patient_name(str(p['patient_id']), str(p.get('issuer') or '')))}</a></td>"
            f"<td>{p.get('studies', '')}</td>"
            f"<td class=\"text\">{escape(str(p.get('last_study_date') or ''))}</td>"
            f"<td class=\"text\">{latest}</td>"
            f"<td class=\"text\">{'ALERT' if p.get('alert') else ''}</td>"
            f"<td class=\"text\">{escape(', '.join(p.get('needs_review') or []))}</td></tr>")
    body = ("<h1>kidney-node: patients</h1><table id=\"patients\"><thead><tr>"
            "<th>patient</th><th>studies</th><th>last study</th><th>latest volumes</th>"
            "<th>alert</th><th>needs review</th></tr></thead><tbody>" + "".join(lines)
            + "</tbody></table>")
    return _page("kidney-node: patients", body)


def _patient_href(row: Mapping[str, Any]) -> str:
    return f"/patient?{patient_query(str(row['patient_id']), str(row.get('issuer') or ''))}"


def api_docs_page(schema: Mapping[str, Any]) -> str:
    """The API's routes from its OpenAPI ``schema``, as a plain page (no script, nothing
    loaded from elsewhere): method, path, summary and parameters."""
    rows = []
    for path, operations in sorted(schema.get("paths", {}).items()):
        for method, operation in operations.items():
            params = ", ".join(
                f"{p.get('name')} ({p.get('in')}{', required' if p.get('required') else ''})"
                for p in operation.get("parameters", []))
            rows.append(f"<tr><td class=\"text\">{escape(method.upper())}</td>"
                        f"<td class=\"text\"><code>{escape(path)}</code></td>"
                        f"<td class=\"text\">{escape(operation.get('summary', ''))}</td>"
                        f"<td class=\"text\">{escape(params)}</td></tr>")
    info = schema.get("info", {})
    title = f"{info.get('title', 'API')} {info.get('version', '')} API"
    body = (f"<h1>{escape(title)}</h1><p class=\"muted\">The schema: "
            f"<a href=\"/openapi.json\">/openapi.json</a>. Every route but /health needs "
            f"the bearer token when one is configured.</p><table><tr><th>Method</th>"
            f"<th>Path</th><th>Summary</th><th>Parameters</th></tr>{''.join(rows)}</table>")
    return _page(title, body)
