"""Distributed mode on real brokers and real `camtrace worker` processes.

Each test has a broker of its own - a Redis server (append-only, so it can be
stopped and started again), or for the cases marked ``BOTH_BROKERS`` also a
vhost on the machine's RabbitMQ - and worker processes, runs jobs on synthetic
footage and compares the index with what local mode produces for the same input.
Settings are the defaults the workers derive (no visibility timeout is set) with
4 s segments, which makes Redis's derived bound short.
"""

from __future__ import annotations

import json
import time
from datetime import UTC, datetime, timezone
from pathlib import Path

import cv2
import numpy as np
import pytest
from distributed_fixtures import (  # noqa: F401
    Worker,
    broker,
    camtrace_env,
    free_port,
    redis_server,
    run_cli,
    settings_from,
    wait_for,
    wait_jobs,
)
from storage_fixtures import postgres_url  # noqa: F401

from camtrace.services import Services
from camtrace.storage import Database
from camtrace.workers.celery_app import redis_transport_options
from camtrace.workers.jobs import current_job
from camtrace.workers.local import ingest_local


def iso(ts: float) -> str:
    return datetime.fromtimestamp(ts, tz=UTC).isoformat()


def snapshot(env: dict) -> dict[str, tuple[dict, np.ndarray]]:
    """Every indexed point of a data dir: id -> (payload, vector)."""
    settings = settings_from({k: v for k, v in env.items() if k != "CAMTRACE_BROKER_URL"})
    services = Services(settings)
    try:
        with Session(services.db) as session:
            ids = sorted(session.point_ids())
        points = services.index.retrieve(ids)
        return {point.id: (point.payload, np.asarray(point.vector)) for point in points}
    finally:
        services.close()


class Session:
    """Reads the detections table (the SQL twin of the index)."""

    def __init__(self, db: Database) -> None:
        from sqlalchemy.orm import Session as OrmSession

        self.session = OrmSession(db.engine)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.session.close()

    def point_ids(self) -> list[str]:
        from camtrace.storage.sql import Detection

        return [row.point_id for row in self.session.query(Detection)]


BOTH_BROKERS = pytest.mark.parametrize("broker", ["redis", "rabbitmq"], indirect=True)


_references: dict[tuple, tuple[dict, list]] = {}


def local_reference(
    tmp_path: Path, yolo: Path, siglip: Path, sources: dict[str, tuple[Path, float]], summaries: list | None = None
):
    """What local mode indexes for ``sources`` (computed once per run for the same files and models)."""
    key = (yolo, siglip, tuple(sorted((camera, str(path), ts) for camera, (path, ts) in sources.items())))
    if key not in _references:
        env = camtrace_env(tmp_path / "local-data", yolo, siglip)
        services = Services(settings_from(env))
        done = []
        try:
            for camera_id, (path, start_ts) in sources.items():
                done.append(ingest_local(services, str(path), camera_id, start_ts, progress=False))
        finally:
            services.close()
        _references[key] = (snapshot(env), done)
    reference, done = _references[key]
    if summaries is not None:
        summaries.extend(done)
    return reference


def submit(env: dict, path: Path, camera_id: str, start_ts: float) -> str:
    proc = run_cli(env, "ingest", str(path), "--camera", camera_id, "--start", iso(start_ts), "--json")
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout)["job_id"]


def assert_same_index(distributed: dict, local: dict) -> None:
    assert distributed.keys() == local.keys(), "point ids differ between distributed and local mode"
    for pid, (payload, vector) in local.items():
        other_payload, other_vector = distributed[pid]
        assert other_payload == payload, pid
        np.testing.assert_allclose(other_vector, vector, atol=1e-5)


@pytest.fixture
def workers(tmp_path, broker, tiny_yolo_dir, tiny_siglip_dir):
    """Start workers on demand; all are stopped at the end of the test."""
    env = camtrace_env(tmp_path / "data", tiny_yolo_dir, tiny_siglip_dir, broker.url)
    prepared = run_cli(env, "prepare")  # weights fetched and exports built before any task runs
    assert prepared.returncode == 0, prepared.stderr
    assert "onnx" in prepared.stdout and "320 px" in prepared.stdout
    started: list[Worker] = []

    def start(queues: str, *extra: str, **env_extra: str) -> Worker:
        worker = Worker(queues, {**env, **env_extra}, tmp_path / f"worker-{len(started)}.log", *extra)
        started.append(worker)
        return worker

    start.env = env
    yield start
    for worker in started:
        worker.stop()


@BOTH_BROKERS
def test_distributed_index_equals_local_mode(workers, tmp_path, footage, tiny_yolo_dir, tiny_siglip_dir):
    detect_metrics, embed_metrics = free_port(), free_port()
    workers("ingest,detect", "--concurrency", "2", CAMTRACE_METRICS_PORT=str(detect_metrics))
    workers("embed", CAMTRACE_METRICS_PORT=str(embed_metrics))
    env = workers.env
    *queued, (last_camera, last_path) = footage.videos.items()
    job_ids = [submit(env, path, camera, footage.start_ts[camera]) for camera, path in queued]
    # The last one the way an operator follows a job: --wait shows a progress bar and ends with the job.
    followed = run_cli(
        env, "ingest", str(last_path), "--camera", last_camera, "--start", iso(footage.start_ts[last_camera]), "--wait", "--json"
    )
    assert followed.returncode == 0, followed.stderr
    final = json.loads(followed.stdout)
    assert final["status"] == "done" and final["segments_done"] == final["segments_total"] > 0
    assert "segment" in followed.stderr and f"{final['segments_total']}/{final['segments_total']}" in followed.stderr
    job_ids.append(final["id"])
    jobs = wait_jobs(env, job_ids)
    assert all(job.status == "done" and job.segments_failed == 0 for job in jobs), [job.error for job in jobs]
    assert all(job.segments_done == job.segments_total > 0 for job in jobs)

    summaries: list = []
    reference = local_reference(
        tmp_path,
        tiny_yolo_dir,
        tiny_siglip_dir,
        {camera: (path, footage.start_ts[camera]) for camera, path in footage.videos.items()},
        summaries,
    )
    distributed = snapshot(env)
    assert len(reference) > 0
    assert sum(job.crops_indexed for job in jobs) == len(distributed)
    assert_same_index(distributed, reference)
    # The jobs count each segment once, however often it was delivered: the frames local mode decoded.
    frames = sum(job.frames for job in jobs)
    assert frames == sum(summary.frames for summary in summaries) > 0

    # Prometheus counts work done, which a redelivered task (a worker that seemed lost) does twice:
    # at least the jobs' own figures. The prefork worker adds up its children.
    segments = sum(job.segments_total for job in jobs)
    detect_scrape = scrape(detect_metrics)
    assert detect_scrape["camtrace_frames_total"] >= frames
    assert detect_scrape['camtrace_task_seconds_count{task="detect"}'] >= segments
    embed_scrape = scrape(embed_metrics)
    assert embed_scrape["camtrace_crops_total"] >= len(distributed)
    assert embed_scrape["camtrace_embed_batch_crops_sum"] >= len(distributed)
    assert {embed_scrape[f'camtrace_queue_depth{{queue="{queue}"}}'] for queue in ("ingest", "detect", "embed")} == {0}
    # Messages were gathered: fewer batches than embed messages.
    assert embed_scrape["camtrace_embed_batch_crops_count"] < segments

    # The operator's view of the same jobs.
    listed = json.loads(run_cli(env, "jobs", "--json").stdout)
    assert {row["id"] for row in listed} >= set(job_ids)
    status = json.loads(run_cli(env, "status", "--json").stdout)
    assert set(status["queues"]) == {"ingest", "detect", "embed", "train"}
    assert any("embed" in queues for queues in status["workers"].values())


def scrape(port: int) -> dict[str, float]:
    """A worker's /metrics page as {sample name with labels: value}."""
    import urllib.request

    from prometheus_client.parser import text_string_to_metric_families

    text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10).read().decode()
    samples = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            labels = ",".join(f'{k}="{v}"' for k, v in sorted(sample.labels.items()) if k != "pid")
            samples[sample.name + (f"{{{labels}}}" if labels else "")] = sample.value
    return samples


@pytest.fixture(scope="session")
def long_footage(session_dir: Path):
    """One camera, 24 s: six 4 s segments."""
    from camtrace.synthetic import generate_footage

    return generate_footage(session_dir / "long", cameras=1, identities=4, seconds=24.0, fps=10, seed=11)


def segment_rows(db: Database, job_id: str, *conditions):
    from sqlalchemy import select

    from camtrace.storage.sql import Segment

    with db.engine.connect() as conn:
        return conn.execute(select(Segment.id, Segment.status, Segment.attempts).where(Segment.job_id == job_id, *conditions)).all()


@BOTH_BROKERS
def test_a_worker_killed_mid_segment_loses_and_duplicates_nothing(
    workers, broker, tmp_path, long_footage, tiny_yolo_dir, tiny_siglip_dir
):
    """Default settings. RabbitMQ hands the dead worker's task back as its connection closes, so a new
    worker has it at once; Redis hands it back after the derived visibility timeout (here 72 s, from
    the tests' 4 s segments), found by a sweep every 10 s."""
    from camtrace.storage.sql import Segment

    footage = long_footage
    ((camera, path),) = footage.videos.items()
    env = workers.env
    settings = settings_from(env)
    assert settings.visibility_timeout is None  # the derived bound is under test
    detector = workers("ingest,detect", "--concurrency", "1")
    workers("embed")
    job_id = submit(env, path, camera, footage.start_ts[camera])
    db = Database(settings.sql_url)

    def a_segment_in_flight():
        rows = segment_rows(db, job_id, Segment.status == "pending", Segment.attempts > 0)
        return rows[0] if rows else None

    lost = wait_for(a_segment_in_flight, 120, "a segment to start", interval=0.02)
    detector.kill()  # SIGKILL to the whole worker: no chance to hand the task back
    killed_at = time.monotonic()
    assert current_job(db, job_id).status == "running"
    workers("ingest,detect", "--concurrency", "1")  # a new worker

    def delivered_again():
        (row,) = segment_rows(db, job_id, Segment.id == lost.id)
        return row.attempts > lost.attempts or row.status != "pending"

    # The new worker's start (imports, first model load) takes seconds to tens of seconds on a busy host.
    if broker.kind == "rabbitmq":
        bound = 60.0  # the task is back in its queue as the dead connection closes
    else:
        sweep = redis_transport_options(settings.effective_visibility_timeout)["unacked_restore_interval"]
        bound = settings.effective_visibility_timeout + sweep + 30
    wait_for(delivered_again, bound - (time.monotonic() - killed_at), "the lost segment to be delivered again")
    (job,) = wait_jobs(env, [job_id])
    assert job.status == "done" and job.segments_failed == 0, job.error
    assert job.segments_done == job.segments_total == 6
    if broker.kind == "rabbitmq":  # the whole job, not only the lost segment, is done within a minute of the kill
        assert time.monotonic() - killed_at < 60.0

    distributed = snapshot(env)
    reference = local_reference(tmp_path, tiny_yolo_dir, tiny_siglip_dir, {camera: (path, footage.start_ts[camera])})
    assert_same_index(distributed, reference)  # no missing and no extra point
    with Session(db) as session:
        ids = session.point_ids()
    assert len(ids) == len(set(ids)) == len(distributed)
    db.close()


@BOTH_BROKERS
def test_the_broker_stopped_during_a_job_loses_nothing(workers, broker, tmp_path, long_footage, tiny_yolo_dir, tiny_siglip_dir):
    """Redis is stopped for a few seconds. RabbitMQ is shared with the machine, so the test's vhost goes
    away instead: its connections are closed by the server and new ones are refused until its
    permissions come back. Either way the detect worker loses its connection mid-segment (RabbitMQ
    requeues its unacknowledged task), keeps trying, and gets back in; the embed worker is started
    during the outage, so it starts against an absent broker and the job cannot end before it."""
    from camtrace.storage.sql import Segment

    footage = long_footage
    ((camera, path),) = footage.videos.items()
    env = workers.env
    detector = workers("ingest,detect", "--concurrency", "1")
    job_id = submit(env, path, camera, footage.start_ts[camera])
    db = Database(settings_from(env).sql_url)
    wait_for(lambda: segment_rows(db, job_id, Segment.attempts > 0), 120, "the first segment", interval=0.05)
    broker.stop()
    down_since = time.monotonic()
    workers("embed")
    # While it is down, the operator's commands say so instead of hanging or tracing back.
    status = run_cli(env, "status")
    assert status.returncode == 1 and "cannot reach the broker" in status.stderr, status.stderr
    refused = run_cli(env, "ingest", str(path), "--camera", "late")
    assert refused.returncode == 2 and "cannot reach the broker" in refused.stderr, refused.stderr
    assert "Traceback" not in refused.stderr
    failed_job = json.loads(run_cli(env, "jobs", "--json").stdout)[0]
    assert failed_job["camera_id"] == "late" and failed_job["status"] == "failed"
    time.sleep(max(0.0, 4 - (time.monotonic() - down_since)))
    assert current_job(db, job_id).status == "running"
    broker.start()
    (job,) = wait_jobs(env, [job_id])
    assert job.status == "done" and job.segments_done == job.segments_total == 6, job.error
    assert "Connection to broker lost" in detector.log.read_text()  # the outage reached the worker
    reference = local_reference(tmp_path, tiny_yolo_dir, tiny_siglip_dir, {camera: (path, footage.start_ts[camera])})
    assert_same_index(snapshot(env), reference)
    db.close()


def test_the_database_away_during_a_job_loses_nothing(
    tmp_path, redis_server, postgres_url, long_footage, tiny_yolo_dir, tiny_siglip_dir
):
    """PostgreSQL, as in production, refuses every connection for a few seconds in the middle of a job."""
    from storage_fixtures import _admin_connection

    footage = long_footage
    ((camera, path),) = footage.videos.items()
    env = camtrace_env(tmp_path / "data", tiny_yolo_dir, tiny_siglip_dir, redis_server.url, CAMTRACE_DATABASE_URL=postgres_url)
    workers = [
        Worker("ingest,detect", env, tmp_path / "detect.log", "--concurrency", "1"),
        Worker("embed", env, tmp_path / "embed.log"),
    ]
    admin, _ = _admin_connection()
    name = postgres_url.rsplit("/", 1)[1]
    db = Database(postgres_url)
    try:
        job_id = submit(env, path, camera, footage.start_ts[camera])
        wait_for(lambda: current_job(db, job_id).segments_done >= 1, 120, "the first segment")
        admin.execute(f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS false')
        admin.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = %s", (name,))
        time.sleep(5)  # every worker write in this time fails and is retried with backoff
        admin.execute(f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS true')
        (job,) = wait_jobs(env, [job_id])
        assert job.status == "done" and job.segments_done == job.segments_total == 6, job.error
        errors = (tmp_path / "detect.log").read_text() + (tmp_path / "embed.log").read_text()
        assert "not currently accepting connections" in errors or "terminating connection" in errors  # it did fail
        reference = local_reference(tmp_path, tiny_yolo_dir, tiny_siglip_dir, {camera: (path, footage.start_ts[camera])})
        assert_same_index(snapshot(env), reference)
    finally:
        admin.execute(f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS true')
        for worker in workers:
            worker.stop()
        db.close()
        admin.close()


def truncated_copy(source: Path, target: Path, keep: float) -> Path:
    """Re-encode as MJPEG AVI (every frame a key frame), then cut the file: the tail no longer decodes."""
    capture = cv2.VideoCapture(str(source))
    fps = capture.get(cv2.CAP_PROP_FPS)
    writer = None
    while True:
        ok, frame = capture.read()
        if not ok:
            break
        if writer is None:
            height, width = frame.shape[:2]
            writer = cv2.VideoWriter(str(target), cv2.VideoWriter_fourcc(*"MJPG"), fps, (width, height))
        writer.write(frame)
    capture.release()
    writer.release()
    data = target.read_bytes()
    target.write_bytes(data[: int(len(data) * keep)])
    return target


def test_a_corrupt_segment_is_marked_failed_and_the_rest_completes(workers, tmp_path, long_footage):
    footage = long_footage
    ((camera, path),) = footage.videos.items()
    broken = truncated_copy(path, tmp_path / "broken.avi", keep=0.6)  # 24 s: segments 0-2 whole, 3-5 cut
    env = workers.env
    workers("ingest,detect", "--concurrency", "1", CAMTRACE_RETENTION_DAYS="300")  # the footage is older
    workers("embed")
    job_id = submit(env, broken, camera, footage.start_ts[camera])
    (job,) = wait_jobs(env, [job_id])
    assert job.status == "done"
    assert job.segments_total == 6
    assert job.segments_failed >= 1 and job.segments_done >= 3
    assert job.segments_done + job.segments_failed == 6
    assert "broken.avi" in job.error and "frame" in job.error
    db = Database(settings_from(env).sql_url)
    assert db.counts()["detections"] == job.crops_indexed > 0

    # The task beat sends every hour, sent now: everything older than 300 days goes.
    from camtrace.workers.celery_app import beat_schedule, producer

    entry = beat_schedule(settings_from({**env, "CAMTRACE_RETENTION_DAYS": "300"}))["retention"]
    producer(settings_from(env)).send_task(entry["task"], ignore_result=True)
    wait_for(lambda: db.counts()["detections"] == 0, 60, "retention to run on the worker")
    services = Services(settings_from({k: v for k, v in env.items() if k != "CAMTRACE_BROKER_URL"}))
    assert services.index.count() == 0  # the points, not only their SQL rows
    services.close()
    assert db.counts()["videos"] == 0
    db.close()
