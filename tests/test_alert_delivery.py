"""Alert delivery stays off the ingest path: a webhook receiver that hangs (longer than the sender's timeout) does
not hold up the embed call that raised the alert, MQTT still gets it at once, and the webhook gets it on the retry.

Real parts: a segment of the synthetic footage detected and embedded by the real pipeline stages (tiny random
embedder, the figure detector), the Mosquitto on 127.0.0.1:1883, a real HTTP receiver that checks the signature."""

from __future__ import annotations

import hashlib
import hmac
import json
import threading
import time
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from distributed_fixtures import camtrace_env, settings_from, wait_for
from watch_fixtures import SECRET, Subscriber

from camtrace.notify import SEND_TIMEOUT_SECONDS, AlertSender, DeliveryThread
from camtrace.search.watch import WatchService
from camtrace.services import Services
from camtrace.storage.watchlists import WatchStore
from camtrace.synthetic import FigureDetector
from camtrace.workers.pipeline import CropIndexer, SegmentWatch, detect_segment, open_sources, register_video

SYSTEM_MQTT_PORT = 1883  # scripts/test starts Mosquitto there
HOUR = 3600.0


class HangingReceiver:
    """A webhook receiver that, while ``hanging``, holds each request without an answer until ``release`` is set;
    else it answers 204 (signature checked) and keeps the body. ``events`` records each request and answer."""

    def __init__(self, events: list[str]) -> None:
        self.hanging = True
        self.release = threading.Event()
        self.bodies: list[dict] = []
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 (http.server's name)
                body = self.rfile.read(int(self.headers["Content-Length"]))
                events.append("receiver got a request")
                if receiver.hanging:
                    receiver.release.wait(120)
                    self.close_connection = True
                    return  # never answered
                expected = "sha256=" + hmac.new(SECRET.encode(), body, hashlib.sha256).hexdigest()
                if not hmac.compare_digest(self.headers.get("X-Camtrace-Signature", ""), expected):
                    self.send_response(401)
                else:
                    receiver.bodies.append(json.loads(body))
                    self.send_response(204)
                self.end_headers()
                events.append("receiver answered")

            def log_message(self, *args) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hook"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()


def detected_segment(services: Services, path: str, camera: str, start_ts: float):
    """The first segment of a video, registered and detected: what the embed step receives."""
    (video,) = open_sources(path, start_ts)
    segments = video.segments(services.settings.segment_seconds)
    job_id = services.db.create_job("ingest", path, camera).id
    register_video(services.db, video, camera, segments, job_id)
    try:
        return detect_segment(video, segments[0], camera, services.detector, services.settings)
    finally:
        video.close()


def test_a_hanging_webhook_does_not_hold_up_the_embed_call_and_the_alert_still_arrives(
    tmp_path, footage, tiny_yolo_dir, tiny_siglip_dir
):
    events: list[str] = []
    receiver = HangingReceiver(events)
    topic = f"camtrace/alerts/test-{uuid.uuid4().hex[:8]}"
    env = camtrace_env(
        tmp_path / "data",
        tiny_yolo_dir,
        tiny_siglip_dir,
        CAMTRACE_SEGMENT_SECONDS="60",
        CAMTRACE_MQTT_URL=f"mqtt://127.0.0.1:{SYSTEM_MQTT_PORT}",
        CAMTRACE_MQTT_TOPIC=topic,
        CAMTRACE_WEBHOOK_URLS=receiver.url,
        CAMTRACE_WEBHOOK_SECRET=SECRET,
    )
    services = Services(settings_from(env))
    store = WatchStore(services.db)
    subscriber = Subscriber(SYSTEM_MQTT_PORT, topic)
    try:
        camera = sorted(footage.videos)[0]
        services.detector = FigureDetector(footage.background(camera))
        WatchService(services).add(username="ivy", text="anyone at all", min_score=-1.0, note="everyone")
        sender = DeliveryThread(services.settings, store)
        result = detected_segment(services, str(footage.videos[camera]), camera, footage.start_ts[camera])
        model = services.model()
        indexer = CropIndexer(model.encoder, model.index, services.db, services.crops, SegmentWatch(services, model, sender))
        indexer.index_segment(result)  # the embed call: crops embedded, written, checked against the watchlist
        events.append("embed returned")
        # One alert (once per stay on a camera), with a delivery row per target. The embed call did not wait for
        # the receiver: it returned before the receiver answered and before the webhook's try ended.
        (alert,) = store.alerts(limit=10)
        tried = {d.label.split(" ")[0]: d.attempts for d in store.deliveries(alert.id)}
        assert tried[receiver.url] == 0 and "receiver answered" not in events, (tried, events)
        # MQTT gets it from the delivery thread while the webhook hangs.
        wait_for(lambda: subscriber.messages, 60, "the alert on MQTT")
        assert [m["id"] for m in subscriber.messages] == [alert.id]
        wait_for(lambda: "receiver got a request" in events, 60, "the webhook call")
        # The hanging call ends in the sender's timeout: logged, kept for a retry.
        wait_for(lambda: store.deliveries(alert.id)[1].attempts == 1, 12 * SEND_TIMEOUT_SECONDS, "the webhook try to time out")
        webhook = store.deliveries(alert.id)[1]
        assert webhook.status == "pending" and "Timeout" in webhook.last_error, webhook
        # The receiver is back: the next pass (beat's task calls the same) delivers it, once.
        receiver.hanging = False
        receiver.release.set()
        report = AlertSender(services.settings, store).deliver(now=time.time() + HOUR)
        assert report.delivered == 1, report
        assert [b["id"] for b in receiver.bodies] == [alert.id] and receiver.bodies[0]["entry_note"] == "everyone"
        assert {d.status for d in store.deliveries(alert.id)} == {"delivered"}
        assert events.index("embed returned") < events.index("receiver answered"), events
    finally:
        receiver.release.set()
        subscriber.close()
        receiver.server.shutdown()
        services.close()
        services.db.close()
