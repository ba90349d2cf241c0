"""Ingest bookkeeping: videos, their segments and the embed parts written, and jobs with their counters.

What a job's state becomes as its segments finish is decided in camtrace.workers.jobs; here its rows are read
and written.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import delete, func, select, update
from sqlalchemy.orm import Session

from camtrace.enums import TERMINAL_JOB_STATUSES, JobStatus, SegmentStatus
from camtrace.errors import NotFoundError, StorageError
from camtrace.storage.sql.engine import SqlEngine
from camtrace.storage.sql.rows import check_status, columns, plain_row
from camtrace.storage.sql.tables import (
    JOB_COUNTERS,
    JOB_STATUSES,
    SEGMENT_STATUSES,
    Camera,
    Job,
    Segment,
    SegmentPart,
    Video,
    segment_id,
)


@dataclass(frozen=True)
class SegmentTally:
    """A job's segments by status: (count, crops, frames) each; the first failed segments' errors."""

    by_status: dict[SegmentStatus, tuple[int, int, int]]
    errors: list[str]

    def of(self, status: SegmentStatus) -> tuple[int, int, int]:
        return self.by_status.get(status, (0, 0, 0))

    @property
    def owned(self) -> int:
        """Segments that still belong to the job."""
        return sum(count for count, _, _ in self.by_status.values())


class IngestRecords(SqlEngine):
    def upsert_video(
        self,
        video_id: str,
        camera_id: str,
        source: str,
        fps: float,
        width: int,
        height: int,
        start_ts: float,
        end_ts: float | None = None,
        frame_count: int | None = None,
    ) -> None:
        """Save a video (a file or a stream's recording); creates its camera row if missing."""
        row = plain_row(
            {
                "id": video_id,
                "camera_id": camera_id,
                "source": str(source),
                "fps": fps,
                "width": width,
                "height": height,
                "start_ts": start_ts,
                "end_ts": end_ts,
                "frame_count": frame_count,
            }
        )
        with self.write(f"saving video {video_id!r}") as conn:
            self.upsert(conn, Camera, [{"id": camera_id}])
            self.upsert(conn, Video, [row])

    def get_video(self, video_id: str) -> Video:
        with self.guard(f"reading video {video_id!r}"), self.sessions() as session:
            video = session.get(Video, video_id)
        if video is None:
            raise NotFoundError(f"video {video_id!r} does not exist")
        return video

    def upsert_segment(
        self,
        video_id: str,
        index: int,
        start_frame: int,
        end_frame: int,
        *,
        status: str | None = None,
        job_id: str | None = None,
    ) -> str:
        """Save a segment and return its id ``"<video_id>:<index>"``.

        ``status`` and ``job_id`` left as None keep their stored values, so a
        repeated ingest does not reset a segment that is already done.
        """
        row: dict[str, Any] = {
            "id": segment_id(video_id, index),
            "video_id": video_id,
            "index": int(index),
            "start_frame": int(start_frame),
            "end_frame": int(end_frame),
        }
        if status is not None:
            row["status"] = check_status("segment", status, SEGMENT_STATUSES)
        if job_id is not None:
            row["job_id"] = job_id
        with self.write(f"saving segment {row['id']!r}") as conn:
            self.upsert(conn, Segment, [row])
        return row["id"]

    def mark_segment(
        self,
        segment_id: str,
        status: str,
        error: str | None = None,
        *,
        frames: int | None = None,
        crops: int | None = None,
    ) -> None:
        """Record a segment's outcome (and its frame and crop counts when given)."""
        check_status("segment", status, SEGMENT_STATUSES)
        values: dict[str, Any] = {"status": status, "error": error}
        if frames is not None:
            values["frames"] = int(frames)
        if crops is not None:
            values["crops"] = int(crops)
        with self.write(f"marking segment {segment_id!r}") as conn:
            if conn.execute(update(Segment).where(Segment.id == segment_id).values(**values)).rowcount == 0:
                raise NotFoundError(f"segment {segment_id!r} does not exist; save it with upsert_segment first")

    def start_segment(self, segment_id: str, job_id: str | None) -> Segment | None:
        """Count one delivery of a segment's work; None when there is nothing to do.

        Nothing to do: the segment is finished, or a newer job owns it (the
        message is a stale redelivery). The count is what the poison-message
        limit reads: deliveries that never finished (a worker killed) add up.
        """
        query = update(Segment).where(Segment.id == segment_id, Segment.status == SegmentStatus.PENDING)
        if job_id is not None:
            query = query.where(Segment.job_id == job_id)
        with self.write(f"starting segment {segment_id!r}") as conn:
            if conn.execute(query.values(attempts=Segment.attempts + 1)).rowcount == 0:
                return None
        with self.guard(f"reading segment {segment_id!r}"), self.sessions() as session:
            return session.get(Segment, segment_id)

    def fail_segment(self, segment_id: str, error: str) -> None:
        """Mark a segment failed with its error (a missing segment is ignored: nothing to mark)."""
        with self.write(f"failing segment {segment_id!r}") as conn:
            conn.execute(update(Segment).where(Segment.id == segment_id).values(status=SegmentStatus.FAILED, error=error))

    def set_segment_parts(self, segment_id: str, parts_total: int, *, frames: int = 0) -> None:
        """Record how many embed parts a detect task sent; a segment without crops is done at once."""
        values: dict[str, Any] = {"parts_total": int(parts_total), "frames": int(frames)}
        if parts_total == 0:
            values.update(status=SegmentStatus.DONE, crops=0, error=None)
        with self.write(f"saving parts of segment {segment_id!r}") as conn:
            conn.execute(delete(SegmentPart).where(SegmentPart.segment_id == segment_id))
            conn.execute(update(Segment).where(Segment.id == segment_id).values(**values))

    def part_done(self, segment_id: str, part: int, crops: int) -> bool:
        """Record a written embed part; marks the segment done when all its parts are in. Idempotent."""
        with self.write(f"saving part {part} of segment {segment_id!r}") as conn:
            self.upsert(conn, SegmentPart, [{"segment_id": segment_id, "part": int(part), "crops": int(crops)}])
            done_parts, done_crops = conn.execute(
                select(func.count(), func.coalesce(func.sum(SegmentPart.crops), 0)).where(SegmentPart.segment_id == segment_id)
            ).one()
            total = conn.scalar(select(Segment.parts_total).where(Segment.id == segment_id))
            if total is None or done_parts < total:
                return False
            conn.execute(
                update(Segment)
                .where(Segment.id == segment_id, Segment.status == SegmentStatus.PENDING)
                .values(status=SegmentStatus.DONE, crops=int(done_crops), error=None)
            )
            return True

    def segment_tally(self, job_id: str) -> SegmentTally:
        """How a job's segments stand: count, crops and frames per status, and the first failures' errors."""
        with self.guard(f"reading segments of job {job_id!r}"), self.engine.connect() as conn:
            rows = conn.execute(
                select(
                    Segment.status,
                    func.count(),
                    func.coalesce(func.sum(Segment.crops), 0),
                    func.coalesce(func.sum(Segment.frames), 0),
                )
                .where(Segment.job_id == job_id)
                .group_by(Segment.status)
            ).all()
            errors = list(
                conn.scalars(
                    select(Segment.id + ": " + Segment.error)
                    .where(Segment.job_id == job_id, Segment.status == SegmentStatus.FAILED)
                    .order_by(Segment.id)
                    .limit(20)
                )
            )
        by_status = {SegmentStatus(status): (int(count), int(crops), int(frames)) for status, count, crops, frames in rows}
        return SegmentTally(by_status, errors)

    def list_segments(self, video_id: str, status: str | None = None) -> list[Segment]:
        query = select(Segment).where(Segment.video_id == video_id).order_by(Segment.index)
        if status is not None:
            query = query.where(Segment.status == check_status("segment", status, SEGMENT_STATUSES))
        with self.guard(f"listing segments of {video_id!r}"), self.sessions() as session:
            return list(session.scalars(query))

    # Jobs ------------------------------------------------------------------
    def create_job(
        self,
        kind: str,
        source: str,
        camera_id: str | None = None,
        *,
        job_id: str | None = None,
        segments_total: int = 0,
    ) -> Job:
        """Create a queued job (a random id unless one is given; an existing id is left as is)."""
        import uuid

        row = {
            "id": job_id or uuid.uuid4().hex,
            "kind": kind,
            "source": str(source),
            "camera_id": camera_id,
            "segments_total": int(segments_total),
        }
        with self.write("creating a job") as conn:
            conn.execute(self.insert(Job.__table__).on_conflict_do_nothing(index_elements=["id"]), [row])
            # Read back on the same connection: inside transaction() the row is not committed yet.
            with Session(bind=conn) as session:
                return session.get(Job, row["id"])

    def jobs_for_sources(self, sources: Sequence[str]) -> list[Job]:
        """Every job that ingests one of ``sources``."""
        jobs: list[Job] = []
        with self.guard("reading jobs by source"), self.sessions() as session:
            for start in range(0, len(sources), 500):
                chunk = [str(source) for source in sources[start : start + 500]]
                jobs.extend(session.scalars(select(Job).where(Job.source.in_(chunk))))
        return jobs

    def update_job(self, job_id: str, **fields: Any) -> Job:
        """Set job columns (status, counters, error, started_at, finished_at ...) and return the job.

        A move to ``running`` stamps ``started_at`` and a move to ``done``, ``superseded`` or
        ``failed`` stamps ``finished_at``, unless given.
        """
        fields = columns(Job, fields, exclude=("id", "created_at"))
        if "status" in fields:
            check_status("job", fields["status"], JOB_STATUSES)
            now = time.time()
            if fields["status"] == JobStatus.RUNNING:
                fields.setdefault("started_at", now)
            elif fields["status"] in TERMINAL_JOB_STATUSES:
                fields.setdefault("finished_at", now)
        if fields:
            with self.write(f"updating job {job_id!r}") as conn:
                if conn.execute(update(Job).where(Job.id == job_id).values(**fields)).rowcount == 0:
                    raise NotFoundError(f"job {job_id!r} does not exist")
        return self.get_job(job_id)

    def increment_job(self, job_id: str, **deltas: int) -> Job:
        """Add to job counters in one statement, so workers finishing at once lose no count."""
        unknown = set(deltas) - set(JOB_COUNTERS)
        if unknown:
            raise StorageError(f"cannot increment {sorted(unknown)}: job counters are {', '.join(JOB_COUNTERS)}")
        values = {name: getattr(Job, name) + int(delta) for name, delta in deltas.items()}
        if values:
            with self.write(f"updating job {job_id!r}") as conn:
                if conn.execute(update(Job).where(Job.id == job_id).values(**values)).rowcount == 0:
                    raise NotFoundError(f"job {job_id!r} does not exist")
        return self.get_job(job_id)

    def get_job(self, job_id: str) -> Job:
        with self.guard(f"reading job {job_id!r}"), self.sessions() as session:
            job = session.get(Job, job_id)
        if job is None:
            raise NotFoundError(f"job {job_id!r} does not exist; `camtrace jobs` lists the known ones")
        return job

    def list_jobs(self, limit: int = 50, status: str | None = None) -> list[Job]:
        """Newest first."""
        query = select(Job).order_by(Job.created_at.desc(), Job.id).limit(limit)
        if status is not None:
            query = query.where(Job.status == check_status("job", status, JOB_STATUSES))
        with self.guard("listing jobs"), self.sessions() as session:
            return list(session.scalars(query))
