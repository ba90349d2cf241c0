"""The watchlist check in the distributed embed worker: real Celery workers on a real Redis broker, alerts
published to the Mosquitto on 127.0.0.1:1883 and POSTed to a webhook receiver that checks the signature.

A description entry with the lowest bar (min_score -1) matches every track, so the alerts must be exactly the
job's tracks, each once, whatever the tiny random models' vectors are."""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime

from distributed_fixtures import (  # noqa: F401
    Worker,
    broker,
    camtrace_env,
    run_cli,
    settings_from,
    wait_for,
    wait_jobs,
)
from sqlalchemy import select
from watch_fixtures import SECRET, Receiver, Subscriber

from camtrace.services import Services
from camtrace.storage.sql import Track
from camtrace.storage.watchlists import WatchStore

SYSTEM_MQTT_PORT = 1883  # scripts/test starts Mosquitto there


def test_the_embed_worker_raises_each_alert_once_and_sends_it(tmp_path, broker, footage, tiny_yolo_dir, tiny_siglip_dir):
    receiver = Receiver()
    receiver.up = True
    topic = f"camtrace/alerts/test-{uuid.uuid4().hex[:8]}"
    env = camtrace_env(
        tmp_path / "data",
        tiny_yolo_dir,
        tiny_siglip_dir,
        broker.url,
        CAMTRACE_MQTT_URL=f"mqtt://127.0.0.1:{SYSTEM_MQTT_PORT}",
        CAMTRACE_MQTT_TOPIC=topic,
        CAMTRACE_WEBHOOK_URLS=receiver.url,
        CAMTRACE_WEBHOOK_SECRET=SECRET,
        CAMTRACE_ALERT_REPEAT_SECONDS="0",
    )  # every matching track alerts, not once per stay
    added = run_cli(env, "watch", "add", "--text", "anyone at all", "--min-score", "-1", "--note", "everyone", "--json")
    assert added.returncode == 0, added.stderr
    entry = json.loads(added.stdout)
    subscriber = Subscriber(SYSTEM_MQTT_PORT, topic)
    workers = [Worker("ingest,detect", env, tmp_path / "worker-detect.log"), Worker("embed", env, tmp_path / "worker-embed.log")]
    try:
        camera, path = next(iter(footage.videos.items()))
        start = datetime.fromtimestamp(footage.start_ts[camera], tz=UTC).isoformat()
        submitted = run_cli(env, "ingest", str(path), "--camera", camera, "--start", start, "--json")
        assert submitted.returncode == 0, submitted.stderr
        (job,) = wait_jobs(env, [json.loads(submitted.stdout)["job_id"]])
        assert job.status == "done" and job.segments_failed == 0, job.error
        services = Services(settings_from({k: v for k, v in env.items() if k != "CAMTRACE_BROKER_URL"}))
        with services.db.engine.connect() as conn:
            tracks = sorted(conn.execute(select(Track.id)).scalars())
        alerts = WatchStore(services.db).alerts(limit=1000)
        assert tracks and sorted(a.track_id for a in alerts) == tracks  # every track, once
        assert {a.entry_id for a in alerts} == {entry["id"]} and all(a.probability is None for a in alerts)
        wait_for(
            lambda: len(subscriber.messages) >= len(alerts) and len(receiver.bodies) >= len(alerts),
            30,
            "every alert on MQTT and at the webhook",
        )
        for received in (subscriber.messages, receiver.bodies):
            assert sorted(m["id"] for m in received) == sorted(a.id for a in alerts)
            assert {m["entry_note"] for m in received} == {"everyone"}
        deliveries = WatchStore(services.db).deliveries()
        assert len(deliveries) == 2 * len(alerts) and {d.status for d in deliveries} == {"delivered"}
    finally:
        for worker in workers:
            worker.stop()
        subscriber.close()
        receiver.server.shutdown()
