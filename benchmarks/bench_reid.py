"""Re-identification ranking on Qdrant Edge with synthetic identity embeddings, in one run.

    .venv/bin/python benchmarks/bench_reid.py                    # 400 identities, 6 cameras, 256-d
    .venv/bin/python benchmarks/bench_reid.py --identities 100   # quick check

Every identity has a centre; each of its tracks (one or two per camera) gets a camera bias
(light, angle) and per-crop noise around it, so the crops of one track are several views of
the person. Distractor tracks fill the index. Measured, for a query track on the first camera,
over the identity's tracks on the other cameras (the re-id protocol's gallery):

- baseline: a plain grouped nearest search with the track's best single crop;
- multi-view: the recommend query with all the track's crops as positive examples
  (what ``SearchService.reid`` asks);
- feedback: the investigator confirms the best correct candidate and rejects the best wrong
  one of the multi-view list; the query is asked again with those examples;
- post-filter: what a search that cuts at the top 100 points and filters afterwards returns
  for one camera and a tenth of the time range, against the filter inside the query.

Prints top-1 / top-5 hit rates, mAP, latency, and the ratios to the baseline. Figures, not pass/fail.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from camtrace.storage.edge import EdgeIndex
from camtrace.storage.index import VectorIndex
from camtrace.types import IndexPoint, SearchFilter, TrackHit, point_id

T0 = 1_700_000_000.0


def unit(v: np.ndarray) -> np.ndarray:
    return (v / np.linalg.norm(v, axis=-1, keepdims=True)).astype(np.float32)


def make_scene(args, rng):
    """Points, each track's crop vectors, and each track's identity and camera."""
    dim = args.dim
    centres = unit(rng.standard_normal((args.identities, dim)))
    camera_bias = unit(rng.standard_normal((args.cameras, dim)))
    tracks: dict[str, dict] = {}
    for person in range(args.identities):
        for camera in range(args.cameras):
            for part in range(1 if rng.random() < 0.6 else 2):
                bias = args.camera_bias * camera_bias[camera] + args.track_bias * unit(rng.standard_normal(dim))
                crops = unit(centres[person] + bias + args.crop_noise * unit(rng.standard_normal((args.crops, dim))))
                tracks[f"p{person}-c{camera}-{part}"] = {"person": person, "camera": camera, "crops": crops}
    for k in range(args.distractors):
        camera = int(rng.integers(args.cameras))
        crops = unit(unit(rng.standard_normal(dim)) + args.crop_noise * unit(rng.standard_normal((args.crops, dim))))
        tracks[f"d{k}-c{camera}"] = {"person": -1 - k, "camera": camera, "crops": crops}
    points = []
    for n, (track, info) in enumerate(tracks.items()):
        for i, vector in enumerate(info["crops"]):
            camera = f"cam{info['camera']}"
            points.append(
                IndexPoint(
                    point_id(camera, n * 10 + i, track),
                    vector,
                    {
                        "camera_id": camera,
                        "video_id": camera,
                        "track_id": track,
                        "ts": T0 + n,
                        "frame_index": n * 10 + i,
                        "bbox": [0.0, 0.0, 1.0, 2.0],
                        "det_conf": 0.9,
                        "crop_key": f"{camera}/{track}/{i}.jpg",
                        "model_version": "bench",
                    },
                )
            )
    return tracks, points


def scores(ranked: list[str], relevant: set[str], tracks: dict) -> tuple[float, float, float]:
    """(top-1 hit, top-5 hit, average precision) of a ranked track list."""
    hits = [t in relevant for t in ranked]
    found, precisions = 0, []
    for rank, hit in enumerate(hits, 1):
        if hit:
            found += 1
            precisions.append(found / rank)
    ap = sum(precisions) / len(relevant) if relevant else 0.0
    return float(any(hits[:1])), float(any(hits[:5])), ap


def timed(call, *args, **kwargs):
    started = time.perf_counter()
    result = call(*args, **kwargs)
    return result, (time.perf_counter() - started) * 1000


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--identities", type=int, default=400)
    parser.add_argument("--cameras", type=int, default=6)
    parser.add_argument("--crops", type=int, default=4, help="crops per track")
    parser.add_argument("--distractors", type=int, default=3000, help="tracks of people seen once")
    parser.add_argument("--dim", type=int, default=256)
    parser.add_argument("--camera-bias", type=float, default=0.6, help="a camera's shared look (light, angle)")
    parser.add_argument("--track-bias", type=float, default=1.0, help="a track's own look (pose, occlusion)")
    parser.add_argument("--crop-noise", type=float, default=2.5, help="noise of each crop")
    parser.add_argument("--queries", type=int, default=200)
    parser.add_argument("--depth", type=int, default=50, help="candidates ranked per query")
    parser.add_argument("--seed", type=int, default=3)
    args = parser.parse_args(argv)
    rng = np.random.default_rng(args.seed)
    tracks, points = make_scene(args, rng)
    print(
        f"scene: {args.identities} identities on {args.cameras} cameras, {args.distractors} distractor tracks, "
        f"{len(tracks)} tracks, {len(points)} points, {args.dim}-d",
        flush=True,
    )

    with tempfile.TemporaryDirectory() as tmp:
        index: VectorIndex = EdgeIndex(Path(tmp), "bench", args.dim)
        with index.session():
            index.ensure()
            index.upsert(points)
            run(args, index, tracks, rng)
    return 0


def run(args, index: VectorIndex, tracks: dict, rng) -> None:
    by_person: dict[int, list[str]] = {}
    for track, info in tracks.items():
        by_person.setdefault(info["person"], []).append(track)
    queries = [t for t, info in tracks.items() if info["camera"] == 0 and info["person"] >= 0]
    queries = [queries[i] for i in rng.permutation(len(queries))[: args.queries]]
    figures: dict[str, list] = {name: [] for name in ("baseline", "multi-view", "multi-view*", "feedback")}
    latency: dict[str, list] = {name: [] for name in figures}
    for query in queries:
        info = tracks[query]
        relevant = {t for t in by_person[info["person"]] if tracks[t]["camera"] != 0}
        flt = SearchFilter(exclude_camera_ids=("cam0",), exclude_track_ids=(query,))
        crops = info["crops"]
        best_crop = crops[int(np.argmax(crops @ unit(crops.mean(axis=0))))]  # the most typical view
        single, ms = timed(index.search, best_crop, flt, args.depth)
        figures["baseline"].append(scores([h.track_id for h in single], relevant, tracks))
        latency["baseline"].append(ms)
        multi, ms = timed(index.recommend, list(crops), [], flt, args.depth)
        ranked = [h.track_id for h in multi]
        figures["multi-view"].append(scores(ranked, relevant, tracks))
        latency["multi-view"].append(ms)

        confirmed = next((t for t in ranked if t in relevant), None)
        rejected = next((t for t in ranked if t not in relevant), None)
        positives = list(crops) + (list(tracks[confirmed]["crops"]) if confirmed else [])
        negatives = list(tracks[rejected]["crops"]) if rejected else []
        decided = tuple(t for t in (query, confirmed, rejected) if t)
        again_filter = SearchFilter(exclude_camera_ids=("cam0",), exclude_track_ids=decided)
        again, ms = timed(index.recommend, positives, negatives, again_filter, args.depth)
        still = relevant - {confirmed}
        # The same remaining gallery without the feedback: the multi-view list minus the decided tracks.
        figures["multi-view*"].append(scores([t for t in ranked if t not in decided], still, tracks))
        latency["multi-view*"].append(latency["multi-view"][-1])
        figures["feedback"].append(scores([h.track_id for h in again], still, tracks))
        latency["feedback"].append(ms)

    print(f"{len(queries)} query tracks on cam0; gallery: the identity's tracks on the other cameras")
    print(f"{'query':<12}{'top-1':>8}{'top-5':>8}{'mAP':>8}{'p50 ms':>9}")
    summary = {}
    for name, rows in figures.items():
        top1, top5, ap = (float(np.mean(column)) for column in zip(*rows))
        summary[name] = (top1, top5, ap)
        print(f"{name:<12}{top1:8.3f}{top5:8.3f}{ap:8.3f}{np.median(latency[name]):9.1f}")
    for name, base_name in (("multi-view", "baseline"), ("feedback", "multi-view*")):
        (top1, _, ap), base = summary[name], summary[base_name]
        print(f"{name} vs {base_name}: top-1 x{top1 / max(base[0], 1e-9):.2f}, mAP x{ap / max(base[2], 1e-9):.2f}")
    print("(multi-view* and feedback: the identity's remaining tracks after one confirmation and one rejection)")
    post_filter_comparison(args, index, tracks, queries)


def post_filter_comparison(args, index: VectorIndex, tracks: dict, queries: list[str]) -> None:
    """Tracks of one narrow camera found with the filter inside the query vs after a top-100 cut."""
    camera = f"cam{args.cameras - 1}"
    since, until = T0 + 0.45 * len(tracks), T0 + 0.55 * len(tracks)  # a tenth of the timeline
    narrow = SearchFilter(camera_ids=(camera,), since=since, until=until)
    inside_found = post_found = 0
    inside_ms, post_ms = [], []
    for query in queries:
        vector = tracks[query]["crops"][0]
        inside, ms = timed(index.search, vector, narrow, 10)
        inside_ms.append(ms)
        points, ms = timed(index.search_points, vector, None, 100)
        kept: list[TrackHit] = []
        for hit in points:
            p = hit.payload
            if p["camera_id"] == camera and since <= p["ts"] <= until and hit.track_id not in {k.track_id for k in kept}:
                kept.append(hit)
        post_ms.append(ms)
        inside_found += len(inside)
        post_found += len(kept[:10])
    per = len(queries)
    print(
        f"one camera ({camera}) and a tenth of the time, 10 tracks wanted per query: filter inside the query returns "
        f"{inside_found / per:.1f} (p50 {np.median(inside_ms):.1f} ms), filter after a top-100 cut returns "
        f"{post_found / per:.1f} (p50 {np.median(post_ms):.1f} ms): x{inside_found / max(post_found, 1):.1f} tracks"
    )


if __name__ == "__main__":
    sys.exit(main())
