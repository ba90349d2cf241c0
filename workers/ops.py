"""Operations: cluster status (queues, workers, cameras) and the camera recording service."""

from __future__ import annotations

import logging
import threading
import time
from datetime import datetime, timezone
from pathlib import Path

from camtrace.errors import NotFoundError
from camtrace.services import Services
from camtrace.storage import Database
from camtrace.workers.cameras import CameraRecorder, CameraStatus, run_recorders

log = logging.getLogger(__name__)


def _iso(ts: float | None) -> str | None:
    return None if ts is None else datetime.fromtimestamp(ts, tz=timezone.utc).isoformat(timespec="seconds")


def camera_rows(db: Database) -> list[dict]:
    return [
        {
            "id": camera.id,
            "url": camera.url,
            "status": camera.status,
            "last_frame": _iso(camera.last_frame_at),
            "reconnects": camera.reconnects,
            "last_error": camera.last_error,
        }
        for camera in db.list_cameras()
    ]


def queue_depths(broker_url: str, queues: tuple[str, ...]) -> dict[str, int]:
    """Messages waiting per queue (the Redis transport keeps each queue as a list)."""
    import redis

    client = redis.Redis.from_url(broker_url, socket_connect_timeout=3)
    return {queue: int(client.llen(queue)) for queue in queues}


def cluster_status(services: Services) -> dict:
    settings = services.settings
    report: dict = {"mode": "local", "cameras": camera_rows(services.db)}
    if not settings.broker_url:
        return report
    from camtrace.workers.celery_app import QUEUES, make_celery

    app = make_celery(settings)
    report.update(mode="distributed", broker=settings.broker_url, queues=queue_depths(settings.broker_url, QUEUES))
    replies = app.control.inspect(timeout=2.0).active_queues() or {}
    report["workers"] = {name: sorted(queue["name"] for queue in queues) for name, queues in replies.items()}
    return report


def run_cameras(services: Services, names: tuple[str, ...] = (), seconds: float | None = None) -> list[CameraRecorder]:
    """Record the cameras until interrupted (or for ``seconds``); each segment becomes an ingest."""
    settings = services.settings
    db = services.db
    cameras = [camera for camera in db.list_cameras() if camera.url and (not names or camera.id in names)]
    missing = set(names) - {camera.id for camera in cameras}
    if missing:
        raise NotFoundError(f"no camera with a URL named {', '.join(sorted(missing))}; add one with `camtrace camera add`")
    lock = threading.Lock()  # local mode ingests one segment at a time in this process

    def on_segment(camera_id: str, path: Path, start_ts: float) -> None:
        if settings.broker_url:
            from camtrace.workers.jobs import submit_ingest

            submit_ingest(db, str(path), camera_id, start_ts)
            return
        from camtrace.workers.local import ingest_local

        with lock:
            ingest_local(services, str(path), camera_id, start_ts, progress=False)

    def on_status(status: CameraStatus) -> None:
        db.update_camera_status(
            status.camera_id,
            status=status.status,
            last_frame_at=status.last_frame_at,
            reconnects=status.reconnects,
            last_error=status.last_error,
        )

    recorders = [
        CameraRecorder(
            camera.id,
            camera.url,
            settings.resolved_data_dir / "segments",
            settings.segment_seconds,
            settings.sample_fps,
            on_segment,
            on_status,
            backoff_max=settings.camera_backoff_max,
        )
        for camera in cameras
    ]
    stop = threading.Event()
    threads = run_recorders(recorders, stop)
    try:
        deadline = None if seconds is None else time.monotonic() + seconds
        while any(thread.is_alive() for thread in threads):
            if deadline is not None and time.monotonic() >= deadline:
                break
            time.sleep(0.2)
    except KeyboardInterrupt:
        pass
    finally:
        stop.set()
        for thread in threads:
            thread.join(timeout=30)
    return recorders
