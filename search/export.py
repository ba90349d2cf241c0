"""A trace as files an investigator can hand over: CSV, JSON, and a self-contained HTML report.

The HTML report needs nothing but itself: crops are inlined as base64 JPEG data URLs, the
style is inline, there is no script and no external asset. It shows who exported it and
when, a timeline with one lane per camera, and one row per step with its crop.
"""

from __future__ import annotations

import base64
import csv
import io
import json
from datetime import UTC, datetime
from html import escape

from camtrace.enums import TraceStatus
from camtrace.errors import CamtraceError
from camtrace.search.records import Trace, TraceStep
from camtrace.storage.crops import CropStore

CSV_COLUMNS = (
    "step",
    "track_id",
    "camera_id",
    "start",
    "end",
    "ts_start",
    "ts_end",
    "transit_seconds",
    "expected_transit_seconds",
    "probability",
    "score",
    "status",
    "implausible",
    "merged_track_ids",
    "crop_key",
    "seed_track_id",
    "exported_by",
    "exported_at",
)


def iso(ts: float | None) -> str:
    return "" if ts is None else datetime.fromtimestamp(ts, tz=UTC).isoformat(timespec="seconds")


def trace_csv(trace: Trace, *, exported_by: str, exported_at: float, crops: CropStore | None = None) -> str:
    """One row per step; times as ISO (UTC) and epoch seconds; merged track ids joined by ';'."""
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=CSV_COLUMNS, lineterminator="\n")
    writer.writeheader()
    for number, step in enumerate(trace.steps, 1):
        writer.writerow(
            {
                "step": number,
                "track_id": step.track_id,
                "camera_id": step.camera_id,
                "start": iso(step.ts_start),
                "end": iso(step.ts_end),
                "ts_start": step.ts_start,
                "ts_end": step.ts_end,
                "transit_seconds": "" if step.transit_seconds is None else step.transit_seconds,
                "expected_transit_seconds": "" if step.expected_transit_seconds is None else step.expected_transit_seconds,
                "probability": step.probability,
                "score": step.score,
                "status": step.status,
                "implausible": str(step.implausible).lower(),
                "merged_track_ids": ";".join(step.merged_track_ids),
                "crop_key": step.crop_key or "",
                "seed_track_id": trace.seed_track_id,
                "exported_by": exported_by,
                "exported_at": iso(exported_at),
            }
        )
    return out.getvalue()


def trace_json(trace: Trace, *, exported_by: str, exported_at: float, crops: CropStore | None = None) -> str:
    steps = [step.as_dict() | {"start": iso(step.ts_start), "end": iso(step.ts_end)} for step in trace.steps]
    document = {
        "seed_track_id": trace.seed_track_id,
        "min_probability": trace.min_probability,
        "method": trace.method,
        "exported_by": exported_by,
        "exported_at": exported_at,
        "exported_at_iso": iso(exported_at),
        "cameras": sorted({step.camera_id for step in trace.steps}),
        "steps": steps,
    }
    return json.dumps(document, indent=2)


def crop_data_url(crops: CropStore | None, key: str | None) -> str | None:
    """The crop as a data URL, or None when it is gone (retention) or was never stored."""
    if crops is None or not key:
        return None
    try:
        data = crops.get(key)
    except CamtraceError:
        return None
    return "data:image/jpeg;base64," + base64.b64encode(data).decode("ascii")


_STYLE = """
body{font:14px/1.4 system-ui,sans-serif;margin:24px;color:#1b1f24;background:#fff}
h1{font-size:20px;margin:0 0 4px} .meta{color:#57606a;margin-bottom:16px}
table{border-collapse:collapse;width:100%;margin-top:16px} th,td{border-bottom:1px solid #d0d7de;padding:6px 8px;
text-align:left;vertical-align:middle} th{background:#f6f8fa}
img.crop{height:96px;border-radius:4px;background:#eee} .missing{color:#8c959f;font-style:italic}
.status-seed{color:#0a3069;font-weight:600} .status-confirmed{color:#116329;font-weight:600}
.status-candidate{color:#6e7781} .implausible{color:#cf222e;font-weight:600}
svg text{font:12px system-ui,sans-serif}
"""
_FILL = {TraceStatus.SEED: "#0969da", TraceStatus.CONFIRMED: "#1a7f37", TraceStatus.CANDIDATE: "#8c959f"}


def _timeline_svg(trace: Trace) -> str:
    """One lane per camera; a bar per step from its start to its end, numbered like the table."""
    cameras = sorted({step.camera_id for step in trace.steps})
    if not cameras:
        return ""
    start = min(step.ts_start for step in trace.steps)
    end = max(step.ts_end for step in trace.steps)
    span = max(end - start, 1.0)
    label_w, width, lane_h = 160, 900, 34
    height = lane_h * len(cameras) + 30
    lane = {camera: i for i, camera in enumerate(cameras)}
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{label_w + width + 20}" height="{height}" '
        'role="img" aria-label="timeline, one lane per camera">'
    ]
    for camera, i in lane.items():
        y = i * lane_h
        parts.append(f'<rect x="0" y="{y}" width="{label_w + width}" height="{lane_h - 4}" fill="#f6f8fa"/>')
        parts.append(f'<text x="6" y="{y + 20}" class="lane">{escape(camera)}</text>')
    for number, step in enumerate(trace.steps, 1):
        x = label_w + (step.ts_start - start) / span * width
        w = max(6.0, (step.ts_end - step.ts_start) / span * width)
        y = lane[step.camera_id] * lane_h + 4
        stroke = ' stroke="#cf222e" stroke-width="2"' if step.implausible else ""
        parts.append(
            f'<rect class="step" x="{x:.1f}" y="{y}" width="{w:.1f}" height="{lane_h - 12}" rx="3" '
            f'fill="{_FILL.get(step.status, "#8c959f")}"{stroke}><title>step {number}: '
            f"{escape(step.track_id)} {iso(step.ts_start)} - {iso(step.ts_end)}</title></rect>"
        )
        parts.append(f'<text x="{x + 3:.1f}" y="{y + 15}" fill="#fff">{number}</text>')
    axis_y = lane_h * len(cameras) + 16
    parts.append(f'<text x="{label_w}" y="{axis_y}">{escape(iso(start))}</text>')
    parts.append(f'<text x="{label_w + width}" y="{axis_y}" text-anchor="end">{escape(iso(end))}</text>')
    parts.append("</svg>")
    return "".join(parts)


def _row(number: int, step: TraceStep, crops: CropStore | None) -> str:
    url = crop_data_url(crops, step.crop_key)
    crop = (
        f'<img class="crop" alt="crop of {escape(step.track_id)}" src="{url}">'
        if url
        else ('<span class="missing">crop no longer stored</span>')
    )
    transit = "" if step.transit_seconds is None else f"{step.transit_seconds:g} s"
    if step.expected_transit_seconds is not None:
        transit += f" (usually {step.expected_transit_seconds:g} ± {step.transit_spread_seconds or 0:g} s)"
    flag = '<span class="implausible">implausible: seen elsewhere at the same time</span>' if step.implausible else ""
    merged = ("same stop: " + escape(", ".join(step.merged_track_ids))) if step.merged_track_ids else ""
    return (
        f'<tr class="step"><td>{number}</td><td>{crop}</td><td>{escape(step.camera_id)}</td>'
        f"<td>{escape(iso(step.ts_start))}<br>{escape(iso(step.ts_end))}</td><td>{escape(transit)}</td>"
        f'<td class="status-{escape(step.status)}">{escape(step.status)}</td><td>{step.probability:.0%}</td>'
        f"<td><code>{escape(step.track_id)}</code><br><small>{merged}</small></td><td>{flag}</td></tr>"
    )


def trace_html(trace: Trace, *, exported_by: str, exported_at: float, crops: CropStore | None = None) -> str:
    rows = "\n".join(_row(number, step, crops) for number, step in enumerate(trace.steps, 1))
    threshold = (
        ""
        if trace.min_probability is None
        else (f"; path steps at a probability of {trace.min_probability:.0%} or more of being the same person")
    )
    return f"""<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<title>camtrace trace of track {escape(trace.seed_track_id)}</title>
<style>{_STYLE}</style>
</head>
<body>
<h1>Trace of track <code>{escape(trace.seed_track_id)}</code></h1>
<div class="meta">Exported by <strong class="exported-by">{escape(exported_by)}</strong> at
<time class="exported-at" datetime="{iso(exported_at)}">{escape(iso(exported_at))}</time> (UTC).
{len(trace.steps)} step(s) on {len({s.camera_id for s in trace.steps})} camera(s){escape(threshold)}.
Confirmed steps were decided by investigators; candidates are undecided matches.</div>
{_timeline_svg(trace)}
<table>
<thead><tr><th>#</th><th>Crop</th><th>Camera</th><th>Seen (UTC)</th><th>Transit</th><th>Status</th><th>P(same)</th>
<th>Track</th><th>Notes</th></tr></thead>
<tbody>
{rows}
</tbody>
</table>
</body>
</html>
"""
