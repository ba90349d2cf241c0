"""Searches while another process ingests, on one host: processes taking turns on the embedded index's
lock (each opens the shard when its turn comes) against one owner process answering both over its socket.

A writer process upserts batches of new points without pause while this process runs camera+time filtered
grouped searches; printed: search p50/p95 and the points/s the writer kept up. Both runs use the same
compact shard (built first, its segments indexed). Figures, not pass/fail.

    .venv/bin/python benchmarks/bench_index_owner.py --points 50000 --seconds 20
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from camtrace.settings import Settings
from camtrace.storage.edge import EdgeIndex
from camtrace.storage.index import open_index
from camtrace.storage.owner import OwnedIndex, owner_answers

sys.path.insert(0, str(Path(__file__).parent))
from bench_index import MODEL, clustered_data, layout_point, make_queries  # noqa: E402

WRITER = """
import sys, time, json
import numpy as np
from camtrace.settings import Settings
from camtrace.storage.index import open_index
from camtrace.types import IndexPoint, point_id
settings = Settings(data_dir=sys.argv[1], qdrant_url=None)
first, seconds = int(sys.argv[2]), float(sys.argv[3])
rng = np.random.default_rng(first)
index = open_index(settings, "bench-model", 768)
done, start = 0, time.perf_counter()
while time.perf_counter() - start < seconds:
    vectors = rng.standard_normal((256, 768)).astype(np.float32)
    batch = []
    for j, vector in enumerate(vectors):
        n = first + done + j
        track = f"cam{n % 20:02d}-day2:{n // 8}:1"
        batch.append(IndexPoint(id=point_id(f"cam{n % 20:02d}-day2", n, track), vector=vector / np.linalg.norm(vector),
                                payload={"camera_id": f"cam{n % 20:02d}", "video_id": f"cam{n % 20:02d}-day2",
                                         "track_id": track, "ts": 1_700_100_000.0 + n, "frame_index": n}))
    index.upsert(batch)
    done += 256
print(json.dumps({"written": done, "seconds": time.perf_counter() - start}))
"""


def run(settings: Settings, data_start: int, queries, seconds: float, keep_open: float) -> dict:
    import json

    writer = subprocess.Popen(
        [sys.executable, "-c", WRITER, str(settings.data_dir), str(data_start), str(seconds)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    index = open_index(settings, MODEL, 768)
    if hasattr(index, "keep_open"):
        index.keep_open = keep_open  # as the query service holds it
    times = []
    start = time.perf_counter()
    i = 0
    while time.perf_counter() - start < seconds:
        q, flt = queries[i % len(queries)]
        t = time.perf_counter()
        index.search(q, flt, limit=10)
        times.append((time.perf_counter() - t) * 1e3)
        i += 1
    out, err = writer.communicate(timeout=600)
    if writer.returncode != 0:
        raise SystemExit(f"the writer failed:\n{err}")
    written = json.loads(out.strip().splitlines()[-1])
    index.close()
    return {
        "searches": len(times),
        "p50_ms": float(np.percentile(times, 50)),
        "p95_ms": float(np.percentile(times, 95)),
        "max_ms": float(np.max(times)),
        "written_per_s": written["written"] / written["seconds"],
        "owned": isinstance(index, OwnedIndex),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--points", type=int, default=50_000)
    parser.add_argument("--seconds", type=float, default=20.0)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-owner-") as tmp:
        settings = Settings(data_dir=tmp, qdrant_url=None, index_layout="compact")
        data = clustered_data(args.points, 768, 20, 24.0, 8, 0)
        queries = make_queries(data, 100, 20, 24.0, 0)
        index = EdgeIndex(settings.index_dir, MODEL, 768)
        with index.session():
            for i in range(0, args.points, 512):
                index.upsert([layout_point(data, j) for j in range(i, min(args.points, i + 512))])
                index.maintain()
        print(f"{args.points} points, compact, {index.facts()}; {os.cpu_count()} CPUs", flush=True)
        index.close()
        shared = run(settings, args.points, queries, args.seconds, keep_open=2.0)
        print(f"taking turns on the lock: {shared}", flush=True)
        env = {**os.environ, "CAMTRACE_DATA_DIR": tmp, "CAMTRACE_INDEX_MAINTAIN_SECONDS": "0"}
        env.pop("CAMTRACE_QDRANT_URL", None)
        owner = subprocess.Popen(
            [sys.executable, "-c", "from camtrace.cli import cli; cli()", "index", "serve"], env=env, stderr=subprocess.DEVNULL
        )
        try:
            while not owner_answers(settings.index_dir):
                time.sleep(0.1)
            owned = run(settings, args.points + 10_000_000, queries, args.seconds, keep_open=2.0)
        finally:
            owner.terminate()
            owner.wait(timeout=60)
        print(f"one owner:               {owned}", flush=True)
        print(
            f"search p50 x{shared['p50_ms'] / owned['p50_ms']:.1f}, p95 x{shared['p95_ms'] / owned['p95_ms']:.1f} "
            f"faster with an owner; writer {owned['written_per_s']:.0f} vs {shared['written_per_s']:.0f} points/s"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
