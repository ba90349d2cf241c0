"""Retention: points, SQL rows, crop files and recorded segments older than the limit go; the rest stays."""

from __future__ import annotations

import shutil
import time

import pytest
from click.testing import CliRunner
from distributed_fixtures import camtrace_env, settings_from
from sqlalchemy import select
from sqlalchemy.orm import Session

from camtrace.cli import cli
from camtrace.services import Services
from camtrace.storage.sql import Detection, Segment, Track, Video
from camtrace.workers.jobs import apply_retention
from camtrace.workers.local import ingest_local


@pytest.fixture
def ingested(tmp_path, footage, tiny_yolo_dir, tiny_siglip_dir):
    """Three cameras in local mode; cam1's video sits in the recordings folder, as a live camera's would."""
    env = camtrace_env(tmp_path / "data", tiny_yolo_dir, tiny_siglip_dir)
    services = Services(settings_from(env))
    recorded = services.settings.recordings_dir / "cam1" / "cam1-segment.mp4"
    recorded.parent.mkdir(parents=True)
    shutil.copy(footage.videos["cam1"], recorded)
    sources = {camera: footage.videos[camera] for camera in footage.videos}
    sources["cam1"] = recorded
    for camera, path in sources.items():
        ingest_local(services, str(path), camera, footage.start_ts[camera], progress=False)
    yield services, env, sources
    services.close()


def detections(services: Services) -> list[Detection]:
    with Session(services.db.engine) as session:
        return list(session.scalars(select(Detection)))


def test_retention_deletes_only_what_is_older_than_the_cutoff(ingested):
    services, _, sources = ingested
    before = detections(services)
    assert len(before) > 10
    cutoff = sorted(row.ts for row in before)[len(before) // 2]
    old = [row for row in before if row.ts < cutoff]
    kept = [row for row in before if row.ts >= cutoff]

    assert apply_retention(services, cutoff, batch=7) == len(old)  # small batches: the loop is exercised

    after = detections(services)
    assert {row.point_id for row in after} == {row.point_id for row in kept}
    assert services.index.count() == len(kept)
    assert services.index.retrieve([row.point_id for row in old]) == []
    assert all(not services.crops.exists(row.crop_key) for row in old)
    assert all(services.crops.exists(row.crop_key) for row in kept)
    with Session(services.db.engine) as session:
        track_ids = set(session.scalars(select(Track.id)))
    assert track_ids == {row.track_id for row in kept}  # tracks left without crops went too
    assert all(path.exists() for path in sources.values())  # videos still have footage inside the limit

    # A second run with the same cutoff finds nothing more.
    assert apply_retention(services, cutoff) == 0


def test_retention_past_everything_empties_the_index_and_deletes_recordings_only(ingested):
    services, env, sources = ingested
    end = max(row.ts for row in detections(services)) + 60
    runner = CliRunner()
    days = (time.time() - end) / 86400  # keep less than the time since the footage ended
    result = runner.invoke(cli, ["retention", "--days", f"{days:.6f}"], env=env)
    assert result.exit_code == 0, result.output
    assert "deleted" in result.output
    assert services.index.count() == 0
    counts = services.db.counts()
    assert counts["detections"] == counts["tracks"] == counts["videos"] == 0
    with Session(services.db.engine) as session:
        assert session.scalar(select(Segment.id)) is None and session.scalar(select(Video.id)) is None
    assert not sources["cam1"].exists()  # a segment file the recorder wrote is gone
    assert sources["cam2"].exists() and sources["cam3"].exists()  # a user's own files are never deleted
    assert counts["cameras"] == 3  # cameras are configuration, not footage


def test_retention_without_a_limit_is_refused(tmp_path):
    result = CliRunner().invoke(cli, ["retention"], env={"CAMTRACE_DATA_DIR": str(tmp_path)})
    assert result.exit_code == 2
    assert "CAMTRACE_RETENTION_DAYS" in result.output
