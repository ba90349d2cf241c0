"""The vector index: one small interface, two backends.

``EdgeIndex`` (embedded Qdrant Edge, the default) and ``ServerIndex`` (a Qdrant
server through ``qdrant-client``) both store one point per kept crop with the
payload of DESIGN.md ("Point payload") and answer the same calls. Filters
always go inside the vector query, never onto a finished top-k list, so a
narrow filter still returns matches that exist further away.
"""

from __future__ import annotations

import contextlib
import hashlib
import re
from abc import ABC, abstractmethod
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from camtrace.errors import StorageError
from camtrace.types import IndexPoint, SearchFilter, TrackHit

if TYPE_CHECKING:
    from camtrace.settings import Settings

# Payload fields that get an index (DESIGN.md): keywords for the camera /
# track / video filters and grouping, a float range index for time.
KEYWORD_FIELDS = ("camera_id", "track_id", "video_id")
FLOAT_FIELDS = ("ts",)

# Points per write call: large enough to amortise the call, small enough that
# one batch of 768-d vectors stays a few MB.
UPSERT_BATCH = 512

# The compact layout, shared by both backends: original vectors on disk, an
# int8 scalar-quantized copy in RAM searched through HNSW, candidates
# oversampled and rescored with the originals.
# A compact Edge shard seals its appendable segment into an indexed one after this
# many points: ~4 s of HNSW and quantization work for 768-d vectors on 2 cores.
INDEX_AFTER_POINTS = 20_000
# No optimizer merge makes a segment larger than this, so no single step of
# maintenance grows with the size of the shard.
SEGMENT_POINTS = 40_000
HNSW_M = 16
HNSW_EF_CONSTRUCT = 100
# Search: HNSW beam width, and quantized candidates fetched per wanted point
# before rescoring them with the original vectors. Grouped search wants the
# best crop of each of 10 tracks of ~8 near-identical crops: on such data
# track recall@10 against the exact layout measured 0.92 at ef 128, 0.97 at
# 256 and 0.99 at 512 (0.83 / 0.95 / 1.00 with a camera filter), still ~1 ms.
HNSW_EF = 512
OVERSAMPLING = 2.0
# Below this many KB of vectors matching a filter, a filtered search scans the
# payload index's matches instead of walking the graph (exact for narrow filters).
FULL_SCAN_KB = 10_000


def vector_kb(points: int, dim: int) -> int:
    """Size in KB of ``points`` fp32 vectors: the unit of the engine's segment thresholds."""
    return max(1, points * dim * 4 // 1024)


def slug(model_version: str) -> str:
    """A folder- and collection-safe name for a model version.

    Characters outside ``[A-Za-z0-9._-]`` become ``-``; whenever that changes
    the name, a short hash of the original is appended so that two versions
    differing only in such characters ("a/b" and "a:b") never share a shard.
    """
    if not model_version or not model_version.strip():
        raise StorageError("model_version is empty: every index is named after the model that made its vectors")
    cleaned = re.sub(r"[^A-Za-z0-9._-]+", "-", model_version.strip()).strip("-.")[:80]
    if cleaned != model_version:
        digest = hashlib.sha256(model_version.encode()).hexdigest()[:8]
        cleaned = f"{cleaned}-{digest}" if cleaned else digest
    return cleaned


@dataclass(frozen=True)
class NearestQuery:
    """The points closest to one vector (cosine similarity)."""

    vector: list[float]


@dataclass(frozen=True)
class RecommendQuery:
    """Qdrant's recommend query with the best_score strategy: a point scores by its nearest
    positive example, unless a negative example is nearer (then its score is negative)."""

    positives: list[list[float]]
    negatives: list[list[float]]


VectorQuery = NearestQuery | RecommendQuery


def best_score_scale(similarity: float) -> float:
    """Qdrant's best_score strategy reports ``scaled_fast_sigmoid(cosine)`` (both the engine and
    the client's local mode); this maps a cosine similarity onto that scale."""
    return 0.5 * (similarity / (1.0 + abs(similarity)) + 1.0)


def similarity_from_best_score(score: float) -> float:
    """The inverse of ``best_score_scale`` for a recommend score: the cosine similarity to the nearest
    positive example, or minus the similarity to the nearest negative one when that one wins."""
    sign = 1.0 if score >= 0 else -1.0
    squashed = 2.0 * abs(score) - 1.0
    return sign * squashed / (1.0 - abs(squashed))


class VectorIndex(ABC):
    """One model version's vectors and payloads, searched one result per track."""

    model_version: str
    dim: int
    name: str  # the Edge shard folder or the server collection: what the model registry records

    @abstractmethod
    def ensure(self) -> None:
        """Create the collection/shard (cosine, ``dim``) and its payload indexes if missing; idempotent."""

    @abstractmethod
    def upsert(self, points: Sequence[IndexPoint]) -> None:
        """Insert or overwrite points by id (deterministic ids make repeats harmless); batched."""

    def search(
        self,
        vector: np.ndarray,
        filter: SearchFilter | None = None,
        limit: int = 20,
        *,
        offset: int = 0,
        min_score: float | None = None,
    ) -> list[TrackHit]:
        """Best point of each track, score (cosine similarity) descending: the tracks ranked
        ``offset`` to ``offset + limit``; ``min_score`` drops points below it inside the query."""
        if limit <= 0:
            return []
        hits = self._grouped(NearestQuery(self._query_vector(vector)), filter, offset + limit, min_score)
        return hits[offset:]

    def recommend(
        self,
        positives: Sequence[np.ndarray],
        negatives: Sequence[np.ndarray] = (),
        filter: SearchFilter | None = None,
        limit: int = 20,
        *,
        offset: int = 0,
        min_score: float | None = None,
    ) -> list[TrackHit]:
        """Tracks like the ``positives`` and unlike the ``negatives`` (raw vectors, so both backends
        answer alike whatever is stored), one hit per track, best first.

        A hit's score is the cosine similarity to its nearest positive; a hit nearer to a negative
        gets minus its similarity to that negative and ranks below every other hit. ``min_score``
        (a cosine similarity) keeps only hits whose nearest positive is at least that similar.
        """
        if limit <= 0:
            return []
        if len(positives) == 0:
            raise StorageError("a recommend query needs at least one positive example vector")
        query = RecommendQuery([self._query_vector(v) for v in positives], [self._query_vector(v) for v in negatives])
        threshold = None if min_score is None else best_score_scale(float(min_score))
        hits = self._grouped(query, filter, offset + limit, threshold)
        return [
            TrackHit(track_id=h.track_id, score=similarity_from_best_score(h.score), point_id=h.point_id, payload=h.payload)
            for h in hits[offset:]
        ]

    @abstractmethod
    def _grouped(
        self, query: VectorQuery, filter: SearchFilter | None, count: int, score_threshold: float | None
    ) -> list[TrackHit]:
        """The first ``count`` tracks by their best point's score under ``query`` (the backend's own
        scale), best first; points scoring below ``score_threshold`` are left out inside the query."""

    @abstractmethod
    def search_points(self, vector: np.ndarray, filter: SearchFilter | None = None, limit: int = 20) -> list[TrackHit]:
        """Nearest points, not grouped (a track may appear several times)."""

    @abstractmethod
    def count(self, filter: SearchFilter | None = None) -> int:
        """Exact number of points matching ``filter`` (all points when None)."""

    @abstractmethod
    def retrieve(self, ids: Sequence[str]) -> list[IndexPoint]:
        """Points with vectors (unit length: cosine indexes store them normalised), in the order
        of ``ids``; unknown ids are skipped."""

    @abstractmethod
    def existing_ids(self, ids: Sequence[str]) -> set[str]:
        """Which of ``ids`` the index holds (no vectors read): how a re-index resumes."""

    @abstractmethod
    def point_ids(self) -> set[str]:
        """Every point id in the index (no payloads, no vectors): for reconciling it with SQL."""

    @abstractmethod
    def track_points(self, track_id: str) -> list[IndexPoint]:
        """All points of one track with vectors, ordered by time."""

    @abstractmethod
    def delete(self, target: SearchFilter | Sequence[str]) -> None:
        """Delete points by id, or every point matching a (non-empty) filter."""

    @abstractmethod
    def close(self) -> None:
        """Release what the index holds; safe to call twice."""

    def maintain(self) -> object | None:
        """Index what was written since the last call, in a bounded step; None where the backend does it itself."""
        return None

    def facts(self) -> dict:
        """What an operator sizing or checking the index wants to see: layout, indexed and unindexed points."""
        return {}

    @contextlib.contextmanager
    def session(self) -> Iterator[VectorIndex]:
        """Hold the index open across several calls (batch work); a no-op where opening is free."""
        yield self

    def __enter__(self) -> VectorIndex:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # Shared checks ---------------------------------------------------------
    def _query_vector(self, vector: np.ndarray | Sequence[float]) -> list[float]:
        array = np.asarray(vector, dtype=np.float32).reshape(-1)
        if array.shape[0] != self.dim:
            raise StorageError(
                f"query vector has {array.shape[0]} dimensions but the index for model "
                f"{self.model_version!r} holds {self.dim}-d vectors; embed the query with the same model"
            )
        if not np.all(np.isfinite(array)):
            raise StorageError("query vector contains NaN or infinite values; check the embedding model's output")
        return array.tolist()

    def _point_batches(self, points: Sequence[IndexPoint]) -> Iterator[tuple[list[str], list[list[float]], list[dict]]]:
        """Validated (ids, vectors, payloads) in batches of ``UPSERT_BATCH``."""
        for start in range(0, len(points), UPSERT_BATCH):
            chunk = points[start : start + UPSERT_BATCH]
            vectors = np.stack([np.asarray(p.vector, dtype=np.float32).reshape(-1) for p in chunk]) if chunk else None
            if vectors is None:
                continue
            if vectors.shape[1] != self.dim:
                raise StorageError(
                    f"point {chunk[0].id} has a {vectors.shape[1]}-d vector but the index for model "
                    f"{self.model_version!r} holds {self.dim}-d vectors; a different model needs its own index"
                )
            if not np.all(np.isfinite(vectors)):
                bad = chunk[int(np.flatnonzero(~np.isfinite(vectors).all(axis=1))[0])].id
                raise StorageError(f"point {bad} has NaN or infinite values in its vector; it was not indexed")
            yield [str(p.id) for p in chunk], vectors.tolist(), [plain_payload(p.payload) for p in chunk]


def plain_payload(payload: Mapping) -> dict:
    """The payload as JSON-ready Python values (numpy scalars and tuples are common in callers)."""
    return {str(key): _plain(value) for key, value in payload.items()}


def _plain(value: object) -> object:
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, Mapping):
        return plain_payload(value)
    return value


@dataclass(frozen=True)
class Condition:
    """One payload condition of a search filter, before a backend turns it into its own Qdrant type:
    a match on any of ``any_of`` when given, otherwise a float range."""

    key: str
    any_of: tuple[str, ...] | None = None
    gte: float | None = None
    lte: float | None = None


def filter_conditions(filter: SearchFilter | None, exclude_tracks: Sequence[str] = ()) -> tuple[list[Condition], list[Condition]]:
    """(must, must_not): what a SearchFilter (and tracks already taken) mean as payload conditions."""
    if filter is not None and filter.exclude_track_ids:
        exclude_tracks = tuple(filter.exclude_track_ids) + tuple(exclude_tracks)
    must: list[Condition] = []
    must_not: list[Condition] = []
    if filter is not None:
        if filter.camera_ids:
            must.append(Condition("camera_id", any_of=tuple(filter.camera_ids)))
        if filter.since is not None or filter.until is not None:
            must.append(
                Condition(
                    "ts",
                    gte=None if filter.since is None else float(filter.since),
                    lte=None if filter.until is None else float(filter.until),
                )
            )
        if filter.exclude_camera_ids:
            must_not.append(Condition("camera_id", any_of=tuple(filter.exclude_camera_ids)))
    if exclude_tracks:
        must_not.append(Condition("track_id", any_of=tuple(exclude_tracks)))
    return must, must_not


def is_empty_filter(filter: SearchFilter | None) -> bool:
    return filter is None or (
        not filter.camera_ids
        and not filter.exclude_camera_ids
        and not filter.exclude_track_ids
        and filter.since is None
        and filter.until is None
    )


def hit_from(point_id: object, score: float, payload: Mapping | None) -> TrackHit:
    payload = dict(payload or {})
    return TrackHit(track_id=str(payload.get("track_id", "")), score=float(score), point_id=str(point_id), payload=payload)


def open_index(settings: Settings, model_version: str, dim: int, *, ensure: bool = True) -> VectorIndex:
    """The index for one model version: a Qdrant server when ``settings.qdrant_url`` is set, else Qdrant Edge:
    through the host's index owner when one answers on its socket, else opened by this process.

    With ``ensure`` (the default) the collection/shard and payload indexes are
    created if missing, so an unreachable server is reported here, at start-up.
    """
    if settings.qdrant_url:
        from qdrant_client import QdrantClient

        from camtrace.storage.server import ServerIndex

        # ensure() reaches the server at once and reports failure as a
        # StorageError; the client's own version probe runs in a background
        # thread and would only add a vaguer warning at a random moment.
        client = QdrantClient(url=settings.qdrant_url, api_key=settings.qdrant_api_key, check_compatibility=False)
        index: VectorIndex = ServerIndex(client, model_version, dim, alias=settings.collection, location=settings.qdrant_url)
    else:
        from camtrace.storage.edge import EdgeIndex
        from camtrace.storage.owner import OwnedIndex, owner_answers

        if owner_answers(settings.index_dir):  # the host's index owner holds the shards: ask it
            index = OwnedIndex(settings.index_dir, model_version, dim, layout=settings.index_layout)
        else:
            index = EdgeIndex(settings.index_dir, model_version, dim, layout=settings.index_layout)
    if ensure:
        try:
            index.ensure()
        except BaseException:
            index.close()
            raise
    return index
