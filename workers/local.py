"""Local mode: the whole ingest in one process, with a progress bar and a summary."""

from __future__ import annotations

import logging
import time
import uuid
from dataclasses import dataclass, field

from tqdm import tqdm

from camtrace.detection import VideoSource, absolute_source
from camtrace.enums import JobStatus, SegmentStatus
from camtrace.errors import SourceError
from camtrace.notify import DeliveryThread
from camtrace.services import Services
from camtrace.storage.watchlists import WatchStore
from camtrace.workers.jobs import refresh_job
from camtrace.workers.pipeline import CropIndexer, SegmentWatch, detect_segment, open_sources, register_video

log = logging.getLogger(__name__)


@dataclass
class IngestSummary:
    job_id: str
    camera_id: str
    videos: int = 0
    segments: int = 0
    frames: int = 0
    persons: int = 0
    tracks: int = 0
    crops: int = 0
    seconds: float = 0.0
    failed_segments: list[str] = field(default_factory=list)

    def as_dict(self) -> dict:
        return dict(self.__dict__)

    def add(self, result, crops: int) -> None:
        """Count one segment done."""
        self.segments += 1
        self.frames += result.frames
        self.persons += result.boxes
        self.tracks += len(result.tracks)
        self.crops += crops


def _register_job(db, source: str, camera_id: str, plans, job_id: str) -> None:
    """The job with every segment registered before it counts as running."""
    db.create_job("ingest", source, camera_id, job_id=job_id, segments_total=sum(len(segments) for _, segments in plans))
    for video, segments in plans:
        register_video(db, video, camera_id, segments, job_id)
    db.update_job(job_id, status=JobStatus.RUNNING)


ALERT_FLUSH_SECONDS = 30.0  # how long an ingest's end waits for its alerts' first tries (the rest wait for beat)


def ingest_local(
    services: Services,
    source: str,
    camera_id: str,
    start_ts: float | None = None,
    progress: bool = True,
    send: DeliveryThread | None = None,
) -> IngestSummary:
    """Ingest ``source`` in this process. Alerts are sent by ``send`` (a long-running caller's
    ``DeliveryThread``), else by one of this ingest's own, whose tries the ingest's end waits for."""
    own = send is None
    send = DeliveryThread(services.settings, WatchStore(services.db)) if send is None else send
    try:
        return _ingest(services, source, camera_id, start_ts, progress, send)
    finally:
        if own and not send.flush(ALERT_FLUSH_SECONDS):
            log.warning(
                "alert deliveries still being tried after %.0f s; beat or `camtrace alerts deliver` sends the rest",
                ALERT_FLUSH_SECONDS,
            )


def _ingest(
    services: Services, source: str, camera_id: str, start_ts: float | None, progress: bool, send: DeliveryThread
) -> IngestSummary:
    settings = services.settings
    began = time.perf_counter()
    videos = open_sources(source, start_ts)
    try:
        # Load both models before the first write: missing weights stop here.
        services.detector.load()
        model = services.model()  # one model for the whole ingest: its encoder writes into its own index
        model.encoder.load()
        watch = SegmentWatch(services, model, send)
        indexer = CropIndexer(model.encoder, model.index, services.db, services.crops, watch, reid_index=model.reid_index)
        db = services.db
        plans = [(video, video.segments(settings.segment_seconds)) for video in videos]
        summary = IngestSummary(job_id=str(uuid.uuid4()), camera_id=camera_id, videos=len(videos))
        _register_job(db, absolute_source(source), camera_id, plans, summary.job_id)
        expected_frames = sum(expected_sampled_frames(video, settings.sample_fps) for video in videos)
        bar = tqdm(total=expected_frames or None, unit="frame", desc=f"ingest {camera_id}", disable=not progress)
        for video, segments in plans:
            for segment in segments:
                segment_id = f"{video.video_id}:{segment.index}"
                db.start_segment(segment_id, summary.job_id)
                try:
                    result = detect_segment(video, segment, camera_id, services.detector, settings, bar.update)
                except SourceError as exc:
                    # A damaged stretch of video fails its segment only; the rest of the job goes on.
                    db.fail_segment(segment_id, str(exc))
                    summary.failed_segments.append(f"{segment_id}: {exc}")
                    continue
                crops = indexer.index_segment(result)
                if settings.index_maintain_seconds > 0:
                    model.index.maintain()  # between batches: seals and indexes a full segment (seconds), else nothing
                db.mark_segment(segment_id, SegmentStatus.DONE, frames=result.frames, crops=crops)
                refresh_job(db, summary.job_id)
                summary.add(result, crops)
        bar.close()
        refresh_job(db, summary.job_id)
        if summary.tracks:
            # New footage: camera links and the same-person calibration learn from it at once.
            from camtrace.search.evidence_service import EvidenceService

            EvidenceService(services).learn(model)
        summary.seconds = round(time.perf_counter() - began, 2)
        return summary
    finally:
        for video in videos:
            video.close()


def expected_sampled_frames(video: VideoSource, sample_fps: float) -> int:
    info = video.info
    if not info.frame_count:
        return 0
    return int(info.frame_count * min(1.0, sample_fps / info.fps)) + 1
