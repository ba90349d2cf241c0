"""The query service: HTTP over the search stage, the crop store, the jobs and the access store.

A thin shell: one router per resource (``api/routers/``), each endpoint calls
a stage (``SearchService``, ``Database``, ``CropStore``, ``AccessStore``) and
camtrace's errors become HTTP answers ``{"error", "kind"}`` with one status
per error class. Every API route needs credentials unless it says otherwise
(``api/deps.py``); the operators' page is served from ``api/static/``.

    camtrace serve --host 0.0.0.0 --port 8000
"""

from __future__ import annotations

from contextlib import asynccontextmanager
from pathlib import Path

from fastapi import Depends, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse
from fastapi.staticfiles import StaticFiles
from starlette.exceptions import HTTPException as StarletteHTTPException

from camtrace.api.deps import enforce_access, public
from camtrace.api.guard import BodyTooLarge, RequestGuard
from camtrace.api.responses import error_response
from camtrace.errors import CamtraceError, TooLargeError
from camtrace.services import Services
from camtrace.settings import Settings, load_settings
from camtrace.storage.access import AccessStore

STATIC_DIR = Path(__file__).resolve().parent / "static"


def _validation_message(exc: RequestValidationError) -> str:
    parts = []
    for error in exc.errors()[:5]:
        where = ".".join(str(p) for p in error.get("loc", ()) if p != "body") or "body"
        parts.append(f"{where}: {error.get('msg', 'invalid')}")
    return "invalid request: " + "; ".join(parts)


class LazySearch:
    """The search stage, built on first use (it imports torch and the models)."""

    def __init__(self, services: Services) -> None:
        self._services = services
        self._service = None

    def __getattr__(self, name: str):
        if self._service is None:
            from camtrace.search import SearchService

            self._service = SearchService(self._services)
        return getattr(self._service, name)


def create_app(settings: Settings | None = None) -> FastAPI:
    """The FastAPI app over one set of stages built from ``settings``."""
    from camtrace.api.routers import (
        alerts,
        audit,
        auth,
        cameras,
        cases,
        docs,
        feedback,
        jobs,
        links,
        search,
        system,
        tokens,
        trace,
        tracks,
        users,
        watchlist,
    )

    settings = settings or load_settings()
    # The embedded index stays loaded between searches (handed over at once to a process that waits).
    services = Services(settings, keep_index_open=settings.index_keep_open_seconds)

    @asynccontextmanager
    async def lifespan(_: FastAPI):
        yield
        services.close()

    app = FastAPI(
        title="camtrace",
        summary="Find people in surveillance video",
        lifespan=lifespan,
        dependencies=[Depends(enforce_access)],
        # The schema and its browser need credentials and load nothing from elsewhere: see routers/docs.py.
        openapi_url=None,
        docs_url=None,
        redoc_url=None,
    )
    app.state.services = services
    app.state.access = AccessStore(services.db)
    app.state.search = LazySearch(services)
    app.state.watch = None  # the watchlist stage, built on first use (api/routers/watchlist.py)
    app.add_middleware(RequestGuard, api=app)

    @app.exception_handler(CamtraceError)
    async def camtrace_error(_: Request, exc: CamtraceError) -> JSONResponse:
        return error_response(exc)

    @app.exception_handler(RequestValidationError)
    async def invalid_request(_: Request, exc: RequestValidationError) -> JSONResponse:
        return JSONResponse({"error": _validation_message(exc), "kind": "ValidationError"}, status_code=422)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(_: Request, exc: StarletteHTTPException) -> JSONResponse:
        if isinstance(exc, BodyTooLarge):
            return error_response(TooLargeError(str(exc.detail)))
        return JSONResponse(
            {"error": str(exc.detail), "kind": "HTTPError"}, status_code=exc.status_code, headers=getattr(exc, "headers", None)
        )

    for module in (
        system,
        auth,
        search,
        tracks,
        trace,
        feedback,
        cameras,
        jobs,
        links,
        users,
        tokens,
        audit,
        watchlist,
        alerts,
        cases,
        docs,
    ):
        router = module.router
        app.include_router(router)

    @app.get("/login", include_in_schema=False)
    @public
    def login_page() -> FileResponse:
        return FileResponse(STATIC_DIR / "index.html")

    # Last: the page and its assets at / (no auth: the page asks /api/me and shows the login form on 401).
    app.mount("/", StaticFiles(directory=STATIC_DIR, html=True, check_dir=False), name="page")
    return app
