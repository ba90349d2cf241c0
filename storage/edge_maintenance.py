"""Keeping a Qdrant Edge shard fit for search off the hot path: sealing and indexing new points in bounded
steps (``maintain``), and moving a shard to another layout (``migrate``: copy, verify, swap)."""

from __future__ import annotations

import os
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass

import qdrant_edge as qe

from camtrace.errors import StorageError
from camtrace.storage.edge_layout import DEFAULT_LAYOUT, LAYOUTS, has_field, vector_of
from camtrace.storage.index import (
    FLOAT_FIELDS,
    KEYWORD_FIELDS,
)

SCROLL_PAGE = 1000


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


class ShardMaintenance:
    """The maintenance side of ``EdgeIndex``."""

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
            copy = type(self)(
                self.root,
                self.model_version,
                self.dim,
                layout=layout,
                index_after_points=self.index_after_points,
                segment_points=self.segment_points,
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
                    f"migrating vector index {self.path} to the {layout} layout failed ({exc}); the index was left as it was"
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
            page, offset = source.scroll(qe.ScrollRequest(offset=offset, limit=SCROLL_PAGE, with_payload=True, with_vector=True))
            if page:
                target.update(qe.UpdateOperation.upsert_points([qe.Point(r.id, vector_of(r), dict(r.payload or {})) for r in page]))
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
