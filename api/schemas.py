"""Request and response bodies of the HTTP API: the OpenAPI schema built from these is the contract.

Responses never carry server disk paths: a crop is named by ``crop_url``
(``/api/crops/{crop_key}``), served with the caller's access checked.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from fastapi import Path
from pydantic import AfterValidator, BaseModel, ConfigDict, Field, field_validator

from camtrace import validation
from camtrace.enums import AlertAction, AlertStatus, CaseItemKind, Role, TraceStatus, Verdict, WatchKind
from camtrace.errors import InputError

ExportFormat = Literal["csv", "json", "html"]

MAX_LIMIT = 200
# A row id in a path: SQL integers are 64-bit, so a larger number is refused at the door (422), not in the database.
RowId = Annotated[int, Path(ge=1, le=2**63 - 1, description="A row id, as the listing routes give it.")]
MAX_CAMERAS = 1000  # cameras named in one filter or user limit


def _moment(value: str | float | None) -> float | None:
    try:
        return validation.moment(value, "time")
    except InputError as exc:
        raise ValueError(str(exc)) from None


# A time as ISO 8601 or epoch seconds, stored as epoch seconds: NaN, infinities and years past 9999 are refused.
Moment = Annotated[
    Annotated[str, Field(max_length=64)] | float | None,
    Field(None, description="ISO 8601 time or epoch seconds."),
    AfterValidator(_moment),
]
Username = Annotated[str, Field(min_length=1, max_length=validation.NAME_MAX_LENGTH, pattern=validation.USERNAME_PATTERN)]
CameraId = Annotated[str, Field(min_length=1, max_length=validation.NAME_MAX_LENGTH, pattern=validation.CAMERA_PATTERN)]
Score = Annotated[float | None, Field(None, ge=-1.0, le=1.0, allow_inf_nan=False)]


def _has_nul(value: Any) -> bool:
    if isinstance(value, str):
        return "\x00" in value
    if isinstance(value, list | tuple):
        return any(_has_nul(item) for item in value)
    return False


class In(BaseModel):
    """A request body: unknown fields and NUL characters (which no file name or PostgreSQL text holds) refused."""

    model_config = ConfigDict(extra="forbid")

    @field_validator("*", mode="after")
    @classmethod
    def _no_nul(cls, value: Any) -> Any:
        if _has_nul(value):
            raise ValueError("contains a NUL character")
        return value


def crop_url(crop_key: str) -> str:
    return f"/api/crops/{crop_key}"


class ErrorOut(BaseModel):
    error: str = Field(description="What failed and what to do about it.")
    kind: str = Field(description="The error's class, e.g. InputError, NotFoundError, AuthError.")


# Auth -------------------------------------------------------------------------
class LoginIn(In):
    username: str = Field(min_length=1, max_length=validation.NAME_MAX_LENGTH)
    password: str = Field(min_length=1, max_length=validation.PASSWORD_MAX_LENGTH)


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


class TextSearchIn(In):
    text: str = Field(min_length=1, max_length=1000, description="A description: 'man, grey hoodie, blue jeans'.")
    cameras: list[CameraId] = Field(
        default_factory=list, max_length=MAX_CAMERAS, description="Only these cameras (empty: all you may see)."
    )
    since: Moment = None
    until: Moment = None
    min_score: Score = None
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


class TrackSearchIn(In):
    limit: int = Field(20, ge=1, le=MAX_LIMIT)
    offset: int = Field(0, ge=0, le=10_000)
    same_camera: bool = Field(False, description="Also look on the query track's own camera.")
    min_probability: float | None = Field(
        None,
        ge=0.0,
        le=1.0,
        allow_inf_nan=False,
        description="Leave out candidates less likely than this to be the same person.",
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


class FeedbackIn(In):
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
    url: str | None = Field(None, description="The stream URL with its user and password masked (***).")


class CameraIn(In):
    id: CameraId
    url: str | None = Field(
        None,
        max_length=2000,
        description="A stream URL to record from (replaces the stored one; never shown back in full); none for file-only cameras.",
    )


class JobIn(In):
    source: str = Field(min_length=1, max_length=4000, description="A video file or folder under CAMTRACE_INGEST_ROOTS.")
    camera: CameraId
    start: Moment = Field(None, description="ISO 8601 start time of the recording; default the file's mtime.")


class JobOut(BaseModel):
    model_config = ConfigDict(extra="allow")
    id: str
    status: str


# Users and audit --------------------------------------------------------------
class UserIn(In):
    username: Username
    role: Role
    cameras: list[CameraId] | None = Field(
        None, max_length=MAX_CAMERAS, description="Limit the user to these cameras; null: all cameras."
    )
    password: str | None = Field(None, min_length=validation.PASSWORD_MIN_LENGTH, max_length=validation.PASSWORD_MAX_LENGTH)
    token_expires: Moment = Field(None, description="When the first API token stops working; null: never.")


class UserOut(BaseModel):
    username: str
    role: Role
    cameras: list[str] | None
    created_at: float


class UserCreatedOut(UserOut):
    token: str = Field(description="The user's API token; shown once, stored only as a hash.")
    token_id: str = Field(description="The token's public id, to list or revoke it.")


class TokenIn(In):
    expires: Moment = Field(None, description="When the token stops working (ISO 8601 or epoch seconds); null: never.")


class TokenOut(BaseModel):
    id: str = Field(description="The token's public id (the secret itself is never shown again).")
    username: str
    created_at: float
    expires_at: float | None = Field(description="Epoch seconds after which it no longer works; null: never.")


class TokenCreatedOut(TokenOut):
    token: str = Field(description="The API token; shown once, stored only as a hash.")


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


# Watchlists and alerts ----------------------------------------------------------
Probability = Annotated[float | None, Field(None, gt=0.0, le=1.0, allow_inf_nan=False)]


class WatchEntryIn(In):
    """A person (``track_id``: that track and those confirmed as the same person) or a description (``text``)."""

    track_id: str | None = Field(None, min_length=1, max_length=500, description="Watch for this track's person.")
    text: str | None = Field(None, min_length=1, max_length=500, description="Watch for people matching this text.")
    cameras: list[CameraId] | None = Field(
        None, max_length=MAX_CAMERAS, description="Alert on these cameras only; default: every camera you see."
    )
    since: Moment = None
    until: Moment = None
    min_probability: Probability = Field(
        None, description="A person's bar: P(same person) an alert needs; default CAMTRACE_TRACE_MIN_SCORE."
    )
    min_score: Score = Field(
        None, description="A description's similarity bar; default: calibrated on the site's tracks (CAMTRACE_WATCH_TEXT_SHARE)."
    )
    note: str = Field("", max_length=2000, description="Why the entry is there (shown with its alerts).")


class WatchEntryOut(BaseModel):
    id: int
    kind: WatchKind
    track_id: str | None
    text: str | None
    cameras: list[str] | None = Field(description="The cameras it alerts on; null: every camera.")
    since: float | None
    until: float | None
    min_probability: float | None = Field(description="A person's bar; null: CAMTRACE_TRACE_MIN_SCORE.")
    min_score: float | None = Field(description="A description's similarity bar.")
    username: str = Field(description="Who made the entry.")
    note: str
    created_at: float


class WatchListOut(BaseModel):
    entries: list[WatchEntryOut]


class AlertOut(BaseModel):
    id: int
    entry_id: int
    track_id: str
    camera_id: str
    ts: float = Field(description="When the track begins (epoch seconds).")
    probability: float | None = Field(description="P(same person) for a person's entry; null for a description.")
    score: float = Field(description="Best similarity of the track's crops to the entry.")
    crop_url: str | None
    track_url: str = Field(description="The track on the page.")
    status: AlertStatus
    handled_by: str | None
    handled_at: float | None
    created_at: float


class AlertsOut(BaseModel):
    alerts: list[AlertOut]


class AlertActionIn(In):
    action: AlertAction = Field(description="acknowledge; or dismiss: for a person, the verdict that the track shows someone else.")


# Cases ------------------------------------------------------------------------------
class CaseIn(In):
    title: str = Field(min_length=1, max_length=200)


class CaseTrackIn(In):
    track_id: str = Field(min_length=1, max_length=500)
    note: str = Field("", max_length=5000, description="Why the track belongs to the case.")


class CaseNoteIn(In):
    text: str = Field(min_length=1, max_length=5000)


class CaseItemOut(BaseModel):
    id: int
    kind: CaseItemKind
    track_id: str | None
    text: str
    username: str
    created_at: float


class CaseOut(BaseModel):
    id: int
    title: str
    username: str = Field(description="Who opened the case.")
    created_at: float
    items: list[CaseItemOut]


class CasesOut(BaseModel):
    cases: list[CaseOut]
