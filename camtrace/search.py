"""The query stage: text or photo -> vector -> one result per track, with its time span and crop."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass
from datetime import datetime
from pathlib import Path

import cv2
import numpy as np

from camtrace.errors import InputError, NotFoundError
from camtrace.services import Services
from camtrace.types import SearchFilter, TrackHit


@dataclass
class SearchResult:
    track_id: str
    camera_id: str
    video_id: str
    score: float
    ts_start: float
    ts_end: float
    crop: str  # a file path a person can open
    crop_key: str  # the crop's key in the crop store (the API serves it at /crops/<key>)
    point_id: str
    frame_index: int
    ts: float
    bbox: list[float]

    def as_dict(self) -> dict:
        return asdict(self)


def parse_time(value: str | None, name: str) -> float | None:
    """ISO-8601 to epoch seconds; a time without a zone is the machine's local time."""
    if value is None:
        return None
    try:
        moment = datetime.fromisoformat(value)
    except ValueError:
        raise InputError(f"{name}: '{value}' is not an ISO time such as 2026-01-31T14:05:00") from None
    return moment.timestamp()


def read_photo(path: str | Path) -> np.ndarray:
    """Decode a photo file to BGR pixels, or fail with a message naming the file."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"photo '{path}' does not exist")
    return decode_photo(path.read_bytes(), str(path))


def decode_photo(data: bytes, name: str) -> np.ndarray:
    """Decode an uploaded or read photo to BGR pixels; ``name`` is what the error message calls it."""
    image = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR) if data else None
    if image is None:
        raise InputError(f"photo '{name}' is not an image OpenCV can read (use a JPEG or PNG)")
    return image


def largest_person(image: np.ndarray, detections: np.ndarray) -> np.ndarray | None:
    """The crop of the largest detected person, or None when nobody is detected."""
    if detections is None or len(detections) == 0:
        return None
    areas = (detections[:, 2] - detections[:, 0]) * (detections[:, 3] - detections[:, 1])
    x1, y1, x2, y2 = detections[int(np.argmax(areas)), :4]
    height, width = image.shape[:2]
    x1, y1 = max(0, int(np.floor(x1))), max(0, int(np.floor(y1)))
    x2, y2 = min(width, int(np.ceil(x2))), min(height, int(np.ceil(y2)))
    if x2 <= x1 or y2 <= y1:
        return None
    return image[y1:y2, x1:x2]


class SearchService:
    def __init__(self, services: Services) -> None:
        self.services = services

    def make_filter(
        self, cameras: Sequence[str] = (), since: str | float | None = None, until: str | float | None = None
    ) -> SearchFilter:
        """Validate filters against what is indexed, so a typo is an error and not an empty answer."""
        cameras = tuple(cameras)
        if cameras:
            known = set(self.services.db.camera_ids())
            unknown = [camera for camera in cameras if camera not in known]
            if unknown:
                listed = ", ".join(sorted(known)) or "none yet"
                raise NotFoundError(f"unknown camera(s) {', '.join(unknown)}; known cameras: {listed}")
        since_ts = parse_time(since, "--since") if isinstance(since, str) else since
        until_ts = parse_time(until, "--until") if isinstance(until, str) else until
        if since_ts is not None and until_ts is not None and since_ts > until_ts:
            raise InputError("--since is after --until")
        return SearchFilter(camera_ids=cameras, since=since_ts, until=until_ts)

    def by_text(self, text: str, search_filter: SearchFilter | None = None, limit: int = 10) -> list[SearchResult]:
        if not text.strip():
            raise InputError("the search text is empty; describe the person, e.g. 'man, grey hoodie, blue jeans'")
        model = self.services.model()  # one model embeds the query and owns the index searched
        vector = model.encoder.encode_texts([text])[0]
        return self.by_vector(vector, search_filter, limit, index=model.index)

    def by_image(
        self, image_bgr: np.ndarray, search_filter: SearchFilter | None = None, limit: int = 10, detect: bool = True
    ) -> list[SearchResult]:
        """Search with a photo; a full frame is first reduced to its largest detected person."""
        query = image_bgr
        if detect:
            person = largest_person(image_bgr, self.services.detector.detect([image_bgr])[0])
            if person is not None:
                query = person
        model = self.services.model()
        vector = model.encoder.encode_images([cv2.cvtColor(query, cv2.COLOR_BGR2RGB)])[0]
        return self.by_vector(vector, search_filter, limit, index=model.index)

    def by_vector(
        self, vector: np.ndarray, search_filter: SearchFilter | None, limit: int, index=None
    ) -> list[SearchResult]:
        """Search ``index`` (that of the model which made ``vector``; default: the active model's)."""
        if limit < 1:
            raise InputError("--limit must be at least 1")
        hits = (index or self.services.index).search(vector, search_filter, limit)
        return self._results(hits)

    def _results(self, hits: list[TrackHit]) -> list[SearchResult]:
        tracks = self.services.db.tracks_by_ids([hit.track_id for hit in hits])
        results = []
        for hit in hits:
            payload = hit.payload
            track = tracks.get(hit.track_id)
            results.append(
                SearchResult(
                    track_id=hit.track_id,
                    camera_id=payload["camera_id"],
                    video_id=payload["video_id"],
                    score=round(float(hit.score), 6),
                    ts_start=track.ts_start if track else payload["ts"],
                    ts_end=track.ts_end if track else payload["ts"],
                    crop=str(self.services.crops.path(payload["crop_key"])),
                    crop_key=payload["crop_key"],
                    point_id=hit.point_id,
                    frame_index=int(payload["frame_index"]),
                    ts=float(payload["ts"]),
                    bbox=[float(v) for v in payload["bbox"]],
                )
            )
        return results
