"""What promotion needs from both index backends: names, which ids exist, every id, alias switch."""

from __future__ import annotations

import uuid
from pathlib import Path

import numpy as np
import pytest
from qdrant_client import QdrantClient

from camtrace.storage import EdgeIndex, ServerIndex, VectorIndex, slug
from camtrace.types import IndexPoint

DIM = 8


def points(count: int, seed: int) -> list[IndexPoint]:
    rng = np.random.default_rng(seed)
    return [
        IndexPoint(
            id=str(uuid.UUID(int=seed * 1000 + number)),
            vector=rng.normal(size=DIM).astype(np.float32),
            payload={"camera_id": "gate", "video_id": "v1", "track_id": f"t{number}", "ts": float(number)},
        )
        for number in range(count)
    ]


def make_index(kind: str, tmp_path: Path, model_version: str, client: QdrantClient | None = None) -> VectorIndex:
    if kind == "edge":
        index: VectorIndex = EdgeIndex(tmp_path / "index", model_version, DIM)
    else:
        index = ServerIndex(client, model_version, DIM, alias="camtrace")
    index.ensure()
    return index


@pytest.mark.parametrize("kind", ["edge", "server"])
def test_ids_and_names_for_reindex(kind: str, tmp_path: Path) -> None:
    client = QdrantClient(location=":memory:") if kind == "server" else None
    old = make_index(kind, tmp_path, "model-a@1", client)
    new = make_index(kind, tmp_path, "model-b@2", client)
    written = points(1100, seed=1)  # more than one scroll page
    old.upsert(written)
    expected_name = slug("model-b@2") if kind == "edge" else f"camtrace__{slug('model-b@2')}"
    assert new.name == expected_name != old.name
    assert old.point_ids() == {p.id for p in written} and new.point_ids() == set()
    unknown = str(uuid.UUID(int=999_999))
    assert old.existing_ids([written[0].id, unknown, written[-1].id]) == {written[0].id, written[-1].id}
    assert new.existing_ids([written[0].id]) == set() and old.existing_ids([]) == set()
    if kind == "server":
        # The first collection took the alias; a promotion moves it in one step.
        assert old.alias_target() == old.name
        new.activate()
        assert old.alias_target() == new.name
