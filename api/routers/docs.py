"""The OpenAPI schema and Swagger UI, for signed-in users only, with Swagger UI's files from the installed
``swagger-ui-bundle-v2`` package: nothing loads from elsewhere, and the page's CSP holds for it too."""

from __future__ import annotations

from pathlib import Path

from fastapi import APIRouter, Request, Response
from fastapi.responses import FileResponse, HTMLResponse, JSONResponse

from camtrace.api.deps import allow, public
from camtrace.api.responses import AUTHENTICATED, errors
from camtrace.enums import Role
from camtrace.errors import NotFoundError

router = APIRouter(include_in_schema=False)
# The only files of the bundle that are served, with their media types.
ASSETS = {"swagger-ui.css": "text/css", "swagger-ui-bundle.js": "text/javascript"}
DOCS_PAGE = """<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<title>camtrace API</title>
<link rel="icon" href="/favicon.svg" type="image/svg+xml">
<link rel="stylesheet" href="/docs/swagger-ui.css">
</head>
<body>
<div id="swagger-ui"></div>
<script src="/docs/swagger-ui-bundle.js"></script>
<script src="/docs.js"></script>
</body>
</html>
"""


def swagger_ui_dir() -> Path:
    import swagger_ui_bundle

    return Path(str(swagger_ui_bundle.swagger_ui_path))


@router.get("/openapi.json", responses={**AUTHENTICATED})
@allow(Role.OPERATOR)
def openapi(request: Request) -> JSONResponse:
    """The API's OpenAPI schema (signed-in users: it lists every route and parameter)."""
    return JSONResponse(request.app.openapi())


@router.get("/docs", responses={**AUTHENTICATED})
@allow(Role.OPERATOR)
def docs() -> HTMLResponse:
    return HTMLResponse(DOCS_PAGE)


@router.get("/docs/{name}", responses=errors(404))
@public
def docs_asset(name: str) -> Response:
    """Swagger UI's own files (public, like the page's: they hold nothing about this service)."""
    if name not in ASSETS:
        raise NotFoundError(f"no file '{name}' here")
    return FileResponse(swagger_ui_dir() / name, media_type=ASSETS[name], headers={"Cache-Control": "public, max-age=86400"})
