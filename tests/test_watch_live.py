"""A live camera end to end: a person walks into the view of a camera recorded the way `camtrace camera run` does
(tests/live_fixtures.py), on the default live segment length, and the watchlist alert for them arrives on MQTT
(the Mosquitto on 127.0.0.1:1883). The time from their first frame to the alert is named, not held to a bound
(benchmarks/bench_live_alert.py measures it); only a generous timeout applies."""

from __future__ import annotations

import uuid

from distributed_fixtures import camtrace_env, settings_from
from live_fixtures import PersonLoop, run_live_camera

SYSTEM_MQTT_PORT = 1883  # scripts/test starts Mosquitto there


def test_a_person_on_a_live_camera_raises_an_alert_on_mqtt(tmp_path, tiny_yolo_dir, tiny_siglip_dir):
    topic = f"camtrace/alerts/test-{uuid.uuid4().hex[:8]}"
    env = camtrace_env(
        tmp_path / "data",
        tiny_yolo_dir,
        tiny_siglip_dir,
        CAMTRACE_MQTT_URL=f"mqtt://127.0.0.1:{SYSTEM_MQTT_PORT}",
        CAMTRACE_MQTT_TOPIC=topic,
        CAMTRACE_ALERT_REPEAT_SECONDS="0",
    )
    del env["CAMTRACE_SEGMENT_SECONDS"]  # live segments of the default length
    settings = settings_from(env)
    loop = PersonLoop(tmp_path / "footage", gap_seconds=3.0)
    found = run_live_camera(env, loop, SYSTEM_MQTT_PORT, topic, walks=2, patience=settings.live_segment_length + 60)
    summary = found.summary()
    assert found.missed == 0 and len(found.seconds) == 2, f"not every walk alerted: {summary}"
    # Every alert is on a track of the person: nothing alerts while the scene is empty.
    assert found.stray == [], f"alerts with nobody on screen: {found.stray}"
    seconds = ", ".join(f"{s:.2f}" for s in found.seconds)
    assert all(s > 0 for s in found.seconds), (
        f"first frame to alert on MQTT: {seconds} s, with {settings.live_segment_length:g} s live segments"
    )
    print(f"first frame to alert on MQTT: {seconds} s, with {settings.live_segment_length:g} s live segments")
