"""Vector index benchmark: Qdrant Edge (EdgeIndex) against qdrant-client's local mode (ServerIndex
on QdrantClient(path=...)) on the same random data, in one run.

Prints upserts/s, camera+time filtered search latency (p50/p95) and recall@10
against exact numpy search under the same filter, then the ratios. Figures,
not pass/fail.

    .venv/bin/python benchmarks/bench_index.py                 # 100k points, 768-d
    .venv/bin/python benchmarks/bench_index.py --points 5000   # quick check

``--layouts`` compares the embedded index's shard layouts instead (exact: all
vectors fp32 in RAM, scanned; compact: originals memory-mapped, int8 copy in
RAM, HNSW built by maintenance between ingest batches) at each size of
``--sizes``, on clustered unit vectors (people walking several tracks of
several crops each): insert rate (maintenance included, and its share), open
time, the RSS and disk a process holding the shard needs, p50/p95 of camera+time
filtered grouped search and its track recall@10 against exact numpy search.
Each layout's searches run in a fresh process, so its RSS is the shard's alone;
then growth per point is extrapolated to 1M and 10M (marked as such).

    .venv/bin/python benchmarks/bench_index.py --layouts --sizes 100000 300000
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from camtrace.storage.edge import EdgeIndex
from camtrace.storage.index import INDEX_AFTER_POINTS, SEGMENT_POINTS, VectorIndex
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
        anchor = int(rng.integers(0, len(data.vectors)))
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


# Shard layouts -------------------------------------------------------------------
PER_PERSON = 5  # tracks per person in the clustered data


def clustered_data(n: int, dim: int, cameras: int, hours: float, per_track: int, seed: int) -> Data:
    """Like make_data, but vectors cluster as crops of tracks of people (not uniform noise): crops of a track
    are near-identical, a person's tracks close, other people far: what a re-id embedding gives."""
    rng = np.random.default_rng(seed)
    noise = 1.0 / np.sqrt(dim)
    tracks = np.arange(n) // per_track
    n_tracks = int(tracks[-1]) + 1
    people = rng.standard_normal((n_tracks // PER_PERSON + 1, dim), dtype=np.float32)
    people /= np.linalg.norm(people, axis=1, keepdims=True)
    centres = people[np.arange(n_tracks) // PER_PERSON] + 0.7 * noise * rng.standard_normal((n_tracks, dim), dtype=np.float32)
    centres /= np.linalg.norm(centres, axis=1, keepdims=True)
    vectors = np.empty((n, dim), dtype=np.float32)
    for start in range(0, n, 65536):  # in chunks: no second full-size temporary
        stop = min(n, start + 65536)
        chunk = centres[tracks[start:stop]] + 0.5 * noise * rng.standard_normal((stop - start, dim), dtype=np.float32)
        vectors[start:stop] = chunk / np.linalg.norm(chunk, axis=1, keepdims=True)
    track_camera = rng.integers(0, cameras, n_tracks)
    track_start = T0 + rng.uniform(0, hours * 3600, n_tracks)
    cams = track_camera[tracks]
    ts = track_start[tracks] + (np.arange(n) % per_track) * 0.4
    return Data(vectors, cams, ts, tracks, [])


def layout_point(data: Data, i: int) -> IndexPoint:
    camera = f"cam{data.cameras[i]:02d}"
    video = f"{camera}-day1"
    track = f"{video}:{data.tracks[i]}:1"
    frame = int((data.ts[i] - T0) * 5)
    return IndexPoint(
        id=point_id(video, frame, track),
        vector=data.vectors[i],
        payload={
            "camera_id": camera,
            "video_id": video,
            "track_id": track,
            "ts": float(data.ts[i]),
            "frame_index": frame,
            "bbox": [100.0, 80.0, 180.0, 300.0],
            "det_conf": 0.8,
            "crop_key": f"{camera}/{video}/{i}.jpg",
            "model_version": MODEL,
        },
    )


def exact_tracks(data: Data, q: np.ndarray, flt: SearchFilter, k: int) -> list[str]:
    cams = np.isin(data.cameras, [int(c[3:]) for c in flt.camera_ids])
    idx = np.flatnonzero(cams & (data.ts >= flt.since) & (data.ts <= flt.until))
    order = idx[np.argsort(-(data.vectors[idx] @ q))]
    tracks: list[str] = []
    for i in order:
        track = f"cam{data.cameras[i]:02d}-day1:{data.tracks[i]}:1"
        if track not in tracks:
            tracks.append(track)
            if len(tracks) == k:
                break
    return tracks


def folder_bytes(path: Path) -> int:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file())


def rss_mb(field: str = "VmRSS") -> float:
    """Resident memory of this process; ``RssAnon`` leaves out memory-mapped file pages (the page cache's,
    which the kernel drops under pressure): what a process must have."""
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith(f"{field}:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def search_child(root: str, name: str, dim: int, queries_file: str, k: int) -> None:
    """Runs in a fresh process: open the shard, search, print what it cost as JSON."""
    stored = np.load(queries_file, allow_pickle=True)
    vectors, filters = stored["vectors"], stored["filters"]
    index = EdgeIndex(root, name, dim, folder=name)
    before, before_anon = rss_mb(), rss_mb("RssAnon")
    t = time.perf_counter()
    with index.session():
        index.count()
        open_s = time.perf_counter() - t
        opened = rss_mb()
        times, found = [], []
        for q, (cams, since, until) in zip(vectors, filters):
            flt = SearchFilter(camera_ids=tuple(cams), since=float(since), until=float(until))
            t = time.perf_counter()
            hits = index.search(q, flt, limit=k)
            times.append((time.perf_counter() - t) * 1e3)
            found.append([h.track_id for h in hits])
        t = time.perf_counter()
        for q in vectors[:50]:
            index.search(q, limit=k)
        unfiltered_ms = (time.perf_counter() - t) * 1e3 / min(50, len(vectors))
        after, after_anon = rss_mb(), rss_mb("RssAnon")
    print(
        json.dumps(
            {
                "open_s": open_s,
                "rss_open_mb": opened - before,
                "rss_mb": after - before,
                "anon_mb": after_anon - before_anon,
                "p50_ms": float(np.percentile(times, 50)),
                "p95_ms": float(np.percentile(times, 95)),
                "unfiltered_ms": unfiltered_ms,
                "found": found,
            }
        )
    )


def run_layout(layout: str, data: Data, root: Path, queries, truths, k: int, batch: int, segments: dict) -> dict:
    n, dim = data.vectors.shape
    name = f"{layout}-{n}"
    index = EdgeIndex(root, name, dim, layout=layout, **segments)
    maintain_s = longest_step = 0.0
    start = time.perf_counter()
    with index.session():
        for i in range(0, n, batch):
            index.upsert([layout_point(data, j) for j in range(i, min(n, i + batch))])
            t = time.perf_counter()
            index.maintain()  # between batches, as ingest runs it
            maintain_s += time.perf_counter() - t
            longest_step = max(longest_step, time.perf_counter() - t)
    insert_s = time.perf_counter() - start
    facts = index.facts()
    index.close()
    queries_file = root / "queries.npz"
    np.savez(
        queries_file,
        vectors=np.stack([q for q, _ in queries]),
        filters=np.array([(list(f.camera_ids), f.since, f.until) for _, f in queries], dtype=object),
    )
    child = subprocess.run(
        [sys.executable, __file__, "--search-child", str(root), name, str(dim), str(queries_file), str(k)],
        capture_output=True,
        text=True,
        check=False,
    )
    if child.returncode != 0:
        raise SystemExit(f"the search process failed:\n{child.stderr}")
    measured = json.loads(child.stdout.strip().splitlines()[-1])
    recalls = [recall(found, truth) for found, truth in zip(measured.pop("found"), truths)]
    return {
        "layout": layout,
        "points": n,
        "inserts_per_s": n / insert_s,
        "maintain_share": maintain_s / insert_s,
        "longest_maintain_s": longest_step,
        "disk_mb": folder_bytes(root / name) / 2**20,
        "track_recall_at_k": float(np.mean(recalls)),
        "indexed_points": facts["indexed_points"],
        "segments": facts["segments"],
        **measured,
    }


def report_layout(r: dict) -> None:
    print(
        f"{r['layout']:>8} {r['points']:>8}: {r['inserts_per_s']:7.0f} inserts/s "
        f"({100 * r['maintain_share']:.0f}% maintenance, longest step {r['longest_maintain_s']:.1f} s) | "
        f"open {r['open_s']:.2f} s | RSS {r['rss_mb']:.0f} MB "
        f"(anonymous {r['anon_mb']:.0f}, after opening {r['rss_open_mb']:.0f}) | disk {r['disk_mb']:.0f} MB | "
        f"filtered grouped p50 {r['p50_ms']:.1f} ms "
        f"p95 {r['p95_ms']:.1f} ms, unfiltered {r['unfiltered_ms']:.1f} ms | recall@10 {r['track_recall_at_k']:.3f} "
        f"| {r['indexed_points']} indexed in {r['segments']} segments",
        flush=True,
    )


def extrapolate(results: list[dict]) -> list[dict]:
    """Linear growth per point between the two largest measured sizes, carried to 1M and 10M."""
    rows = []
    for layout in sorted({r["layout"] for r in results}):
        mine = sorted((r for r in results if r["layout"] == layout), key=lambda r: r["points"])
        if len(mine) < 2:
            continue
        a, b = mine[-2], mine[-1]
        for target in (1_000_000, 10_000_000):
            if target <= b["points"]:
                continue
            row = {"layout": layout, "points": target, "extrapolated": True}
            for key in ("rss_mb", "anon_mb", "disk_mb", "open_s", "p50_ms", "p95_ms"):
                slope = (b[key] - a[key]) / (b["points"] - a["points"])
                row[key] = max(b[key], b[key] + slope * (target - b["points"]))
            rows.append(row)
    return rows


def layouts_main(args: argparse.Namespace) -> int:
    print(
        f"layouts exact vs compact; clustered {args.dim}-d unit vectors, ~{args.per_track} crops/track, "
        f"{PER_PERSON} tracks/person, {args.cameras} cameras, {args.hours:g} h; filter: 3 cameras + 1/4 of the "
        f"time range; {os.cpu_count()} CPUs",
        flush=True,
    )
    results = []
    for n in args.sizes:
        data = clustered_data(n, args.dim, args.cameras, args.hours, args.per_track, args.seed)
        queries = make_queries(data, args.queries, args.cameras, args.hours, args.seed)
        truths = [exact_tracks(data, q, flt, args.k) for q, flt in queries]
        with tempfile.TemporaryDirectory(prefix="bench-layouts-", dir=args.tmp) as tmp:
            for layout in ("exact", "compact"):
                segments = {"index_after_points": args.index_after, "segment_points": args.segment_points}
                results.append(run_layout(layout, data, Path(tmp), queries, truths, args.k, args.batch, segments))
                report_layout(results[-1])
        del data
    for row in extrapolate(results):
        print(
            f"{row['layout']:>8} {row['points']:>8} (extrapolated): RSS {row['rss_mb']:.0f} MB (anonymous "
            f"{row['anon_mb']:.0f}) | disk "
            f"{row['disk_mb']:.0f} MB | open {row['open_s']:.2f} s | p50 {row['p50_ms']:.1f} ms p95 "
            f"{row['p95_ms']:.1f} ms",
            flush=True,
        )
        results.append(row)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(results, indent=2))
    return 0


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv and argv[0] == "--search-child":
        root, name, dim, queries_file, k = argv[1:6]
        search_child(root, name, int(dim), queries_file, int(k))
        return 0
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--layouts", action="store_true", help="compare the embedded index's shard layouts")
    parser.add_argument("--sizes", type=int, nargs="+", default=[100_000, 300_000], help="points, with --layouts")
    parser.add_argument("--tmp", type=Path, default=None, help="where the shards are written (a real disk)")
    parser.add_argument("--index-after", type=int, default=INDEX_AFTER_POINTS, help="compact: points per sealed segment")
    parser.add_argument("--segment-points", type=int, default=SEGMENT_POINTS, help="compact: largest segment")
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
    if args.layouts:
        return layouts_main(args)

    print(
        f"data: {args.points} points, {args.dim}-d, {args.cameras} cameras, {args.hours:g} h, "
        f"~{args.per_track} crops/track; filter: 3 cameras + 1/4 of the time range",
        flush=True,
    )
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
            print(
                f"qdrant-client local mode is a brute-force stand-in and slow at this size: "
                f"only {args.local_queries} queries are timed on it",
                flush=True,
            )
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
    line = (
        f"{r['backend']:>20}: {r['upserts_per_s']:8.0f} upserts/s | filtered search over {r['queries']} queries: "
        f"grouped p50 {r['grouped_p50_ms']:.1f} ms p95 {r['grouped_p95_ms']:.1f} ms, "
        f"points p50 {r['points_p50_ms']:.1f} ms p95 {r['points_p95_ms']:.1f} ms | "
        f"recall@k tracks {r['track_recall_at_k']:.3f} points {r['point_recall_at_k']:.3f}"
    )
    if "grouped_unsessioned_ms" in r:
        line += f" | one search with its own open/close {r['grouped_unsessioned_ms']:.0f} ms"
    print(line, flush=True)


if __name__ == "__main__":
    sys.exit(main())
