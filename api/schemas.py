"""Request and response bodies of the HTTP API: the OpenAPI schema built from these is the contract.

Responses never carry server disk paths: a crop is named by ``crop_url``
(``/api/crops/{crop_key}``), served with the caller's access checked.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

Role = Literal["operator", "investigator", "admin"]
Verdict = Literal["same", "different"]
TraceStatus = Literal["seed", "confirmed", "candidate", "alternative"]
ExportFormat = Literal["csv", "json", "html"]

MAX_LIMIT = 200


def crop_url(crop_key: str) -> str:
    return f"/api/crops/{crop_key}"


class ErrorOut(BaseModel):
    error: str = Field(description="What failed and what to do about it.")
    kind: str = Field(description="The error's class, e.g. InputError, NotFoundError, AuthError.")


# Auth -------------------------------------------------------------------------
class LoginIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    username: str = Field(min_length=1, max_length=200)
    password: str = Field(min_length=1, max_length=1000)


class MeOut(BaseModel):
    username: str
    role: Role
    cameras: list[str] | None = Field(description="The cameras this user may see; null means all.")


# Search -----------------------------------------------------------------------
class SearchResultOut(BaseModel):
    track_id: str
    camera_id: str
    video_id: str
    score: float
    ts_start: float
    ts_end: float
    crop_key: str
    crop_url: str
    point_id: str
    frame_index: int
    ts: float
    bbox: list[float]
    probability: float | None = Field(
        None, description="Re-id only: P(same person as the query track) from appearance, cameras and transit time."
    )


class TextSearchIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    text: str = Field(min_length=1, max_length=1000, description="A description: 'man, grey hoodie, blue jeans'.")
    cameras: list[str] = Field(default_factory=list, description="Only these cameras (empty: all you may see).")
    since: str | float | None = Field(None, description="ISO 8601 time or epoch seconds.")
    until: str | float | None = Field(None, description="ISO 8601 time or epoch seconds.")
    min_score: float | None = Field(None, ge=-1.0, le=1.0)
    limit: int = Field(20, ge=1, le=MAX_LIMIT)
    offset: int = Field(0, ge=0, le=10_000)


class SearchOut(BaseModel):
    results: list[SearchResultOut]
    limit: int
    offset: int


class PersonOut(BaseModel):
    index: int
    box: list[float] = Field(description="[x1, y1, x2, y2] in the uploaded image's pixels.")
    confidence: float
    crop_url: str | None = Field(None, description="The person's crop as a data: URL of a JPEG (not stored).")


class ImageSearchOut(SearchOut):
    persons: list[PersonOut] = Field(description="Every person the detector found in the upload.")
    person: int | None = Field(description="The index of the person searched for; null when the whole image was.")


class TrackSearchIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    limit: int = Field(20, ge=1, le=MAX_LIMIT)
    offset: int = Field(0, ge=0, le=10_000)
    same_camera: bool = Field(False, description="Also look on the query track's own camera.")
    min_probability: float | None = Field(
        None, ge=0.0, le=1.0, description="Leave out candidates less likely than this to be the same person."
    )


class TrackSearchOut(BaseModel):
    results: list[SearchResultOut]


# Tracks and traces ------------------------------------------------------------
class TrackCropOut(BaseModel):
    point_id: str
    crop_url: str
    ts: float
    frame_index: int
    bbox: list[float]
    det_conf: float


class TrackOut(BaseModel):
    track_id: str
    camera_id: str
    video_id: str
    ts_start: float
    ts_end: float
    crops: list[TrackCropOut]
    frame_url: str


class TraceStepOut(BaseModel):
    track_id: str
    camera_id: str
    ts_start: float
    ts_end: float
    score: float | None
    probability: float = Field(
        description="P(same person): 1 for the seed and confirmed tracks; a path step's given the previous step; "
        "an alternative's best against the path around it."
    )
    status: TraceStatus = Field(description="seed, confirmed and candidate steps form the path; alternative: not on it.")
    crop_url: str
    transit_seconds: float | None = Field(description="Time from the previous path step's end (path steps only).")
    expected_transit_seconds: float | None = Field(
        None, description="The learned camera link's typical transit from the previous step's camera."
    )
    transit_spread_seconds: float | None = Field(None, description="That link's standard deviation.")
    implausible: bool
    merged_track_ids: list[str]


class TraceOut(BaseModel):
    seed_track_id: str
    steps: list[TraceStepOut]
    min_probability: float | None = Field(None, description="The probability each candidate step of the path reached.")


class LinkOut(BaseModel):
    camera_from: str
    camera_to: str
    transit_seconds: float = Field(description="Typical time from leaving the first camera's view to entering the second's.")
    spread_seconds: float = Field(description="Standard deviation of that time.")
    evidence: float = Field(description="Same-person passages behind the link (expected count; verdicts weigh more).")
    share: float = Field(description="Share of the pairs of tracks seen on these cameras within the window that are one person.")


class LinksOut(BaseModel):
    links: list[LinkOut]
    tracks: int = Field(description="Tracks the links and the calibration were learned from.")
    verdicts: int = Field(description="Investigators' verdicts counted.")
    learned_at: float | None = Field(description="When they were last learned (epoch seconds).")


class FeedbackIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    track_id: str = Field(min_length=1, max_length=500)
    candidate_track_id: str = Field(min_length=1, max_length=500)
    verdict: Verdict


class FeedbackOut(BaseModel):
    id: int
    track_id: str
    candidate_track_id: str
    verdict: Verdict
    username: str = Field(description="Who gave the verdict.")
    created_at: float


# Cameras and jobs -------------------------------------------------------------
class CameraOut(BaseModel):
    model_config = ConfigDict(extra="allow")
    id: str


class CameraIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    id: str = Field(min_length=1, max_length=200, pattern=r"^[A-Za-z0-9._-]+$")
    url: str | None = Field(None, max_length=2000, description="A stream URL to record from; none for file-only cameras.")


class JobIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    source: str = Field(min_length=1, max_length=4000, description="A video file or folder under CAMTRACE_INGEST_ROOTS.")
    camera: str = Field(min_length=1, max_length=200)
    start: str | None = Field(None, description="ISO 8601 start time of the recording; default the file's mtime.")


class JobOut(BaseModel):
    model_config = ConfigDict(extra="allow")
    id: str
    status: str


# Users and audit --------------------------------------------------------------
class UserIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    username: str = Field(min_length=1, max_length=200, pattern=r"^[A-Za-z0-9._@-]+$")
    role: Role
    cameras: list[str] | None = Field(None, description="Limit the user to these cameras; null: all cameras.")
    password: str | None = Field(None, min_length=8, max_length=1000)


class UserOut(BaseModel):
    username: str
    role: Role
    cameras: list[str] | None
    created_at: float


class UserCreatedOut(UserOut):
    token: str = Field(description="The user's API token; shown once, stored only as a hash.")


class AuditOut(BaseModel):
    id: int
    ts: float
    username: str | None
    action: str
    detail: dict
    result_ids: list[str]
    client: str | None


class AuditPageOut(BaseModel):
    rows: list[AuditOut]
    limit: int
    offset: int


class HealthOut(BaseModel):
    status: str
    mode: str
