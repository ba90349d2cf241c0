"""Investigators' verdicts on re-id candidates: the same person, or a different one."""

from __future__ import annotations

from fastapi import APIRouter, Depends

from camtrace.api.deps import Auditor, SearchDep, allow, auditor, current_user
from camtrace.api.responses import AUTHENTICATED, errors
from camtrace.api.schemas import FeedbackIn, FeedbackOut
from camtrace.enums import Role
from camtrace.storage.access import Principal

router = APIRouter(prefix="/api", tags=["feedback"], responses=AUTHENTICATED)


@router.post("/feedback", responses=errors(400, 404))
@allow(Role.INVESTIGATOR)
def feedback(
    body: FeedbackIn, search: SearchDep, user: Principal = Depends(current_user), audit: Auditor = Depends(auditor)
) -> FeedbackOut:
    with audit.change("feedback", body.model_dump(), [body.track_id, body.candidate_track_id]):
        record = search.feedback(
            body.track_id, body.candidate_track_id, body.verdict, user=user.username, allowed_cameras=user.cameras
        )
    return FeedbackOut(**record.as_dict())
