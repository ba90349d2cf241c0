"""Where a model with an anchor re-id head keeps its re-id vectors: a second index keyed by the same point ids.

Each kept crop of such a model has two vectors: the text-aligned one (text search) in the model's own index, and
the anchor head's (re-id from a track, photo search) here, under the same point id with the same payload, so both
answer the same filters. Qdrant's named vectors would hold both in one point; this index stays beside the model's
own instead, so a model without a head and the shards already written are untouched. It is named after the model
version with ``+reid`` appended (Qdrant Edge: its own shard folder; a server: its own collection under the
``<CAMTRACE_COLLECTION>-reid`` alias family, so the main alias is never moved).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from camtrace.settings import Settings
    from camtrace.storage.index import VectorIndex

REID_SUFFIX = "+reid"


def reid_version(model_version: str) -> str:
    """The name the re-id index of ``model_version`` is opened under."""
    return f"{model_version}{REID_SUFFIX}"


def open_reid_index(settings: Settings, model_version: str, dim: int, *, ensure: bool = True) -> VectorIndex:
    """The re-id vectors of ``model_version`` (``dim``: the head's width), opened as ``open_index`` opens the
    model's own index."""
    from camtrace.storage.index import open_index

    reid_settings = settings.model_copy(update={"collection": f"{settings.collection}-reid"})
    return open_index(reid_settings, reid_version(model_version), dim, ensure=ensure)
