"""Watchlist alerts: the list, acknowledging or dismissing one, and a live stream for the page.

Every answer holds only alerts on cameras the caller may see. The stream is
server-sent events (``text/event-stream``): one ``alert`` event per new alert,
its id the alert's id, so a browser that reconnects (sending Last-Event-ID)
misses none; a comment every few seconds keeps proxies from closing it.
"""

from __future__ import annotations

import asyncio
import json
import time

from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import StreamingResponse
from starlette.concurrency import run_in_threadpool

from camtrace.api.deps import Auditor, allow, auditor, current_user
from camtrace.api.responses import AUTHENTICATED, errors
from camtrace.api.routers.watchlist import WatchDep, watch_of
from camtrace.api.schemas import MAX_LIMIT, AlertActionIn, AlertOut, AlertsOut, RowId, crop_url
from camtrace.enums import AlertStatus, Role
from camtrace.errors import InputError
from camtrace.storage.access import Principal

router = APIRouter(prefix="/api/alerts", tags=["alerts"], responses=AUTHENTICATED)
STREAM_POLL_SECONDS = 1.0
STREAM_KEEPALIVE_SECONDS = 15.0


def alert_out(alert) -> AlertOut:
    from camtrace.notify import alert_payload

    return AlertOut(
        **{
            **alert.as_dict(),
            "crop_url": crop_url(alert.crop_key) if alert.crop_key else None,
            "track_url": alert_payload(alert, None)["track_url"],
        }
    )


@router.get("")
@allow(Role.OPERATOR)
def alerts(
    watch: WatchDep,
    status: AlertStatus | None = Query(None, description="new, acknowledged or dismissed; default: all."),
    limit: int = Query(50, ge=1, le=MAX_LIMIT),
    offset: int = Query(0, ge=0, le=10_000),
    user: Principal = Depends(current_user),
    audit: Auditor = Depends(auditor),
) -> AlertsOut:
    """Alerts on the cameras you may see, newest first."""
    found = watch.alerts(user.cameras, status=status, limit=limit, offset=offset)
    audit("alerts_view", {"status": status, "limit": limit, "offset": offset}, [a.track_id for a in found])
    return AlertsOut(alerts=[alert_out(a) for a in found])


@router.post("/{alert_id}/ack", responses=errors(400, 404))
@allow(Role.OPERATOR)
def handle_alert(
    alert_id: RowId,
    body: AlertActionIn,
    watch: WatchDep,
    user: Principal = Depends(current_user),
    audit: Auditor = Depends(auditor),
) -> AlertOut:
    """Acknowledge an alert, or dismiss it (for a person: a verdict that the track shows someone else, which
    re-id and the same-person calibration learn from)."""
    with audit.change(f"alert_{body.action}", {"alert_id": alert_id}) as record:
        alert = watch.handle(alert_id, body.action, username=user.username, allowed_cameras=user.cameras)
        record.result_ids.append(alert.track_id)
    return alert_out(alert)


@router.get(
    "/stream",
    response_class=StreamingResponse,
    responses={200: {"content": {"text/event-stream": {}}, "description": "Server-sent events."}},
)
@allow(Role.OPERATOR)
async def stream(request: Request, user: Principal = Depends(current_user), audit: Auditor = Depends(auditor)):
    """New alerts as they are raised, as server-sent events; ``after`` or Last-Event-ID: the last alert seen."""
    raw = request.query_params.get("after") or request.headers.get("last-event-id")
    watch = watch_of(request)
    if raw is None:
        newest = await run_in_threadpool(watch.alerts, user.cameras, limit=1)
        after = newest[0].id if newest else 0
    else:
        try:
            after = int(raw)
        except ValueError:
            raise InputError(f"after / Last-Event-ID {raw!r} is not an alert id (a whole number)") from None
    await run_in_threadpool(audit, "alerts_stream", {"after": after})

    async def events():
        nonlocal after
        quiet_since = time.monotonic()
        yield "retry: 3000\n\n"
        while not await request.is_disconnected():
            found = await run_in_threadpool(watch.alerts, user.cameras, after_id=after, limit=100, newest_first=False)
            for alert in found:
                after = alert.id
                data = json.dumps(alert_out(alert).model_dump())
                yield f"id: {alert.id}\nevent: alert\ndata: {data}\n\n"
                quiet_since = time.monotonic()
            if time.monotonic() - quiet_since > STREAM_KEEPALIVE_SECONDS:
                yield ": keep-alive\n\n"
                quiet_since = time.monotonic()
            await asyncio.sleep(STREAM_POLL_SECONDS)

    return StreamingResponse(
        events(), media_type="text/event-stream", headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"}
    )
