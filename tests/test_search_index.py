"""The index calls the query stage adds: paging, a minimum score, track exclusion and recommend
queries, run on both backends (Qdrant Edge, and the server class on the client's in-memory mode)
with hand-made vectors whose right answers are computed with numpy."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from qdrant_client import QdrantClient

from camtrace.errors import StorageError
from camtrace.storage.edge import EdgeIndex
from camtrace.storage.index import VectorIndex, best_score_scale, similarity_from_best_score
from camtrace.storage.server import ServerIndex
from camtrace.types import IndexPoint, SearchFilter, point_id

DIM = 16
T0 = 1_700_000_000.0


def unit(v: np.ndarray) -> np.ndarray:
    return (v / np.linalg.norm(v, axis=-1, keepdims=True)).astype(np.float32)


def make_point(vector: np.ndarray, track: str, camera: str, frame: int) -> IndexPoint:
    return IndexPoint(
        id=point_id(f"{camera}-video", frame, track),
        vector=vector,
        payload={
            "camera_id": camera,
            "video_id": f"{camera}-video",
            "track_id": track,
            "ts": T0 + frame,
            "frame_index": frame,
            "bbox": [0.0, 0.0, 10.0, 20.0],
            "det_conf": 0.9,
            "crop_key": f"{camera}/{track}/{frame}.jpg",
            "model_version": "m",
        },
    )


@pytest.fixture(params=["edge", "server"])
def index(request: pytest.FixtureRequest, tmp_path: Path):
    if request.param == "edge":
        idx: VectorIndex = EdgeIndex(tmp_path / "index", "m", DIM)
    else:
        idx = ServerIndex(QdrantClient(location=":memory:"), "m", DIM)
    with idx.session():  # one open Edge shard per test instead of one per call
        idx.ensure()
        yield idx
    idx.close()


@pytest.fixture
def points() -> list[IndexPoint]:
    """30 tracks of 3 crops each on 3 cameras, random directions."""
    rng = np.random.default_rng(99)
    vectors = unit(rng.normal(size=(90, DIM)))
    return [make_point(vectors[k], f"t{k // 3}", f"cam{(k // 3) % 3}", k) for k in range(90)]


def track_vectors(points: list[IndexPoint], track: str) -> list[np.ndarray]:
    return [p.vector for p in points if p.payload["track_id"] == track]


def best_by_track(points, score) -> dict[str, float]:
    best: dict[str, float] = {}
    for p in points:
        best[p.payload["track_id"]] = max(best.get(p.payload["track_id"], -9.0), score(unit(p.vector)))
    return best


def test_best_score_scale_round_trips() -> None:
    for similarity in (-0.9, -0.2, 0.0, 0.35, 0.8, 0.999):
        assert similarity_from_best_score(best_score_scale(similarity)) == pytest.approx(similarity, abs=1e-9)
        assert similarity_from_best_score(-best_score_scale(similarity)) == pytest.approx(-similarity, abs=1e-9)


def test_pages_do_not_overlap_and_concatenate_to_the_unpaged_list(index: VectorIndex, points) -> None:
    index.upsert(points)
    query = points[0].vector
    whole = index.search(query, limit=24)
    pages = [index.search(query, limit=5, offset=offset) for offset in range(0, 24, 5)]
    assert [h.track_id for page in pages for h in page][:24] == [h.track_id for h in whole]
    assert len({h.track_id for page in pages for h in page}) == sum(len(page) for page in pages)
    assert index.search(query, limit=5, offset=200) == []


def test_min_score_and_excluded_tracks_apply_inside_the_query(index: VectorIndex, points) -> None:
    index.upsert(points)
    query = points[4].vector
    best = best_by_track(points, lambda v: float(v @ query))
    threshold = sorted(best.values(), reverse=True)[6]  # exactly seven tracks reach it
    hits = index.search(query, limit=20, min_score=threshold - 1e-6)
    assert [h.track_id for h in hits] == sorted((t for t in best if best[t] >= threshold - 1e-6), key=lambda t: -best[t])
    assert len(hits) == 7
    excluded = index.search(query, SearchFilter(exclude_track_ids=("t1", "t2")), limit=20)
    assert "t1" not in {h.track_id for h in excluded} and "t2" not in {h.track_id for h in excluded}
    assert len(excluded) == 20  # the limit is still filled from further away


def test_recommend_scores_each_track_by_its_nearest_positive(index: VectorIndex, points) -> None:
    index.upsert(points)
    positives = track_vectors(points, "t0")
    flt = SearchFilter(exclude_camera_ids=("cam0",), exclude_track_ids=("t0",))
    hits = index.recommend(positives, [], flt, limit=10)
    others = [p for p in points if p.payload["camera_id"] != "cam0"]
    expected = best_by_track(others, lambda v: max(float(v @ q) for q in positives))
    assert [h.track_id for h in hits] == sorted(expected, key=lambda t: -expected[t])[:10]
    for hit in hits:  # scores are cosine similarities, as in a plain search
        assert hit.score == pytest.approx(expected[hit.track_id], abs=1e-4)
        assert hit.payload["camera_id"] != "cam0"
    page = index.recommend(positives, [], flt, limit=4, offset=3)
    assert [h.track_id for h in page] == [h.track_id for h in hits[3:7]]
    above = index.recommend(positives, [], flt, limit=10, min_score=hits[2].score - 1e-4)
    assert [h.track_id for h in above] == [h.track_id for h in hits[:3]]


def test_recommend_negatives_push_similar_tracks_down(index: VectorIndex) -> None:
    axes = np.eye(DIM, dtype=np.float32)
    person = axes[0]
    lookalike = unit(np.cos(0.3) * axes[0] + np.sin(0.3) * axes[1])  # 0.955 like the person
    same = unit(np.cos(0.4) * axes[0] - np.sin(0.4) * axes[1])  # 0.921 like the person, 0.765 like the lookalike
    stranger = unit(0.1 * axes[0] + axes[3])
    points = [
        make_point(same, "same", "cam1", 1),
        make_point(lookalike, "lookalike", "cam2", 2),
        make_point(stranger, "stranger", "cam1", 3),
    ]
    index.upsert(points)
    plain = index.recommend([person], [], None, limit=3)
    assert plain[0].track_id == "lookalike"  # nearer to the query than the true match
    pushed = index.recommend([person], [lookalike], None, limit=3)
    assert pushed[-1].track_id == "lookalike" and pushed[-1].score < 0
    assert pushed[0].track_id == "same"
    # With a minimum score, a track nearer to a rejected example is left out altogether.
    assert "lookalike" not in {h.track_id for h in index.recommend([person], [lookalike], None, limit=3, min_score=-0.99)}
    with pytest.raises(StorageError, match="positive"):
        index.recommend([], [lookalike], None, limit=3)
