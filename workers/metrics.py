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
BATCH_SIZE = Histogram(
    "camtrace_embed_batch_crops", "Crops per embed batch", buckets=(1, 4, 8, 16, 32, 64, 128, 256, 512)
)
TASK_SECONDS = Histogram("camtrace_task_seconds", "Task latency", ["task"], buckets=(0.1, 0.5, 1, 2, 5, 10, 30, 60, 300))
TASK_ERRORS = Counter("camtrace_task_errors_total", "Task failures (retried or final)", ["task"])


def serve(port: int) -> None:
    """Expose the metrics of every worker process of this host on ``port``."""
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        from prometheus_client import multiprocess

        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)
        start_http_server(port, registry=registry)
    else:
        start_http_server(port)
