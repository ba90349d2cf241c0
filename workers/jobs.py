"""Jobs in distributed mode: planning an ingest, following its progress, retention; sending what the
stages ask to run elsewhere (a training request, a promotion's re-index batches) as tasks.

Plain functions over the stages and SQL; the Celery tasks and the CLI call them. Tasks are sent by
name, so producers (the CLI, the API, the camera service) never import the workers' code.
"""

from __future__ import annotations

import functools
import time
import uuid
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tqdm import tqdm

from camtrace.detection import absolute_source
from camtrace.enums import TERMINAL_JOB_STATUSES, JobStatus, SegmentStatus
from camtrace.errors import BrokerError, ConfigError, SourceError
from camtrace.services import Services
from camtrace.settings import Settings
from camtrace.storage import Database
from camtrace.storage.sql import Job, SegmentTally
from camtrace.validation import mask_secrets
from camtrace.workers.messages import SegmentRef
from camtrace.workers.pipeline import expand_within, open_sources, register_video

if TYPE_CHECKING:
    from camtrace.training.promotion import ReindexRunner, ReindexWork
    from camtrace.training.schedule import TrainRequest

TERMINAL = TERMINAL_JOB_STATUSES
NOT_QUEUED = "could not queue the job"  # the error of a job the broker never took


def plan_ingest(
    db: Database,
    job_id: str,
    source: str,
    camera_id: str,
    start_ts: float | None,
    segment_seconds: float,
    roots: Sequence[str] | None = None,
) -> list[SegmentRef]:
    """Register a source's videos and segments under ``job_id``; returns one ref per segment.

    With ``roots`` (an ingest asked for over HTTP), every file is resolved and checked: one outside
    the roots is skipped and named in the job's error; a source left with no file fails.
    """
    uris, skipped = expand_within(source, None if roots is None else [Path(root) for root in roots])
    outside = f"skipped {len(skipped)} file(s) outside CAMTRACE_INGEST_ROOTS: {', '.join(skipped[:20])}" if skipped else None
    if not uris:
        raise SourceError(f"every video of {source!r} lies outside CAMTRACE_INGEST_ROOTS: {outside}")
    videos = open_sources(uris, start_ts)
    refs: list[SegmentRef] = []
    try:
        for video in videos:
            segments = video.segments(segment_seconds)
            register_video(db, video, camera_id, segments, job_id)
            refs.extend(
                SegmentRef(
                    job_id=job_id,
                    uri=video.info.uri,
                    camera_id=camera_id,
                    video_id=video.video_id,
                    start_ts=video.info.start_ts,
                    index=segment.index,
                    start_frame=segment.start_frame,
                    end_frame=segment.end_frame,
                )
                for segment in segments
            )
    finally:
        for video in videos:
            video.close()
    db.update_job(job_id, status=JobStatus.RUNNING if refs else JobStatus.DONE, segments_total=len(refs), error=outside)
    return refs


def job_progress(job: Job, tally: SegmentTally) -> dict[str, Any]:
    """The fields an ingest job's row should hold given its segments: counters, errors, and its end state once
    every segment it owns is finished, stamped with when (idempotent, whatever got redelivered). Empty: nothing
    to change."""
    if job.status == JobStatus.QUEUED:  # not planned yet: its segments are still being registered
        return {}
    done, failed = tally.of(SegmentStatus.DONE), tally.of(SegmentStatus.FAILED)
    owned = tally.owned
    # Segments re-registered by a newer ingest of the same video belong to that job now;
    # this one finishes with what it still owns instead of waiting for them forever.
    taken = max(0, job.segments_total - owned) if job.status == JobStatus.RUNNING else 0
    if not tally.by_status and not taken:
        return {}
    total = max(job.segments_total, owned)
    fields: dict[str, Any] = {
        "segments_total": total,
        "segments_done": done[0],
        "segments_failed": failed[0],
        "crops_indexed": int(done[1]),
        "frames": int(done[2] + failed[2]),
    }
    errors = list(tally.errors)
    if taken:
        errors.append(f"{taken} segment(s) taken over by a newer ingest of the same video")
    if errors:
        fields["error"] = "; ".join(errors)
    if job.status in (JobStatus.QUEUED, JobStatus.RUNNING) and done[0] + failed[0] + taken >= total > 0:
        if owned == 0:
            fields["status"] = JobStatus.SUPERSEDED
        else:
            fields["status"] = JobStatus.FAILED if done[0] == 0 else JobStatus.DONE
        fields["finished_at"] = time.time()
    return fields


def refresh_job(db: Database, job_id: str) -> Job:
    """Write an ingest job's progress from its segments (after each segment, by whoever finished it)."""
    job = db.get_job(job_id)
    if job.kind != "ingest":  # other jobs (a re-index) count their own progress
        return job
    fields = job_progress(job, db.segment_tally(job_id))
    return db.update_job(job_id, **fields) if fields else job


def current_job(db: Database, job_id: str) -> Job:
    """A job as ``refresh_job`` would leave it, read without writing: what the API, the CLI and a progress bar
    show. NotFoundError names an unknown job."""
    job = db.get_job(job_id)
    if job.kind == "ingest":
        fields = job_progress(job, db.segment_tally(job_id))
        for name, value in fields.items():  # the row is detached from its session: nothing is written
            setattr(job, name, value)
    return job


def job_dict(job) -> dict:
    """A job row as the CLI's --json and the API show it."""
    return {
        "id": job.id,
        "kind": job.kind,
        "camera_id": job.camera_id,
        "source": mask_secrets(job.source),
        "status": job.status,
        "segments_total": job.segments_total,
        "segments_done": job.segments_done,
        "segments_failed": job.segments_failed,
        "crops_indexed": job.crops_indexed,
        "frames": job.frames,
        "error": mask_secrets(job.error),
        "created_at": job.created_at,
        "finished_at": job.finished_at,
    }


def job_rows(db: Database, limit: int = 50) -> list[dict]:
    """The newest jobs with their progress brought up to date."""
    return [job_dict(current_job(db, job.id)) for job in db.list_jobs(limit=limit)]


# A person at the command line wants to hear within seconds that the broker is away;
# services (the camera recorder) keep the app's patient policy and wait it out.
QUICK_PUBLISH_RETRY = {"max_retries": 2, "interval_start": 0.2, "interval_step": 0.5, "interval_max": 1.0}


def register_ingest(db: Database, source: str, camera_id: str, job_id: str):
    """The job row of an ingest (and its camera), before it is queued: the API writes it in the
    transaction of its audit row."""
    db.ensure_camera(camera_id)
    return db.create_job("ingest", source, camera_id, job_id=job_id)


def submit_ingest(
    services: Services,
    source: str,
    camera_id: str,
    start_ts: float | None,
    patient: bool = True,
    job_id: str | None = None,
    roots: Sequence[Path] | None = None,
) -> str:
    """Queue an ingest job; returns its id at once (workers do the rest).

    If the broker cannot take it, the job is marked failed with the reason and
    ``BrokerError`` says which broker and what to check; trying again with the
    same ``job_id`` reuses that job instead of adding another. ``roots`` (HTTP
    ingest) limits the files the workers may read to those folders (see
    ``plan_ingest``).
    """
    from camtrace.workers.celery_app import producer

    db, settings = services.db, services.settings
    job_id = job_id or str(uuid.uuid4())
    source = absolute_source(source)  # the workers run in other folders
    job = register_ingest(db, source, camera_id, job_id)
    if job.status != JobStatus.QUEUED:  # a retry of a job that could not be queued before
        db.update_job(job_id, status=JobStatus.QUEUED, error=None, finished_at=None)
    options = {} if patient else {"retry_policy": QUICK_PUBLISH_RETRY}
    try:
        producer(settings).send_task(
            "camtrace.ingest",
            kwargs={
                "job_id": job_id,
                "source": source,
                "camera_id": camera_id,
                "start_ts": start_ts,
                "roots": None if roots is None else [str(root) for root in roots],
            },
            ignore_result=True,  # progress lives in SQL; nothing waits on the result backend
            **options,
        )
    except Exception as exc:  # kombu's OperationalError and the transport's own connection errors
        db.update_job(job_id, status=JobStatus.FAILED, error=f"{NOT_QUEUED}: {exc}")
        raise unreachable_broker(settings, source, exc) from exc
    return job_id


def unreachable_broker(settings: Settings, what: str, exc: BaseException) -> BrokerError:
    """The error of a task the broker did not take: which broker (without its password) and what to check."""
    from kombu.utils.url import maybe_sanitize_url

    from camtrace.workers.ops import broker_hint

    return BrokerError(
        f"cannot reach the broker {maybe_sanitize_url(settings.broker_url)} to queue {what}: {exc}; "
        f"{broker_hint(settings.broker_url)} (nothing was queued)"
    )


def submit_training(settings: Settings, request: TrainRequest) -> str:
    """Queue a training run for the train worker (on demand); returns the task id."""
    from camtrace.workers.celery_app import producer

    if not settings.broker_url:
        raise ConfigError("queueing a training run needs a broker: set CAMTRACE_BROKER_URL")
    try:
        result = producer(settings).send_task("camtrace.train", kwargs={"request": request.model_dump()})
    except Exception as exc:  # kombu's OperationalError and the transport's own connection errors
        raise unreachable_broker(settings, "the training run", exc) from exc
    return result.id


def reindex_runner(services: Services) -> ReindexRunner | None:
    """Where a promotion's re-index batches run: the embed workers when a broker is configured, else
    nowhere else (None: the promoting process embeds them itself)."""
    if not services.settings.broker_url:
        return None
    return functools.partial(reindex_on_workers, services)


def reindex_on_workers(services: Services, work: ReindexWork, progress: tqdm | None = None, poll_seconds: float = 0.5) -> int:
    """Send each batch of ``work`` as a ``camtrace.reindex`` task to the embed queue and follow the
    ``reindex`` job in SQL until every batch is done or failed; returns the points the workers embedded."""
    from camtrace.workers.celery_app import producer

    db = services.db
    job = db.create_job("reindex", f"model:{work.model_id or 'configured'}", job_id=f"reindex-{uuid.uuid4().hex}")
    db.update_job(job.id, status=JobStatus.RUNNING, segments_total=len(work.batches))
    app = producer(services.settings)
    for point_ids in work.batches:
        app.send_task(
            "camtrace.reindex",
            kwargs={"job_id": job.id, "model_id": work.model_id, "point_ids": point_ids},
            ignore_result=True,
        )
    started = progress.n if progress is not None else 0
    while True:
        job = db.get_job(job.id)
        if progress is not None:
            progress.n = started + job.crops_indexed + job.frames  # frames: crops the workers could not find
            progress.refresh()
        if job.segments_done + job.segments_failed >= job.segments_total:
            break
        time.sleep(poll_seconds)
    db.update_job(job.id, status=JobStatus.FAILED if job.segments_failed else JobStatus.DONE)
    return job.crops_indexed


def follow_job(db: Database, job_id: str, progress: bool = True, poll_seconds: float = 0.5, timeout: float | None = None):
    """Wait for a job to finish, showing segments done/total; returns the final job row."""
    job = current_job(db, job_id)  # NotFoundError names the job
    bar = tqdm(total=job.segments_total or None, unit="segment", desc=f"job {job_id[:8]}", disable=not progress)
    deadline = None if timeout is None else time.monotonic() + timeout
    while True:
        job = current_job(db, job_id)
        if job.segments_total and bar.total != job.segments_total:
            bar.total = job.segments_total
        bar.n = job.segments_done + job.segments_failed
        bar.set_postfix(crops=job.crops_indexed, failed=job.segments_failed)
        bar.refresh()
        if job.status in TERMINAL:
            bar.close()
            return job
        if deadline is not None and time.monotonic() > deadline:
            bar.close()
            return job
        time.sleep(poll_seconds)


def apply_retention(services: Services, cutoff_ts: float, batch: int = 5000) -> int:
    """Delete everything seen before ``cutoff_ts``; returns the number of points deleted.

    Points go first, then SQL rows, then crop files: a crash in between leaves
    at most rows or files whose points are gone, which the next run deletes,
    never a point whose crop is missing. Videos that ended before the cutoff go
    last, with the segment files the camera recorder wrote for them (a user's
    own video files are never touched).
    """
    db = services.db
    model = services.model()
    deleted = 0
    while True:
        old = db.detections_before(cutoff_ts, limit=batch)
        if not old:
            break
        if model.reid_index is not None:  # a model with an anchor head keeps re-id vectors under the same ids
            model.reid_index.delete([row.point_id for row in old])
        model.index.delete([row.point_id for row in old])
        db.delete_detections([row.point_id for row in old])
        services.crops.delete([row.crop_key for row in old])
        deleted += len(old)
    recordings = services.settings.recordings_dir.resolve()
    for source in db.delete_videos_before(cutoff_ts):
        path = Path(source).resolve()
        if path.is_relative_to(recordings):
            path.unlink(missing_ok=True)
    return deleted
