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

import contextlib
import json
import os
import shutil
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import qdrant_edge as qe
from camtrace.storage.index import (
    FLOAT_FIELDS,
    FULL_SCAN_KB,
    HNSW_EF,
    HNSW_EF_CONSTRUCT,
    HNSW_M,
    INDEX_AFTER_POINTS,
    KEYWORD_FIELDS,
    OVERSAMPLING,
    SEGMENT_POINTS,
    Condition,
    RecommendQuery,
    VectorIndex,
    VectorQuery,
    filter_conditions,
    hit_from,
    is_empty_filter,
    slug,
    vector_kb,
)
from filelock import FileLock, Timeout

from camtrace.errors import InputError, StorageError
from camtrace.types import IndexPoint, SearchFilter, TrackHit

# Grouping by track over-fetches this many points per wanted track, then
# excludes the tracks already found and asks again until the limit is filled.
OVERFETCH = 4
MAX_FETCH = 10_000
SCROLL_PAGE = 1000

LAYOUTS = ("compact", "exact")
DEFAULT_LAYOUT = "compact"
@dataclass(frozen=True)
class Maintenance:
    """What one ``maintain()`` call found and did."""

    layout: str
    points: int
    indexed_before: int
    indexed_after: int
    segments: int
    seconds: float

    @property
    def newly_indexed(self) -> int:
        return max(0, self.indexed_after - self.indexed_before)

    @property
    def unindexed(self) -> int:
        return max(0, self.points - self.indexed_after)


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
                f"index_after_points ({index_after_points}) must be at least 1 and at most segment_points "
                f"({segment_points})"
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

    # Layouts -------------------------------------------------------------
    def _config(self, layout: str, *, creating: bool = True) -> qe.EdgeConfig:
        """The shard configuration of a layout. Loading passes the same one, so it never changes a shard,
        less the segment thresholds: a shard keeps those it was created with."""
        if layout == "exact":
            return qe.EdgeConfig(vectors=qe.EdgeVectorParams(size=self.dim, distance=qe.Distance.Cosine))
        return qe.EdgeConfig(
            vectors=qe.EdgeVectorParams(size=self.dim, distance=qe.Distance.Cosine, memory=qe.Memory.Cold),
            quantization_config=qe.ScalarQuantizationConfig(
                type=qe.ScalarType.Int8, quantile=0.99, memory=qe.Memory.Pinned
            ),
            hnsw_config=qe.HnswIndexConfig(
                m=HNSW_M, ef_construct=HNSW_EF_CONSTRUCT, full_scan_threshold=FULL_SCAN_KB, payload_m=HNSW_M
            ),
            optimizers=qe.EdgeOptimizersConfig(
                indexing_threshold=vector_kb(self.index_after_points, self.dim),
                max_segment_size=vector_kb(self.segment_points, self.dim),
            ) if creating else None,
            payload_memory=qe.Memory.Cold,
        )

    def _stored_config(self, path: Path | None = None) -> dict:
        """The shard's own configuration file (what it was created with)."""
        config_file = (path or self.path) / "edge_config.json"
        try:
            return json.loads(config_file.read_text())
        except (OSError, ValueError) as exc:
            raise StorageError(f"cannot read the vector index configuration {config_file}: {exc}") from exc

    def stored_layout(self, path: Path | None = None) -> str:
        """The layout a shard on disk was created with: compact when it keeps a quantized copy."""
        return "compact" if self._stored_config(path).get("quantization_config") else "exact"

    @property
    def layout(self) -> str:
        """This shard's layout (the one it would be created with while it does not exist)."""
        if (self.path / "edge_config.json").exists():
            return self.stored_layout()
        return self.new_layout

    def _search_params(self) -> qe.SearchParams | None:
        if self._open_layout != "compact":
            return None
        return qe.SearchParams(
            hnsw_ef=HNSW_EF, quantization=qe.QuantizationSearchParams(rescore=True, oversampling=OVERSAMPLING)
        )

    # Opening and locking -------------------------------------------------

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
            stored = self._stored_config()
            size = stored.get("vectors", {}).get("", {}).get("size")
            if size is not None and int(size) != self.dim:
                raise StorageError(
                    f"vector index {self.path} does not hold {self.dim}-d cosine vectors (it holds {size}-d); "
                    "each model version needs its own index: check the model_version it was opened with"
                )
            self._open_layout = self.stored_layout()
            self._shard = qe.EdgeShard.load(str(self.path), self._config(self._open_layout, creating=False))
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
        replaced = sorted(self.root.glob(f".replaced-{self.name}-*"))
        if replaced and not self.path.exists():
            # A migration stopped between its two renames: the old shard is whole, put it back.
            os.rename(replaced[-1], self.path)
            return
        if self.path.exists() and not any(self.path.iterdir()):
            self.path.rmdir()
        elif self.path.exists():
            raise StorageError(
                f"{self.path} exists but is not a Qdrant Edge shard (no edge_config.json); "
                "move it away or point CAMTRACE_DATA_DIR elsewhere"
            )
        temp = self.root / f".creating-{self.name}-{os.getpid()}"
        shard = qe.EdgeShard.create(str(temp), self._config(self.new_layout))
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

    def optimize(self) -> bool:
        """Run every optimization the shard plans now (HNSW, quantization, merges), however long it takes.

        On an exact shard this builds HNSW over all of it: minutes at 100k+
        points, holding the lock and the interpreter. ``maintain()`` is the
        bounded step to run regularly."""
        with self._use("optimize") as shard:
            return bool(shard.optimize())

    def maintain(self) -> Maintenance:
        """Seal and index the appendable segment once it holds ``index_after_points`` points.

        One call's work is bounded by the segment size (seconds), as long as it
        runs at least once per ``index_after_points`` new points: between ingest
        batches in the process that writes, or as a periodic task. It holds the
        lock meanwhile; another process's search waits for it, then answers.
        An exact shard is never indexed (its searches scan): nothing to do.
        """
        started = time.perf_counter()
        with self._use("indexing sealed segments") as shard:
            info = shard.info()
            before = int(info.indexed_vectors_count)
            after, segments = before, int(info.segments_count)
            if self._open_layout == "compact" and info.points_count - before >= self._stored_index_after():
                shard.optimize()
                info = shard.info()
                after, segments = int(info.indexed_vectors_count), int(info.segments_count)
            return Maintenance(
                layout=self._open_layout,
                points=int(info.points_count),
                indexed_before=before,
                indexed_after=after,
                segments=segments,
                seconds=time.perf_counter() - started,
            )

    def _stored_index_after(self) -> int:
        """The shard's own sealing threshold in points (from its KB figure), whatever this object was given."""
        kb = (self._stored_config().get("optimizers") or {}).get("indexing_threshold")
        return self.index_after_points if kb is None else max(1, int(kb) * 1024 // (self.dim * 4))

    def facts(self) -> dict:
        with self._use("reading shard facts") as shard:
            info = shard.info()
            return {
                "index_layout": self._open_layout,
                "indexed_points": int(info.indexed_vectors_count),
                "unindexed_points": int(info.points_count) - int(info.indexed_vectors_count),
                "segments": int(info.segments_count),
            }

    def migrate(self, layout: str = DEFAULT_LAYOUT, progress: Callable[[int, int], None] | None = None) -> int:
        """Copy every point (vector and payload) into a new shard of ``layout``, verify, then swap it in.

        Holds the lock throughout, so nothing writes meanwhile (other processes
        wait). The copy is built in a temp folder and indexed one segment at a
        time as it fills; the ids of both shards must agree before the swap.
        On any failure the old shard stays as it was and the copy is removed.
        ``progress(done, total)`` follows the copy. Returns the points copied.
        """
        if layout not in LAYOUTS:
            raise StorageError(f"unknown index layout {layout!r}; choose one of {', '.join(LAYOUTS)}")
        temp = self.root / f".migrating-{self.name}-{os.getpid()}"
        backup = self.root / f".replaced-{self.name}-{os.getpid()}"
        with self._mutex, self.session():
            source = self._shard
            assert source is not None
            total = int(source.count(qe.CountRequest(exact=True)))
            for stale in self.root.glob(f".migrating-{self.name}-*"):  # a crashed migration's copy
                shutil.rmtree(stale, ignore_errors=True)
            copy = EdgeIndex(
                self.root, self.model_version, self.dim, layout=layout,
                index_after_points=self.index_after_points, segment_points=self.segment_points,
            )
            try:
                target = qe.EdgeShard.create(str(temp), copy._config(layout))
                try:
                    self._create_field_indexes(target)
                    copied = self._copy_points(source, target, total, copy.index_after_points, layout, progress)
                    if layout == "compact":
                        target.optimize()
                    target.flush()
                    self._verify_copy(source, target, total, copied)
                finally:
                    target.close()
            except BaseException as exc:
                shutil.rmtree(temp, ignore_errors=True)
                if isinstance(exc, StorageError) or not isinstance(exc, Exception):
                    raise
                raise StorageError(
                    f"migrating vector index {self.path} to the {layout} layout failed ({exc}); "
                    "the index was left as it was"
                ) from exc
            # The swap: the open shard is closed first; the lock stays held until the session ends.
            source.close()
            self._shard = None
            os.rename(self.path, backup)
            try:
                os.rename(temp, self.path)
            except OSError:
                os.rename(backup, self.path)
                shutil.rmtree(temp, ignore_errors=True)
                raise
            shutil.rmtree(backup, ignore_errors=True)
            self._open_layout = layout
            self._shard = qe.EdgeShard.load(str(self.path), self._config(layout, creating=False))
        return copied

    @staticmethod
    def _copy_points(
        source: qe.EdgeShard,
        target: qe.EdgeShard,
        total: int,
        index_after: int,
        layout: str,
        progress: Callable[[int, int], None] | None,
    ) -> int:
        copied = since_indexed = 0
        offset = None
        while True:
            page, offset = source.scroll(
                qe.ScrollRequest(offset=offset, limit=SCROLL_PAGE, with_payload=True, with_vector=True)
            )
            if page:
                target.update(qe.UpdateOperation.upsert_points(
                    [qe.Point(r.id, EdgeIndex._vector_of(r), dict(r.payload or {})) for r in page]
                ))
                copied += len(page)
                since_indexed += len(page)
                if progress is not None:
                    progress(copied, total)
            if layout == "compact" and since_indexed >= index_after:
                target.optimize()  # one segment's worth at a time: bounded steps, not one at the end
                since_indexed = 0
            if offset is None:
                return copied

    def _verify_copy(self, source: qe.EdgeShard, target: qe.EdgeShard, total: int, copied: int) -> None:
        counted = int(target.count(qe.CountRequest(exact=True)))
        if not copied == counted == total:
            raise StorageError(
                f"migrating vector index {self.path}: the copy holds {counted} points after copying {copied} "
                f"of {total}; the index was left as it was, run the migration again"
            )
        for field in (*KEYWORD_FIELDS, *FLOAT_FIELDS):
            before = source.count(qe.CountRequest(exact=True, filter=has_field(field)))
            after = target.count(qe.CountRequest(exact=True, filter=has_field(field)))
            if before != after:
                raise StorageError(
                    f"migrating vector index {self.path}: {after} points of the copy carry {field!r} against "
                    f"{before} in the original; the index was left as it was"
                )

    @staticmethod
    def _vector_of(record: qe.Record) -> list[float]:
        vector = record.vector
        if isinstance(vector, dict):  # named vectors: ours is the default ("")
            vector = vector.get("")
        return list(vector)

    @staticmethod
    def _point(record: qe.Record) -> IndexPoint:
        vector = EdgeIndex._vector_of(record)
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


def has_field(field: str) -> qe.Filter:
    """Points that carry ``field`` in their payload."""
    return qe.Filter(must_not=[qe.IsEmptyCondition(field)])
