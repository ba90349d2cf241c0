"""Prometheus metrics of the workers.

Prefork workers run several processes, so metrics use prometheus_client's
multiprocess mode when PROMETHEUS_MULTIPROC_DIR is set (``camtrace worker``
sets it when CAMTRACE_METRICS_PORT is given) and are served by the parent.
"""

from __future__ import annotations

import os

from prometheus_client import CollectorRegistry, Counter, Histogram, start_http_server

FRAMES = Counter("camtrace_frames_total", "Frames decoded and run through the detector")
CROPS = Counter("camtrace_crops_total", "Crops embedded and indexed")
BATCH_SIZE = Histogram("camtrace_embed_batch_crops", "Crops per embed batch", buckets=(1, 4, 8, 16, 32, 64, 128, 256, 512))
TASK_SECONDS = Histogram("camtrace_task_seconds", "Task latency", ["task"], buckets=(0.1, 0.5, 1, 2, 5, 10, 30, 60, 300))
TASK_ERRORS = Counter("camtrace_task_errors_total", "Task failures (retried or final)", ["task"])


class QueueDepthCollector:
    """``camtrace_queue_depth{queue=...}``: messages waiting per queue, read from the broker at scrape time."""

    def __init__(self, broker_url: str, queues: tuple[str, ...]) -> None:
        self.broker_url = broker_url
        self.queues = queues

    def collect(self):
        from prometheus_client.core import GaugeMetricFamily

        from camtrace.workers.ops import queue_depths

        gauge = GaugeMetricFamily("camtrace_queue_depth", "Messages waiting per queue", labels=["queue"])
        try:
            depths = queue_depths(self.broker_url, self.queues)
        except Exception:  # the broker is away: report no depth rather than fail the whole scrape
            depths = {}
        for queue, depth in depths.items():
            gauge.add_metric([queue], depth)
        yield gauge


def serve(port: int, broker_url: str | None = None, queues: tuple[str, ...] = ()) -> None:
    """Expose the metrics of every worker process of this host on ``port`` (and queue depths)."""
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        from prometheus_client import multiprocess

        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)
    else:
        from prometheus_client import REGISTRY as registry
    if broker_url and queues:
        registry.register(QueueDepthCollector(broker_url, queues))
    start_http_server(port, registry=registry)
