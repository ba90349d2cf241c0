"""camtrace.storage: vector index (Qdrant Edge or a Qdrant server), SQL metadata, crop store.

Names are imported on first use, so ``import camtrace.storage`` stays cheap
and a process that only needs SQL never loads the Qdrant clients.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

_EXPORTS = {
    "VectorIndex": "camtrace.storage.index",
    "open_index": "camtrace.storage.index",
    "slug": "camtrace.storage.index",
    "EdgeIndex": "camtrace.storage.edge",
    "ServerIndex": "camtrace.storage.server",
    "Database": "camtrace.storage.sql",
    "Camera": "camtrace.storage.sql",
    "Video": "camtrace.storage.sql",
    "Segment": "camtrace.storage.sql",
    "Track": "camtrace.storage.sql",
    "Detection": "camtrace.storage.sql",
    "Job": "camtrace.storage.sql",
    "Feedback": "camtrace.storage.sql",
    "segment_id": "camtrace.storage.sql",
    "CropStore": "camtrace.storage.crops",
}

__all__ = sorted(_EXPORTS)

if TYPE_CHECKING:
    from camtrace.storage.crops import CropStore
    from camtrace.storage.edge import EdgeIndex
    from camtrace.storage.index import VectorIndex, open_index, slug
    from camtrace.storage.server import ServerIndex
    from camtrace.storage.sql import Camera, Database, Detection, Feedback, Job, Segment, Track, Video, segment_id


def __getattr__(name: str):
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'camtrace.storage' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_EXPORTS))
