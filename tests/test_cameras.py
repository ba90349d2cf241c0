"""Live cameras against a real HTTP MJPEG stream served by the test, which drops and comes back."""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path

from camera_fixtures import mjpeg_camera  # noqa: F401
from click.testing import CliRunner
from distributed_fixtures import camtrace_env, settings_from, wait_for

from camtrace.cli import cli
from camtrace.detection import VideoSource
from camtrace.services import Services
from camtrace.workers.cameras import CameraRecorder, CameraStatus
from camtrace.workers.ops import CameraFleet


class Recorded:
    """What a recorder hands on: segment files and status changes."""

    def __init__(self) -> None:
        self.segments: list[tuple[Path, float]] = []
        self.statuses: list[tuple[str, int]] = []

    def on_segment(self, camera_id: str, path: Path, start_ts: float) -> None:
        self.segments.append((path, start_ts))

    def on_status(self, status: CameraStatus) -> None:
        self.statuses.append((status.status, status.reconnects))


def test_a_dropped_stream_is_reconnected_and_keeps_producing_segments(mjpeg_camera, tmp_path):
    seen = Recorded()
    recorder = CameraRecorder(
        "gate",
        mjpeg_camera.url,
        tmp_path,
        segment_seconds=1.0,
        sample_fps=5.0,
        on_segment=seen.on_segment,
        on_status=seen.on_status,
        backoff_start=0.2,
        backoff_max=1.0,
    )
    stop = threading.Event()
    thread = threading.Thread(target=recorder.run, args=(stop,), daemon=True)
    thread.start()
    try:
        wait_for(lambda: len(seen.segments) >= 2, 30, "two segments before the drop")
        mjpeg_camera.drop(2.0)  # connections close, new ones get 503 for 2 s
        wait_for(lambda: ("offline", 0) in seen.statuses or recorder.status.reconnects > 0, 15, "the drop to be seen")
        before_return = len(seen.segments)
        wait_for(lambda: recorder.status.reconnects >= 2 and recorder.status.status == "online", 30, "a reconnect")
        wait_for(lambda: len(seen.segments) >= before_return + 2, 30, "segments after the reconnect")
    finally:
        stop.set()
        thread.join(timeout=15)
    assert not thread.is_alive()
    assert mjpeg_camera.connections >= 2
    statuses = [status for status, _ in seen.statuses]
    first_offline = statuses.index("offline")
    assert "online" in statuses[:first_offline] and "online" in statuses[first_offline:]
    assert statuses[-1] == "stopped"
    # While the camera answered 503 the recorder backed off and tried again: several reconnects.
    assert recorder.status.reconnects >= 2
    assert "503" in (recorder.status.last_error or "") or "stream" in (recorder.status.last_error or "")

    starts = [start for _, start in seen.segments]
    assert starts == sorted(starts)
    lengths = []
    for path, start_ts in seen.segments:
        assert path.exists() and path.parent == tmp_path / "gate"
        with VideoSource(str(path), start_ts=start_ts) as video:
            frames = list(video.frames(sample_fps=5.0))
        assert frames, path  # each file is a whole, decodable video, even one cut short by the drop
        assert abs(frames[0].ts - start_ts) < 1e-3
        lengths.append(len(frames))
    assert sum(length >= 4 for length in lengths) >= 3  # full segments: about 1 s at 5 fps


def test_a_dead_url_backs_off_exponentially_and_reports_offline(tmp_path):
    seen = Recorded()
    recorder = CameraRecorder(
        "void",
        "http://127.0.0.1:9/stream.mjpg",
        tmp_path,
        1.0,
        5.0,
        seen.on_segment,
        seen.on_status,
        backoff_start=0.1,
        backoff_max=0.8,
    )
    stop = threading.Event()
    thread = threading.Thread(target=recorder.run, args=(stop,), daemon=True)
    started = time.monotonic()
    thread.start()
    wait_for(lambda: recorder.status.reconnects >= 4, 30, "four reconnect attempts")
    elapsed = time.monotonic() - started
    stop.set()
    thread.join(timeout=15)
    # Waits of 0.1 + 0.2 + 0.4 + 0.8 s between the five attempts: the delay doubles.
    assert elapsed >= 1.4
    assert seen.segments == []
    assert {status for status, _ in seen.statuses} == {"offline", "stopped"}
    assert "cannot open stream http://127.0.0.1:9/stream.mjpg" in recorder.status.last_error


def test_camera_commands_and_the_recording_service(mjpeg_camera, tmp_path, tiny_yolo_dir, tiny_siglip_dir):
    """`camera add/list/remove` in SQL, and the service that records, reconnects and ingests (local mode)."""
    env = camtrace_env(tmp_path / "data", tiny_yolo_dir, tiny_siglip_dir, CAMTRACE_LIVE_SEGMENT_SECONDS="1.5")
    runner = CliRunner()

    def camtrace(*args: str, code: int = 0):
        result = runner.invoke(cli, list(args), env=env)
        assert result.exit_code == code, result.output
        return result

    camtrace("camera", "add", "gate", mjpeg_camera.url)
    (row,) = json.loads(camtrace("camera", "list", "--json").stdout)
    assert row["id"] == "gate" and row["url"] == mjpeg_camera.url and row["reconnects"] == 0

    services = Services(settings_from(env))
    fleet = CameraFleet(services, poll_seconds=0.3)
    stop = threading.Event()
    runner_thread = threading.Thread(target=fleet.run, kwargs={"stop": stop}, daemon=True)
    runner_thread.start()
    try:
        wait_for(lambda: services.db.counts()["videos"] >= 2, 60, "two ingested segments")
        mjpeg_camera.drop(1.0)
        wait_for(lambda: services.db.list_cameras()[0].reconnects >= 1, 30, "the reconnect in SQL")
        videos_at_reconnect = services.db.counts()["videos"]
        wait_for(lambda: services.db.counts()["videos"] >= videos_at_reconnect + 1, 60, "a segment after the reconnect")
        (camera,) = services.db.list_cameras()
        assert camera.status == "online"
        assert time.time() - camera.last_frame_at < 10

        listed = camtrace("camera", "list").output
        assert "gate" in listed and "online" in listed and mjpeg_camera.url in listed

        camtrace("camera", "remove", "gate")
        wait_for(lambda: "gate" not in fleet.recorders, 15, "the service to stop the removed camera")
        connections = mjpeg_camera.connections
        time.sleep(1.0)
        assert mjpeg_camera.connections == connections  # nothing reads the removed camera any more
    finally:
        stop.set()
        runner_thread.join(timeout=60)
    assert not runner_thread.is_alive()
    (recorder,) = fleet.finished
    assert recorder.segments_written >= 3
    counts = services.db.counts()
    assert counts["videos"] == recorder.segments_written  # every segment became an ingested video
    (row,) = json.loads(camtrace("camera", "list", "--json").stdout)
    assert row["url"] is None and row["reconnects"] >= 1
    services.close()

    missing = camtrace("camera", "remove", "nowhere", code=2)
    assert "nowhere" in missing.output


def test_segments_recorded_while_the_broker_is_away_are_queued_once_it_is_back(
    mjpeg_camera, tmp_path, tiny_yolo_dir, tiny_siglip_dir
):
    """Recording never waits for the broker; nothing recorded during the outage is lost, even across a restart."""
    from distributed_fixtures import RedisServer
    from sqlalchemy import select
    from sqlalchemy.orm import Session

    from camtrace.storage.sql import Job
    from camtrace.workers.cameras import parse_segment_file_name

    redis = RedisServer(tmp_path / "redis")  # not started yet: the broker is away
    env = camtrace_env(tmp_path / "data", tiny_yolo_dir, tiny_siglip_dir, redis.url, CAMTRACE_LIVE_SEGMENT_SECONDS="1")
    services = Services(settings_from(env))
    services.db.ensure_camera("gate", url=mjpeg_camera.url)

    def run_fleet():
        fleet = CameraFleet(services, poll_seconds=0.3, drain_seconds=2)
        stop = threading.Event()
        thread = threading.Thread(target=fleet.run, kwargs={"stop": stop}, daemon=True)
        thread.start()
        return fleet, stop, thread

    fleet, stop, thread = run_fleet()
    wait_for(lambda: fleet.recorders and fleet.recorders["gate"][0].segments_written >= 3, 30, "segments while away")
    assert fleet.handed_on == 0
    (camera,) = services.db.list_cameras()
    assert camera.status == "online"  # recording went on regardless
    stop.set()  # a restart during the outage: the files stay on disk
    thread.join(timeout=60)
    recorded = sorted(services.settings.recordings_dir.glob("gate/*.mp4"))
    assert len(recorded) >= 3 and all(parse_segment_file_name(path)[0] == "gate" for path in recorded)

    redis.start()
    try:
        fleet, stop, thread = run_fleet()
        wait_for(lambda: fleet.handed_on >= len(recorded) + 2, 60, "the backlog and new segments to be queued")
        stop.set()
        thread.join(timeout=60)
        import redis as redis_client

        queued = redis_client.Redis.from_url(redis.url).llen("ingest")
        with Session(services.db.engine) as session:
            jobs = list(session.scalars(select(Job)))
        live_jobs = [job for job in jobs if job.status == "queued"]
        assert queued == len(live_jobs) == fleet.handed_on  # one task per segment, each with its job
        queued_sources = {job.source for job in live_jobs}
        assert {str(path) for path in recorded} <= queued_sources  # the backlog, none lost
        assert len(queued_sources) == len(live_jobs)  # and none twice
    finally:
        redis.stop()
        services.close()
