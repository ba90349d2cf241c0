"""The error answers each route documents in OpenAPI (``responses=``), all shaped ``{"error", "kind"}``."""

from __future__ import annotations

from typing import Any

from camtrace.api.schemas import ErrorOut


def errors(*statuses: int) -> dict[int | str, dict[str, Any]]:
    texts = {
        400: "The input is invalid (a photo that is not an image, a malformed time ...).",
        401: "Missing, wrong or expired credentials.",
        403: "The caller's role does not allow this.",
        404: "No such thing (or not among the cameras the caller may see).",
        409: "The service is not set up for this.",
        413: "The upload is larger than CAMTRACE_MAX_UPLOAD_MB.",
        422: "The request does not match the schema.",
        429: "Too many failed logins: wait Retry-After seconds.",
        503: "The database, the index or the broker is away.",
    }
    return {status: {"model": ErrorOut, "description": texts[status]} for status in statuses}


# Every authenticated route can answer these.
AUTHENTICATED = errors(401, 403, 422, 503)
