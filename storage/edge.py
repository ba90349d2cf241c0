"""Embedded vector index on Qdrant Edge (Qdrant's own engine, in-process).

One shard folder per model version under the index dir. A shard can be open in
one process at a time (its WAL is locked), so every access takes a file lock,
opens the shard, does the work, flushes, closes and releases: any number of
worker and API processes on one host can share the index, one at a time.

Two shard layouts, fixed when a shard is created (``LAYOUTS``):

- ``compact`` (the default for new shards): original fp32 vectors on disk,
  memory-mapped and read only to rescore; an int8 scalar-quantized copy in RAM
  (a quarter of the originals) that HNSW search runs on; payload on disk with
  its indexes. Points land in an appendable segment (searched exactly); once
  it holds ``index_after_points`` points, ``maintain()`` seals it into an
  HNSW-indexed, quantized segment, which takes seconds because a segment is
  never larger than that. Search oversamples the quantized candidates and
  rescores them with the originals, so recall holds.
- ``exact``: every vector fp32 in RAM, never indexed: an exact scan. What
  shards created before the compact layout hold; they keep it until
  ``migrate()`` (``camtrace index migrate``) copies them into a new shard.

Why int8 and not binary quantization: on clustered 768-d unit vectors (30k
points, 8 crops per track) top-10 recall after rescoring was 0.975 for int8
at 2x oversampling against 0.84 (2-bit), 0.82 (1.5-bit) and 0.82 (1-bit)
binary quantization, and binary stayed below 0.87 even at 4x; int8 costs
768 bytes per vector in RAM, a quarter of fp32.

Cost of opening per call (768-d vectors, measured on 2 cores, exact layout):
~0.09 s at 5k points, ~0.5 s at 100k (loading the vectors into RAM), against
1-10 ms for a camera+time filtered query on the open shard. Batch work
therefore holds one ``session()`` across many calls. A compact shard maps its
originals but reads each segment's int8 copy into RAM: ~1 s at 100k points,
~5 s at 300k (``storage/owner.py`` keeps it open for the whole host).

The engine holds the interpreter while it builds an index, so ``maintain()``
belongs to a moment when the process has nothing else to do (between ingest
batches, a periodic task), never inside a search or an ingest batch.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import qdrant_edge as qe
from filelock import FileLock

from camtrace.errors import InputError, StorageError
from camtrace.storage.edge_handle import ShardHandle
from camtrace.storage.edge_layout import DEFAULT_LAYOUT, LAYOUTS, ShardLayout, vector_of
from camtrace.storage.edge_maintenance import SCROLL_PAGE, ShardMaintenance
from camtrace.storage.index import (
    INDEX_AFTER_POINTS,
    SEGMENT_POINTS,
    Condition,
    RecommendQuery,
    VectorIndex,
    VectorQuery,
    filter_conditions,
    hit_from,
    is_empty_filter,
    slug,
)
from camtrace.types import IndexPoint, SearchFilter, TrackHit

# Grouping by track over-fetches this many points per wanted track, then
# excludes the tracks already found and asks again until the limit is filled.
OVERFETCH = 4
MAX_FETCH = 10_000


def edge_condition(condition: Condition) -> qe.FieldCondition:
    if condition.any_of is not None:
        return qe.FieldCondition(key=condition.key, match=qe.MatchAny(list(condition.any_of)))
    return qe.FieldCondition(key=condition.key, range=qe.RangeFloat(gte=condition.gte, lte=condition.lte))


def edge_vector_query(query: VectorQuery) -> qe.Query:
    if isinstance(query, RecommendQuery):
        return qe.Query.RecommendBestScore(qe.RecommendQuery(query.positives, query.negatives))
    return qe.Query.Nearest(query.vector)


def edge_filter(filter: SearchFilter | None, exclude_tracks: Sequence[str] = ()) -> qe.Filter | None:
    """The SearchFilter as a Qdrant Edge filter (applied inside the query)."""
    must, must_not = filter_conditions(filter, exclude_tracks)
    if not must and not must_not:
        return None
    return qe.Filter(must=[edge_condition(c) for c in must] or None, must_not=[edge_condition(c) for c in must_not] or None)


class EdgeIndex(ShardHandle, ShardLayout, ShardMaintenance, VectorIndex):
    """Qdrant Edge shard ``<root>/<slug(model_version)>``, shared between processes under a file lock.

    ``layout`` (``LAYOUTS``) applies when this object creates the shard; an
    existing shard keeps the layout it was created with.
    """

    def __init__(
        self,
        root: Path | str,
        model_version: str,
        dim: int,
        *,
        lock_timeout: float = 120.0,
        keep_open: float = 0.0,
        layout: str = DEFAULT_LAYOUT,
        index_after_points: int = INDEX_AFTER_POINTS,
        segment_points: int = SEGMENT_POINTS,
        folder: str | None = None,
    ) -> None:
        """``folder``: the shard's folder name where it is known already (a shard found on disk); by default
        ``slug(model_version)``."""
        if layout not in LAYOUTS:
            raise StorageError(f"unknown index layout {layout!r}; choose one of {', '.join(LAYOUTS)}")
        if index_after_points < 1 or segment_points < index_after_points:
            raise StorageError(
                f"index_after_points ({index_after_points}) must be at least 1 and at most segment_points ({segment_points})"
            )
        self.model_version = model_version
        self.dim = int(dim)
        self.new_layout = layout
        self.index_after_points = int(index_after_points)
        self.segment_points = int(segment_points)
        self.root = Path(root)
        self.name = folder or slug(model_version)
        self.path = self.root / self.name
        self.lock_timeout = lock_timeout
        # The lock files sit beside the shard, not inside it, so that creating
        # the shard (a rename into place) never races with them.
        self._file_lock = FileLock(str(self.root / f"{self.name}.lock"), thread_local=False, poll_interval=0.01)
        # flock offers no fairness and filelock polls, so a process that
        # releases and re-acquires at once (an ingest loop) would starve the
        # others. A waiter holds this turnstile while it waits for the main
        # lock, so the releaser cannot get back in before the waiter has had
        # its turn.
        self._turnstile = FileLock(str(self.root / f"{self.name}.queue.lock"), thread_local=False, poll_interval=0.01)
        self._mutex = threading.RLock()  # serialises threads of this process
        self._depth = 0
        self._shard: qe.EdgeShard | None = None
        self._open_layout = layout
        # Seconds the shard stays open after its last use, so that the next
        # call (the query service's next search) skips loading it; it is
        # released at once when another process waits for it. 0: close after
        # every call.
        self.keep_open = keep_open
        self._last_used = 0.0
        self._linger: threading.Thread | None = None

    # The interface -------------------------------------------------------
    def ensure(self) -> None:
        # Opening creates a missing shard with its indexes; an older shard
        # missing an index gets it here.
        with self._use("creating payload indexes") as shard:
            self._create_field_indexes(shard)

    def upsert(self, points: Sequence[IndexPoint]) -> None:
        if not points:
            return
        batches = list(self._point_batches(points))  # validate everything before writing anything
        with self._use("upsert") as shard:
            for ids, vectors, payloads in batches:
                shard.update(
                    qe.UpdateOperation.upsert_points(
                        [qe.Point(pid, vec, payload) for pid, vec, payload in zip(ids, vectors, payloads)]
                    )
                )

    def search_points(self, vector: np.ndarray, filter: SearchFilter | None = None, limit: int = 20) -> list[TrackHit]:
        if limit <= 0:
            return []
        query = self._query_vector(vector)
        with self._use("search") as shard:
            found = shard.query(
                qe.QueryRequest(
                    limit=limit,
                    query=qe.Query.Nearest(query),
                    filter=edge_filter(filter),
                    with_payload=True,
                    params=self._search_params(),
                )
            )
        return [hit_from(p.id, p.score, p.payload) for p in found]

    def _grouped(
        self, query: VectorQuery, filter: SearchFilter | None, count: int, score_threshold: float | None
    ) -> list[TrackHit]:
        """One hit per track: over-fetch, keep each track's first (best) point, then ask again
        (fetching more each round) excluding the tracks already found, until ``count`` tracks
        or no candidates are left. Excluding found tracks inside the query bounds the work
        even when one track owns thousands of the nearest points.

        Each later round's points score no higher than the previous round's
        last point, so the concatenation stays sorted.
        """
        edge_query = edge_vector_query(query)
        hits: list[TrackHit] = []
        seen: set[str] = set()
        growth = 1
        with self._use("search") as shard:
            while len(hits) < count:
                # Doubling per round keeps the rounds few when many tracks
                # each own a run of near-identical crops.
                fetch = min(OVERFETCH * (count - len(hits)) * growth, MAX_FETCH)
                growth *= 2
                found = shard.query(
                    qe.QueryRequest(
                        limit=fetch,
                        query=edge_query,
                        filter=edge_filter(filter, exclude_tracks=sorted(seen)),
                        score_threshold=score_threshold,
                        with_payload=True,
                        params=self._search_params(),
                    )
                )
                for point in found:
                    hit = hit_from(point.id, point.score, point.payload)
                    if hit.track_id not in seen:
                        seen.add(hit.track_id)
                        hits.append(hit)
                if len(found) < fetch:  # candidates exhausted
                    break
        # Already in order for an exact scan; an HNSW index (after optimize())
        # may return near-ties slightly out of order across rounds.
        hits.sort(key=lambda h: -h.score)
        return hits[:count]

    def count(self, filter: SearchFilter | None = None) -> int:
        with self._use("count") as shard:
            return int(shard.count(qe.CountRequest(exact=True, filter=edge_filter(filter))))

    def retrieve(self, ids: Sequence[str]) -> list[IndexPoint]:
        if not ids:
            return []
        with self._use("retrieve") as shard:
            records = shard.retrieve([str(i) for i in ids], with_payload=True, with_vector=True)
        by_id = {str(r.id): r for r in records}
        return [self._point(by_id[str(i)]) for i in ids if str(i) in by_id]

    def existing_ids(self, ids: Sequence[str]) -> set[str]:
        if not ids:
            return set()
        with self._use("retrieve") as shard:
            records = shard.retrieve([str(i) for i in ids], with_payload=False, with_vector=False)
        return {str(r.id) for r in records}

    def point_ids(self) -> set[str]:
        ids: set[str] = set()
        offset = None
        with self._use("listing point ids") as shard:
            while True:
                page, offset = shard.scroll(
                    qe.ScrollRequest(offset=offset, limit=SCROLL_PAGE, with_payload=False, with_vector=False)
                )
                ids.update(str(record.id) for record in page)
                if offset is None:
                    return ids

    def track_points(self, track_id: str) -> list[IndexPoint]:
        flt = qe.Filter(must=[qe.FieldCondition(key="track_id", match=qe.MatchValue(str(track_id)))])
        records = []
        offset = None
        with self._use("reading a track") as shard:
            while True:
                page, offset = shard.scroll(
                    qe.ScrollRequest(offset=offset, limit=SCROLL_PAGE, filter=flt, with_payload=True, with_vector=True)
                )
                records.extend(page)
                if offset is None:
                    break
        points = [self._point(r) for r in records]
        return sorted(points, key=lambda p: (p.payload.get("ts", 0.0), p.payload.get("frame_index", 0), p.id))

    def delete(self, target: SearchFilter | Sequence[str]) -> None:
        if isinstance(target, SearchFilter):
            if is_empty_filter(target):
                raise InputError("refusing to delete with an empty filter: it would delete every point of the index")
            operation = qe.UpdateOperation.delete_points_by_filter(edge_filter(target))
        else:
            ids = [str(i) for i in target]
            if not ids:
                return
            operation = qe.UpdateOperation.delete_points(ids)
        with self._use("delete") as shard:
            shard.update(operation)

    def close(self) -> None:
        # Only a kept-open shard stays open between calls; a session still
        # running in this process is left to its own ``with`` block.
        with self._mutex:
            if self._depth == 0 and self._shard is not None:
                self._release()

    @staticmethod
    def _point(record: qe.Record) -> IndexPoint:
        vector = vector_of(record)
        return IndexPoint(id=str(record.id), vector=np.asarray(vector, dtype=np.float32), payload=dict(record.payload or {}))


def edge_shards(root: Path | str, **options: object) -> list[EdgeIndex]:
    """Every shard under the index dir (one per model version that wrote vectors), by folder name."""
    root = Path(root)
    shards = []
    for config_file in sorted(root.glob("*/edge_config.json")):
        folder = config_file.parent
        try:
            dim = int(json.loads(config_file.read_text())["vectors"][""]["size"])
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise StorageError(f"cannot read the vector size of shard {folder} from {config_file}: {exc}") from exc
        shards.append(EdgeIndex(root, folder.name, dim, folder=folder.name, **options))  # type: ignore[arg-type]
    return shards
