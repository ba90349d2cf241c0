"""Cameras: everyone sees the cameras they may search; admins add them."""

from __future__ import annotations

from fastapi import APIRouter, Depends

from camtrace.api.deps import Auditor, ServicesDep, allow, auditor, current_user
from camtrace.api.responses import AUTHENTICATED, errors
from camtrace.api.schemas import CameraIn, CameraOut
from camtrace.enums import Role
from camtrace.storage.access import Principal
from camtrace.validation import mask_secrets

router = APIRouter(prefix="/api/cameras", tags=["cameras"], responses=AUTHENTICATED)


@router.get("")
@allow(Role.OPERATOR)
def cameras(services: ServicesDep, user: Principal = Depends(current_user)) -> list[CameraOut]:
    from camtrace.workers.ops import camera_rows

    rows = camera_rows(services.db)
    return [CameraOut(**row) for row in rows if user.cameras is None or row["id"] in user.cameras]


@router.post("", status_code=201, responses=errors(400))
@allow(Role.ADMIN)
def add_camera(body: CameraIn, services: ServicesDep, audit: Auditor = Depends(auditor)) -> CameraOut:
    """Add a camera (or replace its stream URL); the recording service picks it up. The URL's user and
    password are never shown back, here, in the list or in the audit log."""
    from camtrace.workers.ops import camera_rows

    db = services.db
    with audit.change("camera_add", {"id": body.id, "url": mask_secrets(body.url)}, [body.id]):
        db.ensure_camera(body.id, body.url)
    return next(CameraOut(**row) for row in camera_rows(db) if row["id"] == body.id)
