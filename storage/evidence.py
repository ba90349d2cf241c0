"""SQL storage of the identity evidence (camtrace.search.evidence): one document per model version.

The document is what the last learning run fitted (score histograms, camera-link
sums) and says when the newest verdict it already counted was given
(``feedback_at``), so a reader adds the verdicts given since then on top: a
verdict teaches every process at once, without any read-modify-write of the
document (two processes adding verdicts at once cannot lose one).

``EvidenceRepository`` also reads what learning needs from SQL: the most recent
tracks and their indexed crops' point ids.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import JSON, Float, String, func, select
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Mapped, mapped_column

from camtrace.errors import StorageError
from camtrace.storage.sql import Base, Database, Detection, Feedback, Track


class IdentityEvidenceRow(Base):
    """The fitted identity evidence of one model version's vectors on this site."""

    __tablename__ = "identity_evidence"

    model_version: Mapped[str] = mapped_column(String, primary_key=True)
    document: Mapped[Any] = mapped_column(JSON)
    feedback_at: Mapped[float] = mapped_column(Float, default=0.0)  # when the newest verdict it counts was given
    learned_at: Mapped[float] = mapped_column(Float, default=time.time)


@dataclass(frozen=True)
class StoredEvidence:
    model_version: str
    document: dict
    feedback_at: float
    learned_at: float


@dataclass(frozen=True)
class TrackSpanRow:
    track_id: str
    camera_id: str
    ts_start: float
    ts_end: float
    point_ids: tuple[str, ...]


class EvidenceRepository:
    def __init__(self, db: Database) -> None:
        self.db = db

    @contextlib.contextmanager
    def _connect(self, action: str) -> Iterator[Any]:
        try:
            with self.db.engine.connect() as conn:
                yield conn
        except SQLAlchemyError as exc:
            raise StorageError(
                f"database: {action} failed ({type(exc).__name__}: {exc}); check CAMTRACE_DATABASE_URL "
                "and that the database is reachable",
                public=f"the database failed while {action}; the server log has the details",
            ) from exc

    def load(self, model_version: str) -> StoredEvidence | None:
        with self._connect("reading the identity evidence") as conn:
            row = conn.execute(
                select(IdentityEvidenceRow.document, IdentityEvidenceRow.feedback_at, IdentityEvidenceRow.learned_at).where(
                    IdentityEvidenceRow.model_version == model_version
                )
            ).first()
        if row is None:
            return None
        return StoredEvidence(model_version, dict(row.document), float(row.feedback_at), float(row.learned_at))

    def learned_at(self, model_version: str) -> float | None:
        """When the stored document was learned (a cheap check whether a cached copy is stale)."""
        with self._connect("reading the identity evidence") as conn:
            return conn.scalar(select(IdentityEvidenceRow.learned_at).where(IdentityEvidenceRow.model_version == model_version))

    def save(self, model_version: str, document: dict, feedback_at: float) -> StoredEvidence:
        row = {"model_version": model_version, "document": document, "feedback_at": float(feedback_at), "learned_at": time.time()}
        table = IdentityEvidenceRow.__table__
        # One transaction (joining the caller's, such as an audited change): the old document is replaced.
        with self.db.transaction("saving the identity evidence") as conn:
            conn.execute(table.delete().where(table.c.model_version == model_version))
            conn.execute(table.insert().values(**row))
        return StoredEvidence(model_version, document, float(feedback_at), row["learned_at"])

    def tracks_fingerprint(self) -> list[float]:
        """(number of tracks, latest track end): changes whenever footage is added or removed."""
        with self._connect("reading tracks") as conn:
            count, latest = conn.execute(select(func.count(Track.id), func.max(Track.ts_end))).one()
        return [float(count or 0), float(latest or 0.0)]

    def newest_feedback_at(self) -> float:
        with self._connect("reading feedback") as conn:
            return float(conn.scalar(select(func.max(Feedback.created_at))) or 0.0)

    def feedback_after(self, moment: float) -> list[Feedback]:
        """Verdicts given after ``moment`` (epoch seconds), oldest first. By time, not id: SQLite may give a
        replaced verdict's id to the next one."""
        with self._connect("reading feedback") as conn:
            rows = conn.execute(
                select(Feedback).where(Feedback.created_at > moment).order_by(Feedback.created_at, Feedback.id)
            ).all()
        return [Feedback(**row._mapping) for row in rows]

    def recent_tracks(self, limit: int, model_version: str) -> list[TrackSpanRow]:
        """The ``limit`` most recent tracks with crops of ``model_version``, oldest first, with their point ids."""
        with self._connect("reading tracks") as conn:
            tracks = conn.execute(
                select(Track.id, Track.camera_id, Track.ts_start, Track.ts_end)
                .order_by(Track.ts_start.desc(), Track.id)
                .limit(limit)
            ).all()
            points: dict[str, list[str]] = {}
            ids = [t.id for t in tracks]
            for start in range(0, len(ids), 500):
                query = select(Detection.track_id, Detection.point_id).where(
                    Detection.track_id.in_(ids[start : start + 500]), Detection.model_version == model_version
                )
                for track_id, point_id in conn.execute(query):
                    points.setdefault(track_id, []).append(point_id)
        return [
            TrackSpanRow(t.id, t.camera_id, float(t.ts_start), float(t.ts_end), tuple(sorted(points[t.id])))
            for t in reversed(tracks)
            if t.id in points
        ]

    def track_spans(self, track_ids: Sequence[str]) -> dict[str, TrackSpanRow]:
        """Where and when the named tracks were seen (no point ids)."""
        out: dict[str, TrackSpanRow] = {}
        with self._connect("reading tracks") as conn:
            for start in range(0, len(track_ids), 500):
                query = select(Track.id, Track.camera_id, Track.ts_start, Track.ts_end).where(
                    Track.id.in_(list(track_ids[start : start + 500]))
                )
                for row in conn.execute(query):
                    out[row.id] = TrackSpanRow(row.id, row.camera_id, float(row.ts_start), float(row.ts_end), ())
        return out
