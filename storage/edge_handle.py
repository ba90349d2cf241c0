"""Holding a Qdrant Edge shard: one process at a time under a file lock with a fair turnstile, kept open for a
while after its last use unless another process waits for it."""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Iterator
from typing import Any

import qdrant_edge as qe
from filelock import Timeout

from camtrace.errors import InputError, StorageError


class ShardHandle:
    """The opening and locking side of ``EdgeIndex``."""

    @contextlib.contextmanager
    def session(self) -> Iterator[Any]:
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
            raise StorageError(
                f"cannot open vector index {self.path}: {exc}",
                public="cannot open the vector index; the server log has the details",
            ) from exc

    def _release(self) -> None:
        shard, self._shard = self._shard, None
        try:
            if shard is not None:
                try:
                    shard.flush()
                finally:
                    shard.close()
        except Exception as exc:
            raise StorageError(
                f"vector index {self.path}: flushing to disk failed: {exc}",
                public="the vector index could not be written; the server log has the details",
            ) from exc
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
                raise StorageError(
                    f"vector index {self.path}: {action} failed: {exc}",
                    public=f"the vector index failed while {action}; the server log has the details",
                ) from exc
