"""The audit log (admins): who searched, viewed, judged and exported what, and every login."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query

from camtrace.api.deps import AccessDep, allow, parse_moment
from camtrace.api.responses import AUTHENTICATED, errors
from camtrace.api.schemas import AuditOut, AuditPageOut
from camtrace.enums import Role

router = APIRouter(prefix="/api/audit", tags=["audit"], responses=AUTHENTICATED)


@router.get("", responses=errors(400))
@allow(Role.ADMIN)
def audit_log(
    access: AccessDep,
    user: Annotated[str | None, Query(max_length=200)] = None,
    action: Annotated[str | None, Query(max_length=200)] = None,
    since: Annotated[str | None, Query(max_length=64, description="ISO 8601 time or epoch seconds")] = None,
    until: Annotated[str | None, Query(max_length=64, description="ISO 8601 time or epoch seconds")] = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    offset: Annotated[int, Query(ge=0, le=2**31 - 1)] = 0,
) -> AuditPageOut:
    """Newest first."""
    rows = access.audit_rows(
        username=user,
        action=action,
        since=parse_moment(since, "since"),
        until=parse_moment(until, "until"),
        limit=limit,
        offset=offset,
    )
    return AuditPageOut(rows=[AuditOut(**row.as_dict()) for row in rows], limit=limit, offset=offset)
