"""The Celery application, configured from settings.

Queues: ``ingest`` (split sources into segments, CPU), ``detect`` (decode, detect,
track, select; CPU or GPU), ``embed`` (encode and index; GPU), ``train``. Each
queue has its own exchange and routing key, and tasks are routed by name.

Two brokers: Redis (the simple default; a task whose worker died comes back
after the visibility timeout) and RabbitMQ (quorum queues; a dead worker's
unacknowledged tasks come back as soon as its connection closes).
"""

from __future__ import annotations

import os

from celery import Celery
from kombu import Exchange, Queue

from camtrace.settings import Settings

QUEUES = ("ingest", "detect", "embed", "train")

TASK_ROUTES = {
    "camtrace.ingest": "ingest",
    "camtrace.detect": "detect",
    "camtrace.embed": "embed",
    "camtrace.train": "train",
    "camtrace.reindex": "embed",  # re-embedding stored crops for a new model runs on the embed (GPU) workers
    "camtrace.retention": "ingest",
    "camtrace.learn_evidence": "ingest",  # CPU work over the index and SQL: no model runs
    "camtrace.maintain_index": "ingest",  # the embedded index's bounded indexing step
    "camtrace.deliver_alerts": "ingest",  # watchlist alerts waiting for MQTT or a webhook
}


def beat_schedule(settings: Settings) -> dict:
    """Periodic work run by `camtrace beat`, from settings.

    The one place periodic tasks are registered: the identity evidence every
    CAMTRACE_EVIDENCE_LEARN_MINUTES; the embedded index's maintenance every CAMTRACE_INDEX_MAINTAIN_SECONDS;
    retention hourly when CAMTRACE_RETENTION_DAYS is set; the training schedule adds its
    ``camtrace.train`` entry here (the ``train`` queue and route exist already).
    """
    schedule: dict = {
        # Camera links and the same-person calibration follow new footage (skipped when no track is new).
        "learn_evidence": {"task": "camtrace.learn_evidence", "schedule": 60.0 * settings.evidence_learn_minutes},
    }
    if not settings.qdrant_url and settings.index_maintain_seconds > 0:
        # The embedded index indexes newly written points in bounded steps, off the ingest and search paths.
        schedule["maintain_index"] = {"task": "camtrace.maintain_index", "schedule": settings.index_maintain_seconds}
    if settings.mqtt_url or settings.webhook_urls.strip():
        # Alert deliveries that failed (broker or receiver down) are tried again until they get through.
        schedule["deliver_alerts"] = {"task": "camtrace.deliver_alerts", "schedule": float(settings.alert_delivery_seconds)}
    if settings.retention_days:
        schedule["retention"] = {"task": "camtrace.retention", "schedule": 3600.0}
    if settings.train_interval_seconds:
        # The worker decides whether enough new data has arrived (training/schedule.py).
        schedule["train"] = {"task": "camtrace.train", "schedule": float(settings.train_interval_seconds)}
    return schedule


def redis_transport_options(visibility_timeout: int) -> dict:
    """Redelivery of tasks whose worker died: after ``visibility_timeout``, swept often enough to matter.

    kombu sweeps the unacknowledged set every interval x throttle seconds
    (100 s by default), which would leave a lost task waiting far longer than
    the timeout itself; a sweep is one cheap sorted-set query.
    """
    return {
        "visibility_timeout": visibility_timeout,
        "unacked_restore_interval": max(1.0, min(10.0, visibility_timeout / 5)),
        "unacked_restore_throttle": 1,
    }


def task_queues(settings: Settings) -> list[Queue]:
    """One queue per stage, each with an exchange of its own.

    On RabbitMQ the queues are quorum queues (replicated, and Celery then uses
    per-consumer prefetch as they require) and the exchanges are topic
    exchanges: Celery's native delayed delivery, which carries retries with a
    countdown through the broker instead of holding them in a worker, binds
    only non-direct exchanges. A topic exchange with the queue's name as
    routing key routes exactly like a direct one.
    """
    if settings.broker_kind == "rabbitmq":
        arguments = {"x-queue-type": settings.rabbitmq_queue_type}
        return [Queue(name, Exchange(name, type="topic"), routing_key=name, queue_arguments=arguments) for name in QUEUES]
    return [Queue(name, Exchange(name, type="direct"), routing_key=name) for name in QUEUES]


def broker_options(settings: Settings) -> dict:
    """The Celery settings that differ between Redis and RabbitMQ."""
    if settings.broker_kind == "rabbitmq":
        return {
            # A publish returns once the broker has the message (quorum queues want confirms).
            "broker_transport_options": {"confirm_publish": True},
            # A worker whose host vanished (no closed socket to tell) is noticed within two beats.
            "broker_heartbeat": 30,
            "worker_detect_quorum_queues": True,
            "task_default_exchange_type": "topic",
        }
    timeout = settings.effective_visibility_timeout
    return {
        "broker_transport_options": redis_transport_options(timeout),
        "result_backend_transport_options": {"visibility_timeout": timeout},
    }


def make_celery(settings: Settings) -> Celery:
    """A Celery app configured from ``settings``, with no task on it (senders send by name; the workers'
    app, tasks included, is ``tasks.create_app``)."""
    if not settings.broker_url:
        from camtrace.errors import ConfigError

        raise ConfigError(
            "distributed mode needs a broker: set CAMTRACE_BROKER_URL (for example redis://127.0.0.1:6379/0 "
            "or amqp://guest:guest@127.0.0.1:5672//)"
        )
    # Progress lives in SQL and no task reads a result: RabbitMQ gets no result backend.
    backend = settings.result_backend or (settings.broker_url if settings.broker_kind == "redis" else None)
    app = Celery("camtrace", broker=settings.broker_url, backend=backend)
    app.conf.update(
        task_queues=task_queues(settings),
        task_routes={task: {"queue": queue, "routing_key": queue} for task, queue in TASK_ROUTES.items()},
        task_default_queue="ingest",
        task_default_exchange="ingest",
        task_default_routing_key="ingest",
        task_serializer="json",
        accept_content=["json"],
        result_serializer="json",
        task_ignore_result=True,
        # Long tasks: acknowledge after the work is done, hand a task back when
        # its worker dies, and take one message at a time.
        task_acks_late=True,
        task_reject_on_worker_lost=True,
        worker_prefetch_multiplier=1,
        broker_connection_retry_on_startup=True,
        broker_connection_max_retries=None,
        # A task that sends follow-up tasks keeps trying while the broker is away.
        task_publish_retry=True,
        task_publish_retry_policy={"max_retries": 60, "interval_start": 0.5, "interval_step": 1.0, "interval_max": 5.0},
        worker_send_task_events=False,
        worker_hijack_root_logger=False,
        timezone="UTC",
        **broker_options(settings),
    )
    app.conf.beat_schedule = beat_schedule(settings)
    app.camtrace_settings = settings
    return app


def declare_queues(app: Celery) -> None:
    """Declare every camtrace queue with its exchange and binding (waits for the broker)."""
    with app.connection_for_write() as connection:
        connection.ensure_connection(max_retries=None, interval_start=1, interval_step=1, interval_max=5)
        channel = connection.default_channel
        for queue in app.conf.task_queues:
            queue(channel).declare()


_producers: dict[str, Celery] = {}


def producer(settings: Settings) -> Celery:
    """A Celery app for sending tasks to ``settings.broker_url`` (one per broker, kept for its connection pool)."""
    app = _producers.get(settings.broker_url or "")
    if app is None:
        app = _producers[settings.broker_url or ""] = make_celery(settings)
    return app


def _queues(queues: str) -> list[str]:
    from camtrace.errors import ConfigError

    chosen = [queue.strip() for queue in queues.split(",") if queue.strip()]
    unknown = sorted(set(chosen) - set(QUEUES))
    if unknown or not chosen:
        raise ConfigError(f"unknown queue(s) {', '.join(unknown) or '(none given)'}: choose from {', '.join(QUEUES)}")
    return chosen


def worker_pool(settings: Settings, queues: str, pool: str | None = None) -> str:
    """``pool`` if given; else solo for model-running GPU workers and the embed/train queues, prefork otherwise."""
    chosen = _queues(queues)
    runs_models_on_gpu = settings.device.startswith("cuda") and ("embed" in chosen or "detect" in chosen)
    # CUDA must never be initialised before a fork, and one process per GPU
    # owns its memory: model-running GPU workers and the embed/train queues use solo.
    return pool or ("solo" if runs_models_on_gpu or "embed" in chosen or "train" in chosen else "prefork")


def model_threads(settings: Settings, pool: str, concurrency: int | None = None) -> int:
    """CPU threads per process for the models: the setting, else a prefork worker's cores shared out.

    Celery's prefork default is one process per core; each process's runtimes would otherwise start a
    thread per core, i.e. cores x cores threads fighting over the cores.
    """
    if settings.cpu_threads or pool != "prefork":
        return settings.cpu_threads
    cores = os.cpu_count() or 1
    return max(1, cores // (concurrency or cores))


def worker_argv(
    settings: Settings, queues: str, pool: str | None = None, concurrency: int | None = None, name: str | None = None
) -> list[str]:
    """The `celery worker` arguments for a camtrace worker consuming ``queues`` (comma-separated)."""
    chosen = _queues(queues)
    pool = worker_pool(settings, queues, pool)
    argv = ["worker", "--queues", ",".join(chosen), "--pool", pool, "--loglevel", settings.log_level]
    argv += ["--hostname", name or f"camtrace-{'-'.join(chosen)}@%h"]
    if concurrency or pool == "solo":
        argv += ["--concurrency", str(concurrency or 1)]
    if "embed" in chosen:
        # Batches gathers several embed messages: let it see enough of them.
        argv += ["--prefetch-multiplier", str(max(1, settings.embed_batch_size // 8) * 2)]
    return argv
