"""The identity evidence of the model in service: learned from the index and SQL, cached, taught by verdicts.

``EvidenceService.current(model)`` answers with the evidence of that model's
vectors on this site: the stored document of the last learning run plus every
verdict given since (counted at once, in every process; see
camtrace.storage.evidence). A process keeps it in memory and re-reads it only
when a newer learning run or a newer verdict exists (two cheap queries).
Evidence is kept per model version (that of the model's index: the vectors it
describes). ``learn(model)`` refits it from the most recent ``CAMTRACE_EVIDENCE_TRACKS``
tracks; local ingest runs it after new footage, beat on a schedule, and
``camtrace links learn`` on demand.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from camtrace import enums
from camtrace.search.evidence import IdentityEvidence, TrackSample, Verdict, learn_evidence, order_pair, track_score
from camtrace.services import EmbeddingModel, Services
from camtrace.storage.evidence import EvidenceRepository, StoredEvidence

log = logging.getLogger(__name__)
RETRIEVE_BATCH = 1000


@dataclass
class _Cached:
    evidence: IdentityEvidence
    learned_at: float
    feedback_at: float  # verdicts given after this were not learned from
    counted: set = field(default_factory=set)  # verdicts added since (id, pair, verdict, time), each once


@dataclass(frozen=True)
class LearnReport:
    tracks: int
    verdicts: int
    links: int
    seconds: float


class EvidenceService:
    def __init__(self, services: Services) -> None:
        self.services = services
        self.repository = EvidenceRepository(services.db)
        self._cache: dict[str, _Cached] = {}
        # (model version, track, track) -> the pair's (score, earlier camera, later camera, gap)
        self._pair_cache: dict[tuple[str, str, str], tuple[float, str, str, float] | None] = {}
        self._lock = threading.Lock()

    @property
    def window(self) -> float:
        return float(self.services.settings.link_window_seconds)

    # Reading ----------------------------------------------------------------------------------------------
    def current(self, model: EmbeddingModel | None = None) -> IdentityEvidence:
        """The evidence for ``model``'s vectors (default: the model in service), learning it first if none is
        stored yet."""
        model = model or self.services.model()
        version = model.index.model_version
        with self._lock:
            learned_at = self.repository.learned_at(version)
            if learned_at is None:
                self._learn_locked(model)
                learned_at = self.repository.learned_at(version)
            cached = self._cache.get(version)
            if cached is None or cached.learned_at != learned_at:
                stored = self.repository.load(version)
                assert stored is not None
                cached = self._cache[version] = _Cached(
                    IdentityEvidence.from_dict(stored.document), stored.learned_at, stored.feedback_at
                )
            self._count_verdicts(cached, self.repository.feedback_after(cached.feedback_at), model)
            return cached.evidence

    def _count_verdicts(self, cached: _Cached, rows, model: EmbeddingModel) -> None:
        version = model.index.model_version
        for row in rows:
            seen = (int(row.id), row.track_id, row.candidate_track_id, row.verdict, float(row.created_at))
            if seen in cached.counted:
                continue
            cached.counted.add(seen)
            key = (version, *sorted((row.track_id, row.candidate_track_id)))
            if key not in self._pair_cache:
                self._pair_cache[key] = self._pair_facts(row.track_id, row.candidate_track_id, model)
            facts = self._pair_cache[key]
            if facts is not None:
                cached.evidence.add_verdict(*facts, same=row.verdict == enums.Verdict.SAME)

    def _pair_facts(self, track_a: str, track_b: str, model: EmbeddingModel) -> tuple[float, str, str, float] | None:
        """(score, earlier camera, later camera, gap) of two tracks, or None when one of them is gone."""
        spans = self.repository.track_spans([track_a, track_b])
        if len(spans) < 2:
            return None
        samples = []
        for track_id in (track_a, track_b):
            vectors = [p.vector for p in model.match_index.track_points(track_id)]
            if not vectors:
                return None
            span = spans[track_id]
            samples.append(TrackSample(track_id, span.camera_id, span.ts_start, span.ts_end, np.stack(vectors)))
        earlier, later = order_pair(*samples)
        return track_score(earlier.vectors, later.vectors), earlier.camera_id, later.camera_id, later.ts_start - earlier.ts_end

    # Learning ---------------------------------------------------------------------------------------------
    def learn(self, model: EmbeddingModel | None = None, progress: Callable[[str], None] | None = None) -> LearnReport:
        """Refit the evidence from the most recent tracks and every verdict on them, and store it."""
        model = model or self.services.model()
        with self._lock:
            return self._learn_locked(model, progress)

    def learn_if_stale(self, model: EmbeddingModel | None = None) -> LearnReport | None:
        """``learn`` when tracks were added or removed since the stored evidence was learned (else None)."""
        model = model or self.services.model()
        stored = self.repository.load(model.index.model_version)
        if stored is not None and stored.document.get("tracks_fingerprint") == self.repository.tracks_fingerprint():
            return None
        return self.learn(model)

    def _learn_locked(self, model: EmbeddingModel, progress: Callable[[str], None] | None = None) -> LearnReport:
        started = time.perf_counter()
        version = model.index.model_version
        fingerprint = self.repository.tracks_fingerprint()
        feedback_at = self.repository.newest_feedback_at()  # read first: a verdict given meanwhile counts later
        if progress:
            progress("reading the newest tracks and their vectors")
        samples = self.recent_tracks(model)
        known = {s.track_id for s in samples}
        verdicts = (
            [
                Verdict(f.track_id, f.candidate_track_id, f.verdict == enums.Verdict.SAME)
                for f in self.services.db.feedback_for(known)
                if f.track_id in known and f.candidate_track_id in known
            ]
            if known
            else []
        )
        if progress:
            progress(f"learning from {len(samples)} tracks and {len(verdicts)} verdicts")
        evidence = learn_evidence(samples, verdicts, window=self.window)
        stored = self.repository.save(version, evidence.to_dict() | {"tracks_fingerprint": fingerprint}, feedback_at)
        self._cache[version] = _Cached(evidence, stored.learned_at, feedback_at)
        report = LearnReport(len(samples), len(verdicts), len(evidence.links()), time.perf_counter() - started)
        log.info(
            "identity evidence of %s learned from %d tracks and %d verdicts: %d camera links (%.1f s)",
            version,
            report.tracks,
            report.verdicts,
            report.links,
            report.seconds,
        )
        return report

    def recent_tracks(self, model: EmbeddingModel | None = None) -> list[TrackSample]:
        """The most recent CAMTRACE_EVIDENCE_TRACKS tracks with the vectors of their crops (oldest first)."""
        model = model or self.services.model()
        rows = self.repository.recent_tracks(int(self.services.settings.evidence_tracks), model.index.model_version)
        return self._samples(rows, model) if rows else []

    def _samples(self, rows, model: EmbeddingModel) -> list[TrackSample]:
        wanted = [pid for row in rows for pid in row.point_ids]
        vectors: dict[str, np.ndarray] = {}
        index = model.match_index  # the vectors re-id scores compare
        with index.session():
            for start in range(0, len(wanted), RETRIEVE_BATCH):
                for point in index.retrieve(wanted[start : start + RETRIEVE_BATCH]):
                    vectors[point.id] = np.asarray(point.vector, np.float32)
        samples = []
        for row in rows:
            found = [vectors[pid] for pid in row.point_ids if pid in vectors]
            if found:
                samples.append(TrackSample(row.track_id, row.camera_id, row.ts_start, row.ts_end, np.stack(found)))
        return samples

    def stored(self, model: EmbeddingModel | None = None) -> StoredEvidence | None:
        model = model or self.services.model()
        return self.repository.load(model.index.model_version)
