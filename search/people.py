"""Finding one person again: re-identification from a track, traces across cameras, investigators' verdicts.

The seed's crops (and those of the tracks confirmed as the same person) are the positive examples, rejected
tracks' crops the negative ones; each candidate carries its probability of being the person from the identity
evidence (appearance calibrated on this site, the cameras' links and the time between sightings).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from camtrace.enums import TraceStatus, Verdict
from camtrace.errors import InputError
from camtrace.search.query import MAX_OFFSET, NO_CAMERA, QueryBase
from camtrace.search.records import FeedbackRecord, SearchResult, Trace
from camtrace.search.trace import (
    Identity,
    TraceEntry,
    TraceMethod,
    anchored_probabilities,
    build_trace,
    resolve_identity,
)
from camtrace.types import SearchFilter

VERDICTS = tuple(Verdict)
# Example vectors per side of a re-id query: a track keeps a few crops, so this bounds only
# identities with many confirmed tracks (evenly sampled then).
MAX_EXAMPLES = 64
# Candidates a trace considers when the caller names no limit (its path and alternatives come from these).
TRACE_CANDIDATES = 40
# Re-id ranks by probability: this many tracks by score (at least) are weighed before a page is cut.
REID_POOL = 100


class PeopleSearch(QueryBase):
    # Re-identification -------------------------------------------------------
    def identity(self, track_id: str) -> Identity:
        """The tracks confirmed as the same person as ``track_id`` and those rejected, from feedback."""
        return resolve_identity(track_id, self.services.db.feedback_for)

    def reid(
        self,
        track_id: str,
        *,
        limit: int = 20,
        offset: int = 0,
        same_camera: bool = False,
        min_probability: float | None = None,
        allowed_cameras: Sequence[str] | None = None,
    ) -> list[SearchResult]:
        """Find the person of a track elsewhere: all the track's crops (and those of the tracks
        confirmed as them) are the positive examples, crops of rejected tracks the negative ones.
        Never the track itself nor a track already decided; other cameras unless ``same_camera``.

        Ranked by the evidence that it is the same person (appearance, cameras and the time from the track or a
        confirmed sighting under the learned camera links), each with its probability of being them (which also
        counts the candidates competing with it); ``min_probability`` leaves out the less likely.
        """
        self.check_page(limit, offset)
        _check_probability(min_probability)
        seed = self.visible_track(track_id, allowed_cameras)
        identity = self.identity(track_id)
        model = self.services.model()
        pool = max(REID_POOL, 2 * (offset + limit))
        results = self._reid(model, seed, identity, min(pool, MAX_OFFSET), same_camera, allowed_cameras)
        if not results:
            return []
        certain = self._certain_entries(seed, identity, allowed_cameras)
        entries = [_entry(result, TraceStatus.CANDIDATE) for result in results]
        probability = self._pair_probability(model, TraceMethod.LINKS)
        # Ranked by each candidate's own evidence; the probability shown also counts its rivals (one person is at
        # most one of the tracks a camera shows in a stretch of time), which would bury a person seen on a busy
        # camera under a stranger alone on a quiet one.
        evidence = anchored_probabilities(certain, entries, probability, rounds=1, share=False)
        likely = anchored_probabilities(certain, entries, probability, rounds=1)
        for result in results:
            result.probability = round(likely[result.track_id], 4)
        results.sort(key=lambda r: (-evidence[r.track_id], -r.score, r.track_id))
        if min_probability is not None:
            results = [r for r in results if (r.probability or 0.0) >= min_probability]
        return results[offset : offset + limit]

    def _reid(
        self, model, seed, identity: Identity, limit: int, same_camera: bool, allowed_cameras: Sequence[str] | None
    ) -> list[SearchResult]:
        index = model.match_index  # the anchor head's re-id vectors where the model has one
        cameras: tuple[str, ...] = ()
        if allowed_cameras is not None:
            cameras = tuple(sorted(set(allowed_cameras))) or (NO_CAMERA,)
        search_filter = SearchFilter(
            camera_ids=cameras,
            exclude_camera_ids=() if same_camera else (seed.camera_id,),
            exclude_track_ids=identity.decided,
        )
        with index.session():
            positives = self._examples(index, (seed.id, *identity.confirmed))
            if not positives:
                return []  # the track's vectors are gone (retention): nothing to compare with
            negatives = self._examples(index, identity.rejected)
            hits = index.recommend(positives, negatives, search_filter, limit)
        return self.results(hits)

    def _certain_entries(self, seed, identity: Identity, allowed_cameras: Sequence[str] | None) -> list[TraceEntry]:
        confirmed = self.services.db.tracks_by_ids(identity.confirmed)
        return [
            TraceEntry(
                t.id,
                t.camera_id,
                t.ts_start,
                t.ts_end,
                1.0,
                TraceStatus.SEED if t.id == seed.id else TraceStatus.CONFIRMED,
                t.best_crop_key,
            )
            for t in (seed, *(confirmed[i] for i in identity.confirmed if i in confirmed))
            if allowed_cameras is None or t.camera_id in allowed_cameras
        ]

    def _pair_probability(self, model, method: TraceMethod):
        """P(same person) of a candidate given a neighbouring track: ``(earlier, later, score) -> p``."""
        if method == TraceMethod.SCORE:
            return lambda earlier, later, score: score
        evidence = self.evidence.current(model)
        if method == TraceMethod.APPEARANCE:
            return lambda earlier, later, score: evidence.appearance_probability(score, earlier.camera_id == later.camera_id)
        return lambda earlier, later, score: evidence.probability(
            score, earlier.camera_id, later.camera_id, later.ts_start - earlier.ts_end
        )

    @staticmethod
    def _examples(index, track_ids: Sequence[str]) -> list[np.ndarray]:
        vectors = [point.vector for track in track_ids for point in index.track_points(track)]
        if len(vectors) > MAX_EXAMPLES:
            keep = np.linspace(0, len(vectors) - 1, MAX_EXAMPLES).round().astype(int)
            vectors = [vectors[i] for i in keep]
        return vectors

    # Traces and feedback -----------------------------------------------------
    def trace(
        self,
        track_id: str,
        *,
        allowed_cameras: Sequence[str] | None = None,
        min_probability: float | None = None,
        limit: int | None = None,
        method: TraceMethod = TraceMethod.PATH,
    ) -> Trace:
        """The seed's person's path: through the seed and the tracks confirmed as them, the most probable
        time-consistent chain of the best ``limit`` undecided candidates (each step at ``min_probability``,
        CAMTRACE_TRACE_MIN_SCORE, or more), the other candidates as alternatives. ``method`` exists to
        measure what each part of the evidence adds (camtrace.search.trace)."""
        limit = TRACE_CANDIDATES if limit is None else limit
        self.check_page(limit)
        _check_probability(min_probability)
        threshold = float(self.services.settings.trace_min_score if min_probability is None else min_probability)
        seed = self.visible_track(track_id, allowed_cameras)
        identity = self.identity(track_id)
        model = self.services.model()
        certain = self._certain_entries(seed, identity, allowed_cameras)
        found = self._reid(model, seed, identity, limit, True, allowed_cameras)
        candidates = [_entry(r, TraceStatus.CANDIDATE) for r in found]
        evidence = self.evidence.current(model) if method != TraceMethod.SCORE else None

        def expected(camera_from: str, camera_to: str):
            link = evidence.link(camera_from, camera_to) if evidence is not None else None
            return None if link is None else (link.transit_seconds, link.spread_seconds)

        def transit(earlier: TraceEntry, later: TraceEntry) -> float:
            return evidence.transit_ratio(earlier.camera_id, later.camera_id, later.ts_start - earlier.ts_end)

        return build_trace(
            seed.id,
            certain,
            candidates,
            self._pair_probability(model, method),
            threshold,
            method,
            expected,
            transit if evidence is not None else None,
        )

    def feedback(
        self,
        track_id: str,
        candidate_track_id: str,
        verdict: str,
        *,
        user: str,
        allowed_cameras: Sequence[str] | None = None,
    ) -> FeedbackRecord:
        """Record that two tracks show the same person, or different people; the newest verdict
        on a pair replaces the older. Re-id and traces use it at once; training reads it later."""
        if verdict not in VERDICTS:
            raise InputError(f"verdict {verdict!r} is not one of: same, different")
        if track_id == candidate_track_id:
            raise InputError(f"feedback needs two different tracks; {track_id!r} was given as both")
        if not user or not str(user).strip():
            raise InputError("feedback needs the name of the user who gives it")
        self.visible_track(track_id, allowed_cameras)
        self.visible_track(candidate_track_id, allowed_cameras)
        row = self.services.db.add_feedback(track_id, candidate_track_id, verdict, str(user))
        return FeedbackRecord(
            id=int(row.id),
            track_id=row.track_id,
            candidate_track_id=row.candidate_track_id,
            verdict=row.verdict,
            username=row.username,
            created_at=row.created_at,
        )


def _entry(result: SearchResult, status: str) -> TraceEntry:
    return TraceEntry(result.track_id, result.camera_id, result.ts_start, result.ts_end, result.score, status, result.crop_key)


def _check_probability(value: float | None) -> None:
    if value is not None and not 0.0 <= value <= 1.0:
        raise InputError(f"min_probability {value} is not a probability between 0 and 1")
