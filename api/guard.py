"""The request guard: the first thing every HTTP request meets, before FastAPI reads a byte of its body.

A pure ASGI middleware that, in this order:

1. finds the route (the same matching Starlette does) and the role it declares;
2. works out the client's address: the connecting one, or, from a proxy named in
   CAMTRACE_TRUSTED_PROXIES, the last address in X-Forwarded-For that is not such a proxy;
3. authenticates from the headers or the session cookie and checks the role, so a
   caller without credentials gets 401 (and one with too low a role 403) without a
   body being read, spooled or parsed;
4. answers OPTIONS (204) and methods the path does not take (405), both with ``Allow``;
5. refuses a NUL character in the path or query (400);
6. limits the body: a declared Content-Length over the route's limit is answered 413
   at once, and a streamed body is counted and cut off (413) at the limit;
7. adds the security headers to every answer.

The limit is CAMTRACE_MAX_UPLOAD_MB (plus room for the multipart framing) for
routes marked ``@upload`` and ``MAX_JSON_BYTES`` for all others.
"""

from __future__ import annotations

import ipaddress
import logging
from collections.abc import Callable

from fastapi import FastAPI
from fastapi.routing import iter_route_contexts
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import Headers
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Match, Mount
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from camtrace.api.deps import (
    CLIENT_SCOPE_KEY,
    PUBLIC,
    access_of,
    authorize,
    credentials_user,
    route_role,
    takes_upload,
)
from camtrace.api.responses import error_response
from camtrace.enums import Role
from camtrace.errors import CamtraceError, InputError, TooLargeError

log = logging.getLogger("camtrace.api")

MAX_JSON_BYTES = 64 * 1024
MULTIPART_OVERHEAD_BYTES = 64 * 1024  # boundaries, part headers and small form fields around an upload
SECURITY_HEADERS = {
    # Only the service's own scripts, styles and data; crops arrive as data: URLs, a dropped photo as blob:.
    "content-security-policy": "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data: blob:; "
    "connect-src 'self'; font-src 'self'; object-src 'none'; base-uri 'none'; form-action 'self'; "
    "frame-ancestors 'none'",
    "x-content-type-options": "nosniff",
    "referrer-policy": "no-referrer",
    "x-frame-options": "DENY",
}


class BodyTooLarge(HTTPException):
    """A streamed body passed its limit (FastAPI lets HTTP exceptions from the body's reading through)."""

    def __init__(self, message: str) -> None:
        super().__init__(413, message)


def client_address(scope: Scope, trusted: list[ipaddress.IPv4Network | ipaddress.IPv6Network]) -> str:
    """The connecting address, or the nearest untrusted hop of X-Forwarded-For when a trusted proxy connects."""
    peer = scope["client"][0] if scope.get("client") else "unknown"

    def is_trusted(address: str) -> bool:
        try:
            ip = ipaddress.ip_address(address.strip())
        except ValueError:
            return False
        return any(ip in network for network in trusted)

    if not trusted or not is_trusted(peer):
        return peer
    hops = [hop.strip() for value in Headers(scope=scope).getlist("x-forwarded-for") for hop in value.split(",")]
    for hop in reversed([hop for hop in hops if hop]):
        if not is_trusted(hop):
            try:
                return str(ipaddress.ip_address(hop))
            except ValueError:
                return peer  # a malformed hop: trust nothing beyond the proxy
    return peer


class RequestGuard:
    def __init__(self, app: ASGIApp, api: FastAPI) -> None:
        self.app = app
        self.api = api

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = False

        async def send_with_headers(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
                present = {name.lower() for name, _ in message.get("headers", [])}
                message["headers"] = list(message.get("headers", [])) + [
                    (name.encode(), value.encode()) for name, value in SECURITY_HEADERS.items() if name.encode() not in present
                ]
            await send(message)

        try:
            await self._guarded(scope, receive, send_with_headers)
        except Exception:
            # Whatever escaped the app's handlers: the trace goes to the log, the client hears nothing of it.
            log.exception("unhandled error on %s %s", scope.get("method"), scope.get("path"))
            if not started:
                await JSONResponse(
                    {"error": "internal error; the server log has the details", "kind": "InternalError"}, status_code=500
                )(scope, receive, send_with_headers)

    async def _guarded(self, scope: Scope, receive: Receive, send: Send) -> None:
        settings = self.api.state.services.settings
        scope[CLIENT_SCOPE_KEY] = client_address(scope, settings.trusted_proxy_networks())
        endpoint, allowed = self._route(scope)
        if endpoint is not None:
            role = route_role(endpoint)
        elif allowed:
            role = PUBLIC if all(route_role(e) == PUBLIC for e in allowed.values()) else Role.OPERATOR
        else:
            role = PUBLIC  # the page and its files
        try:
            if role != PUBLIC:
                request = Request(scope)
                user = await run_in_threadpool(credentials_user, request, access_of(request))
                scope.setdefault("state", {})["user"] = authorize(user, role)
            if endpoint is None and allowed:
                methods = ", ".join(sorted(set(allowed) | {"OPTIONS"}))
                if scope["method"] == "OPTIONS":
                    await Response(status_code=204, headers={"Allow": methods})(scope, receive, send)
                    return
                await JSONResponse(
                    {"error": f"{scope['method']} is not allowed here; use {methods}", "kind": "HTTPError"},
                    status_code=405,
                    headers={"Allow": methods},
                )(scope, receive, send)
                return
            if "\x00" in scope["path"] or b"%00" in scope.get("query_string", b""):
                raise InputError("the address contains a NUL character")
            limit, too_large = self._body_limit(endpoint, settings)
            declared = Headers(scope=scope).get("content-length")
            if declared is not None and declared.isdigit() and int(declared) > limit:
                raise TooLargeError(too_large)
        except CamtraceError as exc:
            await error_response(exc)(scope, receive, send)
            return
        await self.app(scope, _counting(receive, limit, too_large), send)

    def _route(self, scope: Scope) -> tuple[Callable | None, dict[str, Callable]]:
        """The endpoint the request reaches, or, when only the method differs, the path's methods and endpoints."""
        allowed: dict[str, Callable] = {}
        for route in iter_route_contexts(self.api.router.routes):
            if isinstance(route.original_route, Mount):
                break  # the page's catch-all: the API routes stand before it
            match, _ = route.matches(scope)
            if match == Match.FULL:
                return route.endpoint, {}
            if match == Match.PARTIAL:
                allowed.update({method: route.endpoint for method in route.methods or ()})
        return None, allowed

    @staticmethod
    def _body_limit(endpoint: Callable | None, settings) -> tuple[int, str]:
        """The most bytes the route's body may have, and what a body over it is told."""
        if endpoint is not None and takes_upload(endpoint):
            return (
                settings.max_upload_mb * 2**20 + MULTIPART_OVERHEAD_BYTES,
                f"the upload is larger than {settings.max_upload_mb} MiB (CAMTRACE_MAX_UPLOAD_MB)",
            )
        return MAX_JSON_BYTES, f"the request body is larger than {MAX_JSON_BYTES // 1024} KiB"


def _counting(receive: Receive, limit: int, too_large: str) -> Receive:
    """``receive`` that stops a streamed body at ``limit`` bytes."""
    received = 0

    async def counted() -> Message:
        nonlocal received
        message = await receive()
        if message["type"] == "http.request":
            received += len(message.get("body", b""))
            if received > limit:
                raise BodyTooLarge(too_large)
        return message

    return counted
