"""The query service: HTTP over the search stage, the crop store and the jobs.

A thin shell: every endpoint calls a stage (``SearchService``, ``Database``,
``CropStore``, ``submit_ingest``) and turns camtrace's errors into HTTP
answers with the same messages the CLI prints.

    camtrace api --host 0.0.0.0 --port 8000
"""

from __future__ import annotations

import threading
from contextlib import asynccontextmanager
from typing import Annotated

from fastapi import FastAPI, File, Query, Request, UploadFile
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel, Field

from camtrace.errors import (
    BrokerError,
    CamtraceError,
    ConfigError,
    InputError,
    ModelLoadError,
    NotFoundError,
    SourceError,
    StorageError,
)
from camtrace.services import Services
from camtrace.settings import Settings, load_settings

# What each error means to an HTTP client: its fault (4xx) or a part that is away (503).
HTTP_STATUS: dict[type[CamtraceError], int] = {
    InputError: 400,
    SourceError: 400,
    NotFoundError: 404,
    ConfigError: 409,
    BrokerError: 503,
    StorageError: 503,
    ModelLoadError: 503,
}

MAX_PHOTO_BYTES = 20 * 1024 * 1024


class IngestRequest(BaseModel):
    source: str = Field(description="A video file, a folder of videos or a stream URL the workers can read.")
    camera: str = Field(min_length=1)
    start: str | None = Field(None, description="ISO 8601 start time of the recording; default the file's mtime.")


def _status_for(exc: CamtraceError) -> int:
    for kind in type(exc).__mro__:
        if kind in HTTP_STATUS:
            return HTTP_STATUS[kind]
    return 500


def create_app(settings: Settings | None = None) -> FastAPI:
    """The FastAPI app over one set of stages built from ``settings``."""
    settings = settings or load_settings()
    services = Services(settings)
    # Searches run in FastAPI's thread pool; the encoder and the embedded index
    # serve one query at a time (a query is milliseconds).
    search_lock = threading.Lock()

    @asynccontextmanager
    async def lifespan(_: FastAPI):
        yield
        services.close()

    app = FastAPI(title="camtrace", summary="Find people in surveillance video", lifespan=lifespan)
    app.state.services = services

    @app.exception_handler(CamtraceError)
    async def camtrace_error(_: Request, exc: CamtraceError) -> JSONResponse:
        return JSONResponse({"error": str(exc), "kind": type(exc).__name__}, status_code=_status_for(exc))

    def search_service():
        from camtrace.search import SearchService

        return SearchService(services)

    def answer(results) -> list[dict]:
        return [{**result.as_dict(), "crop_url": f"/crops/{result.crop_key}"} for result in results]

    @app.get("/health")
    def health() -> dict:
        return {"status": "ok", "mode": "distributed" if settings.broker_url else "local"}

    @app.get("/search")
    def search_text(
        q: Annotated[str, Query(description="A description: 'man, grey hoodie, blue jeans, red backpack'")],
        camera: Annotated[list[str], Query()] = [],  # noqa: B006 (FastAPI copies defaults)
        since: str | None = None,
        until: str | None = None,
        limit: Annotated[int, Query(ge=1, le=500)] = 20,
    ) -> list[dict]:
        """One result per track, best first, filtered by camera and time inside the vector search."""
        service = search_service()
        with search_lock:
            search_filter = service.make_filter(camera, since, until)
            return answer(service.by_text(q, search_filter, limit))

    @app.post("/search/image")
    def search_image(
        photo: Annotated[UploadFile, File(description="A JPEG or PNG: a full frame or a person crop")],
        camera: Annotated[list[str], Query()] = [],  # noqa: B006
        since: str | None = None,
        until: str | None = None,
        limit: Annotated[int, Query(ge=1, le=500)] = 20,
        detect: bool = True,
    ) -> list[dict]:
        """Search with a photo; a full frame is reduced to its largest detected person (``detect=false``: a crop)."""
        from camtrace.search import decode_photo

        data = photo.file.read(MAX_PHOTO_BYTES + 1)
        if len(data) > MAX_PHOTO_BYTES:
            raise InputError(f"photo '{photo.filename}' is larger than {MAX_PHOTO_BYTES // 2**20} MiB")
        image = decode_photo(data, photo.filename or "upload")
        service = search_service()
        with search_lock:
            search_filter = service.make_filter(camera, since, until)
            return answer(service.by_image(image, search_filter, limit, detect=detect))

    @app.get("/crops/{key:path}")
    def crop(key: str) -> Response:
        return Response(services.crops.get(key), media_type="image/jpeg")

    @app.get("/cameras")
    def cameras() -> list[dict]:
        from camtrace.workers.ops import camera_rows

        return camera_rows(services.db)

    @app.get("/jobs")
    def jobs(limit: Annotated[int, Query(ge=1, le=1000)] = 50) -> list[dict]:
        from camtrace.workers.jobs import job_rows

        return job_rows(services.db, limit)

    @app.get("/jobs/{job_id}")
    def job(job_id: str) -> dict:
        from camtrace.workers.jobs import job_dict

        return job_dict(services.db.refresh_job(job_id))

    @app.post("/jobs", status_code=202)
    def submit(request: IngestRequest) -> dict:
        """Queue an ingest for the workers; follow it at /jobs/{id}."""
        from camtrace.search import parse_time
        from camtrace.workers.jobs import job_dict, submit_ingest

        if not settings.broker_url:
            raise ConfigError(
                "ingest jobs need the workers: set CAMTRACE_BROKER_URL for this service "
                "(in local mode run `camtrace ingest` instead)"
            )
        start_ts = parse_time(request.start, "start")
        job_id = submit_ingest(services, request.source, request.camera, start_ts, patient=False)
        return job_dict(services.db.refresh_job(job_id))

    @app.get("/status")
    def status() -> dict:
        from camtrace.workers.ops import cluster_status

        return cluster_status(services)

    return app
