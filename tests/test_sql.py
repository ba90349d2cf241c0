"""SQL metadata on SQLite (temp file) and on a real PostgreSQL (throwaway database)."""

from __future__ import annotations

import multiprocessing
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import inspect, text
from storage_fixtures import postgres_url, url  # noqa: F401  (fixtures)

import camtrace.storage.access  # noqa: F401  (its tables share Base: the schema comparison needs them)
from camtrace.errors import NotFoundError, StorageError
from camtrace.storage.cases import CaseRow  # noqa: F401 (its tables join Base.metadata)
from camtrace.storage.evidence import IdentityEvidenceRow  # noqa: F401 (its table joins Base.metadata)
from camtrace.storage.sql import Base, Database, alembic_config
from camtrace.storage.watchlists import WatchEntryRow  # noqa: F401 (its tables join Base.metadata)
from camtrace.workers.jobs import refresh_job


@pytest.fixture
def db(url: str):
    database = Database(url)
    database.migrate()
    yield database
    database.close()


@dataclass
class TrackRow:
    id: str
    camera_id: str
    video_id: str
    segment_index: int
    ts_start: float
    ts_end: float
    n_boxes: int
    best_crop_key: str | None = None


def add_video(db: Database, video_id: str = "v1", camera_id: str = "gate") -> None:
    db.upsert_video(video_id, camera_id, f"/footage/{video_id}.mp4", 25.0, 1920, 1080, 1000.0, 1060.0, 1500)


def track_row(track_id: str, n_boxes: int = 10, camera_id: str = "gate") -> dict:
    return {
        "id": track_id,
        "camera_id": camera_id,
        "video_id": "v1",
        "segment_index": 0,
        "ts_start": 1000.0,
        "ts_end": 1004.0,
        "n_boxes": n_boxes,
        "best_crop_key": f"gate/v1/{track_id}.jpg",
    }


def detection_row(point_id: str, track_id: str, **extra) -> dict:
    return {
        "point_id": point_id,
        "track_id": track_id,
        "camera_id": "gate",
        "video_id": "v1",
        "frame_index": 12,
        "ts": 1000.5,
        "bbox": (10.0, 20.0, 60.0, 180.0),
        "det_conf": 0.8,
        "quality": 0.7,
        "crop_key": f"gate/v1/{point_id}.jpg",
        "model_version": "m1",
        **extra,
    }


def test_migrate_twice_and_schema_matches_models(url: str) -> None:
    db = Database(url)
    assert db.revision() is None
    db.migrate()
    db.migrate()
    # Every migration ran: the database is at the newest revision Alembic knows.
    assert db.revision() == ScriptDirectory.from_config(alembic_config(url)).get_current_head()
    with db.engine.connect() as conn:
        # The migration creates exactly what the ORM models describe.
        assert compare_metadata(MigrationContext.configure(conn), Base.metadata) == []
        tables = set(inspect(conn).get_table_names())
    assert {"cameras", "videos", "segments", "segment_parts", "tracks", "detections", "jobs"} <= tables
    db.close()


def test_cameras_upsert_and_update(db: Database) -> None:
    db.ensure_camera("lobby", url="rtsp://10.0.0.5/stream")
    db.ensure_camera("lobby")  # no url: the stored one stays
    db.ensure_camera("gate")
    assert db.camera_ids() == ["gate", "lobby"]
    cameras = {c.id: c for c in db.list_cameras()}
    assert cameras["lobby"].url == "rtsp://10.0.0.5/stream"
    assert cameras["gate"].status == "offline" and cameras["gate"].reconnects == 0

    db.update_camera("gate", status="online", last_frame_at=1234.5, reconnects=2)
    gate = {c.id: c for c in db.list_cameras()}["gate"]
    assert (gate.status, gate.last_frame_at, gate.reconnects) == ("online", 1234.5, 2)
    with pytest.raises(NotFoundError, match="nowhere"):
        db.update_camera("nowhere", status="online")
    assert db.counts()["cameras"] == 2


def test_videos_and_segments(db: Database) -> None:
    add_video(db)  # creates its camera
    first = db.get_video("v1")
    time.sleep(0.01)
    db.upsert_video("v1", "gate", "/footage/v1.mp4", 25.0, 1920, 1080, 1000.0, 1070.0, 1750)
    video = db.get_video("v1")
    assert (video.end_ts, video.frame_count) == (1070.0, 1750)
    assert video.created_at == first.created_at  # the first write's time stays
    assert db.counts() == {"cameras": 1, "videos": 1, "tracks": 0, "detections": 0}
    with pytest.raises(NotFoundError):
        db.get_video("v9")

    sid = db.upsert_segment("v1", 0, 0, 1499, job_id="job-1")
    assert sid == "v1:0"
    db.upsert_segment("v1", 1, 1500, 1749)
    db.mark_segment(sid, "failed", error="decoder crashed")
    db.mark_segment(sid, "done")
    db.upsert_segment("v1", 0, 0, 1499)  # a repeated ingest does not reset a finished segment
    seg = db.list_segments("v1")[0]
    assert (seg.status, seg.error, seg.job_id) == ("done", None, "job-1")
    assert [s.id for s in db.list_segments("v1", status="pending")] == ["v1:1"]
    with pytest.raises(StorageError, match="not one of pending, done, failed"):
        db.mark_segment(sid, "finished")
    with pytest.raises(NotFoundError, match="v1:7"):
        db.mark_segment("v1:7", "done")


def test_tracks_and_detections_are_idempotent(db: Database) -> None:
    add_video(db)
    assert db.upsert_tracks([track_row("v1:0:1"), TrackRow("v1:0:2", "gate", "v1", 0, 1001.0, 1003.0, 4)]) == 2
    # The same key twice in one call: the last row wins.
    db.upsert_tracks([track_row("v1:0:1", n_boxes=11), track_row("v1:0:1", n_boxes=12)])
    rows = [detection_row(f"p{i}", "v1:0:1", ts=np.float32(1000.5 + i), frame_index=np.int64(12 + i)) for i in range(3)]
    db.upsert_detections(rows)
    db.upsert_detections(rows)
    assert db.counts() == {"cameras": 1, "videos": 1, "tracks": 2, "detections": 3}

    tracks = db.tracks_by_ids(["v1:0:1", "v1:0:2", "missing"])
    assert set(tracks) == {"v1:0:1", "v1:0:2"}
    assert tracks["v1:0:1"].n_boxes == 12 and tracks["v1:0:1"].best_crop_key == "gate/v1/v1:0:1.jpg"
    detections = db.track_detections("v1:0:1")
    assert [d.point_id for d in detections] == ["p0", "p1", "p2"]
    assert (detections[0].x1, detections[0].y2, detections[1].frame_index) == (10.0, 180.0, 13)

    with pytest.raises(StorageError, match="unknown column"):
        db.upsert_tracks([{**track_row("v1:0:3"), "colour": "red"}])
    with pytest.raises(StorageError):  # foreign key: the track must exist first
        db.upsert_detections([detection_row("p9", "no-such-track")])
    assert db.counts()["detections"] == 3


def test_jobs(db: Database) -> None:
    job = db.create_job("ingest", "/footage/v1.mp4", "gate", job_id="job-1", segments_total=4)
    assert (job.status, job.segments_total, job.started_at) == ("queued", 4, None)
    db.create_job("ingest", "/footage/v1.mp4", "gate", job_id="job-1")  # a redelivery changes nothing
    time.sleep(0.01)
    other = db.create_job("train", "confirmed-matches")

    running = db.update_job("job-1", status="running")
    assert running.started_at is not None and running.finished_at is None
    db.increment_job("job-1", segments_done=1, crops_indexed=40)
    db.increment_job("job-1", segments_done=1, segments_failed=1, crops_indexed=12)
    done = db.update_job("job-1", status="done", frames=900)
    assert (done.segments_done, done.segments_failed, done.crops_indexed, done.frames) == (2, 1, 52, 900)
    assert done.finished_at is not None and done.finished_at >= done.started_at

    assert [j.id for j in db.list_jobs()] == [other.id, "job-1"]
    assert [j.id for j in db.list_jobs(status="done")] == ["job-1"]
    with pytest.raises(NotFoundError, match="nope"):
        db.get_job("nope")
    with pytest.raises(NotFoundError):
        db.update_job("nope", status="running")
    with pytest.raises(StorageError, match="not one of"):
        db.update_job("job-1", status="exploded")
    with pytest.raises(StorageError, match="unknown column"):
        db.update_job("job-1", colour="red")
    with pytest.raises(StorageError, match="counters"):
        db.increment_job("job-1", status=1)


def _bump(url: str, times: int) -> None:
    db = Database(url)
    for _ in range(times):
        db.increment_job("shared", segments_done=1)
        db.upsert_tracks([track_row("v1:0:1")])
    db.close()


def test_sqlite_is_shared_by_processes(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'camtrace.db'}"
    db = Database(url)
    db.migrate()
    add_video(db)
    db.create_job("ingest", "x", job_id="shared")
    with db.engine.connect() as conn:
        assert conn.execute(text("PRAGMA journal_mode")).scalar() == "wal"
    ctx = multiprocessing.get_context("spawn")
    procs = [ctx.Process(target=_bump, args=(url, 40)) for _ in range(2)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(timeout=120)
    assert [p.exitcode for p in procs] == [0, 0]
    assert db.get_job("shared").segments_done == 80  # no lost update
    assert db.counts()["tracks"] == 1


def test_unreachable_database_names_the_setting() -> None:
    db = Database("postgresql+psycopg://postgres:secret@127.0.0.1:9/camtrace")
    with pytest.raises(StorageError, match=r"127\.0\.0\.1:9.*CAMTRACE_DATABASE_URL") as info:
        db.counts()
    assert "secret" not in str(info.value)
    with pytest.raises(StorageError, match="CAMTRACE_DATABASE_URL"):
        Database("mysql://localhost/camtrace")


def test_segment_deliveries_parts_and_job_progress(db: Database) -> None:
    """What distributed workers rely on: delivery counting, idempotent parts, progress from segments."""
    db.upsert_video("v1", "gate", "/footage/v1.mp4", 25.0, 640, 360, 1000.0, 1060.0, 1500)
    db.create_job("ingest", "/footage/v1.mp4", "gate", job_id="job-1", segments_total=3)
    db.update_job("job-1", status="running")
    ids = [db.upsert_segment("v1", i, i * 500, i * 500 + 500, status="pending", job_id="job-1") for i in range(3)]

    first = db.start_segment(ids[0], "job-1")
    assert first is not None and first.attempts == 1
    assert db.start_segment(ids[0], "job-1").attempts == 2  # a redelivery counts
    assert db.start_segment(ids[0], "job-other") is None  # a stale message from another job

    db.set_segment_parts(ids[0], 2, frames=100)
    assert db.part_done(ids[0], 0, 10) is False
    assert db.part_done(ids[0], 0, 10) is False  # the same part again changes nothing
    assert db.part_done(ids[0], 1, 5) is True
    assert db.start_segment(ids[0], "job-1") is None  # done: nothing more to do

    db.set_segment_parts(ids[1], 0, frames=100)  # no crops: done at once
    job = refresh_job(db, "job-1")
    assert (job.status, job.segments_done, job.segments_failed, job.crops_indexed) == ("running", 2, 0, 15)

    db.fail_segment(ids[2], "decode error at frame 1200")
    job = refresh_job(db, "job-1")
    assert (job.status, job.segments_done, job.segments_failed) == ("done", 2, 1)
    assert "decode error at frame 1200" in job.error and ids[2] in job.error
    assert job.finished_at is not None


def test_a_job_whose_segments_a_newer_ingest_took_over_still_finishes(db: Database) -> None:
    db.upsert_video("v1", "gate", "/footage/v1.mp4", 25.0, 640, 360, 1000.0, 1060.0, 1500)
    db.create_job("ingest", "/footage/v1.mp4", "gate", job_id="old", segments_total=2)
    ids = [db.upsert_segment("v1", i, i * 750, i * 750 + 750, status="pending", job_id="old") for i in range(2)]
    db.update_job("old", status="running")
    # The same video ingested again while the first job runs: the newer job owns both segments now.
    db.create_job("ingest", "/footage/v1.mp4", "gate", job_id="new", segments_total=2)
    for i in range(2):
        db.upsert_segment("v1", i, i * 750, i * 750 + 750, status="pending", job_id="new")
    db.update_job("new", status="running")
    assert refresh_job(db, "new").status == "running"
    old = refresh_job(db, "old")
    assert old.status == "superseded" and "2 segment(s) taken over by a newer ingest" in old.error
    assert old.finished_at is not None
    for segment_id in ids:
        db.set_segment_parts(segment_id, 0)
    assert refresh_job(db, "new").status == "done"
    assert refresh_job(db, "old").status == "superseded"  # stays finished

    # Part of a job taken over (overlapping folders): it finishes with the segments it kept.
    db.upsert_video("v2", "gate", "/footage/v2.mp4", 25.0, 640, 360, 2000.0, 2060.0, 1500)
    db.create_job("ingest", "/footage/", "gate", job_id="folder", segments_total=2)
    kept = db.upsert_segment("v2", 0, 0, 1500, status="pending", job_id="folder")
    db.upsert_segment("v1", 0, 0, 750, status="pending", job_id="folder")
    db.update_job("folder", status="running")
    db.upsert_segment("v1", 0, 0, 750, status="pending", job_id="later")
    assert refresh_job(db, "folder").status == "running"  # its own segment is not finished yet
    db.set_segment_parts(kept, 0)
    folder = refresh_job(db, "folder")
    assert (folder.status, folder.segments_done, folder.segments_total) == ("done", 1, 2)
    assert "1 segment(s) taken over" in folder.error


def test_retention_deletes_old_detections_and_their_empty_tracks(db: Database) -> None:
    db.upsert_video("v1", "gate", "/footage/v1.mp4", 25.0, 640, 360, 1000.0, 1060.0, 1500)
    db.upsert_tracks(
        [
            {
                "id": "old",
                "camera_id": "gate",
                "video_id": "v1",
                "segment_index": 0,
                "ts_start": 10.0,
                "ts_end": 20.0,
                "n_boxes": 3,
            },
            {
                "id": "new",
                "camera_id": "gate",
                "video_id": "v1",
                "segment_index": 0,
                "ts_start": 90.0,
                "ts_end": 99.0,
                "n_boxes": 3,
            },
        ]
    )
    db.upsert_detections([detection_row("p-old", "old", ts=15.0), detection_row("p-new", "new", ts=95.0)])
    old = db.detections_before(50.0)
    assert [row.point_id for row in old] == ["p-old"]
    db.delete_detections([row.point_id for row in old])
    assert db.counts()["detections"] == 1
    assert set(db.tracks_by_ids(["old", "new"])) == {"new"}
