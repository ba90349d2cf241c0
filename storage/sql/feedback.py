"""Investigators' verdicts on pairs of tracks: the newest verdict on a pair is the one that counts."""

from __future__ import annotations

import time
from collections.abc import Iterable
from typing import Any

from sqlalchemy import delete, or_, select

from camtrace.errors import StorageError
from camtrace.storage.sql.engine import SqlEngine
from camtrace.storage.sql.tables import FEEDBACK_VERDICTS, Feedback


class FeedbackRecords(SqlEngine):
    def add_feedback(
        self, track_id: str, candidate_track_id: str, verdict: str, username: str, *, created_at: float | None = None
    ) -> Feedback:
        """Store a verdict on a pair of tracks, replacing any earlier verdict on the same (unordered) pair."""
        _check_verdict(verdict)
        if track_id == candidate_track_id:
            raise StorageError(f"feedback needs two different tracks, got {track_id!r} twice")
        pair = _pair_clause(track_id, candidate_track_id)
        row = {
            "track_id": track_id,
            "candidate_track_id": candidate_track_id,
            "verdict": verdict,
            "username": username,
            "created_at": time.time() if created_at is None else float(created_at),
        }
        with self.write(f"saving feedback on {track_id!r} and {candidate_track_id!r}") as conn:
            conn.execute(delete(Feedback).where(pair))
            new_id = conn.execute(Feedback.__table__.insert().values(**row)).inserted_primary_key[0]
        return Feedback(id=new_id, **row)

    def feedback_for(self, track_ids: Iterable[str]) -> list[Feedback]:
        """The current verdicts on every pair that involves one of ``track_ids`` (newest per pair)."""
        wanted = list(dict.fromkeys(track_ids))
        rows: dict[int, Feedback] = {}
        with self.guard("reading feedback"), self.sessions() as session:
            for start in range(0, len(wanted), 400):
                chunk = wanted[start : start + 400]
                query = select(Feedback).where(or_(Feedback.track_id.in_(chunk), Feedback.candidate_track_id.in_(chunk)))
                rows.update((row.id, row) for row in session.scalars(query))
        return _latest_per_pair(rows.values())

    def feedback_pairs(self, verdict: str | None = None, since: float | None = None) -> list[Feedback]:
        """Every current verdict (newest per pair), oldest first: what training reads as labelled pairs.

        ``verdict`` keeps only "same" or "different"; ``since`` only verdicts given at or after that epoch time.
        """
        if verdict is not None:
            _check_verdict(verdict)
        with self.guard("reading feedback"), self.sessions() as session:
            rows = _latest_per_pair(session.scalars(select(Feedback)))
        return [row for row in rows if (verdict is None or row.verdict == verdict) and (since is None or row.created_at >= since)]


def _pair_clause(a: str, b: str) -> Any:
    return or_(
        (Feedback.track_id == a) & (Feedback.candidate_track_id == b),
        (Feedback.track_id == b) & (Feedback.candidate_track_id == a),
    )


def _latest_per_pair(rows: Iterable[Feedback]) -> list[Feedback]:
    latest: dict[frozenset[str], Feedback] = {}
    for row in rows:
        key = frozenset((row.track_id, row.candidate_track_id))
        kept = latest.get(key)
        if kept is None or (row.created_at, row.id) > (kept.created_at, kept.id):
            latest[key] = row
    return sorted(latest.values(), key=lambda row: (row.created_at, row.id))


def _check_verdict(verdict: str) -> None:
    if verdict not in FEEDBACK_VERDICTS:
        raise StorageError(f"feedback verdict {verdict!r} is not one of {', '.join(FEEDBACK_VERDICTS)}")
