"""From synthetic footage of several cameras to search results, through the real CLI.

Uses the real detector and encoder classes, loaded from tiny random model
folders through the same code as real weights, the embedded Qdrant Edge index,
SQLite and the crop store.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from datetime import UTC
from pathlib import Path

import cv2
import pytest
from click.testing import CliRunner
from detection_fixtures import cli_env
from sqlalchemy.orm import Session

from camtrace.cli import cli
from camtrace.settings import Settings
from camtrace.storage import Database


class Camtrace:
    """Runs the CLI in-process with one data dir, the way an operator would type it."""

    def __init__(self, env: dict[str, str]) -> None:
        self.env = env
        self.runner = CliRunner()

    def __call__(self, *args: str, ok: bool = True):
        result = self.runner.invoke(cli, list(args), env=self.env, catch_exceptions=False)
        if ok:
            assert result.exit_code == 0, result.output
        return result

    def json(self, *args: str):
        return json.loads(self(*args, "--json").stdout)

    def stats(self) -> dict:
        return self.json("stats")


@pytest.fixture(scope="module")
def indexed(tmp_path_factory, tiny_yolo_dir, tiny_siglip_dir, footage):
    data_dir = tmp_path_factory.mktemp("e2e-data")
    camtrace = Camtrace(cli_env(data_dir, tiny_yolo_dir, tiny_siglip_dir))
    for camera_id, path in footage.videos.items():
        camtrace("ingest", str(path), "--camera", camera_id, "--start", iso(footage.start_ts[camera_id]), "--no-progress")
    return camtrace


def iso(ts: float) -> str:
    from datetime import datetime, timezone

    return datetime.fromtimestamp(ts, tz=UTC).isoformat()


def database(camtrace: Camtrace) -> Database:
    return Database(Settings(data_dir=Path(camtrace.env["CAMTRACE_DATA_DIR"])).sql_url)


def test_tracks_and_points_land_in_sql_and_index(indexed, footage):
    stats = indexed.stats()
    assert stats["cameras"] == len(footage.videos)
    assert stats["videos"] == len(footage.videos)
    assert stats["tracks"] > 0 and stats["points"] > 0
    assert stats["points"] == stats["detections"]

    db = database(indexed)
    with Session(db.engine) as session:
        from camtrace.storage.sql import Detection, Track, Video

        videos = {video.id: video for video in session.query(Video)}
        tracks = {track.id: track for track in session.query(Track)}
        detections = session.query(Detection).all()
    assert {video.camera_id for video in videos.values()} == set(footage.videos)
    for video in videos.values():
        assert video.start_ts == pytest.approx(footage.start_ts[video.camera_id])
    for detection in detections:
        video = videos[detection.video_id]
        track = tracks[detection.track_id]
        assert detection.camera_id == video.camera_id == track.camera_id
        assert video.start_ts <= detection.ts <= video.end_ts
        assert track.ts_start <= detection.ts <= track.ts_end
        assert 0 <= detection.x1 < detection.x2 <= video.width
        assert 0 <= detection.y1 < detection.y2 <= video.height
        crop = Path(indexed.env["CAMTRACE_DATA_DIR"]) / "crops" / detection.crop_key
        assert cv2.imread(str(crop)) is not None
    # K best crops per track at most.
    per_track: dict[str, int] = {}
    for detection in detections:
        per_track[detection.track_id] = per_track.get(detection.track_id, 0) + 1
    assert max(per_track.values()) <= Settings().crops_per_track


def test_ingesting_the_same_video_twice_changes_no_counts(indexed, footage):
    before = indexed.stats()
    camera_id, path = next(iter(footage.videos.items()))
    indexed("ingest", str(path), "--camera", camera_id, "--start", iso(footage.start_ts[camera_id]), "--no-progress")
    assert indexed.stats() == before


def test_text_search_returns_one_row_per_track_with_the_fields_operators_need(indexed):
    results = indexed.json("search", "red top, blue trousers, black backpack", "--limit", "8")
    assert 0 < len(results) <= 8
    assert len({r["track_id"] for r in results}) == len(results)
    scores = [r["score"] for r in results]
    assert scores == sorted(scores, reverse=True)
    for result in results:
        assert {"track_id", "camera_id", "score", "ts_start", "ts_end", "crop"} <= set(result)
        assert result["ts_start"] <= result["ts_end"]
        assert Path(result["crop"]).is_file()


def test_photo_search_with_a_stored_crop_returns_its_track_first(indexed):
    db = database(indexed)
    with Session(db.engine) as session:
        from camtrace.storage.sql import Detection

        detections = session.query(Detection).order_by(Detection.point_id).limit(5).all()
    for detection in detections:
        crop = Path(indexed.env["CAMTRACE_DATA_DIR"]) / "crops" / detection.crop_key
        results = indexed.json("search", "--image", str(crop), "--no-detect", "--limit", "3")
        assert results[0]["track_id"] == detection.track_id
        assert results[0]["score"] > 0.99  # the very crop: cosine ~1


def test_full_frame_photo_is_reduced_to_a_person_before_searching(indexed, footage, tmp_path):
    camera_id, path = next(iter(footage.videos.items()))
    capture = cv2.VideoCapture(str(path))
    capture.set(cv2.CAP_PROP_POS_FRAMES, 20)
    ok, frame = capture.read()
    capture.release()
    assert ok
    photo = tmp_path / "frame.png"
    cv2.imwrite(str(photo), frame)
    with_detection = indexed.json("search", "--image", str(photo), "--limit", "3")
    whole_frame = indexed.json("search", "--image", str(photo), "--no-detect", "--limit", "3")
    assert with_detection and whole_frame
    # The detected person, not the whole frame, is what gets embedded.
    assert with_detection[0]["score"] != pytest.approx(whole_frame[0]["score"], abs=1e-6)


def test_camera_and_time_filters_exclude_what_they_should(indexed, footage):
    cameras = sorted(footage.videos)
    only = indexed.json("search", "person", "--camera", cameras[0], "--limit", "50")
    assert only and {r["camera_id"] for r in only} == {cameras[0]}
    two = indexed.json("search", "person", "--camera", cameras[0], "--camera", cameras[1], "--limit", "50")
    assert {r["camera_id"] for r in two} == {cameras[0], cameras[1]}

    everything = indexed.json("search", "person", "--limit", "200")
    sightings = sorted(r["ts"] for r in everything)
    lo, hi = sightings[len(sightings) // 4], sightings[3 * len(sightings) // 4]
    window = indexed.json("search", "person", "--since", iso(lo), "--until", iso(hi), "--limit", "200")
    assert window
    assert all(lo - 1e-3 <= r["ts"] <= hi + 1e-3 for r in window)
    outside = [r for r in everything if r["ts"] < lo or r["ts"] > hi]
    assert outside, "the window must exclude some sightings for this test to mean anything"
    # Every track has sightings in the window or it is absent from the answer.
    assert len(window) < len(everything)


def test_unknown_camera_in_a_filter_is_a_clear_error(indexed):
    result = indexed("search", "person", "--camera", "lobby-99", ok=False)
    assert result.exit_code != 0
    assert "unknown camera" in result.stderr and "lobby-99" in result.stderr


def test_bad_inputs_fail_clearly_and_leave_the_index_as_it_was(indexed, tmp_path):
    before = indexed.stats()
    corrupt = tmp_path / "corrupt.mp4"
    corrupt.write_bytes(b"\x00\x00\x00\x18ftypmp42" + os.urandom(4096))
    empty = tmp_path / "empty.mp4"
    empty.write_bytes(b"")
    for bad in (corrupt, empty):
        result = indexed("ingest", str(bad), "--camera", "cam-x", "--no-progress", ok=False)
        assert result.exit_code != 0
        assert str(bad) in result.stderr
    text = tmp_path / "notes.txt"
    text.write_text("not a photo")
    result = indexed("search", "--image", str(text), ok=False)
    assert result.exit_code != 0 and "notes.txt" in result.stderr and "image" in result.stderr
    assert indexed.stats() == before


def test_missing_weights_stop_with_the_setting_to_fix_and_no_stack_trace(indexed, tmp_path, footage):
    env = {**os.environ, **indexed.env, "CAMTRACE_DETECTOR_MODEL": str(tmp_path / "no-such-weights.pt")}
    camera_id, path = next(iter(footage.videos.items()))
    before = indexed.stats()
    proc = subprocess.run(
        [sys.executable, "-m", "camtrace.cli", "ingest", str(path), "--camera", camera_id, "--no-progress"],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode != 0
    assert "CAMTRACE_DETECTOR_MODEL" in proc.stderr
    assert "Traceback" not in proc.stderr
    assert indexed.stats() == before
