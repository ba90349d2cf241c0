"""Delivery of watchlist alerts to MQTT and to webhooks, with a log of every try.

Each alert gets one delivery row per target when it is stored
(camtrace.storage.watchlists). ``AlertSender.deliver`` tries the due ones:
MQTT publishes the alert's JSON to CAMTRACE_MQTT_TOPIC with QoS 1 (the broker
acknowledged it); a webhook POSTs the same JSON with its HMAC-SHA256 signature
under CAMTRACE_WEBHOOK_SECRET in ``X-Camtrace-Signature: sha256=<hex>`` (a 2xx
answer counts as delivered). A failed try is logged on the row and tried again
after 10 s, 20 s, 40 s ... up to an hour, CAMTRACE_ALERT_DELIVERY_ATTEMPTS
times in all: a broker or receiver that is down loses nothing, beat (or
``camtrace alerts deliver``) sends what waits once it is back.

The embed path only stores an alert and its delivery rows; the first try
happens elsewhere (``DeliveryThread`` in a local process, a queued
``camtrace.deliver_alerts`` task in distributed mode), so a slow or dead
receiver never slows ingest.

Everything a target receives is what ``alert_payload`` builds: ids, camera,
times, probability and links relative to the service (no disk paths).
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import queue
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from urllib.parse import quote, unquote, urlsplit

from camtrace import validation
from camtrace.settings import Settings
from camtrace.storage.watchlists import Alert, WatchEntry, WatchStore

log = logging.getLogger(__name__)

SIGNATURE_HEADER = "X-Camtrace-Signature"
SEND_TIMEOUT_SECONDS = 5.0
CLAIM_SECONDS = 60.0  # a delivery being sent is not sent by another process meanwhile (longer than any try takes)
FIRST_RETRY_SECONDS = 10.0
LONGEST_RETRY_SECONDS = 3600.0
DELIVERY_THREAD_IDLE_SECONDS = 30.0  # a delivery thread with nothing to send for this long ends


def webhook_key(url: str) -> str:
    """A webhook's name in the delivery log: a hash of its URL (which may hold a secret), not the URL."""
    return "webhook:" + hashlib.sha256(url.encode()).hexdigest()[:16]


def delivery_targets(settings: Settings) -> list[tuple[str, str]]:
    """(target, label) of every configured target: MQTT, then each webhook."""
    targets = []
    if settings.mqtt_url:
        targets.append(("mqtt", f"{validation.mask_secrets(settings.mqtt_url)} {settings.mqtt_topic}"))
    targets += [(webhook_key(url), validation.mask_secrets(url) or "") for url in settings.webhook_url_list()]
    return targets


def sign(secret: str, body: bytes) -> str:
    """The signature header's value: ``sha256=`` and the hex HMAC-SHA256 of the body under the secret."""
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


def retry_wait(attempts: int) -> float:
    """Seconds before the next try after ``attempts`` failed ones."""
    return min(LONGEST_RETRY_SECONDS, FIRST_RETRY_SECONDS * 2 ** max(0, attempts - 1))


def alert_payload(alert: Alert, entry: WatchEntry | None) -> dict:
    return {
        "type": "camtrace.alert",
        "id": alert.id,
        "entry_id": alert.entry_id,
        "entry_kind": entry.kind if entry else None,
        "entry_note": entry.note if entry else None,
        "entry_text": entry.text if entry else None,
        "entry_track_id": entry.track_id if entry else None,
        "track_id": alert.track_id,
        "camera_id": alert.camera_id,
        "ts": alert.ts,
        "time": datetime.fromtimestamp(alert.ts, tz=UTC).isoformat(),
        "probability": alert.probability,
        "score": alert.score,
        "crop_url": f"/api/crops/{alert.crop_key}" if alert.crop_key else None,
        "track_url": f"/#track/{quote(alert.track_id, safe='')}",
        "created_at": alert.created_at,
    }


def payload_bytes(payload: dict) -> bytes:
    return json.dumps(payload, sort_keys=True, separators=(",", ":")).encode()


@dataclass
class DeliveryReport:
    delivered: int = 0
    retrying: int = 0
    failed: int = 0

    def as_dict(self) -> dict:
        return dict(self.__dict__)


class AlertSender:
    def __init__(self, settings: Settings, store: WatchStore) -> None:
        self.settings = settings
        self.store = store
        self._webhooks = {webhook_key(url): url for url in settings.webhook_url_list()}

    def deliver(self, alert_ids: Sequence[int] | None = None, now: float | None = None) -> DeliveryReport:
        """Try every due delivery (of ``alert_ids`` only, when given) once; never raises for a target's failure."""
        report = DeliveryReport()
        due = self.store.due_deliveries(now, alert_ids=alert_ids)
        if not due:
            return report
        entries = {e.id: e for e in self.store.entries()}
        alerts: dict[int, Alert] = {}
        for delivery in due:
            if not self.store.claim(delivery, CLAIM_SECONDS):
                continue  # another process is sending it
            if delivery.alert_id not in alerts:
                alerts[delivery.alert_id] = self.store.alert(delivery.alert_id)
            alert = alerts[delivery.alert_id]
            body = payload_bytes(alert_payload(alert, entries.get(alert.entry_id)))
            try:
                self._send(delivery.target, body)
            except Exception as exc:  # any failure of a target is logged on its row and retried later
                error = f"{type(exc).__name__}: {exc}"
                attempts = delivery.attempts + 1
                last = attempts >= self.settings.alert_delivery_attempts or delivery.target not in self._targets()
                self.store.record_attempt(delivery.id, error=error, next_at=None if last else time.time() + retry_wait(attempts))
                log.warning("alert %d to %s failed (try %d): %s", alert.id, delivery.label, attempts, error)
                report.failed += last
                report.retrying += not last
                continue
            self.store.record_attempt(delivery.id, error=None, next_at=None)
            report.delivered += 1
        return report

    def _targets(self) -> set[str]:
        return {"mqtt"} | set(self._webhooks) if self.settings.mqtt_url else set(self._webhooks)

    def _send(self, target: str, body: bytes) -> None:
        if target == "mqtt":
            if not self.settings.mqtt_url:
                raise RuntimeError("CAMTRACE_MQTT_URL is no longer set")
            publish_mqtt(self.settings.mqtt_url, self.settings.mqtt_topic, body)
            return
        url = self._webhooks.get(target)
        if url is None:
            raise RuntimeError("this webhook is no longer in CAMTRACE_WEBHOOK_URLS")
        if not self.settings.webhook_secret:
            raise RuntimeError("CAMTRACE_WEBHOOK_SECRET is not set: webhooks are sent signed only")
        post_webhook(url, body, self.settings.webhook_secret)


class DeliveryThread:
    """Sends the alerts it is handed from a thread of its own: the caller (the embed path) never waits on a
    target. What a try does not deliver stays pending in SQL for the next pass (beat, ``camtrace alerts
    deliver``); ``flush`` waits, for a while, until what was handed over has had its try."""

    def __init__(self, settings: Settings, store: WatchStore) -> None:
        self.sender = AlertSender(settings, store)
        self._queue: queue.Queue[list[int]] = queue.Queue()
        self._start_lock = threading.Lock()
        self._thread: threading.Thread | None = None

    def __call__(self, alert_ids: Sequence[int]) -> None:
        """Queue a first try of these alerts' deliveries; returns at once."""
        if not alert_ids:
            return
        with self._start_lock:
            self._queue.put(list(alert_ids))
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="alert-delivery", daemon=True)
                self._thread.start()

    def _run(self) -> None:
        while True:
            try:
                alert_ids = self._queue.get(timeout=DELIVERY_THREAD_IDLE_SECONDS)
            except queue.Empty:
                with self._start_lock:  # ends when idle; the next alerts start a new one
                    if self._queue.empty():
                        self._thread = None
                        return
                continue
            try:
                self.sender.deliver(alert_ids)
            except Exception:  # the database is away: the rows stay pending for the next pass
                log.exception("could not send alerts %s now; they wait for the next delivery pass", alert_ids)
            finally:
                self._queue.task_done()

    def flush(self, timeout: float) -> bool:
        """Wait up to ``timeout`` seconds until every queued alert had its try; False if some had not."""
        deadline = time.monotonic() + timeout
        while self._queue.unfinished_tasks:
            if time.monotonic() >= deadline:
                return False
            time.sleep(0.05)
        return True


def post_webhook(url: str, body: bytes, secret: str) -> None:
    import httpx

    response = httpx.post(
        url,
        content=body,
        timeout=SEND_TIMEOUT_SECONDS,
        headers={"Content-Type": "application/json", SIGNATURE_HEADER: sign(secret, body), "User-Agent": "camtrace"},
    )
    if not 200 <= response.status_code < 300:
        raise RuntimeError(f"the receiver answered HTTP {response.status_code}")


def publish_mqtt(url: str, topic: str, body: bytes) -> None:
    """Publish one message with QoS 1 and wait until the broker acknowledged it."""
    import paho.mqtt.client as mqtt

    parts = urlsplit(url)
    tls = parts.scheme.lower() == "mqtts"
    client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="", protocol=mqtt.MQTTv311)
    if parts.username:
        client.username_pw_set(unquote(parts.username), unquote(parts.password) if parts.password else None)
    if tls:
        client.tls_set()
    client.connect(parts.hostname or "localhost", parts.port or (8883 if tls else 1883), keepalive=30)
    client.loop_start()
    try:
        info = client.publish(topic, body, qos=1)
        info.wait_for_publish(timeout=SEND_TIMEOUT_SECONDS)
        if not info.is_published():
            raise TimeoutError(f"the MQTT broker did not acknowledge the message within {SEND_TIMEOUT_SECONDS:g} s")
    finally:
        client.disconnect()
        client.loop_stop()
