"""Ingest jobs over HTTP with a real Redis broker: queued for the workers, or a dead broker named (503)."""

from __future__ import annotations

import shutil

from api_fixtures import ThreadedServer, api, api_env, iso  # noqa: F401
from distributed_fixtures import free_port, redis_server, settings_from  # noqa: F401


def test_jobs_are_queued_for_the_workers_and_a_dead_broker_is_named(api, redis_server, footage):
    import httpx

    from camtrace.api.app import create_app

    camera, path = next(iter(sorted(footage.videos.items())))
    root = api.services.settings.ingest_root_paths()[0]
    source = root / f"queued-{path.name}"
    shutil.copyfile(path, source)
    headers = {"Authorization": f"Bearer {api.tokens['admin']}"}

    live = create_app(settings_from({**api.env, "CAMTRACE_BROKER_URL": redis_server.url}))
    port = free_port()
    with ThreadedServer(live, port), httpx.Client(base_url=f"http://127.0.0.1:{port}", headers=headers) as admin:
        response = admin.post("/api/jobs", json={"source": str(source), "camera": camera, "start": iso(0)})
        assert response.status_code == 202, response.text
        job = response.json()
        assert job["status"] == "queued" and job["source"] == str(source.resolve())
        assert admin.get(f"/api/jobs/{job['id']}").json()["status"] == "queued"  # no worker runs in this test
        assert admin.post("/api/jobs", json={"source": str(source), "camera": camera, "start": "soon"}).status_code == 422
        audit = admin.get("/api/audit", params={"action": "job_submit"}).json()["rows"]
        assert audit[0]["result_ids"] == [job["id"]] and audit[0]["username"] == "admin"

    dead = create_app(settings_from({**api.env, "CAMTRACE_BROKER_URL": f"redis://127.0.0.1:{free_port()}/0"}))
    port = free_port()
    with ThreadedServer(dead, port), httpx.Client(base_url=f"http://127.0.0.1:{port}", headers=headers) as admin:
        response = admin.post("/api/jobs", json={"source": str(source), "camera": camera})
        assert response.status_code == 503 and "cannot reach the broker" in response.json()["error"]
        assert admin.get("/api/jobs", params={"limit": 1}).json()[0]["status"] == "failed"
