"""A Qdrant Edge shard's layout, fixed when the shard is created (camtrace.storage.edge explains the two)."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import qdrant_edge as qe

from camtrace.errors import StorageError
from camtrace.storage.index import (
    FLOAT_FIELDS,
    FULL_SCAN_KB,
    HNSW_EF,
    HNSW_EF_CONSTRUCT,
    HNSW_M,
    KEYWORD_FIELDS,
    OVERSAMPLING,
    vector_kb,
)

LAYOUTS = ("compact", "exact")
DEFAULT_LAYOUT = "compact"


def has_field(field: str) -> qe.Filter:
    """Points that carry ``field`` in their payload."""
    return qe.Filter(must_not=[qe.IsEmptyCondition(field)])


def vector_of(record: qe.Record) -> list[float]:
    """A record's vector (named vectors: ours is the default, "")."""
    vector = record.vector
    if isinstance(vector, dict):
        vector = vector.get("")
    return list(vector)


class ShardLayout:
    """The layout side of ``EdgeIndex``: the engine's config for a layout, the config a shard was created with,
    the search parameters that go with it, and creating a shard with its payload indexes."""

    def _config(self, layout: str, *, creating: bool = True) -> qe.EdgeConfig:
        """The shard configuration of a layout. Loading passes the same one, so it never changes a shard,
        less the segment thresholds: a shard keeps those it was created with."""
        if layout == "exact":
            return qe.EdgeConfig(vectors=qe.EdgeVectorParams(size=self.dim, distance=qe.Distance.Cosine))
        return qe.EdgeConfig(
            vectors=qe.EdgeVectorParams(size=self.dim, distance=qe.Distance.Cosine, memory=qe.Memory.Cold),
            quantization_config=qe.ScalarQuantizationConfig(type=qe.ScalarType.Int8, quantile=0.99, memory=qe.Memory.Pinned),
            hnsw_config=qe.HnswIndexConfig(
                m=HNSW_M, ef_construct=HNSW_EF_CONSTRUCT, full_scan_threshold=FULL_SCAN_KB, payload_m=HNSW_M
            ),
            optimizers=qe.EdgeOptimizersConfig(
                indexing_threshold=vector_kb(self.index_after_points, self.dim),
                max_segment_size=vector_kb(self.segment_points, self.dim),
            )
            if creating
            else None,
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
        return qe.SearchParams(hnsw_ef=HNSW_EF, quantization=qe.QuantizationSearchParams(rescore=True, oversampling=OVERSAMPLING))

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
