"""The records the query stage answers with: plain dataclasses, each with ``as_dict()``."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

from camtrace.enums import TraceStatus

TRACE_STATUSES = tuple(TraceStatus)


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
    # Re-id only: P(same person as the query track) from appearance, cameras and the time between them.
    probability: float | None = None


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
    """One stop of a person's path (a track, or consecutive tracks of one camera merged), or an alternative."""

    track_id: str
    camera_id: str
    ts_start: float
    ts_end: float
    score: float  # 1.0 for the seed and confirmed tracks; a candidate's cosine similarity
    status: str  # one of TRACE_STATUSES: the path is seed, confirmed and candidate steps; the rest alternatives
    crop_key: str | None
    # P(same person): 1.0 for seed and confirmed; a path step's given the path's previous step; an alternative's
    # best against the path steps around it.
    probability: float = 1.0
    transit_seconds: float | None = None  # from the previous path step's end; None for the first and alternatives
    expected_transit_seconds: float | None = None  # the learned link's typical transit to this step's camera
    transit_spread_seconds: float | None = None  # and its standard deviation
    implausible: bool = False  # seen while the person was on the path elsewhere
    merged_track_ids: list[str] = field(default_factory=list)


@dataclass
class Trace(_Record):
    seed_track_id: str
    steps: list[TraceStep]
    min_probability: float | None = None  # the probability a path step was held to
    method: str = "path"

    @property
    def path(self) -> list[TraceStep]:
        return [s for s in self.steps if s.status != TraceStatus.ALTERNATIVE]


@dataclass
class FeedbackRecord(_Record):
    id: int
    track_id: str
    candidate_track_id: str
    verdict: str  # "same" | "different"
    username: str
    created_at: float
