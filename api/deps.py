"""Dependencies of the routes: the stages, the caller, role checks and the audit log.

Access is denied by default: ``enforce_access`` runs before every API route
and lets a request through only when the route declared who may call it
(``@allow("operator")`` etc., or ``@public``) and the caller holds that role.
A route that forgets to declare anything answers 401/403 to everyone but admins.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Annotated, Any

from fastapi import Depends, Request

from camtrace import validation
from camtrace.enums import Role
from camtrace.errors import CamtraceError
from camtrace.search.service import SearchService
from camtrace.services import Services
from camtrace.settings import Settings
from camtrace.storage.access import AccessStore, Principal

ROLE_RANK = {role: rank for rank, role in enumerate(Role)}
SESSION_COOKIE = "camtrace_session"
PUBLIC = "public"
# Where the request guard leaves the client's address (after CAMTRACE_TRUSTED_PROXIES) in the ASGI scope.
CLIENT_SCOPE_KEY = "camtrace.client"


class AuthError(CamtraceError):
    """Missing, wrong or expired credentials (HTTP 401)."""


class ForbiddenError(CamtraceError):
    """The caller's role does not allow this (HTTP 403)."""


def allow(role: str) -> Callable[[Callable], Callable]:
    """Declare the least role that may call a route: operator < investigator < admin."""
    if role not in ROLE_RANK and role != PUBLIC:
        raise ValueError(f"unknown role {role}")

    def mark(endpoint: Callable) -> Callable:
        endpoint.camtrace_role = role  # type: ignore[attr-defined]
        return endpoint

    return mark


public = allow(PUBLIC)


def upload(endpoint: Callable) -> Callable:
    """Mark a route that takes a file: its body may reach CAMTRACE_MAX_UPLOAD_MB instead of the JSON limit."""
    endpoint.camtrace_upload = True  # type: ignore[attr-defined]
    return endpoint


def takes_upload(endpoint: Callable) -> bool:
    return bool(getattr(endpoint, "camtrace_upload", False))


def route_role(endpoint: Callable) -> str:
    return getattr(endpoint, "camtrace_role", Role.ADMIN)


def services_of(request: Request) -> Services:
    return request.app.state.services


def settings_of(request: Request) -> Settings:
    return request.app.state.services.settings


def access_of(request: Request) -> AccessStore:
    return request.app.state.access


def search_of(request: Request) -> SearchService:
    return request.app.state.search


# What a route takes as typed dependencies: ``def route(search: SearchDep, user: UserDep) -> ...``.
ServicesDep = Annotated[Services, Depends(services_of)]
SettingsDep = Annotated[Settings, Depends(settings_of)]
AccessDep = Annotated[AccessStore, Depends(access_of)]
SearchDep = Annotated[SearchService, Depends(search_of)]


def client_of(request: Request) -> str:
    """The client's address as the request guard worked it out (X-Forwarded-For only from trusted proxies)."""
    client = request.scope.get(CLIENT_SCOPE_KEY)
    if client:
        return client
    return request.client.host if request.client else "unknown"


def credentials_user(request: Request, access: AccessStore) -> Principal | None:
    """The user named by a Bearer token or the session cookie; None when neither is given or valid."""
    header = request.headers.get("authorization", "")
    if header:
        scheme, _, token = header.partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            raise AuthError("the Authorization header must read 'Bearer <token>'; `camtrace token create NAME` makes one")
        return access.user_for_token(token.strip())
    session_id = request.cookies.get(SESSION_COOKIE)
    if session_id:
        return access.user_for_session(session_id)
    return None


def authorize(user: Principal | None, role: str) -> Principal:
    """The caller if it may use a route that needs ``role``; AuthError or ForbiddenError otherwise."""
    if user is None:
        raise AuthError("sign in first: send 'Authorization: Bearer <token>' or log in at /login")
    if ROLE_RANK.get(user.role, -1) < ROLE_RANK[role]:
        raise ForbiddenError(f"user '{user.username}' is {user.role}; this needs the {role} role or higher")
    return user


def enforce_access(request: Request) -> None:
    """Runs before every API route: authenticate (unless the request guard did), then check the route's role."""
    route = request.scope.get("route")
    role = route_role(route.endpoint) if route is not None else Role.ADMIN
    if role == PUBLIC:
        return
    user = getattr(request.state, "user", None) or credentials_user(request, access_of(request))
    request.state.user = authorize(user, role)


def current_user(request: Request) -> Principal:
    user = getattr(request.state, "user", None)
    if user is None:  # a public route asked for a user: authenticate here
        user = credentials_user(request, access_of(request))
        if user is None:
            raise AuthError("sign in first: send 'Authorization: Bearer <token>' or log in at /login")
        request.state.user = user
    return user


def allowed_cameras(user: Principal = Depends(current_user)) -> Sequence[str] | None:
    return user.cameras


@dataclass
class Auditor:
    """Writes one audit row for the current caller."""

    access: AccessStore
    username: str | None
    client: str

    def __call__(self, action: str, detail: dict[str, Any] | None = None, result_ids: Sequence[str] = ()) -> None:
        self.access.audit(self.username, action, detail, result_ids, self.client)

    def change(self, action: str, detail: dict[str, Any] | None = None, result_ids: Sequence[str] = ()):
        """A change and its audit row in one transaction: ``with audit.change(...) as entry: <write>``."""
        return self.access.audited(self.username, action, detail, result_ids, self.client)


def auditor(request: Request) -> Auditor:
    user = getattr(request.state, "user", None)
    return Auditor(access_of(request), user.username if user else None, client_of(request))


def parse_moment(value: str | float | None, name: str) -> float | None:
    """An ISO 8601 time or epoch seconds, for query parameters such as ``since``."""
    return validation.moment(value, name)
