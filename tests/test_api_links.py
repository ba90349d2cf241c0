"""Camera links and same-person probabilities over HTTP and the command line, on the API test index (three
cameras of synthetic footage ingested with `camtrace ingest`, which learns the evidence after each ingest)."""

from __future__ import annotations

import json

from api_fixtures import api, api_env, run_cli  # noqa: F401
from sqlalchemy import select
from sqlalchemy.orm import Session


def first_track(api) -> str:
    from camtrace.storage.sql import Track

    with Session(api.services.db.engine) as session:
        return session.scalars(select(Track.id).order_by(Track.ts_start, Track.id)).first()


def test_links_are_learned_by_ingest_and_shown_to_admins_only(api):
    with api.client("admin") as admin:
        answer = admin.get("/api/links")
        assert answer.status_code == 200, answer.text
        links = answer.json()
        assert links["tracks"] > 0 and links["learned_at"] is not None  # `camtrace ingest` learned them
        for link in links["links"]:
            assert link["camera_from"] in api.cameras and link["camera_to"] in api.cameras
            assert link["spread_seconds"] > 0 and link["evidence"] > 0
        relearned = admin.post("/api/links/learn")
        assert relearned.status_code == 200 and relearned.json()["learned_at"] >= links["learned_at"]
        audit = admin.get("/api/audit", params={"action": "links_learn"}).json()["rows"]
        assert audit and audit[0]["username"] == "admin"
    for role in ("operator", "investigator"):
        with api.client(role) as client:
            assert client.get("/api/links").status_code == 403
            assert client.post("/api/links/learn").status_code == 403
    with api.client() as anonymous:
        assert anonymous.get("/api/links").status_code == 401


def test_reid_and_traces_speak_in_probabilities(api):
    seed = first_track(api)
    with api.client("operator") as client:
        results = client.post(f"/api/search/track/{seed}", json={"limit": 20}).json()["results"]
        assert results and all(0.0 <= r["probability"] <= 1.0 for r in results)
        seed_start = client.get(f"/api/tracks/{seed}").json()["ts_start"]
        shares: dict[tuple[str, bool], float] = {}
        for r in results:  # a camera's candidates after (or before) the seed share one person at most
            key = (r["camera_id"], r["ts_start"] >= seed_start)
            shares[key] = shares.get(key, 0.0) + r["probability"]
        assert all(total <= 1.0 + 1e-3 for total in shares.values()), shares
        few = client.post(f"/api/search/track/{seed}", json={"limit": 20, "min_probability": 0.999}).json()["results"]
        assert all(r["probability"] >= 0.999 for r in few)
        assert client.post(f"/api/search/track/{seed}", json={"min_probability": 1.5}).status_code == 422
        assert client.post(f"/api/search/track/{seed}", json={"min_score": 0.5}).status_code == 422  # no longer

        trace = client.get(f"/api/trace/{seed}").json()
        assert trace["min_probability"] == 0.3  # CAMTRACE_TRACE_MIN_SCORE: a probability
        statuses = {s["status"] for s in trace["steps"]}
        assert "seed" in statuses and statuses <= {"seed", "confirmed", "candidate", "alternative"}
        assert all(0.0 <= s["probability"] <= 1.0 for s in trace["steps"])
        path = [s for s in trace["steps"] if s["status"] != "alternative"]
        assert all(s["probability"] >= 0.3 for s in path if s["status"] == "candidate")
        assert all(s["transit_seconds"] is None for s in trace["steps"] if s["status"] == "alternative")
        for earlier, later in zip(path, path[1:]):  # a path never goes back in time
            assert later["ts_start"] >= earlier["ts_end"] or earlier["status"] != "candidate" != later["status"]
        strict = client.get(f"/api/trace/{seed}", params={"min_probability": 0.99}).json()
        assert strict["min_probability"] == 0.99
        assert client.get(f"/api/trace/{seed}", params={"min_probability": -0.1}).status_code == 422


def test_the_command_line_prints_links_and_traces(api):
    printed = json.loads(run_cli(api.env, "links", "--json"))
    with api.client("admin") as admin:
        served = admin.get("/api/links").json()
    assert printed["tracks"] == served["tracks"] and len(printed["links"]) == len(served["links"])
    assert "learned from" in run_cli(api.env, "links", "learn")
    seed = first_track(api)
    trace = json.loads(run_cli(api.env, "trace", seed, "--json"))
    assert trace["seed_track_id"] == seed and trace["steps"][0]["status"] in ("seed", "alternative")
    lines = run_cli(api.env, "trace", seed).strip().splitlines()
    assert lines and lines[0].startswith("seed") and seed in lines[0]
