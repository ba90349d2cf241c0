"""The investigation over HTTP on an index built from three cameras of synthetic footage:
text and photo search, person picking, re-id, tracks, frames, traces, feedback, exports, camera limits and the audit log."""

from __future__ import annotations

import csv
import io
import json

import cv2
import numpy as np
import pytest
from api_fixtures import api, api_env, iso, run_cli  # noqa: F401
from sqlalchemy import select, text
from sqlalchemy.orm import Session

QUERY = "red top, blue trousers"


def search(client, **body) -> dict:
    response = client.post("/api/search/text", json={"text": QUERY, **body})
    assert response.status_code == 200, response.text
    return response.json()


def is_jpeg(response) -> bool:
    return response.status_code == 200 and response.headers["content-type"] == "image/jpeg" and response.content[:2] == b"\xff\xd8"


@pytest.fixture(scope="module")
def tracks_by_camera(api) -> dict[str, list[str]]:
    from camtrace.storage.sql import Track

    with Session(api.services.db.engine) as session:
        rows = session.scalars(select(Track).order_by(Track.id)).all()
    found: dict[str, list[str]] = {}
    for row in rows:
        found.setdefault(row.camera_id, []).append(row.id)
    assert set(found) == set(api.cameras), "every camera's footage must have been indexed"
    return found


def test_text_search_answers_what_the_stage_answers_one_row_per_track(api):
    from camtrace.search import SearchService

    with api.client("operator") as client:
        body = search(client, limit=6)
        results = body["results"]
        assert body["limit"] == 6 and body["offset"] == 0
        stage = SearchService(api.services)
        expected = stage.by_text(QUERY, stage.make_filter(), limit=6)
        assert [r["track_id"] for r in results] == [r.track_id for r in expected]
        assert [r["score"] for r in results] == pytest.approx([r.score for r in expected])
        assert len({r["track_id"] for r in results}) == len(results) == 6
        for result in results:
            assert "crop" not in result and result["crop_url"] == f"/api/crops/{result['crop_key']}"  # no disk paths
            crop = client.get(result["crop_url"])
            assert is_jpeg(crop) and crop.content == api.services.crops.get(result["crop_key"])


def test_paging_filters_and_mistakes(api, footage):
    first, second = api.cameras[0], api.cameras[1]
    with api.client("operator") as client:
        whole = [r["track_id"] for r in search(client, limit=8)["results"]]
        pages = [r["track_id"] for offset in (0, 4) for r in search(client, limit=4, offset=offset)["results"]]
        assert pages == whole
        only = search(client, cameras=[first], limit=50)["results"]
        assert only and {r["camera_id"] for r in only} == {first}
        both = search(client, cameras=[first, second], limit=50)["results"]
        assert {r["camera_id"] for r in both} == {first, second}
        start = footage.start_ts[first]
        window = search(client, since=iso(start + 2), until=start + 4, limit=100)["results"]
        assert window and all(start + 2 - 1e-3 <= r["ts"] <= start + 4 + 1e-3 for r in window)
        floor = search(client, limit=50)["results"][2]["score"]
        assert all(r["score"] >= floor for r in search(client, limit=50, min_score=floor)["results"])

        unknown = client.post("/api/search/text", json={"text": QUERY, "cameras": ["lobby-99"]})
        assert unknown.status_code == 404 and "lobby-99" in unknown.json()["error"]
        bad_time = client.post("/api/search/text", json={"text": QUERY, "since": "yesterday"})
        assert bad_time.status_code in (400, 422) and "yesterday" in bad_time.json()["error"]
        blank = client.post("/api/search/text", json={"text": "   "})
        assert blank.status_code == 400 and "empty" in blank.json()["error"]
        huge = client.post("/api/search/text", json={"text": QUERY, "limit": 100_000})
        assert huge.status_code == 422 and "limit" in huge.json()["error"]
        malformed = client.post("/api/search/text", content=b"{not json", headers={"content-type": "application/json"})
        assert malformed.status_code == 422 and malformed.json()["kind"] == "ValidationError"
        assert client.post("/api/search/text", json={"txt": QUERY}).status_code == 422
        assert client.get("/healthz").status_code == 200  # the service stays up


def busiest_frame(footage) -> tuple[str, np.ndarray]:
    """The frame with the most people in it, read from the first camera's video."""
    camera = footage.boxes[0].camera
    counts: dict[int, int] = {}
    for box in footage.boxes:
        if box.camera == camera:
            counts[box.frame_index] = counts.get(box.frame_index, 0) + 1
    frame_index = max(counts, key=lambda i: (counts[i], -i))
    capture = cv2.VideoCapture(str(footage.videos[camera]))
    capture.set(cv2.CAP_PROP_POS_FRAMES, frame_index)
    ok, frame = capture.read()
    capture.release()
    assert ok
    return camera, frame


def test_photo_search_finds_the_persons_of_a_frame_and_searches_the_one_picked(api, footage):
    from camtrace.search import SearchService

    stage = SearchService(api.services)
    _, frame = busiest_frame(footage)
    jpeg = cv2.imencode(".jpg", frame)[1].tobytes()
    persons = stage.persons(frame)
    assert persons, "the detector must find somebody in the busiest frame"
    with api.client("operator") as client:
        response = client.post("/api/search/image", params={"limit": 5}, files={"file": ("frame.jpg", jpeg, "image/jpeg")})
        assert response.status_code == 200, response.text
        body = response.json()
        assert [p["index"] for p in body["persons"]] == [p.index for p in persons]
        areas = [(p["box"][2] - p["box"][0]) * (p["box"][3] - p["box"][1]) for p in body["persons"]]
        assert body["person"] == body["persons"][int(np.argmax(areas))]["index"]  # the largest by default
        assert all(p["crop_url"].startswith("data:image/jpeg;base64,") for p in body["persons"])
        assert 1 <= len(body["results"]) <= 5
        picked = persons[-1]
        chosen = client.post(
            "/api/search/image", params={"limit": 5, "person": picked.index}, files={"file": ("frame.jpg", jpeg, "image/jpeg")}
        ).json()
        assert chosen["person"] == picked.index
        x1, y1, x2, y2 = (int(round(v)) for v in picked.box)
        expected = stage.by_image(frame[max(0, y1) : y2, max(0, x1) : x2], stage.make_filter(), limit=5, detect=False)
        assert [r["track_id"] for r in chosen["results"]] == [r.track_id for r in expected]
        missing = client.post("/api/search/image", params={"person": 99}, files={"file": ("frame.jpg", jpeg, "image/jpeg")})
        assert missing.status_code == 400 and "person 99" in missing.json()["error"]


def test_photo_search_with_a_stored_crop_returns_its_track_first_and_bad_uploads_are_refused(api):
    from camtrace.storage.sql import Detection

    with Session(api.services.db.engine) as session:
        detection = session.scalars(select(Detection).order_by(Detection.point_id).limit(1)).one()
    data = api.services.crops.get(detection.crop_key)
    before = api.services.db.counts()
    with api.client("operator") as client:
        response = client.post(
            "/api/search/image", params={"detect": "false", "limit": 3}, files={"file": ("crop.jpg", data, "image/jpeg")}
        )
        assert response.status_code == 200, response.text
        body = response.json()
        assert body["person"] is None and body["persons"] == []
        assert body["results"][0]["track_id"] == detection.track_id and body["results"][0]["score"] > 0.99
        for name, payload in (("notes.txt", b"not a photo"), ("empty.jpg", b"")):
            refused = client.post("/api/search/image", files={"file": (name, payload, "application/octet-stream")})
            assert refused.status_code == 400 and name in refused.json()["error"] and "image" in refused.json()["error"]
        too_big = client.post("/api/search/image", files={"file": ("big.jpg", b"\xff\xd8" + b"0" * (2 * 2**20), "image/jpeg")})
        assert too_big.status_code == 413 and "CAMTRACE_MAX_UPLOAD_MB" in too_big.json()["error"]
        assert client.post("/api/search/image").status_code == 422  # no file at all
        assert client.post(
            "/api/search/image", params={"since": "soon"}, files={"file": ("crop.jpg", data, "image/jpeg")}
        ).status_code in (400, 422)
    assert api.services.db.counts() == before


def test_track_frame_and_crops(api, tracks_by_camera, footage):
    track_id = tracks_by_camera[api.cameras[1]][0]
    with api.client("operator") as client:
        track = client.get(f"/api/tracks/{track_id}")
        assert track.status_code == 200, track.text
        body = track.json()
        assert body["track_id"] == track_id and body["camera_id"] == api.cameras[1]
        assert body["crops"] and body["ts_start"] <= body["ts_end"]
        assert all(is_jpeg(client.get(crop["crop_url"])) for crop in body["crops"])
        frame = client.get(body["frame_url"])
        assert is_jpeg(frame)
        decoded = cv2.imdecode(np.frombuffer(frame.content, np.uint8), cv2.IMREAD_COLOR)
        assert (decoded.shape[1], decoded.shape[0]) == tuple(footage.size)  # the whole source frame
        missing = client.get("/api/tracks/no-such-track")
        assert missing.status_code == 404 and "no-such-track" in missing.json()["error"]
        assert client.get("/api/tracks/no-such-track/frame").status_code == 404
        assert client.get("/api/crops/cam1/no-such-crop.jpg").status_code == 404
        assert client.get("/api/crops/cam1/%2e%2e/%2e%2e/secrets").status_code in (400, 404)


def test_reid_trace_feedback_and_exports(api, tracks_by_camera):
    seed = tracks_by_camera[api.cameras[0]][0]
    with api.client("investigator") as client:
        found = client.post(f"/api/search/track/{seed}", json={"limit": 10})
        assert found.status_code == 200, found.text
        candidates = found.json()["results"]
        assert candidates and seed not in [c["track_id"] for c in candidates]
        assert api.cameras[0] not in {c["camera_id"] for c in candidates}  # other cameras by default
        same = client.post(f"/api/search/track/{seed}", json={"limit": 50, "same_camera": True}).json()["results"]
        assert seed not in [c["track_id"] for c in same]
        assert client.post("/api/search/track/no-such-track", json={}).status_code == 404

        confirmed, rejected = candidates[0]["track_id"], candidates[1]["track_id"] if len(candidates) > 1 else None
        record = client.post("/api/feedback", json={"track_id": seed, "candidate_track_id": confirmed, "verdict": "same"})
        assert record.status_code == 200, record.text
        assert record.json()["verdict"] == "same" and record.json()["username"] == "investigator"
        if rejected:
            assert (
                client.post(
                    "/api/feedback", json={"track_id": seed, "candidate_track_id": rejected, "verdict": "different"}
                ).status_code
                == 200
            )
        again = [c["track_id"] for c in client.post(f"/api/search/track/{seed}", json={"limit": 10}).json()["results"]]
        assert confirmed not in again and (rejected is None or rejected not in again)  # decided ones are not offered again
        bad = client.post("/api/feedback", json={"track_id": seed, "candidate_track_id": confirmed, "verdict": "maybe"})
        assert bad.status_code == 422

        trace = client.get(f"/api/trace/{seed}")
        assert trace.status_code == 200, trace.text
        steps = trace.json()["steps"]
        assert trace.json()["seed_track_id"] == seed
        assert {"seed", "confirmed"} <= {s["status"] for s in steps}
        statuses = {s["track_id"]: s["status"] for s in steps}
        assert statuses[seed] == "seed" and statuses[confirmed] == "confirmed"
        assert rejected is None or rejected not in statuses
        assert [s["ts_start"] for s in steps] == sorted(s["ts_start"] for s in steps)
        assert steps[0]["transit_seconds"] is None

        csv_export = client.get(f"/api/trace/{seed}/export", params={"format": "csv"})
        assert csv_export.status_code == 200 and "attachment" in csv_export.headers["content-disposition"]
        rows = list(csv.DictReader(io.StringIO(csv_export.text)))
        assert [r["track_id"] for r in rows] == [s["track_id"] for s in steps]
        json_export = client.get(f"/api/trace/{seed}/export", params={"format": "json"})
        assert json_export.headers["content-type"].startswith("application/json")
        assert "investigator" in json_export.text and json.loads(json_export.text)
        html_export = client.get(f"/api/trace/{seed}/export", params={"format": "html"})
        assert html_export.headers["content-type"].startswith("text/html") and confirmed in html_export.text
        assert client.get(f"/api/trace/{seed}/export", params={"format": "pdf"}).status_code == 422
        assert client.get("/api/trace/no-such-track").status_code == 404


def test_a_camera_restricted_user_sees_nothing_of_other_cameras(api, tracks_by_camera):
    mine, other = api.cameras[0], api.cameras[1]
    theirs = tracks_by_camera[other][0]
    with api.client("admin") as admin:
        other_crop = admin.get(f"/api/tracks/{theirs}").json()["crops"][0]["crop_url"]
    with api.client("restricted") as client:
        assert client.get("/api/me").json()["cameras"] == [mine]
        assert [c["id"] for c in client.get("/api/cameras").json()] == [mine]
        results = search(client, limit=50)["results"]
        assert results and {r["camera_id"] for r in results} == {mine}
        # A limit no smaller than the number of tracks: the filter is inside the vector search, not after a top-k cut.
        assert len(results) == min(50, len(tracks_by_camera[mine]))
        refused = client.post("/api/search/text", json={"text": QUERY, "cameras": [other]})
        assert refused.status_code == 404  # like an unknown camera, never a 403 that confirms it exists
        for url in (
            f"/api/tracks/{theirs}",
            f"/api/tracks/{theirs}/frame",
            f"/api/trace/{theirs}",
            f"/api/trace/{theirs}/export?format=csv",
            other_crop,
        ):
            response = client.get(url)
            assert response.status_code == 404, (url, response.status_code)
        assert client.post(f"/api/search/track/{theirs}", json={}).status_code == 404
        feedback = {"track_id": tracks_by_camera[mine][0], "candidate_track_id": theirs, "verdict": "same"}
        assert client.post("/api/feedback", json=feedback).status_code == 404
        reid = client.post(f"/api/search/track/{tracks_by_camera[mine][0]}", json={"same_camera": True, "limit": 50}).json()
        assert {r["camera_id"] for r in reid["results"]} <= {mine}
        trace = client.get(f"/api/trace/{tracks_by_camera[mine][0]}").json()
        assert {s["camera_id"] for s in trace["steps"]} == {mine}
        _, frame = busiest_frame_of(api, other)
        photo = client.post(
            "/api/search/image",
            params={"limit": 50},
            files={"file": ("f.jpg", cv2.imencode(".jpg", frame)[1].tobytes(), "image/jpeg")},
        )
        assert {r["camera_id"] for r in photo.json()["results"]} <= {mine}


def busiest_frame_of(api, camera):
    from camtrace.storage.sql import Video

    with Session(api.services.db.engine) as session:
        source = session.scalars(select(Video.source).where(Video.camera_id == camera)).first()
    capture = cv2.VideoCapture(source)
    capture.set(cv2.CAP_PROP_POS_FRAMES, 30)
    ok, frame = capture.read()
    capture.release()
    assert ok
    return camera, frame


def test_every_audited_action_leaves_a_row_only_admins_can_read(api, tracks_by_camera):
    seed = tracks_by_camera[api.cameras[2]][0]
    with api.client("investigator") as client:
        results = search(client, limit=3, cameras=[api.cameras[2]])["results"]
        client.get(f"/api/tracks/{seed}")
        client.get(f"/api/tracks/{seed}/frame")
        reid = client.post(f"/api/search/track/{seed}", json={"limit": 3}).json()["results"]
        client.get(f"/api/trace/{seed}")
        client.post("/api/feedback", json={"track_id": seed, "candidate_track_id": reid[0]["track_id"], "verdict": "different"})
        client.get(f"/api/trace/{seed}/export", params={"format": "json"})
        assert client.get("/api/audit").status_code == 403
    with api.client("admin") as admin:
        rows = admin.get("/api/audit", params={"user": "investigator", "limit": 200}).json()["rows"]
    by_action = {}
    for row in reversed(rows):  # newest first in the log: keep the newest per action
        by_action[row["action"]] = row
    assert {"search_text", "track_view", "frame_view", "reid", "trace", "feedback", "export"} <= set(by_action)
    assert by_action["search_text"]["detail"]["text"] == QUERY
    assert by_action["search_text"]["detail"]["cameras"] == [api.cameras[2]]
    assert by_action["search_text"]["result_ids"] == [r["track_id"] for r in results]
    assert by_action["reid"]["result_ids"] == [r["track_id"] for r in reid]
    assert by_action["export"]["detail"]["format"] == "json"
    assert all(row["username"] == "investigator" and row["client"] for row in rows)
    # The CLI reads the same log; the time filter works.
    cli_rows = json.loads(run_cli(api.env, "audit", "--user", "investigator", "--limit", "200", "--json"))
    assert [r["id"] for r in cli_rows] == [r["id"] for r in rows]
    with api.client("admin") as admin:
        later = admin.get("/api/audit", params={"since": rows[0]["ts"] + 1}).json()["rows"]
        assert later == [] or all(r["ts"] >= rows[0]["ts"] + 1 for r in later)
        assert admin.get("/api/audit", params={"since": "last week"}).status_code == 400
    # Append-only, even for someone at the database.
    with pytest.raises(Exception, match="append-only"), api.services.db.engine.begin() as conn:
        conn.execute(text("UPDATE audit_log SET action = 'nothing' WHERE id = :id"), {"id": rows[0]["id"]})
    with pytest.raises(Exception, match="append-only"), api.services.db.engine.begin() as conn:
        conn.execute(text("DELETE FROM audit_log"))
