"""One owner per host: a real owner process keeps the shard open, other processes' calls go to it over its
socket, it maintains the shard when idle, and once it stops, processes open the shard themselves again."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time

import numpy as np
import pytest

from camtrace.errors import InputError, StorageError
from camtrace.settings import Settings
from camtrace.storage.edge import EdgeIndex
from camtrace.storage.index import open_index
from camtrace.storage.owner import OwnedIndex, owner_answers, socket_path
from camtrace.types import IndexPoint, SearchFilter, point_id

DIM = 32


def points(n: int, seed: int = 0) -> list[IndexPoint]:
    rng = np.random.default_rng(seed)
    vectors = rng.standard_normal((n, DIM)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    return [
        IndexPoint(
            id=point_id(f"cam{i % 3}-v", i, f"cam{i % 3}-v:{i // 4}:1"),
            vector=vectors[i],
            payload={
                "camera_id": f"cam{i % 3}",
                "video_id": f"cam{i % 3}-v",
                "track_id": f"cam{i % 3}-v:{i // 4}:1",
                "ts": float(i),
                "frame_index": i,
                "model_version": "m",
            },
        )
        for i in range(n)
    ]


@pytest.fixture
def owner(tmp_path):
    settings = Settings(data_dir=tmp_path, qdrant_url=None)
    env = {**os.environ, "CAMTRACE_DATA_DIR": str(tmp_path), "CAMTRACE_INDEX_MAINTAIN_SECONDS": "0.5"}
    env.pop("CAMTRACE_QDRANT_URL", None)
    command = [sys.executable, "-c", "from camtrace.cli import cli; cli()", "index", "serve"]
    process = subprocess.Popen(command, env=env, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 60
    while not owner_answers(settings.index_dir):
        assert process.poll() is None, process.stderr.read()
        assert time.monotonic() < deadline, "the owner did not start"
        time.sleep(0.1)
    yield settings, process
    if process.poll() is None:
        process.kill()
        process.wait(timeout=30)


def test_calls_go_to_the_owner_and_answer_as_the_shard_does(owner):
    settings, _ = owner
    data = points(400)
    index = open_index(settings, "m", DIM)
    assert isinstance(index, OwnedIndex)
    index.upsert(data)
    assert index.count() == 400 and index.count(SearchFilter(camera_ids=("cam0",))) == 134
    query = data[7].vector
    hits = index.search(query, SearchFilter(camera_ids=("cam1",)), limit=5)
    vectors = np.stack([p.vector for p in data])
    best = [data[i] for i in np.argsort(-(vectors @ query)) if data[i].payload["camera_id"] == "cam1"]
    assert hits[0].point_id == best[0].id and all(h.payload["camera_id"] == "cam1" for h in hits)
    assert len({h.track_id for h in hits}) == 5  # one per track
    track = data[0].payload["track_id"]
    assert [p.id for p in index.track_points(track)] == [p.id for p in data if p.payload["track_id"] == track]
    assert index.existing_ids([data[0].id, point_id("elsewhere", 0, "t")]) == {data[0].id}
    assert index.facts()["index_layout"] == "compact" and index.facts()["owner"] == str(socket_path(settings.index_dir))
    with pytest.raises(InputError, match="empty filter"):  # the owner's own errors reach the caller as they are
        index.delete(SearchFilter())
    with pytest.raises(StorageError, match="64 dimensions"):
        index.search(np.ones(64, dtype=np.float32))
    index.delete(SearchFilter(camera_ids=("cam2",)))
    assert index.count() == 400 - 133

    errors: list[BaseException] = []

    def search_often() -> None:
        try:
            for _ in range(20):
                assert index.search(query, limit=3)[0].point_id == data[7].id
        except BaseException as exc:  # surfaced below
            errors.append(exc)

    threads = [threading.Thread(target=search_often) for _ in range(4)]  # a connection per thread
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []


def test_the_owner_maintains_when_idle_and_others_open_the_shard_once_it_stops(owner):
    settings, process = owner
    index = open_index(settings, "m", DIM)
    data = points(20_000, seed=1)
    for start in range(0, len(data), 5000):
        index.upsert(data[start : start + 5000])
    deadline = time.monotonic() + 60
    while index.facts()["unindexed_points"] > 0:  # the owner seals the full segment once calls stop
        assert time.monotonic() < deadline, index.facts()
        time.sleep(0.5)
    assert index.facts()["indexed_points"] == 20_000
    process.send_signal(signal.SIGTERM)
    process.wait(timeout=30)
    assert process.returncode == 0 and not socket_path(settings.index_dir).exists()
    assert index.count() == 20_000  # the owner is gone: this process opens the shard itself
    assert "owner" not in index.facts()
    index.close()
    direct = open_index(settings, "m", DIM)
    assert isinstance(direct, EdgeIndex)
    assert direct.count() == 20_000 and direct.facts()["indexed_points"] == 20_000
