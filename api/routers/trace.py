"""A person's trace across cameras, and its export for hand-over."""

from __future__ import annotations

import time
from typing import Annotated

from fastapi import APIRouter, Depends, Query, Response

from camtrace.api.deps import Auditor, SearchDep, ServicesDep, allow, auditor, current_user
from camtrace.api.responses import AUTHENTICATED, errors
from camtrace.api.schemas import ExportFormat, TraceOut, TraceStepOut, crop_url
from camtrace.enums import Role
from camtrace.storage.access import Principal

router = APIRouter(prefix="/api/trace", tags=["trace"], responses=AUTHENTICATED)
MEDIA = {"csv": "text/csv", "json": "application/json", "html": "text/html"}


def trace_out(trace) -> TraceOut:
    return TraceOut(
        seed_track_id=trace.seed_track_id,
        steps=[
            TraceStepOut(
                track_id=s.track_id,
                camera_id=s.camera_id,
                ts_start=s.ts_start,
                ts_end=s.ts_end,
                score=s.score,
                probability=s.probability,
                status=s.status,
                crop_url=crop_url(s.crop_key),
                transit_seconds=s.transit_seconds,
                expected_transit_seconds=s.expected_transit_seconds,
                transit_spread_seconds=s.transit_spread_seconds,
                implausible=bool(s.implausible),
                merged_track_ids=list(s.merged_track_ids),
            )
            for s in trace.steps
        ],
        min_probability=trace.min_probability,
    )


MinProbability = Annotated[
    float | None,
    Query(
        ge=0.0,
        le=1.0,
        allow_inf_nan=False,
        description="Probability a candidate needs to be a step of the path (default CAMTRACE_TRACE_MIN_SCORE).",
    ),
]


@router.get("/{track_id}", responses=errors(404))
@allow(Role.OPERATOR)
def trace(
    track_id: str,
    search: SearchDep,
    min_probability: MinProbability = None,
    user: Principal = Depends(current_user),
    audit: Auditor = Depends(auditor),
) -> TraceOut:
    """The person's path: the seed, the confirmed matches and the most probable time-consistent chain of
    candidates, with each step's probability and transit (and the learned typical transit); the other
    candidates as alternatives."""
    found = search.trace(track_id, allowed_cameras=user.cameras, min_probability=min_probability)
    audit("trace", {"track_id": track_id, "min_probability": min_probability}, [s.track_id for s in found.steps])
    return trace_out(found)


@router.get(
    "/{track_id}/export",
    response_class=Response,
    responses={200: {"content": {m: {} for m in MEDIA.values()}, "description": "The trace as a file."}, **errors(404)},
)
@allow(Role.INVESTIGATOR)
def export_trace(
    track_id: str,
    services: ServicesDep,
    search: SearchDep,
    format: ExportFormat = "csv",
    min_probability: MinProbability = None,
    user: Principal = Depends(current_user),
    audit: Auditor = Depends(auditor),
) -> Response:
    """Download the trace as CSV, JSON or a self-contained HTML report (names who exported it and when)."""
    from camtrace.search import export

    found = search.trace(track_id, allowed_cameras=user.cameras, min_probability=min_probability)
    writer = {"csv": export.trace_csv, "json": export.trace_json, "html": export.trace_html}[format]
    body = writer(found, exported_by=user.username, exported_at=time.time(), crops=services.crops)
    audit("export", {"track_id": track_id, "format": format, "min_probability": min_probability}, [s.track_id for s in found.steps])
    safe_id = "".join(ch if ch.isalnum() or ch in "-_" else "_" for ch in track_id)
    return Response(
        body,
        media_type=MEDIA[format],
        headers={"Content-Disposition": f'attachment; filename="trace-{safe_id}.{format}"'},
    )
