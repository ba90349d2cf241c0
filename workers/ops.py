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

    with redis.Redis.from_url(broker_url, socket_connect_timeout=3, socket_timeout=3) as client:
        return {queue: int(client.llen(queue)) for queue in queues}


def cluster_status(services: Services) -> dict:
    settings = services.settings
    report: dict = {"mode": "local", "cameras": camera_rows(services.db)}
    if not settings.broker_url:
        return report
    from camtrace.workers.celery_app import QUEUES, producer

    report.update(mode="distributed", broker=settings.broker_url, queues={}, workers={}, broker_error=None)
    try:
        report["queues"] = queue_depths(settings.broker_url, QUEUES)
        app = producer(settings)
        replies = app.control.inspect(timeout=2.0).active_queues() or {}
    except Exception as exc:  # the broker is away: still show the cameras, say what failed
        report["broker_error"] = f"cannot reach the broker {settings.broker_url}: {exc}; is Redis running?"
        return report
    report["workers"] = {name: sorted(queue["name"] for queue in queues) for name, queues in replies.items()}
    return report


class CameraFleet:
    """One recorder per camera with a URL, following `camera add`/`camera remove` while it runs.

    Every ``poll_seconds`` the camera table is read again: a new camera (or a new
    URL) starts a recorder, a removed one stops its recorder. Each finished
    segment becomes an ingest: a job for the workers in distributed mode, an
    in-process ingest in local mode.
    """

    def __init__(self, services: Services, names: tuple[str, ...] = (), poll_seconds: float = 5.0) -> None:
        self.services = services
        self.settings = services.settings
        self.db = services.db
        self.names = set(names)
        self.poll_seconds = poll_seconds
        self.recorders: dict[str, tuple[CameraRecorder, threading.Event, threading.Thread]] = {}
        self.finished: list[CameraRecorder] = []  # recorders stopped by a remove or a new URL
        self._ingest_lock = threading.Lock()  # local mode ingests one segment at a time
        known = set(self.db.camera_ids())
        missing = self.names - known
        if missing:
            raise NotFoundError(f"no camera named {', '.join(sorted(missing))}; add one with `camtrace camera add`")

    def on_segment(self, camera_id: str, path: Path, start_ts: float) -> None:
        if self.settings.broker_url:
            from camtrace.workers.jobs import submit_ingest

            submit_ingest(self.services, str(path), camera_id, start_ts)
            return
        from camtrace.workers.local import ingest_local

        with self._ingest_lock:
            ingest_local(self.services, str(path), camera_id, start_ts, progress=False)

    def on_status(self, status: CameraStatus) -> None:
        self.db.update_camera(
            status.camera_id,
            status=status.status,
            last_frame_at=status.last_frame_at,
            reconnects=status.reconnects,
            last_error=status.last_error,
        )

    def sync(self) -> None:
        """Start recorders for cameras that appeared, stop those whose URL went or changed."""
        wanted = {
            camera.id: camera.url
            for camera in self.db.list_cameras()
            if camera.url and (not self.names or camera.id in self.names)
        }
        for camera_id in list(self.recorders):
            recorder, _, _ = self.recorders[camera_id]
            if wanted.get(camera_id) != recorder.url:
                log.info("camera %s removed or re-pointed: stopping its recorder", camera_id)
                self._stop(camera_id)
        for camera_id, url in wanted.items():
            if camera_id not in self.recorders:
                log.info("recording camera %s from %s", camera_id, url)
                self._start(camera_id, url)

    def _start(self, camera_id: str, url: str) -> None:
        recorder = CameraRecorder(
            camera_id,
            url,
            self.settings.recordings_dir,
            self.settings.segment_seconds,
            self.settings.sample_fps,
            self.on_segment,
            self.on_status,
            backoff_max=self.settings.camera_backoff_max,
        )
        stop = threading.Event()
        (thread,) = run_recorders([recorder], stop)
        self.recorders[camera_id] = (recorder, stop, thread)

    def _stop(self, camera_id: str) -> None:
        recorder, stop, thread = self.recorders.pop(camera_id)
        stop.set()
        thread.join(timeout=30)
        self.finished.append(recorder)

    def run(self, seconds: float | None = None, stop: threading.Event | None = None) -> None:
        """Record until interrupted, ``stop`` is set, or ``seconds`` have passed."""
        stop = stop or threading.Event()
        deadline = None if seconds is None else time.monotonic() + seconds
        try:
            while not stop.is_set():
                self.sync()
                wait = self.poll_seconds
                if deadline is not None:
                    wait = min(wait, deadline - time.monotonic())
                    if wait <= 0:
                        break
                stop.wait(wait)
        except KeyboardInterrupt:
            pass
        finally:
            self.close()

    def close(self) -> None:
        for camera_id in list(self.recorders):
            self._stop(camera_id)
