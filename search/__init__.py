"""camtrace.search: the query stage.

Text and photo search, re-identification from a track, traces across cameras,
investigators' feedback and trace export. Plain classes and functions: the
CLI and the HTTP service are thin shells around ``SearchService``.
"""

from camtrace.search.service import (
    SearchResult,
    SearchService,
    decode_photo,
    largest_person,
    parse_time,
    read_photo,
)

__all__ = [
    "SearchResult",
    "SearchService",
    "decode_photo",
    "largest_person",
    "parse_time",
    "read_photo",
]
