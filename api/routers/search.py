"""Search by text, by photo and from a track (re-id); every call filtered by the caller's cameras inside the vector search."""

from __future__ import annotations

import base64
from typing import Annotated

from fastapi import APIRouter, Depends, File, Query, UploadFile

from camtrace.api.deps import (
    Auditor,
    SearchDep,
    SettingsDep,
    allow,
    auditor,
    current_user,
    parse_moment,
    upload,
)
from camtrace.api.responses import AUTHENTICATED, errors
from camtrace.api.schemas import (
    MAX_CAMERAS,
    MAX_LIMIT,
    ImageSearchOut,
    PersonOut,
    SearchOut,
    SearchResultOut,
    TextSearchIn,
    TrackSearchIn,
    TrackSearchOut,
    crop_url,
)
from camtrace.enums import Role
from camtrace.errors import TooLargeError
from camtrace.storage.access import Principal

RESULT_FIELDS = set(SearchResultOut.model_fields) - {"crop_url"}
router = APIRouter(prefix="/api/search", tags=["search"], responses=AUTHENTICATED)


def results_out(results) -> list[SearchResultOut]:
    return [
        SearchResultOut(**{k: v for k, v in r.as_dict().items() if k in RESULT_FIELDS}, crop_url=crop_url(r.crop_key))
        for r in results
    ]


@router.post("/text", responses=errors(400, 404))
@allow(Role.OPERATOR)
def search_text(
    body: TextSearchIn,
    search: SearchDep,
    user: Principal = Depends(current_user),
    audit: Auditor = Depends(auditor),
) -> SearchOut:
    """One result per track, best first, filtered by camera and time inside the vector search."""
    search_filter = search.make_filter(body.cameras, body.since, body.until, allowed_cameras=user.cameras)
    results = search.by_text(body.text, search_filter, limit=body.limit, offset=body.offset, min_score=body.min_score)
    audit("search_text", body.model_dump(), [r.track_id for r in results])
    return SearchOut(results=results_out(results), limit=body.limit, offset=body.offset)


def _read_upload(upload: UploadFile, max_bytes: int) -> bytes:
    data = upload.file.read(max_bytes + 1)
    if len(data) > max_bytes:
        raise TooLargeError(f"the photo is larger than {max_bytes // 2**20} MiB (CAMTRACE_MAX_UPLOAD_MB)")
    return data


@router.post("/image", responses=errors(404))
@allow(Role.OPERATOR)
@upload
def search_image(
    settings: SettingsDep,
    search: SearchDep,
    file: Annotated[UploadFile, File(description="A JPEG, PNG or WebP: a full frame or a person crop")],
    cameras: Annotated[list[str], Query(max_length=MAX_CAMERAS)] = [],  # noqa: B006 (FastAPI copies defaults)
    since: Annotated[str | None, Query(max_length=64, description="ISO 8601 time or epoch seconds")] = None,
    until: Annotated[str | None, Query(max_length=64, description="ISO 8601 time or epoch seconds")] = None,
    min_score: Annotated[float | None, Query(ge=-1.0, le=1.0, allow_inf_nan=False)] = None,
    limit: Annotated[int, Query(ge=1, le=MAX_LIMIT)] = 20,
    offset: Annotated[int, Query(ge=0, le=10_000)] = 0,
    detect: bool = True,
    person: Annotated[int | None, Query(ge=0, le=10_000, description="Index into the persons found; default: the largest.")] = None,
    user: Principal = Depends(current_user),
    audit: Auditor = Depends(auditor),
) -> ImageSearchOut:
    """Search with a photo. With ``detect`` (default) every person in it is found and one is searched
    for: ``person`` (an index into ``persons``) or the largest; without, the whole photo is the query.
    A photo over CAMTRACE_MAX_UPLOAD_MB or CAMTRACE_MAX_UPLOAD_PIXELS (read from its header, before
    decoding) is answered 413."""
    from camtrace.search import decode_photo

    data = _read_upload(file, settings.max_upload_mb * 2**20)
    image = decode_photo(data, file.filename or "upload", max_pixels=settings.max_upload_pixels)
    search_filter = search.make_filter(
        cameras, parse_moment(since, "since"), parse_moment(until, "until"), allowed_cameras=user.cameras
    )
    found = search.by_photo(image, search_filter, limit, offset=offset, min_score=min_score, detect=detect, person=person)
    results, persons, chosen = found.results, found.persons, found.person
    audit(
        "search_image",
        {
            "file": file.filename,
            "bytes": len(data),
            "cameras": cameras,
            "since": since,
            "until": until,
            "min_score": min_score,
            "limit": limit,
            "offset": offset,
            "detect": detect,
            "person": chosen,
        },
        [r.track_id for r in results],
    )
    persons_out = [
        PersonOut(
            index=p.index,
            box=[float(v) for v in p.box],
            confidence=float(p.confidence),
            crop_url="data:image/jpeg;base64," + base64.b64encode(p.crop_jpeg).decode(),
        )
        for p in persons
    ]
    return ImageSearchOut(results=results_out(results), limit=limit, offset=offset, persons=persons_out, person=chosen)


@router.post("/track/{track_id}", responses=errors(400, 404))
@allow(Role.OPERATOR)
def search_track(
    track_id: str,
    search: SearchDep,
    body: TrackSearchIn | None = None,
    user: Principal = Depends(current_user),
    audit: Auditor = Depends(auditor),
) -> TrackSearchOut:
    """Find this person elsewhere: tracks like ``track_id`` on other cameras (``same_camera``: also its own),
    never the query track, without the candidates already judged; most probably the same person first."""
    body = body or TrackSearchIn()
    results = search.reid(
        track_id,
        limit=body.limit,
        offset=body.offset,
        same_camera=body.same_camera,
        min_probability=body.min_probability,
        allowed_cameras=user.cameras,
    )
    audit("reid", {"track_id": track_id, **body.model_dump()}, [r.track_id for r in results])
    return TrackSearchOut(results=results_out(results))
