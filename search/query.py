"""What every query of the search stage shares: the services, the identity evidence, filters and paging, a
track as the caller may see it, and results built from the index's hits.

A track outside the caller's camera limit (``allowed_cameras``: None means every camera) behaves exactly like a
track that does not exist.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

from camtrace import validation
from camtrace.errors import InputError, NotFoundError
from camtrace.search.records import SearchResult
from camtrace.services import Services
from camtrace.storage.sql import Track
from camtrace.types import PointPayload, SearchFilter, TrackHit

# Deepest result a caller may page to: a page is served by fetching offset + limit tracks.
MAX_OFFSET = 10_000
# A camera id no point carries: the filter of a user allowed no camera at all matches nothing.
NO_CAMERA = ""


def parse_time(value: str | None, name: str) -> float | None:
    """ISO-8601 to epoch seconds; a time without a zone is the machine's local time."""
    if value is None:
        return None
    try:
        moment = datetime.fromisoformat(value)
    except ValueError:
        raise InputError(f"{name}: '{value}' is not an ISO time such as 2026-01-31T14:05:00") from None
    return moment.timestamp()


class QueryBase:
    def __init__(self, services: Services) -> None:
        self.services = services
        self._evidence = None

    @property
    def evidence(self):
        """The identity evidence (same-person calibration and camera links) of the model in service."""
        if self._evidence is None:
            from camtrace.search.evidence_service import EvidenceService

            self._evidence = EvidenceService(self.services)
        return self._evidence

    @property
    def max_results(self) -> int:
        return int(self.services.settings.search_max_results)

    # Filters and paging ------------------------------------------------------
    def make_filter(
        self,
        cameras: Sequence[str] = (),
        since: str | float | None = None,
        until: str | float | None = None,
        *,
        allowed_cameras: Sequence[str] | None = None,
    ) -> SearchFilter:
        """Validate filters against what is indexed, so a typo is an error and not an empty answer.

        The user's camera limit becomes part of the filter: with no camera named, the search covers
        the allowed ones; a named camera outside the limit is reported like an unknown one.
        """
        cameras = tuple(dict.fromkeys(cameras))
        if cameras:
            known = set(self.services.db.camera_ids())
            if allowed_cameras is not None:
                known &= set(allowed_cameras)
            unknown = [camera for camera in cameras if camera not in known]
            if unknown:
                listed = ", ".join(sorted(known)) or "none yet"
                raise NotFoundError(f"unknown camera(s) {', '.join(unknown)}; known cameras: {listed}")
        elif allowed_cameras is not None:
            cameras = tuple(sorted(set(allowed_cameras))) or (NO_CAMERA,)
        since_ts = parse_time(since, "since") if isinstance(since, str) else validation.moment(since, "since")
        until_ts = parse_time(until, "until") if isinstance(until, str) else validation.moment(until, "until")
        if since_ts is not None and until_ts is not None and since_ts > until_ts:
            raise InputError("since is after until")
        return SearchFilter(camera_ids=cameras, since=since_ts, until=until_ts)

    def check_page(self, limit: int, offset: int = 0) -> None:
        if limit < 1:
            raise InputError("limit must be at least 1")
        if limit > self.max_results:
            raise InputError(
                f"limit {limit} is more than the maximum of {self.max_results} results per page "
                "(CAMTRACE_SEARCH_MAX_RESULTS); ask for further pages with offset"
            )
        if offset < 0 or offset > MAX_OFFSET:
            raise InputError(f"offset {offset} is outside 0..{MAX_OFFSET}; narrow the search with filters instead")

    def visible_track(self, track_id: str, allowed_cameras: Sequence[str] | None) -> Track:
        """The track, or NotFoundError when it does not exist or lies outside ``allowed_cameras`` (alike)."""
        track = self.services.db.tracks_by_ids([track_id]).get(track_id)
        if track is None or (allowed_cameras is not None and track.camera_id not in allowed_cameras):
            raise NotFoundError(f"track {track_id!r} does not exist; search results and traces name the track ids")
        return track

    # Results -----------------------------------------------------------------
    def results(self, hits: list[TrackHit]) -> list[SearchResult]:
        """One result per hit, with its track's span from SQL (the point's time where the track is gone)."""
        tracks = self.services.db.tracks_by_ids([hit.track_id for hit in hits])
        results = []
        for hit in hits:
            payload = PointPayload.from_dict(hit.payload)
            track = tracks.get(hit.track_id)
            results.append(
                SearchResult(
                    track_id=hit.track_id,
                    camera_id=payload.camera_id,
                    video_id=payload.video_id,
                    score=round(float(hit.score), 6),
                    ts_start=track.ts_start if track else payload.ts,
                    ts_end=track.ts_end if track else payload.ts,
                    crop=str(self.services.crops.path(payload.crop_key)),
                    crop_key=payload.crop_key,
                    point_id=hit.point_id,
                    frame_index=payload.frame_index,
                    ts=payload.ts,
                    bbox=list(payload.bbox),
                )
            )
        return results
