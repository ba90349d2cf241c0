"""camtrace.search: the query stage.

Text and photo search, re-identification from a track, traces across cameras,
investigators' feedback and trace export. Plain classes and functions: the
CLI and the HTTP service are thin shells around ``SearchService``.
"""

from camtrace.search.query import parse_time
from camtrace.search.records import (
    DetectedPerson,
    FeedbackRecord,
    SearchResult,
    Trace,
    TraceStep,
    TrackCrop,
    TrackView,
)
from camtrace.search.service import (
    PhotoSearch,
    SearchService,
    decode_photo,
    largest_person,
    read_photo,
)

__all__ = [
    "DetectedPerson",
    "FeedbackRecord",
    "PhotoSearch",
    "SearchResult",
    "SearchService",
    "Trace",
    "TraceStep",
    "TrackCrop",
    "TrackView",
    "decode_photo",
    "largest_person",
    "parse_time",
    "read_photo",
]
