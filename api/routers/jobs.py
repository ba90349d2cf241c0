"""Ingest jobs (admins): queue a file or folder under CAMTRACE_INGEST_ROOTS, follow its progress."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

from fastapi import APIRouter, Depends, Query

from camtrace.api.deps import Auditor, ForbiddenError, ServicesDep, SettingsDep, allow, auditor
from camtrace.api.responses import AUTHENTICATED, errors
from camtrace.api.schemas import JobIn, JobOut
from camtrace.enums import Role
from camtrace.errors import SourceError
from camtrace.validation import inside_roots

router = APIRouter(prefix="/api/jobs", tags=["jobs"], responses=AUTHENTICATED)


def checked_source(source: str, roots: list[Path]) -> Path:
    """The source resolved (symlinks, ..) and checked to lie inside one of the ingest roots."""
    if not roots:
        raise ForbiddenError("ingest over HTTP is disabled: set CAMTRACE_INGEST_ROOTS to the folders it may read")
    if "://" in source:
        raise ForbiddenError("ingest over HTTP takes files or folders under CAMTRACE_INGEST_ROOTS; add streams as cameras")
    path = Path(source).expanduser().resolve()
    if not inside_roots(path, roots):
        raise ForbiddenError(f"'{source}' is outside the folders named in CAMTRACE_INGEST_ROOTS")
    if not path.exists():
        raise SourceError(f"'{source}' does not exist under the ingest folders")
    return path


@router.get("")
@allow(Role.ADMIN)
def jobs(services: ServicesDep, limit: Annotated[int, Query(ge=1, le=1000)] = 50) -> list[JobOut]:
    from camtrace.workers.jobs import job_rows

    return [JobOut(**row) for row in job_rows(services.db, limit)]


@router.get("/{job_id}", responses=errors(404))
@allow(Role.ADMIN)
def job(job_id: str, services: ServicesDep) -> JobOut:
    from camtrace.workers.jobs import current_job, job_dict

    return JobOut(**job_dict(current_job(services.db, job_id)))


@router.post("", status_code=202, responses=errors(400, 409))
@allow(Role.ADMIN)
def submit(body: JobIn, services: ServicesDep, settings: SettingsDep, audit: Auditor = Depends(auditor)) -> JobOut:
    """Queue an ingest for the workers; follow it at /api/jobs/{id}. Each file of a folder is checked
    again where it resolves: those outside CAMTRACE_INGEST_ROOTS are skipped and named in the job's error."""
    import uuid

    from camtrace.workers.jobs import current_job, job_dict, register_ingest, submit_ingest

    roots = settings.ingest_root_paths()
    path = checked_source(body.source, roots)
    if not settings.broker_url:
        from camtrace.errors import ConfigError

        raise ConfigError(
            "ingest jobs need the workers: set CAMTRACE_BROKER_URL for this service (in local mode run `camtrace ingest` instead)"
        )
    job_id = str(uuid.uuid4())
    with audit.change("job_submit", body.model_dump(), [job_id]):  # the job row and its audit row, or neither
        register_ingest(services.db, str(path), body.camera, job_id)
    submit_ingest(services, str(path), body.camera, body.start, patient=False, job_id=job_id, roots=roots)
    return JobOut(**job_dict(current_job(services.db, job_id)))
