"""Tracks and their detections (the SQL twins of the index's points), retention and totals."""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping, Sequence
from typing import Any

from sqlalchemy import delete, func, select

from camtrace.storage.sql.engine import SqlEngine
from camtrace.storage.sql.rows import as_dict, columns
from camtrace.storage.sql.tables import Camera, Detection, Segment, SegmentPart, Track, Video


class TrackRecords(SqlEngine):
    def upsert_tracks(self, rows: Iterable[Mapping | Any]) -> int:
        """Save tracks (columns of ``Track``); returns how many rows were given."""
        prepared = [columns(Track, as_dict(r), require=("id",)) for r in rows]
        if prepared:
            with self.write("saving tracks") as conn:
                self.upsert(conn, Track, prepared)
        return len(prepared)

    def upsert_detections(self, rows: Iterable[Mapping | Any]) -> int:
        """Save detections (columns of ``Detection``; a ``bbox`` of 4 numbers may stand for x1..y2).

        Their tracks must be saved first (foreign key).
        """
        prepared = []
        for r in rows:
            row = as_dict(r)
            if "bbox" in row:
                row = {k: v for k, v in row.items() if k != "bbox"} | dict(zip(("x1", "y1", "x2", "y2"), row["bbox"]))
            prepared.append(columns(Detection, row, require=("point_id",)))
        if prepared:
            with self.write("saving detections") as conn:
                self.upsert(conn, Detection, prepared)
        return len(prepared)

    def tracks_by_ids(self, ids: Iterable[str]) -> dict[str, Track]:
        wanted = list(dict.fromkeys(ids))
        found: dict[str, Track] = {}
        with self.guard("reading tracks"), self.sessions() as session:
            for start in range(0, len(wanted), 500):  # stay under SQLite's bound-parameter limit
                chunk = wanted[start : start + 500]
                found.update((t.id, t) for t in session.scalars(select(Track).where(Track.id.in_(chunk))))
        return found

    def detection_pages(self, page_size: int = 1000) -> Iterator[list[Detection]]:
        """Every detection in pages ordered by point id (keyset paging: rows added meanwhile behind
        the cursor are picked up by the next full pass, none is read twice)."""
        after = ""
        while True:
            query = select(Detection).where(Detection.point_id > after).order_by(Detection.point_id).limit(page_size)
            with self.guard("reading detections"), self.sessions() as session:
                page = list(session.scalars(query))
            if not page:
                return
            yield page
            after = page[-1].point_id

    def detections_by_ids(self, point_ids: Sequence[str]) -> list[Detection]:
        found: list[Detection] = []
        with self.guard("reading detections"), self.sessions() as session:
            for start in range(0, len(point_ids), 500):
                chunk = list(point_ids[start : start + 500])
                found.extend(session.scalars(select(Detection).where(Detection.point_id.in_(chunk))))
        return found

    def track_detections(self, track_id: str) -> list[Detection]:
        query = select(Detection).where(Detection.track_id == track_id).order_by(Detection.ts, Detection.frame_index)
        with self.guard(f"reading detections of {track_id!r}"), self.sessions() as session:
            return list(session.scalars(query))

    def get_detection(self, point_id: str) -> Detection | None:
        with self.guard(f"reading detection {point_id!r}"), self.sessions() as session:
            return session.get(Detection, point_id)

    # Retention ---------------------------------------------------------------
    def detections_before(self, cutoff_ts: float, limit: int = 10_000) -> list[Detection]:
        """Up to ``limit`` detections seen before ``cutoff_ts`` (retention works in batches)."""
        query = select(Detection).where(Detection.ts < cutoff_ts).order_by(Detection.ts).limit(limit)
        with self.guard("reading old detections"), self.sessions() as session:
            return list(session.scalars(query))

    def delete_detections(self, point_ids: Sequence[str]) -> None:
        """Delete detections, then the tracks left without any."""
        with self.write("deleting old detections") as conn:
            for start in range(0, len(point_ids), 500):
                conn.execute(delete(Detection).where(Detection.point_id.in_(point_ids[start : start + 500])))
            conn.execute(delete(Track).where(~Track.id.in_(select(Detection.track_id).distinct())))

    def delete_videos_before(self, cutoff_ts: float) -> list[str]:
        """Delete videos that ended before ``cutoff_ts`` and have no detections left; returns their sources."""
        has_detections = select(Detection.video_id).distinct()
        query = select(Video.id, Video.source).where(
            Video.end_ts.is_not(None), Video.end_ts < cutoff_ts, Video.id.not_in(has_detections)
        )
        with self.write("deleting old videos") as conn:
            old = conn.execute(query).all()
            ids = [video_id for video_id, _ in old]
            for start in range(0, len(ids), 500):
                chunk = ids[start : start + 500]
                segments = select(Segment.id).where(Segment.video_id.in_(chunk))
                conn.execute(delete(SegmentPart).where(SegmentPart.segment_id.in_(segments)))
                conn.execute(delete(Segment).where(Segment.video_id.in_(chunk)))
                conn.execute(delete(Video).where(Video.id.in_(chunk)))
        return [source for _, source in old]

    # Totals ----------------------------------------------------------------
    def tracks_since(self, ts: float | None) -> int:
        """Tracks that end after ``ts`` (epoch seconds; None: every track)."""
        query = select(func.count()).select_from(Track)
        if ts is not None:
            query = query.where(Track.ts_end > ts)
        with self.guard("counting tracks"), self.engine.connect() as conn:
            return int(conn.scalar(query) or 0)

    def counts(self) -> dict[str, int]:
        models = {"cameras": Camera, "videos": Video, "tracks": Track, "detections": Detection}
        with self.guard("counting rows"), self.engine.connect() as conn:
            return {name: int(conn.scalar(select(func.count()).select_from(model)) or 0) for name, model in models.items()}
