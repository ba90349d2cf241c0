"""Error answers: one status per error class, the body ``{"error", "kind"}``, and what each route documents.

Clients hear an error's ``public_message`` (no server path, URL or SQL); the
full message goes to the server log.
"""

from __future__ import annotations

import logging
import math
import re
from typing import Any

from fastapi.responses import JSONResponse

from camtrace.api.deps import AuthError, ForbiddenError
from camtrace.api.schemas import ErrorOut
from camtrace.errors import (
    BrokerError,
    CamtraceError,
    ConfigError,
    InputError,
    ModelLoadError,
    NotFoundError,
    SourceError,
    StorageError,
    TooLargeError,
    TooManyAttemptsError,
)

log = logging.getLogger("camtrace.api")

# What each error means to an HTTP client: its fault (4xx) or a part that is away (503).
HTTP_STATUS: dict[type[CamtraceError], int] = {
    TooLargeError: 413,
    InputError: 400,
    SourceError: 400,
    AuthError: 401,
    ForbiddenError: 403,
    NotFoundError: 404,
    ConfigError: 409,
    TooManyAttemptsError: 429,
    BrokerError: 503,
    StorageError: 503,
    ModelLoadError: 503,
}


def status_for(exc: CamtraceError) -> int:
    for kind in type(exc).__mro__:
        if kind in HTTP_STATUS:
            return HTTP_STATUS[kind]
    return 500


# Server-side details a message without a ``public`` version might still carry: an SQL statement and its
# parameters, and absolute file paths.
_SQL = re.compile(r"\s*\[(?:SQL|parameters):.*", re.DOTALL)
_ABSOLUTE_PATH = re.compile(r"(?<![\w:/.-])/(?:[\w.@+-]+/)*[\w.@+-]+")


def client_message(exc: CamtraceError) -> str:
    """What a client is told: the error's public message, with any SQL and server path that slipped in cut out."""
    if exc.public is not None:
        return exc.public
    return _ABSOLUTE_PATH.sub("<path>", _SQL.sub("", str(exc)))


def error_response(exc: CamtraceError, headers: dict[str, str] | None = None) -> JSONResponse:
    """The answer to a camtrace error; what only the server may know is logged, not sent."""
    status = status_for(exc)
    headers = dict(headers or {})
    if isinstance(exc, TooManyAttemptsError):
        headers["Retry-After"] = str(max(1, math.ceil(exc.retry_after)))
    if isinstance(exc, AuthError):
        headers["WWW-Authenticate"] = "Bearer"
    message = client_message(exc)
    if message != str(exc) or status >= 500:
        log.warning("%s (%d): %s", type(exc).__name__, status, exc)
    return JSONResponse({"error": message, "kind": type(exc).__name__}, status_code=status, headers=headers)


def errors(*statuses: int) -> dict[int | str, dict[str, Any]]:
    texts = {
        400: "The input is invalid (a photo that is not an image, a malformed time, a NUL character ...).",
        401: "Missing, wrong or expired credentials.",
        403: "The caller's role does not allow this.",
        404: "No such thing (or not among the cameras the caller may see).",
        409: "The service is not set up for this.",
        413: "The body is too large: an upload over CAMTRACE_MAX_UPLOAD_MB, a photo over CAMTRACE_MAX_UPLOAD_PIXELS, "
        "or a JSON body over 64 KiB.",
        422: "The request does not match the schema.",
        429: "Too many failed logins, or too many logins at once: wait Retry-After seconds.",
        503: "The database, the index or the broker is away.",
    }
    return {status: {"model": ErrorOut, "description": texts[status]} for status in statuses}


# Every authenticated route can answer these: the request guard refuses a bad path (400) and a body
# over its limit (413) before the route runs.
AUTHENTICATED = errors(400, 401, 403, 413, 422, 503)
