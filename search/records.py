"""The records the query stage answers with: plain dataclasses, each with ``as_dict()``."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

TRACE_STATUSES = ("seed", "confirmed", "candidate")


class _Record:
    def as_dict(self) -> dict:
        return asdict(self)


@dataclass
class SearchResult(_Record):
    """One track found by a search or a re-id query, shown by its best-matching crop."""

    track_id: str
    camera_id: str
    video_id: str
    score: float  # cosine similarity of the best-matching crop
    ts_start: float
    ts_end: float
    crop: str  # a file path a person can open
    crop_key: str  # the crop's key in the crop store (the API serves it at /api/crops/<key>)
    point_id: str
    frame_index: int
    ts: float
    bbox: list[float]


@dataclass
class DetectedPerson(_Record):
    """A person the detector found on an uploaded photo; ``index`` is what a caller picks."""

    index: int
    box: list[float]  # x1, y1, x2, y2 in the photo's pixels
    confidence: float
    crop_jpeg: bytes


@dataclass
class TrackCrop(_Record):
    point_id: str
    crop_key: str
    ts: float
    frame_index: int
    bbox: list[float]
    det_conf: float


@dataclass
class TrackView(_Record):
    track_id: str
    camera_id: str
    video_id: str
    ts_start: float
    ts_end: float
    crops: list[TrackCrop]
    best_crop_key: str | None = None


@dataclass
class TraceStep(_Record):
    """One stop of a person's path: a track, or several consecutive tracks of one camera merged."""

    track_id: str
    camera_id: str
    ts_start: float
    ts_end: float
    score: float  # 1.0 for the seed and confirmed tracks; a candidate's cosine similarity
    status: str  # one of TRACE_STATUSES
    crop_key: str | None
    transit_seconds: float | None = None  # from the previous step's end; None for the first step
    implausible: bool = False  # a candidate seen while the person was confirmed elsewhere
    merged_track_ids: list[str] = field(default_factory=list)


@dataclass
class Trace(_Record):
    seed_track_id: str
    steps: list[TraceStep]
    min_score: float | None = None  # the candidates' threshold the trace was built with


@dataclass
class FeedbackRecord(_Record):
    id: int
    track_id: str
    candidate_track_id: str
    verdict: str  # "same" | "different"
    username: str
    created_at: float
