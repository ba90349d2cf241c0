"""Watchlists: what to look out for, and the check of every newly indexed track against it.

``WatchService`` validates and keeps the entries (a person, from a track and
the tracks confirmed as them; or a description) and handles their alerts
(acknowledge, or dismiss: a dismissal is a "different" verdict on the pair,
which the same-person calibration learns from).

``Watcher`` runs in the embed path. It keeps the active entries' example
vectors in one small matrix (rebuilt only when the watchlist, the model or
the identity evidence changes) and scores each new track against all entries
with one matrix product. A person entry alerts when the calibrated
probability of the same person (appearance under the camera links and transit
times, as re-id computes it) reaches the entry's bar (default
CAMTRACE_TRACE_MIN_SCORE); a description when the text's similarity reaches
the bar calibrated on the site's tracks when the entry was made.
"""

from __future__ import annotations

import logging
import math
import threading
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from camtrace import validation
from camtrace.enums import AlertAction, AlertStatus, Verdict, WatchKind
from camtrace.errors import InputError, NotFoundError
from camtrace.services import EmbeddingModel, Services
from camtrace.storage.access import AccessStore
from camtrace.storage.watchlists import Alert, NewAlert, WatchEntry, WatchStore
from camtrace.types import SearchFilter

log = logging.getLogger(__name__)

NOTE_MAX_LENGTH = 2000
TEXT_MAX_LENGTH = 500
MAX_ENTRY_EXAMPLES = 64  # crop vectors kept per person entry (spread over its tracks)
ALERT_ACTIONS = {AlertAction.ACKNOWLEDGE: AlertStatus.ACKNOWLEDGED, AlertAction.DISMISS: AlertStatus.DISMISSED}
WATCH_AUDIT_USER = None  # alerts are raised by the service itself, not by a user
WATCH_AUDIT_CLIENT = "watchlist"


@dataclass(frozen=True)
class Sighting:
    """A track known to show an entry's person (its seed or a confirmed one)."""

    track_id: str
    camera_id: str
    ts_start: float
    ts_end: float


@dataclass(frozen=True)
class NewTrack:
    """A track just indexed: where and when, its crops' vectors (text-aligned, and the anchor head's re-id vectors
    when the model has one) and its best crop."""

    track_id: str
    camera_id: str
    ts_start: float
    ts_end: float
    vectors: np.ndarray
    crop_key: str | None
    reid_vectors: np.ndarray | None = None

    @property
    def match_vectors(self) -> np.ndarray:
        """What a person is matched on: the vectors re-id and the identity evidence use."""
        return self.vectors if self.reid_vectors is None else self.reid_vectors


def _visible(entry: WatchEntry, allowed_cameras: Sequence[str] | None, track_camera: str | None) -> bool:
    """A camera-limited user sees an entry only when it watches nothing outside their cameras."""
    if allowed_cameras is None:
        return True
    if entry.cameras is None or not set(entry.cameras) <= set(allowed_cameras):
        return False
    return track_camera is None or track_camera in allowed_cameras


class WatchService:
    def __init__(self, services: Services, search=None) -> None:
        from camtrace.search.service import SearchService

        self.services = services
        self.search = search or SearchService(services)
        self.store = WatchStore(services.db)

    # Entries ------------------------------------------------------------------
    def add(
        self,
        *,
        username: str,
        track_id: str | None = None,
        text: str | None = None,
        cameras: Sequence[str] | None = None,
        since: float | None = None,
        until: float | None = None,
        min_probability: float | None = None,
        min_score: float | None = None,
        note: str = "",
        allowed_cameras: Sequence[str] | None = None,
    ) -> WatchEntry:
        """A new entry for the person of ``track_id`` or for a description ``text`` (exactly one of them).

        ``cameras`` (default: every camera the user may see) and the ``since``/``until`` window limit where
        and when it alerts; ``min_probability`` is a person's bar (default CAMTRACE_TRACE_MIN_SCORE),
        ``min_score`` a description's (default: calibrated on the site's indexed tracks)."""
        if (track_id is None) == (text is None):
            raise InputError("a watch entry names either a track (a person) or a text (a description), not both")
        since, until = _window(since, until)
        _check_bars(min_probability, min_score, person=track_id is not None)
        note = note or ""
        if len(note) > NOTE_MAX_LENGTH:
            raise InputError(f"the note is longer than {NOTE_MAX_LENGTH} characters")
        chosen = None
        if cameras:
            chosen = self.search.make_filter(cameras, allowed_cameras=allowed_cameras).camera_ids  # unknown: 404
        elif allowed_cameras is not None:
            chosen = tuple(sorted(set(allowed_cameras)))
        if track_id is not None:
            self.search.visible_track(track_id, allowed_cameras)  # unknown or not visible: 404
            return self.store.add_entry(
                WatchKind.PERSON,
                username=username,
                track_id=track_id,
                cameras=chosen,
                since=since,
                until=until,
                min_probability=min_probability,
                note=note,
            )
        text = _description(text)
        if min_score is None:
            min_score = self.calibrated_text_bar(text, chosen)
        return self.store.add_entry(
            WatchKind.DESCRIPTION,
            username=username,
            text=text,
            cameras=chosen,
            since=since,
            until=until,
            min_score=min_score,
            note=note,
        )

    def calibrated_text_bar(self, text: str, cameras: Sequence[str] | None) -> float:
        """The similarity the best CAMTRACE_WATCH_TEXT_SHARE of the indexed tracks reach for ``text``."""
        total = self.services.db.counts()["tracks"]
        if total == 0:
            raise InputError(
                "no footage is indexed yet to calibrate a description's bar on; give min_score "
                "(a similarity such as 0.2) or add the entry after the first ingest"
            )
        share = float(self.services.settings.watch_text_share)
        wanted = min(max(1, math.ceil(share * total)), 1000)
        model = self.services.model()
        vector = model.encoder.encode_texts([text])[0]
        hits = model.index.search(vector, SearchFilter(camera_ids=tuple(cameras or ())), wanted)
        if not hits:
            raise InputError(
                "no indexed track on the entry's cameras to calibrate a description's bar on; give "
                "min_score (a similarity such as 0.2)"
            )
        return round(float(hits[-1].score), 6)

    def entries(self, allowed_cameras: Sequence[str] | None = None) -> list[WatchEntry]:
        entries = self.store.entries()
        if allowed_cameras is None:
            return entries
        tracks = self.services.db.tracks_by_ids([e.track_id for e in entries if e.track_id])
        return [e for e in entries if _visible(e, allowed_cameras, tracks[e.track_id].camera_id if e.track_id in tracks else None)]

    def entry(self, entry_id: int, allowed_cameras: Sequence[str] | None = None) -> WatchEntry:
        entry = self.store.entry(entry_id)
        track = self.services.db.tracks_by_ids([entry.track_id]).get(entry.track_id) if entry.track_id else None
        if not _visible(entry, allowed_cameras, track.camera_id if track else None):
            raise NotFoundError(f"watch entry {entry_id} does not exist; `camtrace watch list` shows the entries")
        return entry

    def remove(self, entry_id: int, allowed_cameras: Sequence[str] | None = None) -> WatchEntry:
        self.entry(entry_id, allowed_cameras)
        return self.store.remove_entry(entry_id)

    # Alerts -------------------------------------------------------------------
    def alerts(
        self,
        allowed_cameras: Sequence[str] | None = None,
        *,
        status: str | None = None,
        after_id: int = 0,
        limit: int = 100,
        offset: int = 0,
        newest_first: bool = True,
    ) -> list[Alert]:
        if not 1 <= limit <= 1000 or offset < 0:
            raise InputError("limit must lie in 1..1000 and offset must not be negative")
        return self.store.alerts(
            cameras=allowed_cameras, status=status, after_id=after_id, limit=limit, offset=offset, newest_first=newest_first
        )

    def handle(self, alert_id: int, action: str, *, username: str, allowed_cameras: Sequence[str] | None = None) -> Alert:
        """Acknowledge an alert, or dismiss it: for a person, a dismissal is the verdict that the alert's track
        shows someone else (re-id, traces and the calibration learn from it). Join an audited transaction."""
        if action not in ALERT_ACTIONS:
            raise InputError(f"action {action!r} is not one of {', '.join(ALERT_ACTIONS)}")
        alert = self.store.alert(alert_id, allowed_cameras)
        if action == AlertAction.DISMISS:
            entry = next((e for e in self.store.entries() if e.id == alert.entry_id), None)
            if entry is not None and entry.track_id is not None:
                self.services.db.add_feedback(entry.track_id, alert.track_id, Verdict.DIFFERENT, username)
        return self.store.set_status(alert_id, ALERT_ACTIONS[action], username)


@dataclass
class _Examples:
    """Example vectors of some entries in one vector space: rows of ``vectors`` belong to entry ``owner[row]``."""

    vectors: np.ndarray  # (examples, dim), L2-normalised
    owner: np.ndarray  # (examples,) index into entries, ascending: each entry's examples are one run of rows
    starts: np.ndarray  # first row of each run
    present: np.ndarray  # the entry of each run

    @classmethod
    def of(cls, rows: list[np.ndarray], owner: list[int]) -> _Examples:
        dim = rows[0].shape[0] if rows else 0
        matrix = np.stack(rows) if rows else np.zeros((0, dim), np.float32)
        owners = np.asarray(owner, np.int64)
        order = np.argsort(owners, kind="stable")
        matrix, owners = matrix[order], owners[order]
        if len(matrix):
            matrix /= np.maximum(np.linalg.norm(matrix, axis=1, keepdims=True), 1e-12)
        starts = np.flatnonzero(np.r_[True, owners[1:] != owners[:-1]]) if len(owners) else np.zeros(0, np.int64)
        return cls(matrix, owners, starts, owners[starts])


@dataclass
class _Matrix:
    """The active entries' examples: descriptions as text vectors, people as the crops' re-id vectors (the
    text-aligned ones for a model without an anchor head), each matched against the new crops' own kind."""

    key: tuple
    entries: list[WatchEntry]
    texts: _Examples
    people: _Examples
    sightings: dict[int, list[Sighting]]  # person entries: where the person is known to have been
    decided: dict[int, frozenset[str]]  # person entries: tracks never to alert on (theirs, or rejected)


class Watcher:
    """Checks newly indexed tracks against the watchlist and stores the alerts (each with its audit row).

    One per process and model; ``check`` is safe to call from several threads."""

    def __init__(self, services: Services, model: EmbeddingModel | None = None) -> None:
        from camtrace.search.evidence_service import EvidenceService

        self.services = services
        self.model = model or services.model()
        self.store = WatchStore(services.db)
        self.access = AccessStore(services.db)
        self.evidence = EvidenceService(services)
        self._matrix: _Matrix | None = None
        self._lock = threading.Lock()

    def _current(self) -> _Matrix:
        # Rebuilt when an entry comes or goes, the model changes, or a verdict may have confirmed or rejected a track.
        key = (self.store.version(), self.model.index.model_version, self.evidence.repository.newest_feedback_at())
        with self._lock:
            if self._matrix is None or self._matrix.key != key:
                self._matrix = self._build(key)
            return self._matrix

    def _build(self, key: tuple) -> _Matrix:
        from camtrace.search.trace import resolve_identity

        entries = self.store.entries()
        db, index = self.services.db, self.model.match_index  # the anchor head's re-id vectors where there is one
        text_rows: list[np.ndarray] = []
        text_owner: list[int] = []
        rows: list[np.ndarray] = []
        owner: list[int] = []
        sightings: dict[int, list[Sighting]] = {}
        decided: dict[int, frozenset[str]] = {}
        texts = [(i, e.text) for i, e in enumerate(entries) if e.kind == WatchKind.DESCRIPTION and e.text]
        if texts:
            text_vectors = self.model.encoder.encode_texts([t for _, t in texts])
            for (i, _), vector in zip(texts, text_vectors, strict=True):
                text_rows.append(np.asarray(vector, np.float32))
                text_owner.append(i)
        with index.session():
            for i, entry in enumerate(entries):
                if entry.kind != WatchKind.PERSON or not entry.track_id:
                    continue
                identity = resolve_identity(entry.track_id, db.feedback_for)
                known = (entry.track_id, *identity.confirmed)
                decided[entry.id] = frozenset(identity.decided)
                spans = db.tracks_by_ids(known)
                sightings[entry.id] = [Sighting(t.id, t.camera_id, float(t.ts_start), float(t.ts_end)) for t in spans.values()]
                vectors = [point.vector for track in known for point in index.track_points(track)]
                if len(vectors) > MAX_ENTRY_EXAMPLES:
                    keep = np.linspace(0, len(vectors) - 1, MAX_ENTRY_EXAMPLES).round().astype(int)
                    vectors = [vectors[k] for k in keep]
                for vector in vectors:
                    rows.append(np.asarray(vector, np.float32))
                    owner.append(i)
        return _Matrix(key, entries, _Examples.of(text_rows, text_owner), _Examples.of(rows, owner), sightings, decided)

    def matches(self, tracks: Sequence[NewTrack]) -> list[NewAlert]:
        """The alerts the new tracks raise (nothing stored)."""
        tracks = [t for t in tracks if len(t.vectors)]
        current = self._current() if tracks else None
        if current is None or not (len(current.texts.vectors) or len(current.people.vectors)):
            return []
        scores = _best_scores(current, tracks)
        people = any(e.kind == WatchKind.PERSON for e in current.entries)
        evidence = self.evidence.current(self.model) if people else None  # read once per batch
        found: list[NewAlert] = []
        # Person entries: each track's odds of being the person; tracks on one camera in one batch compete, since
        # the person is at most one of them (three strangers who each fit a camera link are not each 60% them).
        odds: dict[tuple[int, str], list[tuple[NewTrack, float, float]]] = {}
        for t, track in enumerate(tracks):
            for i, entry in enumerate(current.entries):
                score = float(scores[t, i])
                if not np.isfinite(score) or not entry.covers(track.camera_id, track.ts_start):
                    continue
                if entry.kind == WatchKind.DESCRIPTION:
                    if entry.min_score is not None and score >= entry.min_score:
                        found.append(
                            NewAlert(
                                entry.id, track.track_id, track.camera_id, track.ts_start, None, round(score, 6), track.crop_key
                            )
                        )
                elif track.track_id not in current.decided.get(entry.id, ()):
                    alone = max(
                        (_probability(evidence, score, seen, track) for seen in current.sightings.get(entry.id, ())), default=0.0
                    )
                    odds.setdefault((i, track.camera_id), []).append((track, score, alone / max(1e-12, 1.0 - alone)))
        default_bar = float(self.services.settings.trace_min_score)
        for (i, _), rivals in odds.items():
            entry = current.entries[i]
            bar = entry.min_probability if entry.min_probability is not None else default_bar
            found += [
                NewAlert(entry.id, track.track_id, track.camera_id, track.ts_start, round(p, 4), round(score, 6), track.crop_key)
                for track, score, p in _shared(rivals)
                if p >= bar
            ]
        return found

    def check(self, tracks: Sequence[NewTrack]) -> list[Alert]:
        """Store an alert, with its audit row and a pending delivery per target, for each match."""
        from camtrace.notify import delivery_targets

        targets = delivery_targets(self.services.settings)
        repeat = float(self.services.settings.alert_repeat_seconds)
        stored = []
        for new in self.matches(tracks):
            if repeat > 0 and self.store.alerted_near(new.entry_id, new.camera_id, new.ts, repeat):
                continue  # the same stay on this camera (a track cut at a segment's end, or split): alerted already
            detail = {"entry_id": new.entry_id, "camera_id": new.camera_id, "probability": new.probability, "score": new.score}
            try:
                with self.access.audited(WATCH_AUDIT_USER, "alert_raised", detail, [new.track_id], WATCH_AUDIT_CLIENT) as entry:
                    alert = self.store.add_alert(new, targets)
                    if alert is None:
                        raise _AlreadyRaised
                    entry.detail["alert_id"] = alert.id
            except _AlreadyRaised:
                continue
            stored.append(alert)
        return stored


def _window(since: float | None, until: float | None) -> tuple[float | None, float | None]:
    since, until = validation.moment(since, "since"), validation.moment(until, "until")
    if since is not None and until is not None and since > until:
        raise InputError("since is after until")
    return since, until


def _check_bars(min_probability: float | None, min_score: float | None, *, person: bool) -> None:
    if min_probability is not None and not (0.0 < min_probability <= 1.0):
        raise InputError(f"min_probability {min_probability} must lie in (0, 1]")
    if min_score is not None and not (-1.0 <= min_score <= 1.0):
        raise InputError(f"min_score {min_score} must lie in [-1, 1] (a cosine similarity)")
    if person and min_score is not None:
        raise InputError("min_score is a description's bar; a person's is min_probability")
    if not person and min_probability is not None:
        raise InputError("min_probability is a person's bar; a description's is min_score")


def _description(text: str | None) -> str:
    text = (text or "").strip()
    if not text:
        raise InputError("the description is empty; describe the person, e.g. 'man, grey hoodie, blue jeans'")
    if len(text) > TEXT_MAX_LENGTH:
        raise InputError(f"the description is longer than {TEXT_MAX_LENGTH} characters")
    return text


def _best_scores(current: _Matrix, tracks: Sequence[NewTrack]) -> np.ndarray:
    """(tracks, entries): each track's best similarity to each entry's examples (-inf: the entry has none), texts
    against the crops' text-aligned vectors and people against their re-id vectors."""
    scores = np.full((len(tracks), len(current.entries)), -np.inf, np.float32)
    for examples, crops_of in ((current.texts, lambda t: t.vectors), (current.people, lambda t: t.match_vectors)):
        if len(examples.vectors):
            scores[:, examples.present] = _best_of_runs(examples, [np.asarray(crops_of(t), np.float32) for t in tracks])
    return scores


def _best_of_runs(examples: _Examples, crops_per_track: list[np.ndarray]) -> np.ndarray:
    """(tracks, runs): one product of every new crop with every example, then the best pair by two reductions."""
    crops = np.concatenate(crops_per_track)
    first_crop = np.cumsum([0] + [len(c) for c in crops_per_track[:-1]])
    per_track = np.maximum.reduceat(crops @ examples.vectors.T, first_crop, axis=0)  # (tracks, examples)
    return np.maximum.reduceat(per_track, examples.starts, axis=1)


def _shared(rivals: list[tuple[NewTrack, float, float]]) -> list[tuple[NewTrack, float, float]]:
    """(track, score, probability) of tracks that compete for one person: each one's odds against the person
    being any of them or none, P = o / (1 + sum of o)."""
    total = sum(o for _, _, o in rivals)
    return [(track, score, o / (1.0 + total)) for track, score, o in rivals]


class _AlreadyRaised(Exception):
    """Rolls back the audit row of an alert that exists already (a segment indexed again)."""


def _probability(evidence, score: float, seen: Sighting, track: NewTrack) -> float:
    if track.ts_start >= seen.ts_end:
        return evidence.probability(score, seen.camera_id, track.camera_id, track.ts_start - seen.ts_end)
    if seen.ts_start >= track.ts_end:
        return evidence.probability(score, track.camera_id, seen.camera_id, seen.ts_start - track.ts_end)
    return evidence.probability(score, seen.camera_id, track.camera_id, -1.0)  # at the same time: not them
