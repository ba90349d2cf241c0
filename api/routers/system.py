"""Health (no credentials) and Prometheus metrics (credentials needed)."""

from __future__ import annotations

from fastapi import APIRouter, Response

from camtrace.api.deps import SettingsDep, allow, public
from camtrace.api.responses import AUTHENTICATED
from camtrace.api.schemas import HealthOut
from camtrace.enums import Role

router = APIRouter(tags=["system"])


@router.get("/healthz")
@public
def healthz(settings: SettingsDep) -> HealthOut:
    return HealthOut(status="ok", mode="distributed" if settings.broker_url else "local")


@router.get("/metrics", responses=AUTHENTICATED, response_class=Response)
@allow(Role.OPERATOR)
def metrics() -> Response:
    """Prometheus metrics of this service process."""
    from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

    return Response(generate_latest(), media_type=CONTENT_TYPE_LATEST)
