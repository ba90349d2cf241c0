"""The ingest stages composed, with no broker and no HTTP in them.

``detect_segment`` turns one segment of a source into selected crops;
``CropIndexer`` embeds crops and writes them to the crop store, the vector index
and SQL. Local mode calls both in one process; the Celery tasks call the very
same functions, so both modes produce the same point ids and payloads.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np

from camtrace.detection import (
    CropSelector,
    MotionGate,
    PersonDetector,
    SegmentSpec,
    VideoSource,
    expand_source,
    is_stream_uri,
    make_tracker,
    track_frames,
)
from camtrace.embedding import ImageTextEncoder
from camtrace.enums import SegmentStatus
from camtrace.errors import CamtraceError, ConfigError
from camtrace.settings import Settings
from camtrace.storage import CropStore, Database, VectorIndex
from camtrace.types import Crop, IndexPoint, PointPayload, make_track_id, point_id
from camtrace.validation import inside_roots

JPEG_QUALITY = 90


@dataclass
class TrackSpan:
    track_id: str
    ts_start: float
    ts_end: float
    n_boxes: int


@dataclass
class SegmentResult:
    """What detection produced for one segment: the crops to embed and every track's span."""

    camera_id: str
    video_id: str
    segment_index: int
    frames: int = 0
    frames_detected: int = 0  # frames the detector ran on (fewer than ``frames`` with motion gating)
    boxes: int = 0
    crops: list[Crop] = field(default_factory=list)
    tracks: list[TrackSpan] = field(default_factory=list)


def expand_within(source: str, roots: Sequence[Path] | None = None) -> tuple[list[str], list[str]]:
    """The videos of a source as resolved absolute paths (so a stored path names the file from any folder),
    and the names of the files left out because they resolve outside ``roots`` (None: no limit)."""
    videos: list[str] = []
    skipped: list[str] = []
    for uri in expand_source(source):
        if is_stream_uri(uri):
            videos.append(uri)
            continue
        path = Path(uri).resolve()
        if roots is not None and not inside_roots(path, roots):
            skipped.append(Path(uri).name)
            continue
        videos.append(str(path))
    return videos, skipped


def open_sources(source: str | Sequence[str], start_ts: float | None) -> list[VideoSource]:
    """Open every video of a source (or of a list from ``expand_within``) before anything is written,
    so bad input changes nothing.

    With a start time and several files, the files are taken as consecutive
    recordings: each starts where the previous one ended.
    """
    uris = expand_within(source)[0] if isinstance(source, str) else list(source)
    opened: list[VideoSource] = []
    try:
        next_start = start_ts
        for uri in uris:
            video = VideoSource(uri, start_ts=next_start)
            opened.append(video)
            if next_start is not None and video.info.frame_count:
                next_start = video.info.start_ts + video.info.frame_count / video.info.fps
    except CamtraceError:
        for video in opened:
            video.close()
        raise
    return opened


def register_video(db: Database, video: VideoSource, camera_id: str, segments: Sequence[SegmentSpec], job_id: str) -> None:
    """Record a video and its segments (pending, owned by ``job_id``); idempotent."""
    info = video.info
    db.upsert_video(
        video_id=video.video_id,
        camera_id=camera_id,
        source=info.uri,
        fps=info.fps,
        width=info.width,
        height=info.height,
        start_ts=info.start_ts,
        end_ts=info.start_ts + info.frame_count / info.fps if info.frame_count else None,
        frame_count=info.frame_count,
    )
    for segment in segments:
        db.upsert_segment(
            video.video_id, segment.index, segment.start_frame, segment.end_frame, status=SegmentStatus.PENDING, job_id=job_id
        )


def detect_segment(
    source: VideoSource,
    segment: SegmentSpec,
    camera_id: str,
    detector: PersonDetector,
    settings: Settings,
    on_frame: Callable[[], None] | None = None,
) -> SegmentResult:
    """Decode, detect, track and select crops for one segment (a fresh tracker per segment)."""
    video_id = source.video_id
    result = SegmentResult(camera_id=camera_id, video_id=video_id, segment_index=segment.index)
    tracker = make_tracker(settings.tracker, frame_rate=settings.sample_fps)
    selector = CropSelector(
        k=settings.crops_per_track, min_height=settings.min_crop_height, min_sharpness=settings.min_crop_sharpness
    )
    gate = MotionGate(settings.motion_threshold) if settings.motion_gating else None
    frames = source.frames(settings.sample_fps, start_frame=segment.start_frame, end_frame=segment.end_frame)
    for frame, boxes in track_frames(detector, frames, tracker, gate):
        selector.add(frame, boxes)
        result.frames += 1
        result.boxes += len(boxes)
        if on_frame is not None:
            on_frame()
    result.frames_detected = gate.detected if gate is not None else result.frames

    def track_id_for(local_id: int) -> str:
        return make_track_id(video_id, segment.index, local_id)

    # Tracks the tracker judged noise (seen once, weakly) leave no crop and no track row; duplicates of a
    # person join that person's track.
    selector.regroup(tracker.final_ids())
    result.crops = selector.select(track_id_for)
    for crop in result.crops:
        # Encoded once here: the stored crop, the embedded pixels and what travels
        # to an embed worker are the same bytes in local and distributed mode.
        crop.jpeg = encode_jpeg(crop.image)
    kept_tracks = {crop.track_id for crop in result.crops}
    for local_id, span in sorted(selector.spans.items()):
        track_id = track_id_for(local_id)
        if track_id in kept_tracks:  # a track without a usable crop can never be found: not stored
            result.tracks.append(TrackSpan(track_id, span.ts_start, span.ts_end, span.n_boxes))
    return result


def encode_jpeg(image_bgr: np.ndarray) -> bytes:
    ok, buffer = cv2.imencode(".jpg", image_bgr, [cv2.IMWRITE_JPEG_QUALITY, JPEG_QUALITY])
    if not ok:
        raise ValueError("could not encode crop as JPEG")
    return buffer.tobytes()


def decode_jpeg(data: bytes) -> np.ndarray:
    image = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
    if image is None:
        raise ValueError("not a JPEG image")
    return image


def crop_key(camera_id: str, video_id: str, pid: str) -> str:
    return f"{camera_id}/{video_id}/{pid}.jpg"


class CropIndexer:
    """Embeds crops in large batches and writes crop JPEGs, vectors and SQL rows.

    Writes are ordered crop store -> vector index -> SQL, all keyed by the
    deterministic point id, so a repeated call overwrites and a crash in the
    middle leaves nothing that a retry does not repair.
    """

    def __init__(
        self,
        encoder: ImageTextEncoder,
        index: VectorIndex,
        db: Database,
        crops: CropStore,
        watch: Callable[..., object] | None = None,
        reid_index: VectorIndex | None = None,
    ) -> None:
        """``watch``: called with every written segment (or part) and its vectors (and, for a model with an anchor
        head, its re-id vectors), the watchlist check.
        ``reid_index``: where the anchor head's re-id vectors go (camtrace.storage.reid); required when the
        encoder has a head, unused otherwise."""
        if encoder.has_reid_head and reid_index is None:
            raise ConfigError(
                f"{encoder.model_name} has an anchor re-id head: pass its re-id index "
                "(EmbeddingModel.reid_index) so its re-id vectors are stored"
            )
        self.encoder = encoder
        self.index = index
        self.db = db
        self.crops = crops
        self.watch = watch
        self.reid_index = reid_index if encoder.has_reid_head else None

    def index_segment(self, result: SegmentResult) -> int:
        """Embed and write one segment's crops and tracks; returns the number of points written."""
        return self.write_segment(result, self.embed(result.crops))

    def embed(self, crops: Sequence[Crop]) -> np.ndarray:
        """Vectors of the crops' JPEGs, in the encoder's large batches.

        The stored JPEG is embedded, not the raw pixels: a backfill from the crop
        store (a new model version) and the distributed mode, where crops travel
        as JPEG, then give exactly the vectors of local mode.
        """
        if not crops:
            return np.zeros((0, 0), np.float32)
        images = [cv2.cvtColor(decode_jpeg(crop_jpeg(crop)), cv2.COLOR_BGR2RGB) for crop in crops]
        if self.reid_index is not None:  # one row per crop: the text-aligned vector, then the re-id vector
            return np.hstack(self.encoder.encode_image_pair(images))
        return self.encoder.encode_images(images)

    def write_segment(self, result: SegmentResult, vectors: np.ndarray) -> int:
        """Write crops, vectors and SQL rows of one segment (or one part of it)."""
        points, rows = self.write_points(result.camera_id, result.video_id, result.crops, vectors)
        # Tracks before detections: detections reference their track.
        best_keys = best_crop_keys(result)
        self.db.upsert_tracks(
            [
                {
                    "id": span.track_id,
                    "camera_id": result.camera_id,
                    "video_id": result.video_id,
                    "segment_index": result.segment_index,
                    "ts_start": span.ts_start,
                    "ts_end": span.ts_end,
                    "n_boxes": span.n_boxes,
                    "best_crop_key": best_keys.get(span.track_id),
                }
                for span in result.tracks
            ]
        )
        self.db.upsert_detections(rows)
        if self.watch is not None and points:
            # Descriptions match the text-aligned vectors, people the re-id vectors (the anchor head's, if any).
            if self.reid_index is not None:
                self.watch(result, vectors[:, : self.encoder.dim], vectors[:, self.encoder.dim :])
            else:
                self.watch(result, vectors)
        return len(points)

    def write_points(
        self, camera_id: str, video_id: str, crops: Sequence[Crop], vectors: np.ndarray
    ) -> tuple[list[IndexPoint], list[dict]]:
        """Store crop JPEGs and upsert their vectors; returns the points and their SQL rows."""
        if not crops:
            return [], []
        model_version = self.encoder.model_version
        reid_vectors = None
        if self.reid_index is not None:
            vectors, reid_vectors = vectors[:, : self.encoder.dim], vectors[:, self.encoder.dim :]
        points, rows = [], []
        for crop, vector in zip(crops, vectors, strict=True):
            pid = point_id(video_id, crop.frame_index, crop.track_id)
            key = crop_key(camera_id, video_id, pid)
            self.crops.put(key, crop_jpeg(crop))
            payload = PointPayload(
                camera_id,
                video_id,
                crop.track_id,
                float(crop.ts),
                int(crop.frame_index),
                crop.box,
                float(crop.det_conf),
                key,
                model_version,
            )
            points.append(IndexPoint(id=pid, vector=vector, payload=payload.as_dict()))
            x1, y1, x2, y2 = (float(v) for v in crop.box)
            rows.append(
                {
                    "point_id": pid,
                    "track_id": crop.track_id,
                    "camera_id": camera_id,
                    "video_id": video_id,
                    "frame_index": int(crop.frame_index),
                    "ts": float(crop.ts),
                    "x1": x1,
                    "y1": y1,
                    "x2": x2,
                    "y2": y2,
                    "det_conf": float(crop.det_conf),
                    "quality": float(crop.quality),
                    "crop_key": key,
                    "model_version": model_version,
                }
            )
        if reid_vectors is not None and self.reid_index is not None:
            # Before the main index: a point there always has its re-id vector, whatever a crash interrupts.
            self.reid_index.upsert(
                [IndexPoint(id=p.id, vector=v, payload=p.payload) for p, v in zip(points, reid_vectors, strict=True)]
            )
        self.index.upsert(points)
        return points, rows


def crop_jpeg(crop: Crop) -> bytes:
    return crop.jpeg if crop.jpeg is not None else encode_jpeg(crop.image)


def best_crop_keys(result: SegmentResult) -> dict[str, str]:
    """The crop key of each track's highest-quality kept crop."""
    best: dict[str, Crop] = {}
    for crop in result.crops:
        if crop.track_id not in best or crop.quality > best[crop.track_id].quality:
            best[crop.track_id] = crop
    return {
        track_id: crop_key(result.camera_id, result.video_id, point_id(result.video_id, crop.frame_index, track_id))
        for track_id, crop in best.items()
    }


class SegmentWatch:
    """The watchlist check of the embed path: each written segment's tracks go to the ``Watcher``
    (camtrace.search.watch), which stores the alerts with their delivery rows; their ids go to ``send``, which
    sends them elsewhere (a ``DeliveryThread`` by default; the distributed worker queues a task), so no
    target is waited on here. What a try misses waits for the next delivery pass."""

    def __init__(self, services, model, send: Callable[[list[int]], object] | None = None) -> None:
        from camtrace.notify import DeliveryThread
        from camtrace.search.watch import Watcher

        self.watcher = Watcher(services, model)
        self.send = send if send is not None else DeliveryThread(services.settings, self.watcher.store)

    def __call__(self, result: SegmentResult, vectors: np.ndarray, reid_vectors: np.ndarray | None = None) -> list:
        from camtrace.search.watch import NewTrack

        spans = {span.track_id: span for span in result.tracks}
        best = best_crop_keys(result)
        by_track: dict[str, list[int]] = {}
        for row, crop in enumerate(result.crops):
            by_track.setdefault(crop.track_id, []).append(row)
        tracks = [
            NewTrack(
                track_id,
                result.camera_id,
                float(spans[track_id].ts_start),
                float(spans[track_id].ts_end),
                np.asarray(vectors)[rows],
                best.get(track_id),
                None if reid_vectors is None else np.asarray(reid_vectors)[rows],
            )
            for track_id, rows in by_track.items()
            if track_id in spans
        ]
        alerts = self.watcher.check(tracks)
        if alerts:
            self.send([alert.id for alert in alerts])
        return alerts
