"""Embedded vector index on Qdrant Edge (Qdrant's own engine, in-process).

One shard folder per model version under the index dir. A shard can be open in
one process at a time (its WAL is locked), so every access takes a file lock,
opens the shard, does the work, flushes, closes and releases: any number of
worker and API processes on one host can share the index, one at a time.

Cost of that pattern (768-d vectors, measured on 2 cores): one call with its
own open and close takes ~0.09 s at 5k points, ~0.15 s at 20k, ~0.25 s at 50k
and ~0.5 s at 100k (mostly loading the vectors into RAM), against 1-10 ms for
a camera+time filtered query on the open shard. Batch work therefore holds one
``session()`` across many calls instead of paying the open per call.

``optimize()`` (HNSW build, segment merge) is never run here on the ingest
path: it blocks for minutes at 100k+ points. Without it a search is an exact
scan of the plain segments, fast enough up to a few hundred thousand points.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import threading
import time
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np
import qdrant_edge as qe
from camtrace.storage.index import (
    FLOAT_FIELDS,
    KEYWORD_FIELDS,
    Condition,
    RecommendQuery,
    VectorIndex,
    VectorQuery,
    filter_conditions,
    hit_from,
    is_empty_filter,
    slug,
)
from filelock import FileLock, Timeout

from camtrace.errors import InputError, StorageError
from camtrace.types import IndexPoint, SearchFilter, TrackHit

# Grouping by track over-fetches this many points per wanted track, then
# excludes the tracks already found and asks again until the limit is filled.
OVERFETCH = 4
MAX_FETCH = 10_000
SCROLL_PAGE = 1000


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
    return qe.Filter(
        must=[edge_condition(c) for c in must] or None, must_not=[edge_condition(c) for c in must_not] or None
    )


class EdgeIndex(VectorIndex):
    """Qdrant Edge shard ``<root>/<slug(model_version)>``, shared between processes under a file lock."""

    def __init__(
        self, root: Path | str, model_version: str, dim: int, *, lock_timeout: float = 120.0, keep_open: float = 0.0
    ) -> None:
        self.model_version = model_version
        self.dim = int(dim)
        self.root = Path(root)
        self.name = slug(model_version)
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
        # Seconds the shard stays open after its last use, so that the next
        # call (the query service's next search) skips loading it; it is
        # released at once when another process waits for it. 0: close after
        # every call.
        self.keep_open = keep_open
        self._last_used = 0.0
        self._linger: threading.Thread | None = None

    # Opening and locking -------------------------------------------------
    def _config(self) -> qe.EdgeConfig:
        return qe.EdgeConfig(vectors=qe.EdgeVectorParams(size=self.dim, distance=qe.Distance.Cosine))

    @contextlib.contextmanager
    def session(self) -> Iterator[EdgeIndex]:
        """Hold the lock and the open shard across several calls; re-entrant and thread-safe.

        Other processes wait for the lock meanwhile, so keep sessions to one
        batch of work, not a whole long-running job.
        """
        with self._mutex:
            if self._shard is None:
                self._open()
            self._depth += 1
            try:
                yield self
            finally:
                self._depth -= 1
                if self._depth == 0:
                    if self.keep_open > 0 and not self._another_process_waits():
                        self._last_used = time.monotonic()
                        self._start_linger()
                    else:
                        self._release()

    def _another_process_waits(self) -> bool:
        """A process waiting for the shard holds the turnstile (see ``_open``)."""
        try:
            self._turnstile.acquire(timeout=0)
        except Timeout:
            return True
        self._turnstile.release()
        return False

    def _start_linger(self) -> None:
        if self._linger is None:  # set back to None under the mutex when it ends, so none is missed
            self._linger = threading.Thread(target=self._linger_until_idle, name=f"edge-linger-{self.name}", daemon=True)
            self._linger.start()

    def _linger_until_idle(self) -> None:
        """Release the kept-open shard after ``keep_open`` idle seconds, or as soon as another process waits."""
        while True:
            time.sleep(min(0.05, self.keep_open))
            with self._mutex:
                if self._shard is None or self._depth > 0:
                    if self._shard is None:
                        self._linger = None
                        return
                    continue
                if time.monotonic() - self._last_used >= self.keep_open or self._another_process_waits():
                    self._linger = None
                    self._release()
                    return

    def _open(self) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        deadline = time.monotonic() + self.lock_timeout
        try:
            self._turnstile.acquire(timeout=self.lock_timeout)
            try:
                self._file_lock.acquire(timeout=max(0.0, deadline - time.monotonic()))
            finally:
                self._turnstile.release()
        except Timeout:
            raise StorageError(
                f"vector index {self.path} stayed locked by another process for {self.lock_timeout:.0f} s "
                f"(lock file {self._file_lock.lock_file}); wait for the running batch to finish, or stop the "
                "process that holds it"
            ) from None
        try:
            if not (self.path / "edge_config.json").exists():
                self._create()
            self._shard = qe.EdgeShard.load(str(self.path), self._config())
        except BaseException as exc:
            self._file_lock.release()
            if isinstance(exc, StorageError) or not isinstance(exc, Exception):
                raise
            if "incompatible" in str(exc).lower():
                raise StorageError(
                    f"vector index {self.path} does not hold {self.dim}-d cosine vectors ({exc}); "
                    "each model version needs its own index: check the model_version it was opened with"
                ) from exc
            raise StorageError(f"cannot open vector index {self.path}: {exc}",
                               public="cannot open the vector index; the server log has the details") from exc

    def _create(self) -> None:
        """Build the shard with its payload indexes in a temp folder, then rename it into place.

        Runs under the lock; the rename is atomic, so no process ever loads a
        half-created shard, and leftovers of a crashed creation are removed.
        """
        for stale in self.root.glob(f".creating-{self.name}-*"):
            shutil.rmtree(stale, ignore_errors=True)
        if self.path.exists() and not any(self.path.iterdir()):
            self.path.rmdir()
        elif self.path.exists():
            raise StorageError(
                f"{self.path} exists but is not a Qdrant Edge shard (no edge_config.json); "
                "move it away or point CAMTRACE_DATA_DIR elsewhere"
            )
        temp = self.root / f".creating-{self.name}-{os.getpid()}"
        shard = qe.EdgeShard.create(str(temp), self._config())
        try:
            self._create_field_indexes(shard)
            shard.flush()
        finally:
            shard.close()
        os.rename(temp, self.path)

    @staticmethod
    def _create_field_indexes(shard: qe.EdgeShard) -> None:
        present = set(shard.info().payload_schema)
        for name in KEYWORD_FIELDS:
            if name not in present:
                shard.update(qe.UpdateOperation.create_field_index(name, qe.PayloadSchemaType.Keyword))
        for name in FLOAT_FIELDS:
            if name not in present:
                shard.update(qe.UpdateOperation.create_field_index(name, qe.PayloadSchemaType.Float))

    def _release(self) -> None:
        shard, self._shard = self._shard, None
        try:
            if shard is not None:
                try:
                    shard.flush()
                finally:
                    shard.close()
        except Exception as exc:
            raise StorageError(f"vector index {self.path}: flushing to disk failed: {exc}",
                               public="the vector index could not be written; the server log has the details") from exc
        finally:
            self._file_lock.release()

    @contextlib.contextmanager
    def _use(self, action: str) -> Iterator[qe.EdgeShard]:
        with self.session():
            assert self._shard is not None
            try:
                yield self._shard
            except (StorageError, InputError):
                raise
            except Exception as exc:
                raise StorageError(f"vector index {self.path}: {action} failed: {exc}",
                                   public=f"the vector index failed while {action}; the server log has the details") from exc

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

    def search_points(
        self, vector: np.ndarray, filter: SearchFilter | None = None, limit: int = 20
    ) -> list[TrackHit]:
        if limit <= 0:
            return []
        query = self._query_vector(vector)
        with self._use("search") as shard:
            found = shard.query(
                qe.QueryRequest(
                    limit=limit, query=qe.Query.Nearest(query), filter=edge_filter(filter), with_payload=True
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

    def optimize(self) -> bool:
        """Build HNSW and merge segments. Blocks for minutes at 100k+ points and holds
        the lock meanwhile: an offline maintenance step, never part of ingest."""
        with self._use("optimize") as shard:
            return bool(shard.optimize())

    @staticmethod
    def _point(record: qe.Record) -> IndexPoint:
        vector = record.vector
        if isinstance(vector, dict):  # named vectors: ours is the default ("")
            vector = vector.get("")
        return IndexPoint(id=str(record.id), vector=np.asarray(vector, dtype=np.float32), payload=dict(record.payload or {}))
