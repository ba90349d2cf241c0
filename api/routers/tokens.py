"""API tokens by id (admins): revoke one without removing its user."""

from __future__ import annotations

from fastapi import APIRouter, Depends, Response

from camtrace.api.deps import AccessDep, Auditor, allow, auditor
from camtrace.api.responses import AUTHENTICATED, errors
from camtrace.enums import Role

router = APIRouter(prefix="/api/tokens", tags=["users"], responses=AUTHENTICATED)


@router.delete("/{token_id}", status_code=204, response_class=Response, responses=errors(404))
@allow(Role.ADMIN)
def revoke_token(token_id: str, access: AccessDep, audit: Auditor = Depends(auditor)) -> Response:
    """Revoke one API token at once (``GET /api/users/{name}/tokens`` lists the ids)."""
    with audit.change("token_revoke", {"token_id": token_id}, [token_id]) as entry:
        revoked = access.revoke_token(token_id)
        entry.detail["username"] = revoked.username
    return Response(status_code=204)
