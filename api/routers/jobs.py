"""Ingest jobs (admins): queue a file or folder under CAMTRACE_INGEST_ROOTS, follow its progress."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

from camtrace.api.deps import Auditor, ForbiddenError, allow, auditor, services_of, settings_of
from camtrace.api.responses import AUTHENTICATED, errors
from camtrace.api.schemas import JobIn, JobOut
from fastapi import APIRouter, Depends, Query, Request

from camtrace.errors import SourceError

router = APIRouter(prefix="/api/jobs", tags=["jobs"], responses=AUTHENTICATED)


def checked_source(source: str, roots: list[Path]) -> Path:
    """The source resolved (symlinks, ..) and checked to lie inside one of the ingest roots."""
    if not roots:
        raise ForbiddenError("ingest over HTTP is disabled: set CAMTRACE_INGEST_ROOTS to the folders it may read")
    if "://" in source:
        raise ForbiddenError("ingest over HTTP takes files or folders under CAMTRACE_INGEST_ROOTS; add streams as cameras")
    path = Path(source).expanduser().resolve()
    if not any(path == root or path.is_relative_to(root) for root in roots):
        raise ForbiddenError(f"'{source}' is outside the folders named in CAMTRACE_INGEST_ROOTS")
    if not path.exists():
        raise SourceError(f"'{source}' does not exist under the ingest folders")
    return path


@router.get("")
@allow("admin")
def jobs(request: Request, limit: Annotated[int, Query(ge=1, le=1000)] = 50) -> list[JobOut]:
    from camtrace.workers.jobs import job_rows

    return [JobOut(**row) for row in job_rows(services_of(request).db, limit)]


@router.get("/{job_id}", responses=errors(404))
@allow("admin")
def job(job_id: str, request: Request) -> JobOut:
    from camtrace.workers.jobs import job_dict

    return JobOut(**job_dict(services_of(request).db.refresh_job(job_id)))


@router.post("", status_code=202, responses=errors(400, 409))
@allow("admin")
def submit(body: JobIn, request: Request, audit: Auditor = Depends(auditor)) -> JobOut:
    """Queue an ingest for the workers; follow it at /api/jobs/{id}."""
    from camtrace.api.deps import parse_moment
    from camtrace.workers.jobs import job_dict, submit_ingest

    settings, services = settings_of(request), services_of(request)
    path = checked_source(body.source, settings.ingest_root_paths())
    if not settings.broker_url:
        from camtrace.errors import ConfigError

        raise ConfigError(
            "ingest jobs need the workers: set CAMTRACE_BROKER_URL for this service "
            "(in local mode run `camtrace ingest` instead)"
        )
    start_ts = parse_moment(body.start, "start")
    job_id = submit_ingest(services, str(path), body.camera, start_ts, patient=False)
    audit("job_submit", body.model_dump(), [job_id])
    return JobOut(**job_dict(services.db.refresh_job(job_id)))
