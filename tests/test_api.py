"""The query service over HTTP, on an index built from synthetic footage with the real stages."""

from __future__ import annotations

import subprocess
import sys
import urllib.request
from datetime import UTC, datetime, timezone

import pytest
from camtrace.api.app import create_app
from camtrace.search import SearchService
from camtrace.storage.sql import Detection
from camtrace.workers.local import ingest_local
from distributed_fixtures import camtrace_env, free_port, redis_server, settings_from, wait_for  # noqa: F401
from fastapi.testclient import TestClient
from sqlalchemy import select
from sqlalchemy.orm import Session

from camtrace.services import Services


def iso(ts: float) -> str:
    return datetime.fromtimestamp(ts, tz=UTC).isoformat()


@pytest.fixture(scope="module")
def env(tmp_path_factory, tiny_yolo_dir, tiny_siglip_dir, footage):
    env = camtrace_env(tmp_path_factory.mktemp("api-data"), tiny_yolo_dir, tiny_siglip_dir)
    services = Services(settings_from(env))
    for camera, path in footage.videos.items():
        ingest_local(services, str(path), camera, footage.start_ts[camera], progress=False)
    services.close()
    return env


@pytest.fixture(scope="module")
def client(env):
    with TestClient(create_app(settings_from(env))) as client:
        yield client


def stored_detections(client, n: int = 3) -> list[Detection]:
    with Session(client.app.state.services.db.engine) as session:
        return list(session.scalars(select(Detection).order_by(Detection.point_id).limit(n)))


def test_health_says_which_mode(client):
    assert client.get("/health").json() == {"status": "ok", "mode": "local"}


def test_text_search_answers_what_the_search_stage_answers(client):
    response = client.get("/search", params={"q": "red top, blue trousers", "limit": 6})
    assert response.status_code == 200
    results = response.json()
    expected = SearchService(client.app.state.services).by_text("red top, blue trousers", limit=6)
    assert [r["track_id"] for r in results] == [r.track_id for r in expected]
    assert [r["score"] for r in results] == [r.score for r in expected]
    assert len({r["track_id"] for r in results}) == len(results)  # one row per track
    for result in results:
        crop = client.get(result["crop_url"])
        assert crop.status_code == 200 and crop.headers["content-type"] == "image/jpeg"
        assert crop.content[:2] == b"\xff\xd8"  # a JPEG, the very file the result names
        assert open(result["crop"], "rb").read() == crop.content


def test_filters_are_applied_and_mistakes_are_named(client, footage):
    cameras = sorted(footage.videos)
    only = client.get("/search", params={"q": "person", "camera": cameras[0], "limit": 50}).json()
    assert only and {r["camera_id"] for r in only} == {cameras[0]}
    both = client.get("/search", params=[("q", "person"), ("camera", cameras[0]), ("camera", cameras[1]),
                                         ("limit", "50")]).json()
    assert {r["camera_id"] for r in both} == {cameras[0], cameras[1]}
    start = footage.start_ts[cameras[0]]
    window = client.get("/search", params={"q": "person", "since": iso(start + 2), "until": iso(start + 4),
                                           "limit": 100}).json()
    assert all(start + 2 - 1e-3 <= r["ts"] <= start + 4 + 1e-3 for r in window)

    unknown = client.get("/search", params={"q": "person", "camera": "lobby-99"})
    assert unknown.status_code == 404 and "lobby-99" in unknown.json()["error"]
    bad_time = client.get("/search", params={"q": "person", "since": "yesterday"})
    assert bad_time.status_code == 400 and "yesterday" in bad_time.json()["error"]
    empty = client.get("/search", params={"q": "  "})
    assert empty.status_code == 400 and "empty" in empty.json()["error"]
    assert client.get("/search", params={"q": "person", "limit": 0}).status_code == 422


def test_photo_search_with_a_stored_crop_returns_its_track_first(client):
    for detection in stored_detections(client):
        data = client.app.state.services.crops.get(detection.crop_key)
        response = client.post("/search/image", params={"detect": "false", "limit": 3},
                               files={"photo": ("crop.jpg", data, "image/jpeg")})
        assert response.status_code == 200, response.text
        best = response.json()[0]
        assert best["track_id"] == detection.track_id and best["score"] > 0.99


def test_a_non_image_upload_is_refused_and_changes_nothing(client):
    before = client.app.state.services.db.counts()
    for name, data in (("notes.txt", b"not a photo"), ("empty.jpg", b"")):
        response = client.post("/search/image", files={"photo": (name, data, "application/octet-stream")})
        assert response.status_code == 400
        assert name in response.json()["error"] and "image" in response.json()["error"]
    assert client.app.state.services.db.counts() == before


def test_crops_jobs_and_cameras(client, footage):
    assert client.get("/crops/cam1/no-such-crop.jpg").status_code == 404
    assert client.get("/crops/cam1/%2e%2e/%2e%2e/secrets").status_code in (400, 404)
    jobs = client.get("/jobs").json()
    assert len(jobs) == len(footage.videos)
    assert {job["status"] for job in jobs} == {"done"}
    assert {job["camera_id"] for job in jobs} == set(footage.videos)
    one = client.get(f"/jobs/{jobs[0]['id']}").json()
    assert one["segments_done"] == one["segments_total"] > 0 and one["crops_indexed"] > 0
    missing = client.get("/jobs/no-such-job")
    assert missing.status_code == 404 and "no-such-job" in missing.json()["error"]
    assert {row["id"] for row in client.get("/cameras").json()} == set(footage.videos)
    refused = client.post("/jobs", json={"source": "/footage/x.mp4", "camera": "gate"})
    assert refused.status_code == 409 and "CAMTRACE_BROKER_URL" in refused.json()["error"]


def test_jobs_are_queued_for_the_workers_and_a_dead_broker_is_named(env, redis_server, footage):
    camera, path = next(iter(footage.videos.items()))
    live = settings_from({**env, "CAMTRACE_BROKER_URL": redis_server.url})
    with TestClient(create_app(live)) as client:
        response = client.post("/jobs", json={"source": str(path), "camera": camera, "start": iso(0)})
        assert response.status_code == 202, response.text
        job = response.json()
        assert job["status"] == "queued" and job["source"] == str(path)
        assert client.get(f"/jobs/{job['id']}").json()["status"] == "queued"  # no worker runs in this test
        assert client.get("/status").json()["queues"]["ingest"] == 1  # the task waits in its queue
        bad_start = client.post("/jobs", json={"source": str(path), "camera": camera, "start": "soon"})
        assert bad_start.status_code == 400

    dead = settings_from({**env, "CAMTRACE_BROKER_URL": f"redis://127.0.0.1:{free_port()}/0"})
    with TestClient(create_app(dead)) as client:
        response = client.post("/jobs", json={"source": str(path), "camera": camera})
        assert response.status_code == 503 and "cannot reach the broker" in response.json()["error"]
        assert client.get("/jobs", params={"limit": 1}).json()[0]["status"] == "failed"
        assert client.get("/status").json()["broker_error"]


def test_the_api_command_serves_http(env):
    port = free_port()
    server = subprocess.Popen([sys.executable, "-m", "camtrace.cli", "api", "--port", str(port)], env=env,
                              stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        def answers():
            try:
                return urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=2).read()
            except OSError:
                return None

        assert b'"status":"ok"' in wait_for(answers, 60, "camtrace api to answer")
    finally:
        server.terminate()
        server.wait(timeout=20)
