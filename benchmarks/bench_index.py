"""Vector index benchmark: Qdrant Edge (EdgeIndex) against qdrant-client's local mode (ServerIndex
on QdrantClient(path=...)) on the same random data, in one run.

Prints upserts/s, camera+time filtered search latency (p50/p95) and recall@10
against exact numpy search under the same filter, then the ratios. Figures,
not pass/fail.

    .venv/bin/python benchmarks/bench_index.py                 # 100k points, 768-d
    .venv/bin/python benchmarks/bench_index.py --points 5000   # quick check
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from camtrace.storage.edge import EdgeIndex
from camtrace.storage.index import VectorIndex
from camtrace.storage.server import ServerIndex

from camtrace.types import IndexPoint, SearchFilter, point_id

T0 = 1_700_000_000.0
MODEL = "bench-model"


@dataclass
class Data:
    vectors: np.ndarray  # (n, dim), unit length
    cameras: np.ndarray  # camera index per point
    ts: np.ndarray
    tracks: np.ndarray  # track index per point
    points: list[IndexPoint]


def make_data(n: int, dim: int, cameras: int, hours: float, per_track: int, seed: int) -> Data:
    """Points grouped in tracks (~per_track crops each, close in time and on one camera)."""
    rng = np.random.default_rng(seed)
    vectors = rng.standard_normal((n, dim), dtype=np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    tracks = np.arange(n) // per_track
    n_tracks = int(tracks[-1]) + 1
    track_camera = rng.integers(0, cameras, n_tracks)
    track_start = T0 + rng.uniform(0, hours * 3600, n_tracks)
    cams = track_camera[tracks]
    ts = track_start[tracks] + (np.arange(n) % per_track) * 0.4
    points = []
    for i in range(n):
        camera = f"cam{cams[i]:02d}"
        video = f"{camera}-day1"
        track = f"{video}:{tracks[i]}:1"
        frame = int((ts[i] - T0) * 5)
        points.append(
            IndexPoint(
                id=point_id(video, frame, track),
                vector=vectors[i],
                payload={
                    "camera_id": camera,
                    "video_id": video,
                    "track_id": track,
                    "ts": float(ts[i]),
                    "frame_index": frame,
                    "bbox": [100.0, 80.0, 180.0, 300.0],
                    "det_conf": 0.8,
                    "crop_key": f"{camera}/{video}/{i}.jpg",
                    "model_version": MODEL,
                },
            )
        )
    return Data(vectors, cams, ts, tracks, points)


def make_queries(data: Data, count: int, cameras: int, hours: float, seed: int):
    """Queries near stored points, each with 3 cameras and a quarter of the time range."""
    rng = np.random.default_rng(seed + 1)
    out = []
    for _ in range(count):
        anchor = int(rng.integers(0, len(data.points)))
        q = data.vectors[anchor] + 0.8 * rng.standard_normal(data.vectors.shape[1]).astype(np.float32) / np.sqrt(
            data.vectors.shape[1]
        )
        q /= np.linalg.norm(q)
        cams = {int(data.cameras[anchor])} | {int(c) for c in rng.choice(cameras, 2, replace=False)}
        span = hours * 3600 / 4
        since = float(min(max(data.ts[anchor] - span / 2, T0), T0 + hours * 3600 - span))
        flt = SearchFilter(camera_ids=tuple(f"cam{c:02d}" for c in sorted(cams)), since=since, until=since + span)
        out.append((q.astype(np.float32), flt))
    return out


def exact(data: Data, q: np.ndarray, flt: SearchFilter, k: int) -> tuple[list[str], list[str]]:
    """Exact top-k point ids and top-k track ids (best point per track) under the filter."""
    cams = np.isin(data.cameras, [int(c[3:]) for c in flt.camera_ids])
    mask = cams & (data.ts >= flt.since) & (data.ts <= flt.until)
    idx = np.flatnonzero(mask)
    scores = data.vectors[idx] @ q
    order = idx[np.argsort(-scores)]
    points = [data.points[i].id for i in order[:k]]
    tracks: list[str] = []
    for i in order:
        track = data.points[i].payload["track_id"]
        if track not in tracks:
            tracks.append(track)
            if len(tracks) == k:
                break
    return points, tracks


def recall(found: list[str], truth: list[str]) -> float:
    return len(set(found) & set(truth)) / max(1, len(truth))


def run_backend(name: str, index: VectorIndex, data: Data, queries, truths, k: int, batch: int) -> dict:
    index.ensure()
    with index.session():
        start = time.perf_counter()
        for i in range(0, len(data.points), batch):
            index.upsert(data.points[i : i + batch])
        upsert_s = time.perf_counter() - start
        assert index.count() == len(data.points)
        grouped_ms, points_ms, track_recall, point_recall = [], [], [], []
        for (q, flt), (true_points, true_tracks) in zip(queries, truths):
            t = time.perf_counter()
            hits = index.search(q, flt, limit=k)
            grouped_ms.append((time.perf_counter() - t) * 1e3)
            t = time.perf_counter()
            nearest = index.search_points(q, flt, limit=k)
            points_ms.append((time.perf_counter() - t) * 1e3)
            track_recall.append(recall([h.track_id for h in hits], true_tracks))
            point_recall.append(recall([h.point_id for h in nearest], true_points))
    result = {
        "backend": name,
        "points": len(data.points),
        "upserts_per_s": len(data.points) / upsert_s,
        "queries": len(queries),
        "grouped_p50_ms": float(np.percentile(grouped_ms, 50)),
        "grouped_p95_ms": float(np.percentile(grouped_ms, 95)),
        "points_p50_ms": float(np.percentile(points_ms, 50)),
        "points_p95_ms": float(np.percentile(points_ms, 95)),
        "track_recall_at_k": float(np.mean(track_recall)),
        "point_recall_at_k": float(np.mean(point_recall)),
    }
    if isinstance(index, EdgeIndex):
        # Outside a session every call opens and closes the shard under the lock.
        q, flt = queries[0]
        samples = []
        for _ in range(3):
            t = time.perf_counter()
            index.search(q, flt, limit=k)
            samples.append((time.perf_counter() - t) * 1e3)
        result["grouped_unsessioned_ms"] = float(np.median(samples))
    index.close()
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--points", type=int, default=100_000)
    parser.add_argument("--dim", type=int, default=768)
    parser.add_argument("--cameras", type=int, default=20)
    parser.add_argument("--hours", type=float, default=24.0, help="time range the points spread over")
    parser.add_argument("--per-track", type=int, default=8, help="crops per track")
    parser.add_argument("--queries", type=int, default=200, help="timed queries on Qdrant Edge")
    parser.add_argument("--local-queries", type=int, default=30, help="timed queries on the slow local mode")
    parser.add_argument("--k", type=int, default=10)
    parser.add_argument("--batch", type=int, default=512)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--skip-local", action="store_true", help="only Qdrant Edge")
    parser.add_argument("--json", type=Path, help="also write the figures here")
    args = parser.parse_args(argv)

    print(f"data: {args.points} points, {args.dim}-d, {args.cameras} cameras, {args.hours:g} h, "
          f"~{args.per_track} crops/track; filter: 3 cameras + 1/4 of the time range", flush=True)
    data = make_data(args.points, args.dim, args.cameras, args.hours, args.per_track, args.seed)
    queries = make_queries(data, max(args.queries, args.local_queries), args.cameras, args.hours, args.seed)
    truths = [exact(data, q, flt, args.k) for q, flt in queries]

    results = []
    with tempfile.TemporaryDirectory(prefix="bench-index-") as tmp:
        edge = EdgeIndex(Path(tmp) / "edge", MODEL, args.dim)
        results.append(run_backend("qdrant-edge", edge, data, queries[: args.queries], truths[: args.queries], args.k, args.batch))
        report(results[-1])
        if not args.skip_local:
            from qdrant_client import QdrantClient

            # Its size warning says what the note below says.
            warnings.filterwarnings("ignore", message="Local mode is not recommended")
            print(f"qdrant-client local mode is a brute-force stand-in and slow at this size: "
                  f"only {args.local_queries} queries are timed on it", flush=True)
            local = ServerIndex(QdrantClient(path=str(Path(tmp) / "local")), MODEL, args.dim)
            n = args.local_queries
            results.append(run_backend("qdrant-client local", local, data, queries[:n], truths[:n], args.k, args.batch))
            report(results[-1])

    if len(results) == 2:
        edge_result, local_result = results
        print("ratios (qdrant-edge vs qdrant-client local):")
        print(f"  upserts/s            x{edge_result['upserts_per_s'] / local_result['upserts_per_s']:.1f}")
        print(f"  grouped search p50   x{local_result['grouped_p50_ms'] / edge_result['grouped_p50_ms']:.1f} faster")
        print(f"  grouped search p95   x{local_result['grouped_p95_ms'] / edge_result['grouped_p95_ms']:.1f} faster")
        print(f"  point search p50     x{local_result['points_p50_ms'] / edge_result['points_p50_ms']:.1f} faster")
        print(f"  track recall@{args.k}      {edge_result['track_recall_at_k']:.3f} vs {local_result['track_recall_at_k']:.3f}")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(results, indent=2))
    return 0


def report(r: dict) -> None:
    line = (f"{r['backend']:>20}: {r['upserts_per_s']:8.0f} upserts/s | filtered search over {r['queries']} queries: "
            f"grouped p50 {r['grouped_p50_ms']:.1f} ms p95 {r['grouped_p95_ms']:.1f} ms, "
            f"points p50 {r['points_p50_ms']:.1f} ms p95 {r['points_p95_ms']:.1f} ms | "
            f"recall@k tracks {r['track_recall_at_k']:.3f} points {r['point_recall_at_k']:.3f}")
    if "grouped_unsessioned_ms" in r:
        line += f" | one search with its own open/close {r['grouped_unsessioned_ms']:.0f} ms"
    print(line, flush=True)


if __name__ == "__main__":
    sys.exit(main())
