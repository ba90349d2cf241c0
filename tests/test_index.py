"""Vector index: one suite run on both backends (Qdrant Edge, and the server class on the
client's in-memory mode), checked against exact numpy search on the same data."""

from __future__ import annotations

import multiprocessing
import threading
from pathlib import Path

import numpy as np
import pytest
from qdrant_client import QdrantClient

from camtrace.errors import InputError, StorageError
from camtrace.settings import Settings
from camtrace.storage.edge import EdgeIndex
from camtrace.storage.index import VectorIndex, open_index, slug
from camtrace.storage.server import ServerIndex
from camtrace.types import IndexPoint, SearchFilter, point_id

DIM = 32
MODEL = "person-reid/v1"
T0 = 1_700_000_000.0


# Factories ---------------------------------------------------------------
def unit(v: np.ndarray) -> np.ndarray:
    return (v / np.linalg.norm(v, axis=-1, keepdims=True)).astype(np.float32)


def make_point(vector: np.ndarray, track: str, camera: str, frame: int, ts: float) -> IndexPoint:
    video = f"{camera}-video"
    return IndexPoint(
        id=point_id(video, frame, track),
        vector=vector,
        payload={
            "camera_id": camera,
            "video_id": video,
            "track_id": track,
            "ts": ts,
            "frame_index": frame,
            "bbox": [10.0, 20.0, 60.0, 180.0],
            "det_conf": 0.9,
            "crop_key": f"{camera}/{video}/{track}-{frame}.jpg",
            "model_version": MODEL,
        },
    )


def random_points(rng: np.random.Generator, tracks: int, per_track: int, cameras: int = 4) -> list[IndexPoint]:
    points = []
    vectors = unit(rng.normal(size=(tracks * per_track, DIM)))
    for t in range(tracks):
        camera = f"cam{t % cameras}"
        for k in range(per_track):
            frame = t * 100 + k
            points.append(make_point(vectors[t * per_track + k], f"track{t}", camera, frame, T0 + t * 10 + k))
    return points


def hog_points(query: np.ndarray, rng: np.random.Generator, camera: str = "cam0", ts: float = T0) -> list[IndexPoint]:
    """One track owning the 50 points nearest to ``query``."""
    vectors = unit(query + 0.05 * rng.normal(size=(50, DIM)))
    return [make_point(vectors[k], "hog", camera, 10_000 + k, ts + k) for k in range(50)]


def matches(p: IndexPoint, flt: SearchFilter | None) -> bool:
    if flt is None:
        return True
    pl = p.payload
    return (
        (not flt.camera_ids or pl["camera_id"] in flt.camera_ids)
        and pl["camera_id"] not in flt.exclude_camera_ids
        and (flt.since is None or pl["ts"] >= flt.since)
        and (flt.until is None or pl["ts"] <= flt.until)
    )


def exact_tracks(points: list[IndexPoint], query: np.ndarray, flt: SearchFilter | None, limit: int) -> list[str]:
    """Brute force: each track's best cosine score under the filter, best tracks first."""
    best: dict[str, float] = {}
    q = unit(query)
    for p in points:
        if matches(p, flt):
            score = float(unit(p.vector) @ q)
            best[p.payload["track_id"]] = max(best.get(p.payload["track_id"], -2.0), score)
    return sorted(best, key=lambda t: -best[t])[:limit]


# Backends ------------------------------------------------------------------
def make_index(kind: str, tmp_path: Path) -> VectorIndex:
    if kind == "edge":
        return EdgeIndex(tmp_path / "index", MODEL, DIM)
    return ServerIndex(QdrantClient(location=":memory:"), MODEL, DIM, alias="camtrace")


@pytest.fixture(params=["edge", "server"])
def index(request: pytest.FixtureRequest, tmp_path: Path):
    idx = make_index(request.param, tmp_path)
    idx.ensure()
    yield idx
    idx.close()


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(1234)


# The shared suite ----------------------------------------------------------
def test_ensure_is_idempotent_and_upserts_never_duplicate(index: VectorIndex, rng) -> None:
    points = random_points(rng, tracks=10, per_track=5)
    index.ensure()
    index.upsert(points)
    index.ensure()
    assert index.count() == 50
    # A redelivered batch (same deterministic ids, changed payload) overwrites.
    changed = [IndexPoint(p.id, p.vector, {**p.payload, "det_conf": 0.5}) for p in points]
    index.upsert(changed)
    assert index.count() == 50
    assert index.retrieve([points[3].id])[0].payload["det_conf"] == 0.5


def test_grouped_search_fills_limit_when_one_track_owns_nearest_points(index: VectorIndex, rng) -> None:
    query = unit(rng.normal(size=DIM))
    points = random_points(rng, tracks=30, per_track=3) + hog_points(query, rng)
    index.upsert(points)

    ungrouped = index.search_points(query, limit=10)
    assert {h.track_id for h in ungrouped} == {"hog"}  # why grouping is needed

    hits = index.search(query, limit=10)
    assert len(hits) == 10
    assert len({h.track_id for h in hits}) == 10
    assert [h.score for h in hits] == sorted((h.score for h in hits), reverse=True)
    assert [h.track_id for h in hits] == exact_tracks(points, query, None, 10)
    # The hit is the track's best point, with that point's payload.
    hog_best = max((p for p in points if p.payload["track_id"] == "hog"), key=lambda p: float(unit(p.vector) @ query))
    assert hits[0].point_id == hog_best.id
    assert hits[0].payload["crop_key"] == hog_best.payload["crop_key"]


def test_grouped_search_when_many_tracks_own_runs_of_near_points(index: VectorIndex, rng) -> None:
    query = unit(rng.normal(size=DIM))
    points = random_points(rng, tracks=20, per_track=2)
    for t in range(12):  # 12 tracks x 20 crops, all nearer than any other point
        vectors = unit(query + (0.1 + 0.02 * t) * rng.normal(size=(20, DIM)))
        points += [make_point(vectors[k], f"near{t}", "cam1", 20_000 + 100 * t + k, T0 + k) for k in range(20)]
    index.upsert(points)
    hits = index.search(query, limit=15)
    assert [h.track_id for h in hits] == exact_tracks(points, query, None, 15)
    assert {h.track_id for h in hits[:12]} == {f"near{t}" for t in range(12)}


def test_grouped_search_returns_fewer_when_tracks_run_out(index: VectorIndex, rng) -> None:
    query = unit(rng.normal(size=DIM))
    points = random_points(rng, tracks=4, per_track=6) + hog_points(query, rng)
    index.upsert(points)
    hits = index.search(query, limit=20)
    assert sorted(h.track_id for h in hits) == sorted({p.payload["track_id"] for p in points})


def test_camera_filter_is_inside_the_query(index: VectorIndex, rng) -> None:
    query = unit(rng.normal(size=DIM))
    # The 50 nearest points are on cam0; a post-filter on a top-k list would come back empty.
    points = random_points(rng, tracks=40, per_track=2) + hog_points(query, rng, camera="cam0")
    index.upsert(points)

    only = SearchFilter(camera_ids=("cam1", "cam2"))
    hits = index.search(query, only, limit=8)
    assert len(hits) == 8
    assert {h.payload["camera_id"] for h in hits} <= {"cam1", "cam2"}
    assert [h.track_id for h in hits] == exact_tracks(points, query, only, 8)

    excluded = SearchFilter(exclude_camera_ids=("cam0",))
    hits = index.search(query, excluded, limit=8)
    assert len(hits) == 8 and all(h.payload["camera_id"] != "cam0" for h in hits)
    assert [h.track_id for h in hits] == exact_tracks(points, query, excluded, 8)
    assert index.count(excluded) == sum(matches(p, excluded) for p in points)


def test_time_filter_is_inside_the_query(index: VectorIndex, rng) -> None:
    query = unit(rng.normal(size=DIM))
    points = random_points(rng, tracks=40, per_track=2) + hog_points(query, rng, ts=T0 - 5_000)
    index.upsert(points)

    window = SearchFilter(since=T0 + 100, until=T0 + 250)
    hits = index.search(query, window, limit=5)
    assert len(hits) == 5
    assert all(T0 + 100 <= h.payload["ts"] <= T0 + 250 for h in hits)
    assert [h.track_id for h in hits] == exact_tracks(points, query, window, 5)

    combined = SearchFilter(camera_ids=("cam3",), since=T0 + 200)
    hits = index.search(query, combined, limit=50)
    assert hits and all(h.payload["camera_id"] == "cam3" and h.payload["ts"] >= T0 + 200 for h in hits)
    assert [h.track_id for h in hits] == exact_tracks(points, query, combined, 50)
    assert index.search(query, SearchFilter(since=T0 + 1e6), limit=5) == []


def test_retrieve_track_points_and_delete(index: VectorIndex, rng) -> None:
    points = random_points(rng, tracks=6, per_track=4, cameras=3)
    index.upsert(points)

    wanted = [points[5].id, "00000000-0000-0000-0000-000000000000", points[1].id]
    got = index.retrieve(wanted)
    assert [p.id for p in got] == [points[5].id, points[1].id]
    np.testing.assert_allclose(got[0].vector, unit(points[5].vector), atol=1e-5)
    assert got[0].payload == points[5].payload

    track = index.track_points("track2")
    assert [p.id for p in track] == [p.id for p in points if p.payload["track_id"] == "track2"]
    assert all(p.vector.shape == (DIM,) for p in track)
    assert index.track_points("no-such-track") == []

    index.delete([points[0].id, points[1].id])
    assert index.count() == 22
    assert index.retrieve([points[0].id]) == []
    index.delete(SearchFilter(camera_ids=("cam1",)))
    assert index.count(SearchFilter(camera_ids=("cam1",))) == 0
    assert index.count() == 22 - 8
    with pytest.raises(InputError, match="empty filter"):
        index.delete(SearchFilter())
    assert index.count() == 14


def test_wrong_dimension_is_refused(index: VectorIndex, rng) -> None:
    with pytest.raises(StorageError, match="768-d vector"):
        index.upsert([make_point(unit(rng.normal(size=768)), "t", "cam0", 1, T0)])
    with pytest.raises(StorageError, match="same model"):
        index.search(np.ones(DIM + 1, dtype=np.float32))
    assert index.count() == 0


def test_both_backends_return_the_same_tracks(tmp_path: Path, rng) -> None:
    query = unit(rng.normal(size=DIM))
    points = random_points(rng, tracks=60, per_track=4, cameras=5) + hog_points(query, rng)
    flt = SearchFilter(camera_ids=("cam0", "cam1", "cam4"), since=T0 + 50, exclude_camera_ids=("cam4",))
    results = {}
    for kind in ("edge", "server"):
        idx = make_index(kind, tmp_path / kind)
        idx.ensure()
        idx.upsert(points)
        results[kind] = (idx.search(query, limit=15), idx.search(query, flt, limit=15))
        idx.close()
    for edge_hits, server_hits in zip(results["edge"], results["server"]):
        assert [h.track_id for h in edge_hits] == [h.track_id for h in server_hits]
        assert [h.point_id for h in edge_hits] == [h.point_id for h in server_hits]
        np.testing.assert_allclose([h.score for h in edge_hits], [h.score for h in server_hits], atol=1e-5)


# Qdrant Edge specifics ---------------------------------------------------------
def _writer(root: str, worker: int, batches: int, per_batch: int, start: multiprocessing.Barrier) -> None:
    """Runs in a spawned process: writes its own points plus a shared set (to collide)."""
    idx = EdgeIndex(root, MODEL, DIM)
    rng = np.random.default_rng(worker)
    start.wait(timeout=60)
    for b in range(batches):
        vectors = unit(rng.normal(size=(per_batch, DIM)))
        own = [make_point(vectors[k], f"w{worker}-t{b}", f"cam{worker}", b * per_batch + k, T0 + b) for k in range(per_batch)]
        shared = [make_point(vectors[0], "shared", "cam9", b, T0)]
        idx.upsert(own + shared)


def _reader(root: str, expected: int, start: multiprocessing.Barrier, out: multiprocessing.Queue) -> None:
    """Counts and searches until every write is visible (or 60 s pass), reporting what it saw."""
    import time

    idx = EdgeIndex(root, MODEL, DIM)
    counts = []
    start.wait(timeout=60)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        counts.append(idx.count())
        idx.search(np.ones(DIM, dtype=np.float32), SearchFilter(camera_ids=("cam0", "cam1")), limit=5)
        if counts[-1] == expected:
            break
    out.put(counts)


def test_edge_two_processes_write_and_read_concurrently(tmp_path: Path) -> None:
    root = str(tmp_path / "index")
    EdgeIndex(root, MODEL, DIM).ensure()
    batches, per_batch = 10, 20
    expected = 2 * batches * per_batch + batches
    ctx = multiprocessing.get_context("spawn")
    out = ctx.Queue()
    start = ctx.Barrier(3)  # all three begin together, after their imports
    procs = [ctx.Process(target=_writer, args=(root, w, batches, per_batch, start)) for w in (0, 1)]
    procs.append(ctx.Process(target=_reader, args=(root, expected, start, out)))
    for p in procs:
        p.start()
    counts = out.get(timeout=120)
    for p in procs:
        p.join(timeout=120)
    assert [p.exitcode for p in procs] == [0, 0, 0]
    assert counts == sorted(counts)  # a reader never sees points vanish
    assert counts[-1] == expected
    # The lock is fair: the reader got turns while the writers were still busy.
    assert any(0 < c < expected for c in counts), counts
    idx = EdgeIndex(root, MODEL, DIM)
    assert idx.count() == expected  # every write kept, shared ids not duplicated
    assert idx.count(SearchFilter(camera_ids=("cam9",))) == batches


def test_edge_session_is_reentrant_and_thread_safe(tmp_path: Path, rng) -> None:
    idx = EdgeIndex(tmp_path / "index", MODEL, DIM)
    points = random_points(rng, tracks=20, per_track=5)
    with idx.session():
        with idx.session():
            idx.upsert(points[:50])
        assert idx.count() == 50  # same open shard, nested
    errors: list[BaseException] = []

    def write(chunk: list[IndexPoint]) -> None:
        try:
            idx.upsert(chunk)
            idx.search(chunk[0].vector, limit=3)
        except BaseException as exc:  # surfaced below
            errors.append(exc)

    threads = [threading.Thread(target=write, args=(points[i : i + 10],)) for i in range(50, 100, 10)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert idx.count() == 100


def test_edge_shard_per_model_version_and_dimension_check(tmp_path: Path, rng) -> None:
    root = tmp_path / "index"
    a = EdgeIndex(root, "org/model:v1", DIM)
    b = EdgeIndex(root, "org/model:v2", DIM)
    a.upsert(random_points(rng, tracks=2, per_track=2))
    assert a.count() == 4 and b.count() == 0
    assert a.path != b.path and a.path.parent == root
    with pytest.raises(StorageError, match="does not hold 64-d"):
        EdgeIndex(root, "org/model:v1", 64).count()


def test_edge_lock_timeout_names_the_lock(tmp_path: Path) -> None:
    root = tmp_path / "index"
    holder = EdgeIndex(root, MODEL, DIM)
    waiter = EdgeIndex(root, MODEL, DIM, lock_timeout=0.2)  # a second object stands in for another process
    with holder.session():
        with pytest.raises(StorageError, match=r"locked by another process.*\.lock"):
            waiter.count()
    assert waiter.count() == 0


def test_slug_is_safe_and_distinct() -> None:
    assert slug("siglip2-v3") == "siglip2-v3"
    assert slug("a/b") != slug("a:b")
    assert all(c.isalnum() or c in "._-" for c in slug("MarketaJu/siglip2 person@sha:1"))
    with pytest.raises(StorageError):
        slug("  ")


def test_open_index_picks_the_backend(tmp_path: Path) -> None:
    idx = open_index(Settings(data_dir=tmp_path, qdrant_url=None), MODEL, DIM)
    assert isinstance(idx, EdgeIndex) and idx.path.parent == tmp_path.resolve() / "index"
    assert (idx.path / "edge_config.json").exists()
    with pytest.raises(StorageError, match=r"http://127\.0\.0\.1:9.*CAMTRACE_QDRANT_URL"):
        open_index(Settings(data_dir=tmp_path, qdrant_url="http://127.0.0.1:9"), MODEL, DIM)


def test_server_alias_points_at_active_model(rng) -> None:
    client = QdrantClient(location=":memory:")
    v1 = ServerIndex(client, "m:v1", DIM, alias="people")
    v2 = ServerIndex(client, "m:v2", DIM, alias="people")
    v1.ensure()
    v2.ensure()  # an existing alias is not moved by ensure()
    assert v1.alias_target() == v1.collection_name
    v2.activate()
    assert v1.alias_target() == v2.collection_name
    v1.upsert(random_points(rng, tracks=1, per_track=3))
    assert v1.count() == 3 and v2.count() == 0  # vectors of two models never share a collection
