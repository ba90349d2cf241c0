"""One owner per host for the embedded index.

Without it every process opens the shard under the file lock in turn (see
``edge.py``), and a compact shard takes seconds to open. With it, one
long-lived process (``camtrace index serve``) keeps the shards open and the
others send it their calls over a Unix socket in the index dir; it runs
maintenance itself when no call has come for a moment. ``open_index`` hands
out an ``OwnedIndex`` whenever an owner answers on the socket, and the plain
``EdgeIndex`` otherwise, so nothing else changes for the callers.

Messages are pickled: the socket is created readable and writable by its owner
only, so only processes of the same user (who could open the shard anyway)
can send them.
"""

from __future__ import annotations

import contextlib
import logging
import os
import pickle
import socket
import socketserver
import struct
import threading
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from camtrace.errors import CamtraceError, StorageError
from camtrace.storage.edge import EdgeIndex
from camtrace.storage.index import VectorIndex, VectorQuery, slug
from camtrace.types import IndexPoint, SearchFilter, TrackHit

logger = logging.getLogger(__name__)

SOCKET_NAME = "owner.sock"
# The calls an owner answers: the index interface, nothing else.
CALLS = frozenset(
    {
        "ensure",
        "upsert",
        "search_points",
        "_grouped",
        "count",
        "retrieve",
        "existing_ids",
        "point_ids",
        "track_points",
        "delete",
        "maintain",
        "facts",
    }
)
HEADER = struct.Struct("!Q")


def socket_path(index_dir: Path | str) -> Path:
    return Path(index_dir) / SOCKET_NAME


def send(sock: socket.socket, value: object) -> None:
    data = pickle.dumps(value, protocol=pickle.HIGHEST_PROTOCOL)
    sock.sendall(HEADER.pack(len(data)) + data)


def receive(sock: socket.socket) -> object:
    header = _read_exactly(sock, HEADER.size)
    return pickle.loads(_read_exactly(sock, HEADER.unpack(header)[0]))


def _read_exactly(sock: socket.socket, size: int) -> bytes:
    chunks, left = [], size
    while left:
        chunk = sock.recv(min(left, 1 << 20))
        if not chunk:
            raise ConnectionError("the index owner closed the connection")
        chunks.append(chunk)
        left -= len(chunk)
    return b"".join(chunks)


def owner_answers(index_dir: Path | str) -> bool:
    """Whether an owner listens on the index dir's socket (a socket file left by a dead owner does not count)."""
    path = socket_path(index_dir)
    if not path.exists():
        return False
    with contextlib.suppress(OSError), socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(2.0)
        sock.connect(str(path))
        send(sock, ("ping",))
        return receive(sock) == ("ok", "pong")
    return False


class IndexOwner:
    """Keeps every shard it is asked for open and answers calls on the socket, one thread per connection.

    ``maintain_seconds``: maintenance runs on each open shard at least that long after its last run,
    once no call has come for ``idle_seconds``, or regardless once twice that time has passed, so that a
    steady stream of calls cannot put it off for good (0: never).
    """

    def __init__(self, index_dir: Path | str, *, layout: str, maintain_seconds: float = 60.0, idle_seconds: float = 1.0) -> None:
        self.index_dir = Path(index_dir)
        self.layout = layout
        self.maintain_seconds = maintain_seconds
        self.idle_seconds = idle_seconds
        self.path = socket_path(self.index_dir)
        self._indexes: dict[str, EdgeIndex] = {}
        self._lock = threading.Lock()
        self._last_call = time.monotonic()
        self._last_maintained = 0.0
        self._stop = threading.Event()
        self._server: socketserver.ThreadingUnixStreamServer | None = None

    def index(self, model_version: str, dim: int) -> EdgeIndex:
        with self._lock:
            name = slug(model_version)
            index = self._indexes.get(name)
            if index is None:
                # Held open for good: the owner is the only process that opens it.
                index = EdgeIndex(self.index_dir, model_version, dim, layout=self.layout, keep_open=float("inf"))
                self._indexes[name] = index
            elif index.dim != dim:
                raise StorageError(
                    f"vector index {index.path} holds {index.dim}-d vectors, not {dim}-d; each model version "
                    "needs its own index: check the model_version"
                )
            return index

    def answer(self, message: tuple) -> tuple:
        """("ok", result) or ("error", exception) for one message."""
        if message == ("ping",):
            return ("ok", "pong")
        self._last_call = time.monotonic()
        try:
            model_version, dim, call, args, kwargs = message
            if call not in CALLS:
                raise StorageError(f"the index owner does not answer {call!r}")
            index = self.index(model_version, dim)
            with index.session():
                result = getattr(index, call)(*args, **kwargs)
            return ("ok", result)
        except CamtraceError as exc:
            return ("error", exc)
        except Exception as exc:  # anything else reaches the caller as a StorageError that names the call
            return ("error", StorageError(f"the index owner failed on {message[2]!r}: {exc}"))
        finally:
            self._last_call = time.monotonic()

    def serve_forever(self) -> None:
        self.index_dir.mkdir(parents=True, exist_ok=True)
        if owner_answers(self.index_dir):
            raise StorageError(f"another index owner already answers on {self.path}; one owner per host")
        with contextlib.suppress(FileNotFoundError):
            self.path.unlink()  # left by an owner that died
        owner = self

        class Handler(socketserver.BaseRequestHandler):
            def handle(self) -> None:
                with contextlib.suppress(ConnectionError, EOFError):
                    while True:
                        send(self.request, owner.answer(receive(self.request)))

        previous = os.umask(0o177)  # the socket: read and write for this user only
        try:
            self._server = socketserver.ThreadingUnixStreamServer(str(self.path), Handler)
        finally:
            os.umask(previous)
        self._server.daemon_threads = True
        maintainer = threading.Thread(target=self._maintain_when_idle, name="index-owner-maintain", daemon=True)
        maintainer.start()
        try:
            self._server.serve_forever(poll_interval=0.2)
        finally:
            self._stop.set()
            self._server.server_close()
            with contextlib.suppress(FileNotFoundError):
                self.path.unlink()
            with self._lock:
                for index in self._indexes.values():
                    index.close()

    def shutdown(self) -> None:
        if self._server is not None:
            self._server.shutdown()

    def _maintain_when_idle(self) -> None:
        while not self._stop.wait(0.2):
            if self.maintain_seconds <= 0:
                continue
            now = time.monotonic()
            since = now - self._last_maintained
            idle = now - self._last_call >= self.idle_seconds
            if since < self.maintain_seconds or (not idle and since < 2 * self.maintain_seconds):
                continue
            with self._lock:
                indexes = list(self._indexes.values())
            for index in indexes:
                with contextlib.suppress(CamtraceError):  # a failed step is tried again next time
                    index.maintain()
            self._last_maintained = time.monotonic()


class OwnedIndex(VectorIndex):
    """The index interface answered by the host's index owner; one connection per thread.

    When the owner stops, this object opens the shard itself (``layout`` applies if it has to create it)
    and repeats the call: every call of the interface is idempotent, so a repeat is harmless.
    """

    def __init__(
        self, index_dir: Path | str, model_version: str, dim: int, *, layout: str = "compact", timeout: float = 300.0
    ) -> None:
        self.model_version = model_version
        self.dim = int(dim)
        self.name = slug(model_version)
        self.index_dir = Path(index_dir)
        self.path = socket_path(index_dir)
        self.layout = layout
        self.timeout = timeout
        self._local = threading.local()
        self._own: EdgeIndex | None = None  # the shard opened here once the owner is gone

    def _connection(self) -> socket.socket:
        sock = getattr(self._local, "sock", None)
        if sock is None:
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            sock.settimeout(self.timeout)
            try:
                sock.connect(str(self.path))
            except OSError as exc:
                sock.close()
                raise StorageError(
                    f"the index owner at {self.path} does not answer ({exc}); start it again "
                    "(camtrace index serve) or stop it for good so that processes open the index themselves"
                ) from exc
            self._local.sock = sock
        return sock

    def _call(self, call: str, *args: object, **kwargs: object):
        if self._own is not None:
            return getattr(self._own, call)(*args, **kwargs)
        try:
            sock = self._connection()
            send(sock, (self.model_version, self.dim, call, args, kwargs))
            status, value = receive(sock)
        except (OSError, ConnectionError, EOFError, StorageError) as exc:
            self._drop()
            if owner_answers(self.index_dir):
                raise StorageError(f"the index owner at {self.path} failed to answer {call} ({exc}); check its log") from exc
            logger.warning("the index owner at %s is gone (%s): opening the index in this process", self.path, exc)
            self._own = EdgeIndex(self.index_dir, self.model_version, self.dim, layout=self.layout)
            return getattr(self._own, call)(*args, **kwargs)
        if status == "error":
            raise value
        return value

    def _drop(self) -> None:
        sock = getattr(self._local, "sock", None)
        self._local.sock = None
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.close()

    # The interface -------------------------------------------------------
    def ensure(self) -> None:
        self._call("ensure")

    def upsert(self, points: Sequence[IndexPoint]) -> None:
        list(self._point_batches(points))  # checked here, where the caller sees which point is wrong
        self._call("upsert", list(points))

    def _grouped(
        self, query: VectorQuery, filter: SearchFilter | None, count: int, score_threshold: float | None
    ) -> list[TrackHit]:
        return self._call("_grouped", query, filter, count, score_threshold)

    def search_points(self, vector: np.ndarray, filter: SearchFilter | None = None, limit: int = 20) -> list[TrackHit]:
        return self._call("search_points", np.asarray(vector, dtype=np.float32), filter, limit)

    def count(self, filter: SearchFilter | None = None) -> int:
        return self._call("count", filter)

    def retrieve(self, ids: Sequence[str]) -> list[IndexPoint]:
        return self._call("retrieve", list(ids))

    def existing_ids(self, ids: Sequence[str]) -> set[str]:
        return self._call("existing_ids", list(ids))

    def point_ids(self) -> set[str]:
        return self._call("point_ids")

    def track_points(self, track_id: str) -> list[IndexPoint]:
        return self._call("track_points", track_id)

    def delete(self, target: SearchFilter | Sequence[str]) -> None:
        self._call("delete", target if isinstance(target, SearchFilter) else list(target))

    def maintain(self):
        return self._call("maintain")

    def facts(self) -> dict:
        facts = self._call("facts")
        return facts if self._own is not None else {**facts, "owner": str(self.path)}

    def close(self) -> None:
        self._drop()
        if self._own is not None:
            self._own.close()
