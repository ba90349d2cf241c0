"""The Celery application, configured from settings.

Queues: ``ingest`` (split sources into segments, CPU), ``detect`` (decode, detect,
track, select; CPU or GPU), ``embed`` (encode and index; GPU), ``train``. Each
queue has its own direct exchange and routing key, and tasks are routed by name.
"""

from __future__ import annotations

from celery import Celery
from kombu import Exchange, Queue

from camtrace.settings import Settings, load_settings

QUEUES = ("ingest", "detect", "embed", "train")

TASK_ROUTES = {
    "camtrace.ingest": "ingest",
    "camtrace.detect": "detect",
    "camtrace.embed": "embed",
    "camtrace.train": "train",
    "camtrace.retention": "ingest",
}


def make_celery(settings: Settings | None = None) -> Celery:
    settings = settings or load_settings()
    if not settings.broker_url:
        from camtrace.errors import ConfigError

        raise ConfigError("distributed mode needs a broker: set CAMTRACE_BROKER_URL (for example redis://127.0.0.1:6379/0)")
    app = Celery("camtrace", broker=settings.broker_url, backend=settings.result_backend or settings.broker_url)
    app.conf.update(
        task_queues=[Queue(name, Exchange(name, type="direct"), routing_key=name) for name in QUEUES],
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
        broker_transport_options={"visibility_timeout": settings.visibility_timeout},
        result_backend_transport_options={"visibility_timeout": settings.visibility_timeout},
        broker_connection_retry_on_startup=True,
        broker_connection_max_retries=None,
        # A task that sends follow-up tasks keeps trying while the broker is away.
        task_publish_retry=True,
        task_publish_retry_policy={"max_retries": 60, "interval_start": 0.5, "interval_step": 1.0, "interval_max": 5.0},
        worker_send_task_events=False,
        worker_hijack_root_logger=False,
        timezone="UTC",
    )
    if settings.retention_days:
        app.conf.beat_schedule = {
            "retention": {"task": "camtrace.retention", "schedule": 3600.0},
        }
    app.camtrace_settings = settings
    return app
