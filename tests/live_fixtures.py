"""A live camera on which a person keeps appearing, and the time from their first frame to the alert on MQTT.

Shared by tests/test_watch_live.py and benchmarks/bench_live_alert.py. The camera is the tests' MJPEG server
(camera_fixtures.MjpegCamera) playing synthetic footage (camtrace.synthetic): the empty scene for a while, then
one person's walk, again and again; it notes the moment each walk's first frame with the person in it is sent.
The recording path is the one of `camtrace camera run` (``CameraFleet``: record, cut segment files, ingest each
in the process) with the tiny random embedder; people are found by ``FigureDetector`` (the random test detector
finds boxes on the empty scene, not on people). A description entry with the lowest bar watches anyone: every
track of the person alerts (CAMTRACE_ALERT_REPEAT_SECONDS=0), and the empty scene has no track to alert on.
"""

from __future__ import annotations

import json
import statistics
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np
import paho.mqtt.client as mqtt
from camera_fixtures import MjpegCamera

from camtrace.synthetic import FigureDetector, generate_footage

CAMERA_FPS = 10.0


class PersonLoop:
    """Frames of a camera where one person walks through every ``gap_seconds + walk`` seconds."""

    def __init__(self, folder: Path, gap_seconds: float, seed: int = 5) -> None:
        footage = generate_footage(folder, cameras=1, identities=1, seconds=8.0, fps=int(CAMERA_FPS), seed=seed)
        self.camera = next(iter(footage.videos))
        self.background = footage.background(self.camera)
        capture = cv2.VideoCapture(str(footage.videos[self.camera]))
        frames = []
        while True:
            ok, frame = capture.read()
            if not ok:
                break
            frames.append(frame)
        capture.release()
        seen = sorted({box.frame_index for box in footage.boxes if box.camera == self.camera and box.visible > 0.5})
        if not seen:
            raise RuntimeError("the synthetic person never shows on the camera; pick another seed")
        self.walk = frames[seen[0] : seen[-1] + 1]
        self.gap = int(round(gap_seconds * CAMERA_FPS))
        self.sent = 0
        self.walks: list[list[float]] = []  # [first person frame sent at, last sent at] per walk
        self.finished = 0  # walks whose last frame was sent
        self._lock = threading.Lock()

    def draw(self, _: int) -> np.ndarray:
        """The next frame of the loop (every connection shares one clock: a reconnect does not rewind it)."""
        with self._lock:
            phase = self.sent % (self.gap + len(self.walk))
            self.sent += 1
            if phase < self.gap:
                return self.background
            step = phase - self.gap
            if step == 0:
                self.walks.append([time.time(), time.time()])
            self.walks[-1][1] = time.time()
            self.finished += step == len(self.walk) - 1
            return self.walk[step]

    def detector(self) -> FigureDetector:
        return FigureDetector(self.background)

    def camera_server(self) -> MjpegCamera:
        camera = MjpegCamera(fps=CAMERA_FPS, size=(self.background.shape[1], self.background.shape[0]), draw=self.draw)
        camera.start()
        return camera


class TimedSubscriber:
    """An MQTT client on the alerts topic keeping (arrival time, alert) of every message."""

    def __init__(self, port: int, topic: str) -> None:
        self.messages: list[tuple[float, dict]] = []
        self.client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2)
        subscribed = threading.Event()
        self.client.on_connect = lambda c, *_: c.subscribe(topic, qos=1)
        self.client.on_subscribe = lambda *_: subscribed.set()
        self.client.on_message = lambda c, u, message: self.messages.append((time.time(), json.loads(message.payload)))
        self.client.connect("127.0.0.1", port)
        self.client.loop_start()
        if not subscribed.wait(10):
            raise RuntimeError(f"no MQTT subscription acknowledged on 127.0.0.1:{port}")

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


@dataclass
class Latency:
    """Seconds from each walk's first person frame to the first alert on a track of that walk."""

    seconds: list[float] = field(default_factory=list)
    missed: int = 0  # walks that ended with no alert (yet)
    stray: list[dict] = field(default_factory=list)  # alerts on a track that began while nobody was on screen

    def summary(self) -> dict:
        ordered = sorted(self.seconds)
        if not ordered:
            return {"walks": self.missed, "alerted": 0}
        p95 = ordered[min(len(ordered) - 1, int(np.ceil(0.95 * len(ordered))) - 1)]
        return {
            "walks": len(ordered) + self.missed,
            "alerted": len(ordered),
            "p50_s": round(statistics.median(ordered), 2),
            "p95_s": round(p95, 2),
            "max_s": round(ordered[-1], 2),
            "stray_alerts": len(self.stray),
        }


def walk_latencies(walks: list[list[float]], messages: list[tuple[float, dict]], slack: float = 1.0) -> Latency:
    """Match each walk with the alerts whose track began while the person was on screen (the recorder's clock is
    the same wall clock, up to a sampled frame); the first one's arrival is that walk's alert."""
    found = Latency()
    if walks:
        found.stray = [
            alert
            for _, alert in messages
            if alert["ts"] <= walks[-1][1] and not any(a - slack <= alert["ts"] <= b + slack for a, b in walks)
        ]
    for first, last in walks:
        arrivals = [at for at, alert in messages if first - slack <= alert["ts"] <= last + slack]
        if arrivals:
            found.seconds.append(min(arrivals) - first)
        else:
            found.missed += 1
    return found


def run_live_camera(env: dict, loop: PersonLoop, mqtt_port: int, topic: str, walks: int, patience: float = 60.0) -> Latency:
    """Record ``loop``'s camera as `camtrace camera run` does, the watch entry set, until ``walks`` walks have
    each alerted (or ``patience`` seconds after the last one ended); the latency of each walk."""
    from distributed_fixtures import settings_from

    from camtrace.search.watch import WatchService
    from camtrace.services import Services
    from camtrace.workers.ops import CameraFleet

    services = Services(settings_from(env))
    services.detector = loop.detector()
    WatchService(services).add(username="live", text="anyone at all", min_score=-1.0, note="anyone")
    services.model().encoder.load()  # a running service has its models loaded
    camera = loop.camera_server()
    services.db.ensure_camera(loop.camera, url=camera.url)
    subscriber = TimedSubscriber(mqtt_port, topic)
    fleet = CameraFleet(services, (loop.camera,), poll_seconds=0.5)
    stop = threading.Event()
    runner = threading.Thread(target=fleet.run, kwargs={"stop": stop}, daemon=True)
    runner.start()
    try:
        while True:
            done = loop.walks[: min(walks, loop.finished)]
            found = walk_latencies(done, list(subscriber.messages))
            if len(done) == walks and (found.missed == 0 or time.time() > done[-1][1] + patience):
                return found
            if not runner.is_alive():
                raise RuntimeError("the camera service stopped")
            time.sleep(0.2)
    finally:
        stop.set()
        runner.join(timeout=60)
        camera.stop()
        subscriber.close()
        services.close()
        services.db.close()
