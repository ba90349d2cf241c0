"""Plain records passed between the stages (no torch, no Celery, no HTTP)."""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field

import numpy as np

# Fixed namespace so that point ids are the same on every machine and every run.
POINT_NAMESPACE = uuid.UUID("5b0c2c1e-7a2d-4e0b-9a57-3c1f6f0f2d11")

Box = tuple[float, float, float, float]  # x1, y1, x2, y2 in source pixels


def point_id(video_id: str, frame_index: int, track_id: str) -> str:
    """Deterministic point id: a redelivered or repeated ingest overwrites instead of duplicating."""
    return str(uuid.uuid5(POINT_NAMESPACE, f"{video_id}:{frame_index}:{track_id}"))


def make_track_id(video_id: str, segment_index: int, local_id: int) -> str:
    """Track ids are unique per segment; linking across segments is re-id search's job."""
    return f"{video_id}:{segment_index}:{local_id}"


@dataclass(frozen=True)
class Frame:
    """One sampled frame: its index in the source, its timestamp (epoch s) and BGR pixels."""

    index: int
    ts: float
    image: np.ndarray


@dataclass(frozen=True)
class TrackedBox:
    """A person box in one frame with the tracker's id (local to the segment)."""

    frame_index: int
    ts: float
    box: Box
    conf: float
    local_track_id: int


@dataclass
class Crop:
    """A selected person crop, ready to embed and index."""

    track_id: str
    frame_index: int
    ts: float
    box: Box
    det_conf: float
    quality: float
    image: np.ndarray  # BGR pixels of the crop
    jpeg: bytes | None = None  # the encoded crop as stored and embedded (set once, then carried as is)


@dataclass(frozen=True)
class PointPayload:
    """What the index stores with each crop's vector (DESIGN.md, "Point payload"): built by the pipeline and
    by re-embedding, read by search. ``as_dict``/``from_dict`` are the index's plain form."""

    camera_id: str
    video_id: str
    track_id: str
    ts: float
    frame_index: int
    bbox: Box
    det_conf: float
    crop_key: str
    model_version: str

    def as_dict(self) -> dict:
        return {
            "camera_id": self.camera_id,
            "video_id": self.video_id,
            "track_id": self.track_id,
            "ts": float(self.ts),
            "frame_index": int(self.frame_index),
            "bbox": [float(v) for v in self.bbox],
            "det_conf": float(self.det_conf),
            "crop_key": self.crop_key,
            "model_version": self.model_version,
        }

    @classmethod
    def from_dict(cls, payload: dict) -> PointPayload:
        x1, y1, x2, y2 = (float(v) for v in payload["bbox"])
        return cls(
            camera_id=str(payload["camera_id"]),
            video_id=str(payload["video_id"]),
            track_id=str(payload["track_id"]),
            ts=float(payload["ts"]),
            frame_index=int(payload["frame_index"]),
            bbox=(x1, y1, x2, y2),
            det_conf=float(payload.get("det_conf", 0.0)),
            crop_key=str(payload["crop_key"]),
            model_version=str(payload.get("model_version", "")),
        )


@dataclass(frozen=True)
class SearchFilter:
    """Filters applied inside the vector search (never afterwards)."""

    camera_ids: tuple[str, ...] = ()
    since: float | None = None
    until: float | None = None
    exclude_camera_ids: tuple[str, ...] = ()
    exclude_track_ids: tuple[str, ...] = ()  # re-id: the query track and tracks already decided


@dataclass(frozen=True)
class IndexPoint:
    """One vector and its payload (see DESIGN.md, "Point payload")."""

    id: str
    vector: np.ndarray
    payload: dict


@dataclass(frozen=True)
class TrackHit:
    """The best-scoring point of one track."""

    track_id: str
    score: float
    point_id: str
    payload: dict = field(default_factory=dict)
