"""Celery tasks: thin shells that turn messages into calls of the pipeline stages.

ingest -> one detect task per segment -> embed tasks with crop JPEGs -> index.
Every write is keyed by deterministic ids, so a redelivered task overwrites;
a segment that keeps failing is marked failed in SQL instead of looping.

Importing this module builds no app and reads no settings: ``create_app(settings)`` builds the workers'
app and ``register_tasks`` puts every task on it, bounded and batched as those settings say. `camtrace
worker` and `camtrace beat` call it; senders use ``celery_app.producer`` and send tasks by name. A task
reads its settings from its app (``task.app.camtrace_settings``).
"""

from __future__ import annotations

import functools
import logging
import time

from celery import Celery
from celery.exceptions import SoftTimeLimitExceeded
from celery.signals import worker_init, worker_process_init
from celery_batches import Batches

from camtrace.detection import VideoSource
from camtrace.enums import JobStatus
from camtrace.errors import SourceError, StorageError
from camtrace.services import Services
from camtrace.settings import Settings
from camtrace.workers import metrics
from camtrace.workers.celery_app import declare_queues, make_celery, producer
from camtrace.workers.jobs import plan_ingest, refresh_job
from camtrace.workers.messages import SegmentRef, part_from_message, part_to_message, split_into_parts
from camtrace.workers.pipeline import CropIndexer, SegmentWatch, detect_segment

log = logging.getLogger(__name__)

# Errors worth retrying: the index, the database or the broker is away for a while.
TRANSIENT_ERRORS: tuple[type[BaseException], ...] = (StorageError, ConnectionError, TimeoutError, OSError)
try:  # SQLAlchemy's connection-level errors
    from sqlalchemy.exc import OperationalError

    TRANSIENT_ERRORS += (OperationalError,)
except ImportError:  # pragma: no cover
    pass

_services: Services | None = None


def services(settings: Settings) -> Services:
    """One set of stages per worker process, built from ``settings`` on first use (never before a fork)."""
    global _services
    if _services is None:
        _services = Services(settings)
    return _services


_watches: dict[str, SegmentWatch] = {}  # the watchlist check, one per model, per worker process


def segment_watch(stages: Services, model) -> SegmentWatch:
    """The process's watchlist check for ``model`` (its matrix of entries stays loaded between batches)."""
    watch = _watches.get(model.index.model_version)
    if watch is None or watch.watcher.model is not model:
        watch = _watches[model.index.model_version] = SegmentWatch(stages, model, queue_delivery(stages.settings))
    return watch


def queue_delivery(settings: Settings):
    """What the embed path hands new alerts to: the first try as a task of its own, so the embed batch never
    waits on MQTT or a webhook. A message that cannot be sent now loses nothing: beat's ``deliver_alerts`` pass
    finds the pending rows."""

    def send(alert_ids: list[int]) -> None:
        try:
            producer(settings).send_task("camtrace.deliver_alerts", kwargs={"alert_ids": list(alert_ids)}, retry=False)
        except Exception as exc:  # the broker is away: beat sends them
            log.warning("could not queue the delivery of alerts %s (%r); beat's pass sends them", alert_ids, exc)

    return send


def _fresh_process(**_: object) -> None:
    # A forked child must not reuse its parent's connections or models.
    global _services
    _services = None
    _watches.clear()


def _declare_every_queue(sender, **_: object) -> None:
    # RabbitMQ: native delayed delivery binds every camtrace queue and its exchange, including
    # queues this worker does not consume, so they must exist before the consumer starts.
    if sender.app.camtrace_settings.broker_kind == "rabbitmq":
        declare_queues(sender.app)


def backoff(settings: Settings, retries: int) -> float:
    # A Redis worker holds a delayed retry unacknowledged: keep the delay well inside the visibility timeout.
    return min(60.0, 2.0**retries, settings.effective_visibility_timeout / 3)


PUBLISH_PATIENCE_SECONDS = 300.0


def send_patiently(task, **options) -> None:
    """Send a follow-up task, riding out a broker outage.

    kombu retries a publish on its transport's connection errors (task_publish_retry), but a publish that
    races the reconnect can fail with other errors (the Redis transport raises AttributeError then). The
    task sending it must not fail for that: a failed late-acknowledged task is acknowledged, and its
    segment would be lost. A long outage ends in the soft time limit, which hands the task back.
    """
    deadline = time.monotonic() + PUBLISH_PATIENCE_SECONDS
    delay = 0.5
    while True:
        try:
            task.apply_async(**options)
            return
        except SoftTimeLimitExceeded:
            raise
        except Exception as exc:
            if time.monotonic() > deadline:
                raise
            log.warning("could not send %s (%r); trying again in %.1f s", task.name, exc, delay)
            time.sleep(delay)
            delay = min(5.0, delay * 2)


def create_app(settings: Settings) -> Celery:
    """The workers' Celery app: configured from ``settings`` (celery_app.make_celery), every task on it."""
    app = make_celery(settings)
    register_tasks(app, settings)
    return app


def segment_time_limits(settings: Settings) -> dict[str, int]:
    """Segment tasks are bounded (see Settings.task_time_limit): on Redis the visibility timeout sits just above
    the hard limit, so a running task is never delivered twice and a lost one is back within that bound."""
    return {"soft_time_limit": settings.task_time_limit, "time_limit": settings.task_hard_time_limit}


def register_tasks(app: Celery, settings: Settings) -> None:
    """Put every camtrace task on ``app`` with the limits and batching of ``settings``; connect the worker signals."""
    task = functools.partial(app.task, shared=False)  # on this app only, not on every app built after it
    limits = segment_time_limits(settings)
    task(name="camtrace.ingest", bind=True, max_retries=20, acks_late=True, **limits)(ingest)
    task(name="camtrace.detect", bind=True, max_retries=20, acks_late=True, **limits)(detect)
    batching = {"flush_every": max(1, settings.embed_batch_size // 8), "flush_interval": settings.embed_gather_seconds}
    task(name="camtrace.embed", bind=True, base=Batches, acks_late=True, **batching)(embed)
    task(name="camtrace.retention", bind=True, max_retries=5, acks_late=True)(retention)
    task(name="camtrace.learn_evidence", bind=True, max_retries=5, acks_late=True)(learn_evidence)
    task(name="camtrace.maintain_index", bind=True, max_retries=0, acks_late=True)(maintain_index)
    task(name="camtrace.deliver_alerts", bind=True, max_retries=5, acks_late=True)(deliver_alerts)
    task(name="camtrace.reindex", bind=True, max_retries=20, acks_late=True)(reindex)
    # Acknowledged on receipt, unlike the other tasks: a training run outlasts the
    # visibility timeout and would be delivered twice. A run lost with its worker
    # is started again by the next scheduled check (its data is still new).
    task(name="camtrace.train", bind=True, acks_late=False)(train)
    worker_process_init.connect(_fresh_process)  # connecting twice keeps one receiver
    worker_init.connect(_declare_every_queue)


def ingest(self, job_id: str, source: str, camera_id: str, start_ts: float | None = None, roots: list[str] | None = None) -> int:
    """Split a source into segments and send one detect task per segment (only files under ``roots``, if given)."""
    settings = self.app.camtrace_settings
    db = services(settings).db
    try:
        refs = plan_ingest(db, job_id, source, camera_id, start_ts, settings.segment_seconds, roots)
    except SourceError as exc:
        db.update_job(job_id, status=JobStatus.FAILED, error=str(exc))
        return 0
    except TRANSIENT_ERRORS as exc:
        raise self.retry(exc=exc, countdown=backoff(settings, self.request.retries))
    except SoftTimeLimitExceeded as exc:  # planning is idempotent: start over
        raise self.retry(exc=exc, countdown=0)
    for ref in refs:
        send_patiently(self.app.tasks["camtrace.detect"], kwargs={"ref": ref.as_dict()})
    return len(refs)


def detect(self, ref: dict) -> int:
    """Decode, detect, track and select one segment; send its crops to the embed queue."""
    segment = SegmentRef.model_validate(ref)
    settings = self.app.camtrace_settings
    stages = services(settings)
    db = stages.db
    started = time.perf_counter()
    try:
        state = db.start_segment(segment.segment_id, segment.job_id)
        if state is None:  # done already, or belongs to a newer job: a redelivery
            return 0
        if state.attempts > settings.task_max_attempts:
            db.fail_segment(segment.segment_id, f"gave up after {state.attempts - 1} deliveries (worker lost or kept failing)")
            refresh_job(db, segment.job_id)
            return 0
        try:
            with VideoSource(segment.uri, start_ts=segment.start_ts) as video:
                result = detect_segment(video, segment, segment.camera_id, stages.detector, settings)
        except SourceError as exc:
            # A damaged segment will not decode on a retry either: fail it, keep the job going.
            db.fail_segment(segment.segment_id, str(exc))
            refresh_job(db, segment.job_id)
            metrics.TASK_ERRORS.labels("detect").inc()
            return 0
        parts = split_into_parts(result, settings.crops_per_message)
        db.set_segment_parts(segment.segment_id, len(parts), frames=result.frames)
        if not parts:
            refresh_job(db, segment.job_id)
        for number, part in enumerate(parts):
            send_patiently(
                self.app.tasks["camtrace.embed"],
                kwargs={
                    "job_id": segment.job_id,
                    "segment_id": segment.segment_id,
                    "part": number,
                    "message": part_to_message(part),
                },
            )
        metrics.FRAMES.inc(result.frames)
        metrics.TASK_SECONDS.labels("detect").observe(time.perf_counter() - started)
        return len(result.crops)
    except TRANSIENT_ERRORS as exc:
        metrics.TASK_ERRORS.labels("detect").inc()
        raise self.retry(exc=exc, countdown=backoff(settings, self.request.retries))
    except SoftTimeLimitExceeded as exc:
        # Too slow this time (a busy host, a first model load): deliver it again; the segment's
        # attempt counter ends it as failed after CAMTRACE_TASK_MAX_ATTEMPTS tries.
        log.warning("segment %s ran past %d s; handing it back", segment.segment_id, settings.task_time_limit)
        metrics.TASK_ERRORS.labels("detect").inc()
        raise self.retry(exc=exc, countdown=0)


def embed(self, requests) -> None:
    """Embed the crops of several messages together, then write each message's part.

    Messages are gathered up to a batch or a short deadline so the GPU is fed
    large batches; each part is written and marked on its own. Batches
    acknowledge their messages when this returns, so nothing may escape: a
    part that cannot be written now is sent again with a delay.
    """
    started = time.perf_counter()
    try:
        retry = embed_batch(services(self.app.camtrace_settings), [request.kwargs for request in requests])
    except Exception as exc:  # anything unexpected: hand every part back rather than lose it
        log.exception("embed batch of %d messages failed", len(requests))
        retry = [(request.kwargs, exc) for request in requests]
    for kwargs, exc in retry:
        requeue_part(self, kwargs, exc)
    metrics.TASK_SECONDS.labels("embed").observe(time.perf_counter() - started)


def embed_batch(stages: Services, messages: list[dict]) -> list[tuple[dict, BaseException]]:
    """Embed and write parts; returns the parts to retry with the error that stopped them."""
    db = stages.db
    model = stages.model()  # the encoder and the index of one model, whatever a promotion switches meanwhile
    indexer = CropIndexer(model.encoder, model.index, db, stages.crops, segment_watch(stages, model), reid_index=model.reid_index)
    decoded = []
    for kwargs in messages:
        try:
            decoded.append((kwargs, part_from_message(kwargs["message"])))
        except (KeyError, TypeError, ValueError) as exc:  # a malformed message will never succeed
            log.error("dropped a malformed embed message: %s", exc)
            if "segment_id" in kwargs:
                db.fail_segment(kwargs["segment_id"], f"bad embed message: {exc}")
    crops = [crop for _, part in decoded for crop in part.crops]
    try:
        vectors = indexer.embed(crops)
    except ValueError as exc:  # an undecodable crop: fail its segments, keep the worker going
        for kwargs, _ in decoded:
            db.fail_segment(kwargs["segment_id"], f"embedding failed: {exc}")
            refresh_job(db, kwargs["job_id"])
        return []
    metrics.BATCH_SIZE.observe(len(crops))
    retry: list[tuple[dict, BaseException]] = []
    offset = 0
    for kwargs, part in decoded:
        part_vectors = vectors[offset : offset + len(part.crops)]
        offset += len(part.crops)
        try:
            written = indexer.write_segment(part, part_vectors)
            if db.part_done(kwargs["segment_id"], kwargs["part"], written):
                refresh_job(db, kwargs["job_id"])
            metrics.CROPS.inc(written)
        except TRANSIENT_ERRORS as exc:
            retry.append((kwargs, exc))
    return retry


def requeue_part(embed_task, kwargs: dict, exc: BaseException) -> None:
    """Send an embed part again after a backoff; past the poison limit, fail its segment."""
    settings = embed_task.app.camtrace_settings
    attempt = int(kwargs.get("attempt", 0)) + 1
    metrics.TASK_ERRORS.labels("embed").inc()
    if attempt > settings.task_max_attempts * 3:
        db = services(settings).db
        db.fail_segment(kwargs["segment_id"], f"could not write part {kwargs['part']}: {exc}")
        refresh_job(db, kwargs["job_id"])
        return
    log.warning("embed part %s/%s failed (%s); retry %d", kwargs["segment_id"], kwargs["part"], exc, attempt)
    send_patiently(embed_task, kwargs={**kwargs, "attempt": attempt}, countdown=backoff(settings, attempt))


def retention(self) -> int:
    """Delete points, SQL rows and crops older than CAMTRACE_RETENTION_DAYS."""
    from camtrace.workers.jobs import apply_retention

    settings = self.app.camtrace_settings
    if not settings.retention_days:
        return 0
    try:
        return apply_retention(services(settings), time.time() - settings.retention_days * 86400)
    except TRANSIENT_ERRORS as exc:
        raise self.retry(exc=exc, countdown=backoff(settings, self.request.retries))


def learn_evidence(self) -> int:
    """Relearn camera links and the same-person calibration when tracks arrived since the last run; returns the
    number of tracks learned from (0: nothing new)."""
    from camtrace.search.evidence_service import EvidenceService

    settings = self.app.camtrace_settings
    try:
        report = EvidenceService(services(settings)).learn_if_stale()
    except TRANSIENT_ERRORS as exc:
        raise self.retry(exc=exc, countdown=backoff(settings, self.request.retries))
    return 0 if report is None else report.tracks


def maintain_index(self) -> int:
    """Index the points the active model's embedded index received since the last run (one bounded step);
    returns the points newly indexed. Two runs at once take turns on the shard's lock; the second finds nothing left."""
    done = services(self.app.camtrace_settings).model().index.maintain()
    return 0 if done is None else int(getattr(done, "newly_indexed", 0))


def deliver_alerts(self, alert_ids: list[int] | None = None) -> int:
    """Send the watchlist alerts whose delivery (MQTT, a webhook) is due (of ``alert_ids`` only: the first try
    of new alerts, queued by the embed worker); returns how many got through."""
    from camtrace.notify import AlertSender
    from camtrace.storage.watchlists import WatchStore

    settings = self.app.camtrace_settings
    try:
        return AlertSender(settings, WatchStore(services(settings).db)).deliver(alert_ids).delivered
    except TRANSIENT_ERRORS as exc:
        raise self.retry(exc=exc, countdown=backoff(settings, self.request.retries))


_reindex_encoders: dict = {}  # one loaded encoder per registered model, per worker process


def reindex(self, job_id: str, model_id: int | None, point_ids: list[str]) -> int:
    """Re-embed a batch of stored crops with a registered model into that model's index (promotion)."""
    from camtrace.training.promotion import reindex_batch

    settings = self.app.camtrace_settings
    try:
        return reindex_batch(services(settings), job_id, model_id, point_ids, _reindex_encoders)
    except Exception as exc:
        if isinstance(exc, TRANSIENT_ERRORS) and self.request.retries < self.max_retries:
            raise self.retry(exc=exc, countdown=backoff(settings, self.request.retries)) from exc
        # Counted as failed, so the promotion following the job stops instead of waiting forever.
        services(settings).db.increment_job(job_id, segments_failed=1)
        services(settings).db.update_job(job_id, error=f"re-index batch failed: {exc}")
        raise


def train(self, request: dict | None = None) -> int | None:
    """Beat (no request): train when enough new data has arrived. On demand: train as asked.

    Returns the registered model's id, or None when the schedule found nothing to do.
    """
    from camtrace.training.schedule import TrainRequest, maybe_train, run_training
    from camtrace.workers.jobs import reindex_runner

    stages = services(self.app.camtrace_settings)
    # A promotion after training re-indexes on the embed workers, like one started at the command line.
    run_elsewhere = reindex_runner(stages)
    if request is None:
        outcome = maybe_train(stages, run_elsewhere=run_elsewhere)
    else:
        outcome = run_training(stages, TrainRequest(**request), run_elsewhere=run_elsewhere)
    return None if outcome is None else outcome.model_id
