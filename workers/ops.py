"""Operations: cluster status (queues, workers, cameras) and the camera recording service."""

from __future__ import annotations

import logging
import queue
import threading
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path

from camtrace.enums import JobStatus
from camtrace.errors import BrokerError, NotFoundError, StorageError
from camtrace.notify import DeliveryThread
from camtrace.services import Services
from camtrace.storage import Database
from camtrace.storage.watchlists import WatchStore
from camtrace.validation import mask_secrets
from camtrace.workers.cameras import CameraRecorder, CameraStatus, parse_segment_file_name, run_recorders
from camtrace.workers.jobs import NOT_QUEUED, submit_ingest

log = logging.getLogger(__name__)


def _iso(ts: float | None) -> str | None:
    return None if ts is None else datetime.fromtimestamp(ts, tz=UTC).isoformat(timespec="seconds")


def camera_rows(db: Database) -> list[dict]:
    return [
        {
            "id": camera.id,
            "url": mask_secrets(camera.url),  # credentials stay in the database, for the recorder only
            "status": camera.status,
            "last_frame": _iso(camera.last_frame_at),
            "reconnects": camera.reconnects,
            "last_error": mask_secrets(camera.last_error),
        }
        for camera in db.list_cameras()
    ]


def queue_depths(broker_url: str, queues: tuple[str, ...]) -> dict[str, int]:
    """Messages waiting per queue (ready, not yet delivered to a worker)."""
    from camtrace.settings import BROKER_SCHEMES

    if BROKER_SCHEMES.get(broker_url.split("://", 1)[0].lower()) == "rabbitmq":
        return rabbitmq_queue_depths(broker_url, queues)
    import redis

    # The Redis transport keeps each queue as a list.
    with redis.Redis.from_url(broker_url, socket_connect_timeout=3, socket_timeout=3) as client:
        return {queue: int(client.llen(queue)) for queue in queues}


def rabbitmq_queue_depths(broker_url: str, queues: tuple[str, ...]) -> dict[str, int]:
    """RabbitMQ: a passive queue.declare answers with the queue's message count (no management plugin needed)."""
    from amqp.exceptions import NotFound
    from kombu import Connection

    depths: dict[str, int] = {}
    with Connection(broker_url, connect_timeout=3) as connection:
        connection.ensure_connection(max_retries=1)
        channel = connection.channel()
        for queue in queues:
            try:
                depths[queue] = int(channel.queue_declare(queue=queue, passive=True).message_count)
            except NotFound:  # no worker has declared it yet: nothing waits in it
                depths[queue] = 0
                channel = connection.channel()  # the broker closes a channel after a failed passive declare
    return depths


def broker_hint(broker_url: str) -> str:
    """What to check when the broker does not answer."""
    from camtrace.settings import BROKER_SCHEMES

    kind = BROKER_SCHEMES.get(broker_url.split("://", 1)[0].lower())
    if kind == "rabbitmq":
        return "is RabbitMQ running, and do the user, password and vhost in CAMTRACE_BROKER_URL exist?"
    return "is Redis running?"


def cluster_status(services: Services) -> dict:
    settings = services.settings
    report: dict = {"mode": "local", "cameras": camera_rows(services.db)}
    if not settings.broker_url:
        return report
    from kombu.utils.url import maybe_sanitize_url

    from camtrace.workers.celery_app import QUEUES, producer

    shown = maybe_sanitize_url(settings.broker_url)  # the password stays out of reports and logs
    report.update(mode="distributed", broker=shown, queues={}, workers={}, broker_error=None)
    try:
        report["queues"] = queue_depths(settings.broker_url, QUEUES)
        app = producer(settings)
        replies = app.control.inspect(timeout=2.0).active_queues() or {}
    except Exception as exc:  # the broker is away: still show the cameras, say what failed
        report["broker_error"] = f"cannot reach the broker {shown}: {exc}; {broker_hint(settings.broker_url)}"
        return report
    report["workers"] = {name: sorted(queue["name"] for queue in queues) for name, queues in replies.items()}
    return report


class CameraFleet:
    """One recorder per camera with a URL, following `camera add`/`camera remove` while it runs.

    Every ``poll_seconds`` the camera table is read again: a new camera (or a new
    URL) starts a recorder, a removed one stops its recorder. Each finished
    segment becomes an ingest: a job for the workers in distributed mode, an
    in-process ingest in local mode. Recorders never wait for that: segments
    go through a hand-off queue, retried with backoff while the broker or the
    database is away, and a segment file that was never handed on (the service
    stopped during an outage) is picked up when the service starts again.
    """

    def __init__(
        self, services: Services, names: tuple[str, ...] = (), poll_seconds: float = 5.0, drain_seconds: float = 30.0
    ) -> None:
        self.services = services
        self.drain_seconds = drain_seconds  # how long a stop waits for queued segments to be handed on
        self.settings = services.settings
        self.db = services.db
        self.names = set(names)
        self.poll_seconds = poll_seconds
        self.recorders: dict[str, tuple[CameraRecorder, threading.Event, threading.Thread]] = {}
        self.finished: list[CameraRecorder] = []  # recorders stopped by a remove or a new URL
        self.handed_on = 0  # segments turned into ingests
        self._outbox: queue.Queue[tuple[str, Path, float] | None] = queue.Queue()
        self._closing = threading.Event()
        self._hand_off_thread: threading.Thread | None = None
        self._alerts: DeliveryThread | None = None  # local mode: sends the alerts of every segment, off the ingest
        known = set(self.db.camera_ids())
        missing = self.names - known
        if missing:
            raise NotFoundError(f"no camera named {', '.join(sorted(missing))}; add one with `camtrace camera add`")

    def on_segment(self, camera_id: str, path: Path, start_ts: float) -> None:
        self._outbox.put((camera_id, path, start_ts))

    def hand_off(self, camera_id: str, path: Path, start_ts: float, job_id: str) -> None:
        if self.settings.broker_url:
            submit_ingest(self.services, str(path), camera_id, start_ts, patient=False, job_id=job_id)
            return
        from camtrace.workers.local import ingest_local

        if self._alerts is None:
            self._alerts = DeliveryThread(self.settings, WatchStore(self.db))
        ingest_local(self.services, str(path), camera_id, start_ts, progress=False, send=self._alerts)

    def _hand_off_loop(self) -> None:
        """Turn queued segments into ingests in order; keep retrying one while its error is transient."""
        while True:
            item = self._outbox.get()
            if item is None:
                return
            job_id = str(uuid.uuid4())  # one job per segment, however many tries it takes
            delay = 1.0
            while True:
                try:
                    self.hand_off(*item, job_id=job_id)
                    self.handed_on += 1
                    break
                except (BrokerError, StorageError) as exc:
                    log.warning("segment %s not handed on yet (%s); retrying in %.0f s", item[1], exc, delay)
                    if self._closing.wait(delay):
                        return  # the file stays on disk and is recovered at the next start
                    delay = min(30.0, delay * 2)
                except Exception:  # this segment will not go (a damaged file): the others must
                    log.exception("segment %s of camera %s could not be ingested; skipped", item[1], item[0])
                    break

    def recover(self) -> int:
        """Queue the finished segment files that no job has taken; delete half-written ones."""
        folder = self.settings.recordings_dir
        if not folder.is_dir():
            return 0
        for partial in folder.glob("*/*.part.mp4"):
            partial.unlink(missing_ok=True)  # cut off by a crash mid-segment: it does not decode
        found = {path: parse_segment_file_name(path) for path in sorted(folder.glob("*/*.mp4"))}
        found = {path: parsed for path, parsed in found.items() if parsed is not None}
        taken = {
            job.source
            for job in self.db.jobs_for_sources([str(path) for path in found])
            if not (job.status == JobStatus.FAILED and (job.error or "").startswith(NOT_QUEUED))
        }
        pending = [(path, parsed) for path, parsed in found.items() if str(path) not in taken]
        for path, (camera_id, start_ts) in pending:
            self.on_segment(camera_id, path, start_ts)
        if pending:
            log.info("recovered %d recorded segment(s) that were never ingested", len(pending))
        return len(pending)

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
            camera.id: camera.url for camera in self.db.list_cameras() if camera.url and (not self.names or camera.id in self.names)
        }
        for camera_id in list(self.recorders):
            recorder, _, _ = self.recorders[camera_id]
            if wanted.get(camera_id) != recorder.url:
                log.info("camera %s removed or re-pointed: stopping its recorder", camera_id)
                self._stop(camera_id)
        for camera_id, url in wanted.items():
            if camera_id not in self.recorders:
                log.info("recording camera %s from %s", camera_id, mask_secrets(url))
                self._start(camera_id, url)

    def _start(self, camera_id: str, url: str) -> None:
        recorder = CameraRecorder(
            camera_id,
            url,
            self.settings.recordings_dir,
            self.settings.live_segment_length,
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
        self._hand_off_thread = threading.Thread(target=self._hand_off_loop, name="camera-hand-off", daemon=True)
        self._hand_off_thread.start()
        try:
            self.recover()
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
        """Stop every recorder (each finishes its segment), then hand on what is queued, for a while."""
        for camera_id in list(self.recorders):
            self._stop(camera_id)
        if self._hand_off_thread is not None:
            self._outbox.put(None)
            self._hand_off_thread.join(timeout=self.drain_seconds)
            self._closing.set()  # an outage outlasted the drain: the files wait for the next start
            self._hand_off_thread.join(timeout=5)
        if self._alerts is not None:
            self._alerts.flush(self.drain_seconds)  # what is still pending then waits for the next delivery pass
