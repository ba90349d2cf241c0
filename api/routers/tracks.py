"""A track with its crops, the source frame of its best crop, and crop images."""

from __future__ import annotations

from fastapi import APIRouter, Depends, Response
from fastapi.responses import FileResponse

from camtrace.api.deps import Auditor, SearchDep, ServicesDep, allow, auditor, current_user
from camtrace.api.responses import AUTHENTICATED, errors
from camtrace.api.schemas import TrackCropOut, TrackOut, crop_url
from camtrace.enums import Role
from camtrace.errors import NotFoundError
from camtrace.storage.access import Principal

router = APIRouter(prefix="/api", tags=["tracks"], responses=AUTHENTICATED)
JPEG = {200: {"content": {"image/jpeg": {}}, "description": "A JPEG image."}}


@router.get("/tracks/{track_id}/frame", response_class=Response, responses={**JPEG, **errors(400, 404)})
@allow(Role.OPERATOR)
def track_frame(
    track_id: str, search: SearchDep, user: Principal = Depends(current_user), audit: Auditor = Depends(auditor)
) -> Response:
    """The source frame of the track's best crop with the person's box drawn (decoded from the stored video)."""
    jpeg = search.frame_jpeg(track_id, allowed_cameras=user.cameras)
    audit("frame_view", {"track_id": track_id}, [track_id])
    return Response(jpeg, media_type="image/jpeg", headers={"Cache-Control": "private, max-age=300"})


@router.get(
    "/tracks/{track_id}/clip",
    response_class=FileResponse,
    responses={200: {"content": {"video/webm": {}}, "description": "A WebM (VP8) video."}, **errors(400, 404)},
)
@allow(Role.OPERATOR)
def track_clip(
    track_id: str,
    services: ServicesDep,
    search: SearchDep,
    user: Principal = Depends(current_user),
    audit: Auditor = Depends(auditor),
) -> FileResponse:
    """The track's stretch of the stored video, a few seconds each side, its box drawn (cut once, then kept);
    byte ranges are served for seeking."""
    from camtrace.search.clips import CLIP_MEDIA_TYPE, track_clip

    track = search.visible_track(track_id, user.cameras)
    path = track_clip(services.db, services.settings.resolved_data_dir / "clips", track)
    audit("clip_view", {"track_id": track_id}, [track_id])
    return FileResponse(
        path,
        media_type=CLIP_MEDIA_TYPE,
        filename=f"track-{track_id.replace(':', '-')}.webm",
        content_disposition_type="inline",
        headers={"Cache-Control": "private, max-age=3600"},
    )


@router.get("/tracks/{track_id}", responses=errors(404))
@allow(Role.OPERATOR)
def track(track_id: str, search: SearchDep, user: Principal = Depends(current_user), audit: Auditor = Depends(auditor)) -> TrackOut:
    view = search.track(track_id, allowed_cameras=user.cameras)
    audit("track_view", {"track_id": track_id}, [view.track_id])
    return TrackOut(
        track_id=view.track_id,
        camera_id=view.camera_id,
        video_id=view.video_id,
        ts_start=view.ts_start,
        ts_end=view.ts_end,
        crops=[
            TrackCropOut(
                point_id=c.point_id,
                crop_url=crop_url(c.crop_key),
                ts=c.ts,
                frame_index=c.frame_index,
                bbox=[float(v) for v in c.bbox],
                det_conf=float(c.det_conf),
            )
            for c in view.crops
        ],
        frame_url=f"/api/tracks/{view.track_id}/frame",
    )


@router.get("/crops/{crop_key:path}", response_class=Response, responses={**JPEG, **errors(400, 404)})
@allow(Role.OPERATOR)
def crop(crop_key: str, services: ServicesDep, search: SearchDep, user: Principal = Depends(current_user)) -> Response:
    """A crop image. Not audited one by one (a result page loads dozens): the searches, track and frame
    views that named its track are."""
    camera = search.crop_camera(crop_key)
    if user.cameras is not None and camera not in user.cameras:
        raise NotFoundError(f"crop '{crop_key}' does not exist")
    return Response(services.crops.get(crop_key), media_type="image/jpeg", headers={"Cache-Control": "private, max-age=3600"})
