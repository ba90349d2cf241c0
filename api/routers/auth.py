"""Login, logout and who am I: the page's password login with an HttpOnly session cookie."""

from __future__ import annotations

import math

from fastapi import APIRouter, Depends, Request, Response

from camtrace.api.deps import (
    SESSION_COOKIE,
    AccessDep,
    AuthError,
    allow,
    client_of,
    current_user,
    public,
)
from camtrace.api.responses import AUTHENTICATED, errors
from camtrace.api.schemas import LoginIn, MeOut
from camtrace.enums import Role
from camtrace.errors import TooManyAttemptsError
from camtrace.storage.access import SESSION_SECONDS, Principal

router = APIRouter(prefix="/api", tags=["auth"])


@router.post("/login", responses=errors(400, 401, 413, 422, 429, 503))
@public
def login(body: LoginIn, request: Request, access: AccessDep, response: Response) -> MeOut:
    """Check a password and open a session (cookie ``camtrace_session``, HttpOnly, SameSite=Strict)."""
    client = client_of(request)
    wait = access.login_retry_after(body.username, client)
    if wait > 0:
        access.audit(body.username, "login_throttled", {"retry_after": math.ceil(wait)}, client=client)
        raise TooManyAttemptsError(
            f"too many failed logins for '{body.username}' from {client}; try again in {math.ceil(wait)} s", wait
        )
    user = access.check_password(body.username, body.password)
    if user is None:
        with access.audited(body.username, "login_failed", {}, client=client):
            access.record_login_failure(body.username, client)
        raise AuthError("wrong username or password")
    with access.audited(user.username, "login", {"method": "password"}, client=client):
        access.clear_login_failures(body.username, client)
        session_id = access.create_session(user.username)
    response.set_cookie(
        SESSION_COOKIE,
        session_id,
        max_age=SESSION_SECONDS,
        httponly=True,
        samesite="strict",
        secure=request.url.scheme == "https",
        path="/",
    )
    return MeOut(**user.as_dict())


@router.post("/logout", status_code=204, responses=errors(400, 413, 503))
@public
def logout(request: Request, access: AccessDep) -> Response:
    """End the session of the cookie (if any) and clear the cookie."""
    session_id = request.cookies.get(SESSION_COOKIE)
    if session_id:
        with access.db.transaction("closing a session"):
            owner = access.end_session(session_id)
            if owner is not None:  # a stale or forged cookie changes nothing and leaves no row
                access.audit(owner, "logout", client=client_of(request))
    response = Response(status_code=204)
    response.delete_cookie(SESSION_COOKIE, path="/", httponly=True, samesite="strict")
    return response


@router.get("/me", responses=AUTHENTICATED)
@allow(Role.OPERATOR)
def me(user: Principal = Depends(current_user)) -> MeOut:
    return MeOut(**user.as_dict())
