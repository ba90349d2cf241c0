"""Cases: investigators gather tracks and notes and export them as an archive with a SHA-256 manifest.
A case holding a track on a camera the caller may not see is answered like one that does not exist."""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Annotated

from fastapi import APIRouter, Depends, Request
from fastapi.responses import FileResponse
from starlette.background import BackgroundTask

from camtrace.api.deps import Auditor, allow, auditor, current_user, search_of, services_of
from camtrace.api.responses import AUTHENTICATED, errors
from camtrace.api.schemas import CaseIn, CaseNoteIn, CaseOut, CasesOut, CaseTrackIn, RowId
from camtrace.enums import Role
from camtrace.search.cases import CaseService
from camtrace.storage.access import Principal

router = APIRouter(prefix="/api/cases", tags=["cases"], responses=AUTHENTICATED)


def cases_of(request: Request) -> CaseService:
    return CaseService(services_of(request), search_of(request))


CasesDep = Annotated[CaseService, Depends(cases_of)]


@router.get("")
@allow(Role.INVESTIGATOR)
def cases(case_service: CasesDep, user: Principal = Depends(current_user), audit: Auditor = Depends(auditor)) -> CasesOut:
    found = case_service.cases(user.cameras)
    audit("cases_view", {}, [str(c.id) for c in found])
    return CasesOut(cases=[CaseOut(**c.as_dict()) for c in found])


@router.post("", status_code=201, responses=errors(400))
@allow(Role.INVESTIGATOR)
def create_case(
    body: CaseIn, case_service: CasesDep, user: Principal = Depends(current_user), audit: Auditor = Depends(auditor)
) -> CaseOut:
    with audit.change("case_create", {"title": body.title}) as record:
        made = case_service.store.create(body.title, user.username)
        record.result_ids.append(str(made.id))
    return CaseOut(**made.as_dict())


@router.get("/{case_id}", responses=errors(404))
@allow(Role.INVESTIGATOR)
def case(
    case_id: RowId, case_service: CasesDep, user: Principal = Depends(current_user), audit: Auditor = Depends(auditor)
) -> CaseOut:
    found = case_service.case(case_id, user.cameras)
    audit("case_view", {"case_id": case_id}, found.track_ids)
    return CaseOut(**found.as_dict())


@router.post("/{case_id}/tracks", responses=errors(400, 404))
@allow(Role.INVESTIGATOR)
def add_track(
    case_id: RowId,
    body: CaseTrackIn,
    case_service: CasesDep,
    user: Principal = Depends(current_user),
    audit: Auditor = Depends(auditor),
) -> CaseOut:
    with audit.change("case_add_track", {"case_id": case_id, "note": body.note}, [body.track_id]):
        changed = case_service.add_track(case_id, body.track_id, user.username, body.note, user.cameras)
    return CaseOut(**changed.as_dict())


@router.post("/{case_id}/notes", responses=errors(400, 404))
@allow(Role.INVESTIGATOR)
def add_note(
    case_id: RowId,
    body: CaseNoteIn,
    case_service: CasesDep,
    user: Principal = Depends(current_user),
    audit: Auditor = Depends(auditor),
) -> CaseOut:
    with audit.change("case_note", {"case_id": case_id}, [str(case_id)]):
        changed = case_service.add_note(case_id, body.text, user.username, user.cameras)
    return CaseOut(**changed.as_dict())


@router.get(
    "/{case_id}/export",
    response_class=FileResponse,
    responses={200: {"content": {"application/zip": {}}, "description": "The case archive."}, **errors(404)},
)
@allow(Role.INVESTIGATOR)
def export_case(
    case_id: RowId, case_service: CasesDep, user: Principal = Depends(current_user), audit: Auditor = Depends(auditor)
) -> FileResponse:
    """The case as a ZIP archive: case.json, crops, clips and manifest.json with every file's SHA-256 (the
    manifest's own hash is in the X-Manifest-SHA256 header: keep it to verify the archive later)."""
    folder = Path(tempfile.mkdtemp(prefix="camtrace-case-"))
    target = folder / f"case-{case_id}.zip"
    with audit.change("case_export", {"case_id": case_id}, [str(case_id)]) as record:
        report = case_service.export(case_id, target, user.cameras)
        record.detail["manifest_sha256"] = report.manifest_sha256

    def cleanup() -> None:
        target.unlink(missing_ok=True)
        folder.rmdir()

    return FileResponse(
        target,
        media_type="application/zip",
        filename=target.name,
        headers={"X-Manifest-SHA256": report.manifest_sha256, "Cache-Control": "no-store"},
        background=BackgroundTask(cleanup),
    )
