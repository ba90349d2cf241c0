"""Vector index on a Qdrant server through ``qdrant-client`` (used when CAMTRACE_QDRANT_URL is set).

Each model version gets its own collection ``<alias>__<slug(model_version)>``;
the alias (``settings.collection``) names the active one, so rolling out a new
model is: new collection, backfill, ``activate()`` (one atomic alias switch).
An index object reads and writes its own model's collection: its vectors only
make sense there, whichever collection the alias points at.

The client is passed in, so tests run this very class against
``QdrantClient(location=":memory:")``.
"""

from __future__ import annotations

import contextlib
import warnings
from collections.abc import Iterator, Sequence

import numpy as np
from qdrant_client import QdrantClient
from qdrant_client import models as qm
from qdrant_client.http.exceptions import ApiException, UnexpectedResponse

from camtrace.errors import InputError, StorageError
from camtrace.storage.index import (
    FLOAT_FIELDS,
    FULL_SCAN_KB,
    HNSW_EF,
    HNSW_EF_CONSTRUCT,
    HNSW_M,
    KEYWORD_FIELDS,
    OVERSAMPLING,
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

SCROLL_PAGE = 1000

# Searches run on the int8 copy in RAM and rescore an oversampled candidate list with the originals on disk.
SEARCH_PARAMS = qm.SearchParams(hnsw_ef=HNSW_EF, quantization=qm.QuantizationSearchParams(rescore=True, oversampling=OVERSAMPLING))


def compact_collection(dim: int) -> dict:
    """``create_collection`` arguments of the compact layout, as the embedded index's compact shards:
    originals on disk, an int8 scalar-quantized copy kept in RAM, payload on disk (its indexes in RAM),
    the same HNSW parameters. The server's own optimizers seal and index segments in the background."""
    return {
        "vectors_config": qm.VectorParams(size=dim, distance=qm.Distance.COSINE, on_disk=True),
        "quantization_config": qm.ScalarQuantization(
            scalar=qm.ScalarQuantizationConfig(type=qm.ScalarType.INT8, quantile=0.99, always_ram=True)
        ),
        "hnsw_config": qm.HnswConfigDiff(
            m=HNSW_M, ef_construct=HNSW_EF_CONSTRUCT, full_scan_threshold=FULL_SCAN_KB, payload_m=HNSW_M
        ),
        "on_disk_payload": True,
    }


def server_condition(condition: Condition) -> qm.FieldCondition:
    if condition.any_of is not None:
        return qm.FieldCondition(key=condition.key, match=qm.MatchAny(any=list(condition.any_of)))
    return qm.FieldCondition(key=condition.key, range=qm.Range(gte=condition.gte, lte=condition.lte))


def server_vector_query(query: VectorQuery) -> list[float] | qm.RecommendQuery:
    if isinstance(query, RecommendQuery):
        return qm.RecommendQuery(
            recommend=qm.RecommendInput(
                positive=query.positives, negative=query.negatives, strategy=qm.RecommendStrategy.BEST_SCORE
            )
        )
    return query.vector


def server_filter(filter: SearchFilter | None) -> qm.Filter | None:
    """The SearchFilter as a Qdrant filter (applied inside the query)."""
    must, must_not = filter_conditions(filter)
    if not must and not must_not:
        return None
    return qm.Filter(must=[server_condition(c) for c in must] or None, must_not=[server_condition(c) for c in must_not] or None)


class ServerIndex(VectorIndex):
    """One model version's collection on a Qdrant server (or the client's local mode)."""

    def __init__(
        self,
        client: QdrantClient,
        model_version: str,
        dim: int,
        *,
        alias: str = "camtrace",
        location: str | None = None,
    ) -> None:
        self.client = client
        self.model_version = model_version
        self.dim = int(dim)
        self.alias = alias
        self.collection_name = f"{alias}__{slug(model_version)}"
        self.name = self.collection_name
        self.location = location or "the local Qdrant client"

    @contextlib.contextmanager
    def _call(self, action: str) -> Iterator[None]:
        """Turn client failures into StorageErrors that say where and what to check."""
        try:
            with warnings.catch_warnings():
                # The client's local mode scans exactly and says so whenever search parameters are passed.
                warnings.filterwarnings("ignore", message="Local mode performs exact")
                yield
        except UnexpectedResponse as exc:
            if exc.status_code == 404:
                raise StorageError(
                    f"Qdrant at {self.location}: collection {self.collection_name!r} not found during {action}; "
                    "run ensure() (open_index does) before using the index"
                ) from exc
            raise StorageError(f"Qdrant at {self.location}: {action} failed: {exc}") from exc
        except ApiException as exc:
            raise StorageError(
                f"Qdrant server at {self.location} does not answer ({action}: {exc}); check that it is running "
                "and that CAMTRACE_QDRANT_URL (and CAMTRACE_QDRANT_API_KEY) are right, or unset "
                "CAMTRACE_QDRANT_URL to use the embedded index"
            ) from exc
        except OSError as exc:
            raise StorageError(
                f"Qdrant server at {self.location} cannot be reached ({action}: {exc}); check CAMTRACE_QDRANT_URL"
            ) from exc
        except ValueError as exc:
            # The client's local mode reports a missing collection as ValueError.
            if "not found" in str(exc):
                raise StorageError(
                    f"{self.location}: collection {self.collection_name!r} not found during {action}; run ensure()"
                ) from exc
            raise

    # Collection, indexes, alias ------------------------------------------
    def ensure(self) -> None:
        with self._call("creating the collection"):
            if not self.client.collection_exists(self.collection_name):
                self.client.create_collection(self.collection_name, **compact_collection(self.dim))
            info = self.client.get_collection(self.collection_name)
            params = info.config.params.vectors
            if isinstance(params, qm.VectorParams) and (params.size != self.dim or params.distance != qm.Distance.COSINE):
                raise StorageError(
                    f"Qdrant collection {self.collection_name!r} at {self.location} holds {params.size}-d "
                    f"{params.distance.value} vectors, not {self.dim}-d cosine; each model version needs its own "
                    "collection: check the model_version"
                )
            present = set(info.payload_schema or {})
            wanted = [(name, qm.PayloadSchemaType.KEYWORD) for name in KEYWORD_FIELDS]
            wanted += [(name, qm.PayloadSchemaType.FLOAT) for name in FLOAT_FIELDS]
            with warnings.catch_warnings():
                # The client's local mode has no payload indexes and says so on every call.
                warnings.filterwarnings("ignore", message="Payload indexes have no effect")
                for name, schema in wanted:
                    if name not in present:
                        self.client.create_payload_index(self.collection_name, name, schema, wait=True)
            if self.alias_target() is None:
                if self.client.collection_exists(self.alias) and self.alias not in self._aliases():
                    raise StorageError(
                        f"Qdrant at {self.location} has a collection named {self.alias!r}, which is the alias "
                        "name camtrace queries through; rename that collection or set CAMTRACE_COLLECTION"
                    )
                self.activate()

    def _aliases(self) -> dict[str, str]:
        return {a.alias_name: a.collection_name for a in self.client.get_aliases().aliases}

    def alias_target(self) -> str | None:
        """The collection the alias points at now (None when the alias does not exist)."""
        with self._call("reading aliases"):
            return self._aliases().get(self.alias)

    def activate(self) -> None:
        """Point the alias at this model's collection in one atomic step (blue/green switch)."""
        operations: list = []
        with self._call("switching the alias"):
            if self.alias in self._aliases():
                operations.append(qm.DeleteAliasOperation(delete_alias=qm.DeleteAlias(alias_name=self.alias)))
            operations.append(
                qm.CreateAliasOperation(create_alias=qm.CreateAlias(collection_name=self.collection_name, alias_name=self.alias))
            )
            self.client.update_collection_aliases(change_aliases_operations=operations)

    # Writes ----------------------------------------------------------------
    def upsert(self, points: Sequence[IndexPoint]) -> None:
        batches = list(self._point_batches(points))  # validate everything before writing anything
        with self._call("upsert"):
            for ids, vectors, payloads in batches:
                self.client.upsert(
                    self.collection_name,
                    points=[qm.PointStruct(id=i, vector=v, payload=p) for i, v, p in zip(ids, vectors, payloads)],
                    wait=True,
                )

    def delete(self, target: SearchFilter | Sequence[str]) -> None:
        if isinstance(target, SearchFilter):
            if is_empty_filter(target):
                raise InputError("refusing to delete with an empty filter: it would delete every point of the index")
            selector: qm.PointsSelector = qm.FilterSelector(filter=server_filter(target))
        else:
            ids = [str(i) for i in target]
            if not ids:
                return
            selector = qm.PointIdsList(points=ids)
        with self._call("delete"):
            self.client.delete(self.collection_name, points_selector=selector, wait=True)

    # Reads -----------------------------------------------------------------
    def _grouped(
        self, query: VectorQuery, filter: SearchFilter | None, count: int, score_threshold: float | None
    ) -> list[TrackHit]:
        # query_points_groups has no offset: a page is the first offset + limit groups, sliced by the caller.
        with self._call("grouped search"):
            result = self.client.query_points_groups(
                self.collection_name,
                query=server_vector_query(query),
                group_by="track_id",
                group_size=1,
                limit=count,
                query_filter=server_filter(filter),
                score_threshold=score_threshold,
                with_payload=True,
                search_params=SEARCH_PARAMS,
            )
        hits = [hit_from(g.hits[0].id, g.hits[0].score, g.hits[0].payload) for g in result.groups if g.hits]
        return sorted(hits, key=lambda h: -h.score)

    def search_points(self, vector: np.ndarray, filter: SearchFilter | None = None, limit: int = 20) -> list[TrackHit]:
        if limit <= 0:
            return []
        query = self._query_vector(vector)
        with self._call("search"):
            result = self.client.query_points(
                self.collection_name,
                query=query,
                query_filter=server_filter(filter),
                limit=limit,
                with_payload=True,
                search_params=SEARCH_PARAMS,
            )
        return [hit_from(p.id, p.score, p.payload) for p in result.points]

    def count(self, filter: SearchFilter | None = None) -> int:
        with self._call("count"):
            return int(self.client.count(self.collection_name, count_filter=server_filter(filter), exact=True).count)

    def retrieve(self, ids: Sequence[str]) -> list[IndexPoint]:
        if not ids:
            return []
        with self._call("retrieve"):
            records = self.client.retrieve(self.collection_name, ids=[str(i) for i in ids], with_payload=True, with_vectors=True)
        by_id = {str(r.id): r for r in records}
        return [self._point(by_id[str(i)]) for i in ids if str(i) in by_id]

    def existing_ids(self, ids: Sequence[str]) -> set[str]:
        if not ids:
            return set()
        with self._call("retrieve"):
            records = self.client.retrieve(self.collection_name, ids=[str(i) for i in ids], with_payload=False, with_vectors=False)
        return {str(r.id) for r in records}

    def point_ids(self) -> set[str]:
        ids: set[str] = set()
        offset = None
        with self._call("listing point ids"):
            while True:
                page, offset = self.client.scroll(
                    self.collection_name, limit=SCROLL_PAGE, offset=offset, with_payload=False, with_vectors=False
                )
                ids.update(str(record.id) for record in page)
                if offset is None:
                    return ids

    def track_points(self, track_id: str) -> list[IndexPoint]:
        flt = qm.Filter(must=[qm.FieldCondition(key="track_id", match=qm.MatchValue(value=str(track_id)))])
        records: list = []
        offset = None
        with self._call("reading a track"):
            while True:
                page, offset = self.client.scroll(
                    self.collection_name,
                    scroll_filter=flt,
                    limit=SCROLL_PAGE,
                    offset=offset,
                    with_payload=True,
                    with_vectors=True,
                )
                records.extend(page)
                if offset is None:
                    break
        points = [self._point(r) for r in records]
        return sorted(points, key=lambda p: (p.payload.get("ts", 0.0), p.payload.get("frame_index", 0), p.id))

    def facts(self) -> dict:
        with self._call("reading collection facts"):
            info = self.client.get_collection(self.collection_name)
        points = int(info.points_count or 0)
        indexed = int(info.indexed_vectors_count or 0)
        return {
            "index_layout": "compact" if info.config.quantization_config else "exact",
            "indexed_points": indexed,
            "unindexed_points": max(0, points - indexed),
            "segments": int(info.segments_count or 0),
        }

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self.client.close()

    @staticmethod
    def _point(record: qm.Record) -> IndexPoint:
        vector = record.vector
        if isinstance(vector, dict):
            vector = vector.get("")
        return IndexPoint(id=str(record.id), vector=np.asarray(vector, dtype=np.float32), payload=dict(record.payload or {}))
