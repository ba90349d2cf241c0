"""Watchlists and live alerts end to end, over real HTTP: entries made through the API, footage ingested by the
real pipeline, alerts listed, streamed (server-sent events), published to a real MQTT broker (Mosquitto) and
POSTed to a real webhook receiver that checks the signature; the broker and the receiver are down at first and
get everything once they are back.

Each person of the synthetic footage walks alone in a video of their own, so every track's person is known. The
models are the tiny random ones: their vectors tell people apart only where the pixels are the same, so the
person's new footage repeats their walk pixel for pixel on another camera an hour later, and the same-person
calibration is set as a site's learning would leave it (one person's tracks score 0.98 and more, two people's
about 0.6) instead of learned from a handful of tracks.
"""

from __future__ import annotations

import dataclasses
import json
import threading
import time
import uuid
from pathlib import Path

import httpx
import numpy as np
import pytest
from api_fixtures import ThreadedServer
from distributed_fixtures import camtrace_env, free_port, settings_from, wait_for
from sqlalchemy import select
from watch_fixtures import SECRET, Broker, Receiver, Subscriber

from camtrace.notify import AlertSender
from camtrace.services import Services
from camtrace.storage.access import AccessStore
from camtrace.storage.sql import Feedback, Track
from camtrace.storage.watchlists import WatchStore
from camtrace.synthetic import FigureDetector, generate_footage, write_footage

HOUR = 3600.0


class EventStream:
    """GET /api/alerts/stream read in a thread: the server-sent ``alert`` events it delivers."""

    def __init__(self, url: str, token: str) -> None:
        self.events: list[dict] = []
        self.opened = threading.Event()
        self.client = httpx.Client(
            base_url=url, headers={"Authorization": f"Bearer {token}"}, timeout=httpx.Timeout(5.0, read=None)
        )
        self.thread = threading.Thread(target=self._read, daemon=True)
        self.thread.start()
        assert self.opened.wait(20), "the alert stream did not open"

    def _read(self) -> None:
        try:
            with self.client.stream("GET", "/api/alerts/stream") as response:
                assert response.status_code == 200 and response.headers["content-type"].startswith("text/event-stream")
                self.opened.set()
                event: dict = {}
                for line in response.iter_lines():
                    if line.startswith("event: "):
                        event["event"] = line[7:]
                    elif line.startswith("data: "):
                        event["data"] = json.loads(line[6:])
                    elif line.startswith("id: "):
                        event["id"] = line[4:]
                    elif not line and event:
                        self.events.append(event)
                        event = {}
        except (httpx.HTTPError, RuntimeError):
            pass  # closed by the test

    def close(self) -> None:
        self.client.close()


def same_person_evidence(tracks: int):
    """The calibration a site's learning leaves: one person's tracks score 0.98 and more, two people's about 0.6."""
    from camtrace.search.evidence import BINS, CROSS, SAME, IdentityEvidence, _Appearance

    centres = np.linspace(-1 + 1 / BINS, 1 - 1 / BINS, BINS)

    def bump(centre: float, spread: float, mass: float) -> np.ndarray:
        shape = np.exp(-0.5 * ((centres - centre) / spread) ** 2)
        return mass * shape / shape.sum()

    appearance = {
        domain: _Appearance(positive=bump(0.995, 0.01, 200.0), negative=bump(0.6, 0.2, 2000.0), pairs=2000.0, same=100.0)
        for domain in (SAME, CROSS)
    }
    return IdentityEvidence(600.0, appearance, {}, tracks=tracks)


@pytest.fixture(scope="module")
def site(tmp_path_factory, tiny_yolo_dir, tiny_siglip_dir):
    """Each of four people walking alone past cam1; the service, a webhook receiver that is down and an MQTT
    broker that is not started yet."""
    root = tmp_path_factory.mktemp("watch")
    base = generate_footage(root / "base", cameras=1, identities=4, seconds=8.0, fps=10, seed=11)
    start = base.start_ts["cam1"]

    def alone(person: str, camera: str, at: float, again: bool = False):
        walk = next(a for a in base.appearances if a.identity == person)
        shift = at - start
        walk = dataclasses.replace(walk, camera=camera, ts_start=walk.ts_start + shift, ts_end=walk.ts_end + shift)
        folder = root / f"{person}-{camera}-{int(at)}"
        folder.mkdir()
        # Camera index 0 of every footage has the same empty scene: the walk's pixels are the same on any camera.
        # A walk seen ``again`` gets one more empty frame at the end: another file (a video's id is a hash of its
        # content), the same crops.
        return write_footage(
            folder,
            [camera],
            [base.identities[person]],
            [walk],
            n_frames=base.n_frames + again,
            fps=base.fps,
            size=base.size,
            start_ts=at,
            seed=base.seed,
            scene_seed=base.seed,
        )

    receiver = Receiver()
    broker = Broker(root)
    topic = f"camtrace/alerts/test-{uuid.uuid4().hex[:8]}"
    env = camtrace_env(
        root / "data",
        tiny_yolo_dir,
        tiny_siglip_dir,
        CAMTRACE_SEGMENT_SECONDS="60",
        CAMTRACE_LOG_LEVEL="WARNING",
        CAMTRACE_MQTT_URL=f"mqtt://127.0.0.1:{broker.port}",
        CAMTRACE_MQTT_TOPIC=topic,
        CAMTRACE_WEBHOOK_URLS=receiver.url,
        CAMTRACE_WEBHOOK_SECRET=SECRET,
    )
    settings = settings_from(env)
    from camtrace.api.app import create_app

    app = create_app(settings)
    services: Services = app.state.services

    def ingest(footage, camera: str) -> list[str]:
        from camtrace.workers.local import ingest_local

        services.detector = FigureDetector(footage.background(camera))
        ingest_local(services, str(footage.videos[camera]), camera, footage.start_ts[camera], progress=False)
        with services.db.engine.connect() as conn:
            video = next(iter(footage.videos.values()))
            return [
                row.id
                for row in conn.execute(select(Track.id, Track.video_id).order_by(Track.ts_start))
                if row.video_id == services.db.get_video(row.video_id).id
                and Path(services.db.get_video(row.video_id).source) == video.resolve()
            ]

    seen = {person: ingest(alone(person, "cam1", start + 20 * k), "cam1") for k, person in enumerate(base.identities)}
    services.db.ensure_camera("cam2")
    services.db.ensure_camera("cam3")
    access = AccessStore(services.db)
    tokens = {
        name: access.add_user(name, role, cameras).token
        for name, role, cameras in (
            ("admin", "admin", None),
            ("ivy", "investigator", None),
            ("otto", "operator", None),
            ("cam3only", "investigator", ["cam3"]),
            ("cam1only", "investigator", ["cam1"]),
        )
    }
    port = free_port()
    server = ThreadedServer(app, port).__enter__()
    yield dataclasses.make_dataclass(
        "Site", ["url", "app", "services", "tokens", "seen", "alone", "ingest", "receiver", "broker", "topic", "start"]
    )(f"http://127.0.0.1:{port}", app, services, tokens, seen, alone, ingest, receiver, broker, topic, start)
    server.__exit__()
    broker.stop()
    receiver.server.shutdown()


def client(site, user: str) -> httpx.Client:
    return httpx.Client(base_url=site.url, headers={"Authorization": f"Bearer {site.tokens[user]}"}, timeout=60)


def test_watchlist_entries_over_http(site):
    seed = site.seen["p1"][0]
    with client(site, "otto") as otto:
        assert otto.post("/api/watchlist", json={"track_id": seed}).status_code == 403  # operators read only
        assert otto.get("/api/watchlist").json() == {"entries": []}
    assert httpx.get(f"{site.url}/api/watchlist").status_code == 401
    with client(site, "ivy") as ivy:
        unknown = ivy.post("/api/watchlist", json={"track_id": "no-such-track"})
        assert unknown.status_code == 404 and "does not exist" in unknown.json()["error"]
        camera = ivy.post("/api/watchlist", json={"track_id": seed, "cameras": ["cam9"]})
        assert camera.status_code == 404 and "unknown camera" in camera.json()["error"]
        for bad in (
            {"track_id": seed, "min_probability": 1.5},
            {"track_id": seed, "since": "yesterday-ish"},
            {"track_id": seed, "colour": "red"},
            {},
            {"track_id": seed, "text": "man in red"},
        ):
            answer = ivy.post("/api/watchlist", json=bad)
            assert answer.status_code in (400, 422), (bad, answer.text)
            assert answer.json()["error"]
        made = ivy.post("/api/watchlist", json={"track_id": seed, "note": "left a bag at the gate"})
        assert made.status_code == 201, made.text
        entry = made.json()
        assert entry["kind"] == "person" and entry["username"] == "ivy" and entry["cameras"] is None
        gone = ivy.post("/api/watchlist", json={"track_id": seed}).json()
        assert ivy.delete(f"/api/watchlist/{gone['id']}").status_code == 204
        assert ivy.delete(f"/api/watchlist/{gone['id']}").status_code == 404
        assert [e["id"] for e in ivy.get("/api/watchlist").json()["entries"]] == [entry["id"]]
        # A description's bar is calibrated on the site's tracks: with 2% of a handful, the best track's score.
        described = ivy.post("/api/watchlist", json={"text": "yellow top, black trousers", "cameras": ["cam1"]})
        assert described.status_code == 201, described.text
        model = site.services.model()
        vector = model.encoder.encode_texts(["yellow top, black trousers"])[0]
        best = model.index.search(vector, None, 1)[0]
        assert described.json()["kind"] == "description" and described.json()["cameras"] == ["cam1"]
        assert described.json()["min_score"] == pytest.approx(best.score, abs=1e-5)
        assert ivy.delete(f"/api/watchlist/{described.json()['id']}").status_code == 204
    with client(site, "cam3only") as limited:
        # A track on a camera the user may not see is refused like one that does not exist.
        hidden = limited.post("/api/watchlist", json={"track_id": seed})
        assert hidden.status_code == 404 and hidden.json()["error"].replace(seed, "?") == unknown.json()["error"].replace(
            "no-such-track", "?"
        )
        assert limited.get("/api/watchlist").json() == {"entries": []}  # ivy's entry watches every camera
    actions = [(r.username, r.action) for r in AccessStore(site.services.db).audit_rows(limit=20) if r.action.startswith("watch_")]
    assert actions[:5] == [
        ("ivy", "watch_remove"),
        ("ivy", "watch_add"),
        ("ivy", "watch_remove"),
        ("ivy", "watch_add"),
        ("ivy", "watch_add"),
    ]


def test_an_alert_for_the_person_only_delivered_live_and_after_outages(site):
    from camtrace.storage.evidence import EvidenceRepository

    services = site.services
    model = services.model()
    repository = EvidenceRepository(services.db)

    def calibrated(footage):
        # Each ingest relearns the evidence from the tracks at its end; the next one is checked with the set one.
        repository.save(model.index.model_version, same_person_evidence(20).to_dict(), repository.newest_feedback_at())
        return footage

    admin_stream = EventStream(site.url, site.tokens["admin"])
    limited_stream = EventStream(site.url, site.tokens["cam3only"])
    try:
        # An hour later: the person of the entry on cam2; the three others on cam3.
        later = site.start + HOUR
        person_tracks = site.ingest(calibrated(site.alone("p1", "cam2", later, again=True)), "cam2")
        other_tracks = [
            t
            for k, p in enumerate(("p2", "p3", "p4"))
            for t in site.ingest(calibrated(site.alone(p, "cam3", later + 20 * (k + 1), again=True)), "cam3")
        ]
        assert person_tracks and other_tracks
        with client(site, "admin") as admin:
            alerts = admin.get("/api/alerts").json()["alerts"]
        assert len(alerts) == 1, alerts
        alert = alerts[0]
        assert alert["track_id"] in person_tracks and alert["camera_id"] == "cam2"
        assert alert["probability"] >= services.settings.trace_min_score and alert["status"] == "new"
        assert alert["crop_url"].startswith("/api/crops/cam2/") and alert["track_url"].startswith("/#track/")
        wait_for(lambda: admin_stream.events, 15, "the alert on the stream")
        assert [(e["event"], e["id"], e["data"]["track_id"]) for e in admin_stream.events] == [
            ("alert", str(alert["id"]), alert["track_id"])
        ]
        # A user limited to cam3 neither lists nor receives an alert on cam2.
        with client(site, "cam3only") as limited:
            assert limited.get("/api/alerts").json() == {"alerts": []}
            assert limited.post(f"/api/alerts/{alert['id']}/ack", json={"action": "acknowledge"}).status_code == 404
        time.sleep(2.5)  # the stream polls every second
        assert limited_stream.events == []
    finally:
        admin_stream.close()
        limited_stream.close()

    # Both targets were down: the deliveries wait, logged, nothing lost.
    store = WatchStore(services.db)
    log = {d.label.split(" ")[0]: d for d in store.deliveries(alert["id"])}
    assert {d.status for d in log.values()} == {"pending"} and all(d.attempts == 1 for d in log.values())
    assert site.receiver.refused == 1 and "503" in log[site.receiver.url.replace("token=abc", "token=***")].last_error
    assert site.receiver.url not in json.dumps([d.as_dict() for d in log.values()])  # the URL's secret stays out
    # Back up: the next pass (beat's task calls the same) delivers both, once.
    site.broker.start()
    subscriber = Subscriber(site.broker.port, site.topic)
    site.receiver.up = True
    try:
        sender = AlertSender(services.settings, store)
        assert sender.deliver().delivered == 0  # not due yet: the retry waits its backoff
        report = sender.deliver(now=time.time() + HOUR)
        assert report.delivered == 2 and report.retrying == 0
        wait_for(lambda: subscriber.messages, 10, "the alert on MQTT")
        assert sender.deliver(now=time.time() + 2 * HOUR).delivered == 0  # nothing is sent twice
    finally:
        subscriber.close()
    for payload in (subscriber.messages[0], site.receiver.bodies[0]):
        assert payload["id"] == alert["id"] and payload["track_id"] == alert["track_id"]
        assert payload["camera_id"] == "cam2" and payload["entry_kind"] == "person"
        assert payload["entry_note"] == "left a bag at the gate" and payload["probability"] == alert["probability"]
    assert len(subscriber.messages) == 1 and len(site.receiver.bodies) == 1
    assert {d.status for d in store.deliveries(alert["id"])} == {"delivered"}

    # Acknowledge, then dismiss: each audited; the dismissal is a "different" verdict on the pair.
    with client(site, "otto") as otto:
        assert otto.post(f"/api/alerts/{alert['id']}/ack", json={"action": "snooze"}).status_code == 422
        acked = otto.post(f"/api/alerts/{alert['id']}/ack", json={"action": "acknowledge"})
        assert acked.status_code == 200 and acked.json()["status"] == "acknowledged"
        assert acked.json()["handled_by"] == "otto"
        dismissed = otto.post(f"/api/alerts/{alert['id']}/ack", json={"action": "dismiss"}).json()
        assert dismissed["status"] == "dismissed"
    audit = AccessStore(services.db).audit_rows(limit=30)
    assert [(r.username, r.action, r.result_ids) for r in audit if r.action in ("alert_acknowledge", "alert_dismiss")] == [
        ("otto", "alert_dismiss", [alert["track_id"]]),
        ("otto", "alert_acknowledge", [alert["track_id"]]),
    ]
    assert any(r.action == "alert_raised" and r.result_ids == [alert["track_id"]] for r in audit)
    with services.db.engine.connect() as conn:
        verdicts = conn.execute(select(Feedback.track_id, Feedback.candidate_track_id, Feedback.verdict, Feedback.username)).all()
    assert [tuple(v) for v in verdicts] == [(site.seen["p1"][0], alert["track_id"], "different", "otto")]


def test_a_track_clip_is_webm_served_in_ranges_and_a_gone_source_is_a_clear_404(site):
    import cv2

    seed = site.seen["p2"][0]
    with client(site, "otto") as otto:
        whole = otto.get(f"/api/tracks/{seed}/clip")
        assert whole.status_code == 200, whole.text
        assert whole.headers["content-type"] == "video/webm" and whole.content[:4] == b"\x1a\x45\xdf\xa3"  # EBML
        part = otto.get(f"/api/tracks/{seed}/clip", headers={"Range": "bytes=10-99"})
        assert part.status_code == 206 and part.content == whole.content[10:100]
        assert otto.get(f"/api/tracks/{seed}/clip").content == whole.content  # cut once, then kept
    with client(site, "cam3only") as limited:
        assert limited.get(f"/api/tracks/{seed}/clip").status_code == 404
    clip = Path(site.services.settings.resolved_data_dir) / "clips"
    (saved,) = clip.glob("*.webm")
    capture = cv2.VideoCapture(str(saved))
    frames = 0
    while capture.read()[0]:
        frames += 1
    track = site.services.db.tracks_by_ids([seed])[seed]
    # The track's span and 3 s each side (cut at the video's ends), at the source's 10 fps.
    start = site.services.db.get_video(track.video_id).start_ts
    expected = (min(track.ts_end + 3, start + 8) - max(track.ts_start - 3, start)) * 10
    assert abs(frames - expected) <= 3, (frames, expected)

    source = Path(site.services.db.get_video(track.video_id).source)
    source.rename(source.with_suffix(".moved"))
    try:
        saved.unlink()
        with client(site, "otto") as otto:
            gone = otto.get(f"/api/tracks/{seed}/clip")
        assert gone.status_code == 404 and "no longer stored" in gone.json()["error"]
    finally:
        source.with_suffix(".moved").rename(source)


def test_a_case_exported_over_http_verifies_and_a_flipped_file_is_named(site, tmp_path):
    import zipfile

    from click.testing import CliRunner

    from camtrace.cli import cli

    tracks = [site.seen["p3"][0], site.seen["p4"][0]]
    with client(site, "otto") as otto:
        assert otto.post("/api/cases", json={"title": "gate 3"}).status_code == 403  # investigators only
    with client(site, "ivy") as ivy:
        made = ivy.post("/api/cases", json={"title": "bag left at gate 3"})
        assert made.status_code == 201, made.text
        case_id = made.json()["id"]
        for track in tracks:
            assert ivy.post(f"/api/cases/{case_id}/tracks", json={"track_id": track, "note": "walks past"}).status_code == 200
        assert ivy.post(f"/api/cases/{case_id}/tracks", json={"track_id": "nope"}).status_code == 404
        noted = ivy.post(f"/api/cases/{case_id}/notes", json={"text": "the bag is black"})
        assert [i["kind"] for i in noted.json()["items"]] == ["track", "track", "note"]
        exported = ivy.get(f"/api/cases/{case_id}/export")
        assert exported.status_code == 200 and exported.headers["content-type"] == "application/zip"
        manifest_hash = exported.headers["x-manifest-sha256"]
    with client(site, "cam3only") as limited:  # the case's tracks are on cam1
        assert limited.get(f"/api/cases/{case_id}").status_code == 404
        assert limited.get(f"/api/cases/{case_id}/export").status_code == 404
        assert limited.get("/api/cases").json() == {"cases": []}
    archive = tmp_path / "case.zip"
    archive.write_bytes(exported.content)
    with zipfile.ZipFile(archive) as opened:
        names = opened.namelist()
        document = json.loads(opened.read("case.json"))
    assert {"case.json", "manifest.json", "manifest.sha256"} <= set(names)
    assert [t["track_id"] for t in document["tracks"]] == tracks and all(t["clip"] in names for t in document["tracks"])
    crops = [c["file"] for t in document["tracks"] for c in t["crops"]]
    assert crops and set(crops) <= set(names)

    good = CliRunner().invoke(cli, ["case", "verify", str(archive), "--manifest-sha256", manifest_hash])
    assert good.exit_code == 0 and "match the manifest" in good.output
    # One bit flipped in one crop: verify names that file and no other.
    flipped = tmp_path / "flipped.zip"
    with zipfile.ZipFile(archive) as source, zipfile.ZipFile(flipped, "w") as target:
        for name in source.namelist():
            data = source.read(name)
            if name == crops[1]:
                data = data[:100] + bytes([data[100] ^ 0x01]) + data[101:]
            target.writestr(name, data)
    bad = CliRunner().invoke(cli, ["case", "verify", str(flipped)])
    assert bad.exit_code == 1 and bad.output.strip() == f"{crops[1]}: changed (SHA-256 differs from the manifest)"
    audit = [(r.username, r.action) for r in AccessStore(site.services.db).audit_rows(limit=20)]
    assert ("ivy", "case_export") in audit and ("ivy", "case_note") in audit and ("ivy", "case_create") in audit
