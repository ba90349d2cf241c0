"""Embedded index layouts: a compact shard (int8 copy in RAM, originals on disk, HNSW built by maintenance)
answers as the exact one does, migration keeps every point, and searches answer while maintenance runs.

Real Qdrant Edge shards in temp folders; the data are clustered unit vectors in tracks of several crops,
as the pipeline writes them.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from camtrace.cli import cli
from camtrace.errors import StorageError
from camtrace.storage.edge import EdgeIndex, edge_shards
from camtrace.types import IndexPoint, SearchFilter, point_id

DIM = 768  # the engine walks its HNSW graph only for segments above 10 MB of vectors: real sizes
PER_TRACK = 8
TRACKS_PER_PERSON = 5
T0 = 1_700_000_000.0


def clustered(n: int, seed: int = 0) -> tuple[np.ndarray, list[IndexPoint]]:
    """``n`` crops in tracks of PER_TRACK near-identical unit vectors, on 4 cameras; each person walks
    TRACKS_PER_PERSON tracks, so a query has several truly near tracks before the unrelated ones."""
    rng = np.random.default_rng(seed)
    noise = 1 / np.sqrt(DIM)
    tracks = n // PER_TRACK + 1
    people = rng.standard_normal((tracks // TRACKS_PER_PERSON + 1, DIM)).astype(np.float32)
    people /= np.linalg.norm(people, axis=1, keepdims=True)
    centres = people[np.arange(tracks) // TRACKS_PER_PERSON] + 0.7 * noise * rng.standard_normal((tracks, DIM))
    centres /= np.linalg.norm(centres, axis=1, keepdims=True)
    vectors = centres[np.arange(n) // PER_TRACK] + 0.5 * noise * rng.standard_normal((n, DIM))
    vectors = vectors.astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    points = []
    for i in range(n):
        track = f"cam{(i // PER_TRACK) % 4}-v:{i // PER_TRACK}:1"
        camera = track.split("-")[0]
        points.append(
            IndexPoint(
                id=point_id(f"{camera}-v", i, track),
                vector=vectors[i],
                payload={
                    "camera_id": camera,
                    "video_id": f"{camera}-v",
                    "track_id": track,
                    "ts": T0 + i,
                    "frame_index": i,
                    "crop_key": f"{camera}/{i}.jpg",
                    "model_version": "m",
                },
            )
        )
    return vectors, points


def queries(vectors: np.ndarray, count: int, seed: int = 1) -> np.ndarray:
    rng = np.random.default_rng(seed)
    anchors = vectors[rng.integers(0, len(vectors), count)]
    q = anchors + 0.8 * rng.standard_normal(anchors.shape).astype(np.float32) / np.sqrt(DIM)
    return q / np.linalg.norm(q, axis=1, keepdims=True)


def exact_tracks(vectors: np.ndarray, points: list[IndexPoint], q: np.ndarray, flt: SearchFilter | None, k: int):
    """Brute force: the k best tracks by their best crop under the filter."""
    order = np.argsort(-(vectors @ q))
    tracks: list[str] = []
    for i in order:
        payload = points[i].payload
        if flt is not None and flt.camera_ids and payload["camera_id"] not in flt.camera_ids:
            continue
        if payload["track_id"] not in tracks:
            tracks.append(payload["track_id"])
            if len(tracks) == k:
                break
    return tracks


def compact(root: Path, name: str = "m") -> EdgeIndex:
    # Small segments, so that a test of seconds builds several indexed ones.
    return EdgeIndex(root, name, DIM, layout="compact", index_after_points=4000, segment_points=8000)


@pytest.fixture(scope="module")
def data():
    return clustered(12_000)


@pytest.fixture(scope="module")
def both(tmp_path_factory, data):
    """The same points in an exact shard and in a compact one whose segments maintenance has indexed."""
    _, points = data
    root = tmp_path_factory.mktemp("layouts")
    exact = EdgeIndex(root, "exact", DIM, layout="exact")
    exact.upsert(points)
    small = compact(root, "compact")
    with small.session():
        for start in range(0, len(points), 2000):  # ingest batches, maintenance between them
            small.upsert(points[start : start + 2000])
            small.maintain()
    return exact, small


def test_new_shards_take_the_layout_and_existing_ones_keep_theirs(tmp_path):
    _, points = clustered(40)
    old = EdgeIndex(tmp_path, "m", DIM, layout="exact")
    old.upsert(points)
    assert old.layout == "exact" and old.facts()["index_layout"] == "exact"
    reopened = EdgeIndex(tmp_path, "m", DIM)  # the default would create a compact shard: this one stays exact
    assert reopened.layout == "exact" and reopened.count() == 40
    config = json.loads((tmp_path / "m" / "edge_config.json").read_text())
    assert not config.get("quantization_config")  # opening did not rewrite it
    fresh = EdgeIndex(tmp_path, "n", DIM, index_after_points=1000, segment_points=2000)
    fresh.ensure()
    EdgeIndex(tmp_path, "n", DIM).count()  # opened with other thresholds: the shard keeps its own
    config = json.loads((tmp_path / "n" / "edge_config.json").read_text())
    assert fresh.layout == "compact"
    assert config["optimizers"]["indexing_threshold"] == 1000 * DIM * 4 // 1024
    assert config["quantization_config"]["scalar"]["type"] == "int8"
    assert config["vectors"][""]["memory"] == "cold" and config["payload_memory"] == "cold"
    with pytest.raises(StorageError, match="unknown index layout 'fast'"):
        EdgeIndex(tmp_path, "o", DIM, layout="fast")


def test_maintenance_indexes_sealed_segments_and_stats_show_it(both):
    exact, small = both
    facts = small.facts()
    assert facts["index_layout"] == "compact"
    assert facts["indexed_points"] >= 8000 and facts["unindexed_points"] < 4000  # the last partial segment waits
    assert facts["indexed_points"] + facts["unindexed_points"] == 12_000
    assert facts["segments"] >= 3  # bounded segments, not one growing index
    done = small.maintain()
    assert done.newly_indexed == 0 and done.seconds < 1  # nothing sealed since: nothing to do
    assert exact.maintain().newly_indexed == 0 and exact.facts()["indexed_points"] == 0  # an exact shard scans


def test_a_compact_shard_answers_as_an_exact_one(both, data):
    exact, small = both
    vectors, points = data
    flt = SearchFilter(camera_ids=("cam0", "cam1"))
    compared = 0
    for q in queries(vectors, 20):
        for f in (None, flt):
            a, b = exact.search(q, f, limit=10), small.search(q, f, limit=10)
            assert len(a) == len(b) == 10
            scores = [np.inf] + [h.score for h in a] + [-np.inf]
            for rank, (ha, hb) in enumerate(zip(a, b), 1):
                if min(scores[rank - 1] - scores[rank], scores[rank] - scores[rank + 1]) > 0.01:  # ties aside
                    assert (hb.track_id, hb.point_id) == (ha.track_id, ha.point_id)
                    np.testing.assert_allclose(hb.score, ha.score, atol=1e-4)  # rescored with the originals
                    compared += 1
    assert compared >= 100  # most ranks are not ties: the check is not empty


def test_grouped_recall_at_10_holds_on_clustered_data(both, data):
    _, small = both
    vectors, points = data
    flt = SearchFilter(camera_ids=("cam0", "cam1"))
    recalls = []
    for q in queries(vectors, 40, seed=7):
        for f in (None, flt):
            truth = exact_tracks(vectors, points, q, f, 10)
            found = [h.track_id for h in small.search(q, f, limit=10)]
            recalls.append(len(set(found) & set(truth)) / 10)
    assert np.mean(recalls) >= 0.98


def snapshot(index: EdgeIndex) -> dict[str, tuple[dict, np.ndarray]]:
    ids = sorted(index.point_ids())
    return {p.id: (p.payload, p.vector) for p in index.retrieve(ids)}


def test_migration_keeps_every_point_and_payload_and_swaps_the_layout(tmp_path):
    vectors, points = clustered(5000, seed=3)
    old = EdgeIndex(tmp_path, "m", DIM, layout="exact", index_after_points=2000, segment_points=4000)
    old.upsert(points)
    before = snapshot(old)
    q = queries(vectors, 1)[0]
    answer = [h.point_id for h in old.search(q, limit=10)]
    seen: list[tuple[int, int]] = []
    assert old.migrate("compact", progress=lambda done, total: seen.append((done, total))) == 5000
    assert old.layout == "compact" and seen[-1] == (5000, 5000)
    assert old.facts()["indexed_points"] >= 4000  # indexed as it was copied
    after = snapshot(EdgeIndex(tmp_path, "m", DIM))
    assert after.keys() == before.keys()
    for pid, (payload, vector) in before.items():
        assert after[pid][0] == payload
        np.testing.assert_allclose(after[pid][1], vector, atol=1e-6)
    assert [h.point_id for h in old.search(q, limit=10)] == answer
    assert not list(tmp_path.glob(".migrating-*")) and not list(tmp_path.glob(".replaced-*"))
    old.migrate("exact")  # and back
    assert EdgeIndex(tmp_path, "m", DIM).layout == "exact" and old.count() == 5000


def test_a_failed_migration_leaves_the_old_shard(tmp_path):
    _, points = clustered(2500, seed=4)
    old = EdgeIndex(tmp_path, "m", DIM, layout="exact")
    old.upsert(points)

    def interrupted(done: int, total: int) -> None:
        if done >= 2000:
            raise RuntimeError("disk full")

    with pytest.raises(StorageError, match="disk full.*left as it was"):
        old.migrate("compact", progress=interrupted)
    assert EdgeIndex(tmp_path, "m", DIM).layout == "exact" and old.count() == 2500
    assert not list(tmp_path.glob(".migrating-*"))


def test_a_migration_stopped_between_its_renames_is_undone_on_open(tmp_path):
    _, points = clustered(30, seed=5)
    EdgeIndex(tmp_path, "m", DIM, layout="exact").upsert(points)
    (tmp_path / "m").rename(tmp_path / ".replaced-m-999")  # the old shard moved aside, the copy never moved in
    assert EdgeIndex(tmp_path, "m", DIM).count() == 30


MAINTAIN_IN_ANOTHER_PROCESS = """
import sys
from camtrace.storage.edge import EdgeIndex
index = EdgeIndex(sys.argv[1], "m", 768, layout="compact", index_after_points=4000, segment_points=8000)
with index.session():
    print("holding", flush=True)
    done = index.maintain()
print(done.newly_indexed, round(done.seconds, 2), flush=True)
"""


def test_a_search_during_maintenance_in_another_process_answers(tmp_path, data):
    vectors, points = data
    index = compact(tmp_path)
    index.upsert(points[:8000])  # two segments' worth, not yet indexed
    q = queries(vectors, 1, seed=11)[0]
    expected = [h.point_id for h in index.search(q, limit=5)]
    assert index.facts()["indexed_points"] == 0
    worker = subprocess.Popen(
        [sys.executable, "-c", MAINTAIN_IN_ANOTHER_PROCESS, str(tmp_path)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert worker.stdout.readline().strip() == "holding"  # the other process owns the shard now
        during = [h.point_id for h in index.search(q, limit=5)]  # waits its turn, then answers
        out, err = worker.communicate(timeout=120)
    finally:
        worker.kill()
    assert worker.returncode == 0, err
    assert int(out.split()[0]) == 8000  # maintenance did its work
    assert during == expected
    assert index.facts()["unindexed_points"] == 0
    assert [h.point_id for h in index.search(q, limit=5)] == expected


def test_cli_migrates_every_shard_and_maintains(tmp_path, monkeypatch):
    _, points = clustered(300, seed=6)
    index_dir = tmp_path / "index"
    for name in ("model-a", "model-b"):
        EdgeIndex(index_dir, name, DIM, layout="exact").upsert(points)
    monkeypatch.setenv("CAMTRACE_DATA_DIR", str(tmp_path))
    monkeypatch.delenv("CAMTRACE_QDRANT_URL", raising=False)
    assert [s.name for s in edge_shards(index_dir)] == ["model-a", "model-b"]
    result = CliRunner().invoke(cli, ["index", "migrate", "--no-progress"])
    assert result.exit_code == 0, result.output
    assert "model-a: 300 points now in the compact layout" in result.output
    assert [s.layout for s in edge_shards(index_dir)] == ["compact", "compact"]
    assert [s.count() for s in edge_shards(index_dir)] == [300, 300]
    again = CliRunner().invoke(cli, ["index", "migrate", "--no-progress"])
    assert "model-b: already compact" in again.output
    maintained = CliRunner().invoke(cli, ["index", "maintain", "--json"])
    assert maintained.exit_code == 0, maintained.output
    rows = json.loads(maintained.output)
    assert [(r["shard"], r["points"], r["layout"]) for r in rows] == [("model-a", 300, "compact"), ("model-b", 300, "compact")]
    monkeypatch.setenv("CAMTRACE_QDRANT_URL", "http://qdrant:6333")
    refused = CliRunner().invoke(cli, ["index", "migrate"])
    assert refused.exit_code != 0 and "CAMTRACE_QDRANT_URL is set" in refused.output


def test_the_server_backend_creates_collections_in_the_same_layout(tmp_path):
    from qdrant_client import QdrantClient
    from qdrant_client import models as qm

    from camtrace.storage.server import SEARCH_PARAMS, ServerIndex, compact_collection

    server = compact_collection(DIM)
    edge = EdgeIndex(tmp_path, "m", DIM)._config("compact")
    assert server["vectors_config"].on_disk is True and edge.vectors[""].memory is not None  # originals on disk
    scalar = server["quantization_config"].scalar
    assert scalar.type == qm.ScalarType.INT8 and scalar.always_ram is True and scalar.quantile == 0.99
    assert server["on_disk_payload"] is True
    hnsw = server["hnsw_config"]
    assert (hnsw.m, hnsw.ef_construct, hnsw.full_scan_threshold, hnsw.payload_m) == (
        edge.hnsw_config.m,
        edge.hnsw_config.ef_construct,
        edge.hnsw_config.full_scan_threshold,
        edge.hnsw_config.payload_m,
    )
    assert SEARCH_PARAMS.quantization.rescore is True and SEARCH_PARAMS.quantization.oversampling >= 2.0
    # The client accepts the layout and its search parameters (its in-memory mode ignores them and scans).
    _, points = clustered(200, seed=8)
    index = ServerIndex(QdrantClient(location=":memory:"), "m", DIM)
    index.ensure()
    index.upsert(points)
    hits = index.search(points[0].vector, limit=3)
    assert hits[0].point_id == points[0].id and len({h.track_id for h in hits}) == 3
    assert index.facts()["indexed_points"] + index.facts()["unindexed_points"] == 200
