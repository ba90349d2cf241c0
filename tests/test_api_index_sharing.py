"""The query service keeps the embedded index open between searches, and hands it over to a waiting process."""

from __future__ import annotations

import subprocess
import sys
import time

import numpy as np

from camtrace.storage.edge import EdgeIndex
from camtrace.types import IndexPoint, point_id

DIM = 8

COUNT_IN_ANOTHER_PROCESS = """
import sys, time
from camtrace.storage.edge import EdgeIndex
started = time.monotonic()
index = EdgeIndex(sys.argv[1], "m", 8, lock_timeout=30)
print(index.count(), round(time.monotonic() - started, 3))
"""


def points(n: int) -> list[IndexPoint]:
    rng = np.random.default_rng(0)
    return [
        IndexPoint(
            id=point_id("v", i, "v:0:1"),
            vector=rng.standard_normal(DIM).astype(np.float32),
            payload={
                "camera_id": "cam",
                "video_id": "v",
                "track_id": f"v:0:{i}",
                "ts": float(i),
                "frame_index": i,
                "bbox": [0.0, 0.0, 1.0, 1.0],
                "det_conf": 0.9,
                "crop_key": f"cam/{i}.jpg",
                "model_version": "m",
            },
        )
        for i in range(n)
    ]


def test_a_kept_open_shard_serves_the_next_call_and_yields_to_a_waiting_process(tmp_path):
    index = EdgeIndex(tmp_path, "m", DIM, keep_open=30.0)
    index.ensure()
    index.upsert(points(20))
    assert index._shard is not None  # still loaded after the call: the next search skips the load
    loaded = index._shard
    assert index.count() == 20 and index._shard is loaded

    # Another process asks for the shard: it gets it long before keep_open (30 s) runs out.
    other = subprocess.run(
        [sys.executable, "-c", COUNT_IN_ANOTHER_PROCESS, str(tmp_path)], capture_output=True, text=True, timeout=60
    )
    assert other.returncode == 0, other.stderr
    count, waited = other.stdout.split()
    assert int(count) == 20 and float(waited) < 25
    assert index._shard is None  # released for the other process
    assert index.count() == 20  # and loaded again on the next call
    index.close()
    assert index._shard is None


def test_the_shard_is_released_after_keep_open_idle_seconds(tmp_path):
    index = EdgeIndex(tmp_path, "m", DIM, keep_open=0.2)
    index.ensure()
    assert index._shard is not None
    deadline = time.monotonic() + 10
    while index._shard is not None and time.monotonic() < deadline:
        time.sleep(0.05)
    assert index._shard is None
    plain = EdgeIndex(tmp_path, "m", DIM)  # keep_open 0: closed after every call, as the workers use it
    plain.ensure()
    assert plain._shard is None
