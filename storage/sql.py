"""SQL metadata: cameras, videos, segments, tracks, detections, jobs and re-id feedback.

SQLAlchemy 2 ORM models plus a ``Database`` with the few calls the pipeline
makes. The schema is created and upgraded by Alembic (``Database.migrate()``),
never by ``create_all``, so SQLite and PostgreSQL always hold the same schema.

Every write is an idempotent upsert by primary key (``INSERT ... ON CONFLICT
DO UPDATE``), so a redelivered task rewrites its rows instead of failing or
duplicating. Rows are plain dicts or dataclass instances whose field names
are column names; on conflict only the columns a row names are updated, the
others keep their stored values (``created_at`` is never rewritten).

All times are epoch seconds (float), like ``ts`` in the vector payload, so
both databases store them alike and nothing depends on time zones.
"""

from __future__ import annotations

import contextlib
import contextvars
import dataclasses
import time
from collections.abc import Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from sqlalchemy import (
    JSON,
    Float,
    ForeignKey,
    Integer,
    String,
    Text,
    create_engine,
    delete,
    event,
    func,
    or_,
    select,
    text,
    update,
)
from sqlalchemy.engine import Connection, Engine, make_url
from sqlalchemy.exc import OperationalError, SQLAlchemyError
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column, sessionmaker
from sqlalchemy.pool import StaticPool

from camtrace.enums import TERMINAL_JOB_STATUSES, JobStatus, ModelStatus, SegmentStatus, Verdict
from camtrace.errors import NotFoundError, StorageError

SEGMENT_STATUSES = tuple(SegmentStatus)
JOB_STATUSES = tuple(JobStatus)
MIGRATIONS_DIR = Path(__file__).resolve().parent / "migrations"
# Constant key for PostgreSQL's advisory lock around migrations ("camt").
_MIGRATION_LOCK_KEY = 0x63616D74
# The open transaction of ``Database.transaction()`` in this thread or task, which ``_write`` joins.
_TRANSACTION: contextvars.ContextVar[tuple[Database, Connection] | None] = contextvars.ContextVar(
    "camtrace_transaction", default=None
)


class Base(DeclarativeBase):
    pass


class Camera(Base):
    __tablename__ = "cameras"

    id: Mapped[str] = mapped_column(String, primary_key=True)  # the camera's name
    url: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[float] = mapped_column(Float, default=time.time)
    status: Mapped[str] = mapped_column(String, default="offline", server_default="offline")
    last_frame_at: Mapped[float | None] = mapped_column(Float)
    reconnects: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    last_error: Mapped[str | None] = mapped_column(Text)


class Video(Base):
    __tablename__ = "videos"

    id: Mapped[str] = mapped_column(String, primary_key=True)
    camera_id: Mapped[str] = mapped_column(ForeignKey("cameras.id"))
    source: Mapped[str] = mapped_column(Text)
    fps: Mapped[float] = mapped_column(Float)
    frame_count: Mapped[int | None] = mapped_column(Integer)
    width: Mapped[int] = mapped_column(Integer)
    height: Mapped[int] = mapped_column(Integer)
    start_ts: Mapped[float] = mapped_column(Float)
    end_ts: Mapped[float | None] = mapped_column(Float)  # unknown while a live stream runs
    created_at: Mapped[float] = mapped_column(Float, default=time.time)


class Segment(Base):
    __tablename__ = "segments"

    id: Mapped[str] = mapped_column(String, primary_key=True)  # "<video_id>:<index>"
    video_id: Mapped[str] = mapped_column(ForeignKey("videos.id"))
    index: Mapped[int] = mapped_column(Integer)
    start_frame: Mapped[int] = mapped_column(Integer)
    end_frame: Mapped[int] = mapped_column(Integer)
    status: Mapped[str] = mapped_column(String, default=SegmentStatus.PENDING, server_default=SegmentStatus.PENDING.value)
    error: Mapped[str | None] = mapped_column(Text)
    attempts: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    job_id: Mapped[str | None] = mapped_column(String, index=True)
    # Distributed mode: how many embed parts the detect task sent (None: not detected yet).
    parts_total: Mapped[int | None] = mapped_column(Integer)
    frames: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    crops: Mapped[int] = mapped_column(Integer, default=0, server_default="0")


class SegmentPart(Base):
    """One embed message of a segment, written: a redelivered part rewrites its row."""

    __tablename__ = "segment_parts"

    segment_id: Mapped[str] = mapped_column(ForeignKey("segments.id", ondelete="CASCADE"), primary_key=True)
    part: Mapped[int] = mapped_column(Integer, primary_key=True)
    crops: Mapped[int] = mapped_column(Integer, default=0, server_default="0")


class Track(Base):
    __tablename__ = "tracks"

    id: Mapped[str] = mapped_column(String, primary_key=True)  # "<video>:<segment>:<local id>"
    camera_id: Mapped[str] = mapped_column(String, index=True)
    video_id: Mapped[str] = mapped_column(String)
    segment_index: Mapped[int] = mapped_column(Integer)
    ts_start: Mapped[float] = mapped_column(Float, index=True)
    ts_end: Mapped[float] = mapped_column(Float)
    n_boxes: Mapped[int] = mapped_column(Integer)
    best_crop_key: Mapped[str | None] = mapped_column(String)


class Detection(Base):
    """One indexed crop: the SQL twin of a vector point (same id)."""

    __tablename__ = "detections"

    point_id: Mapped[str] = mapped_column(String, primary_key=True)
    track_id: Mapped[str] = mapped_column(ForeignKey("tracks.id"), index=True)
    camera_id: Mapped[str] = mapped_column(String)
    video_id: Mapped[str] = mapped_column(String)
    frame_index: Mapped[int] = mapped_column(Integer)
    ts: Mapped[float] = mapped_column(Float)
    x1: Mapped[float] = mapped_column(Float)
    y1: Mapped[float] = mapped_column(Float)
    x2: Mapped[float] = mapped_column(Float)
    y2: Mapped[float] = mapped_column(Float)
    det_conf: Mapped[float] = mapped_column(Float)
    quality: Mapped[float] = mapped_column(Float)
    crop_key: Mapped[str] = mapped_column(String)
    model_version: Mapped[str] = mapped_column(String)


class Job(Base):
    __tablename__ = "jobs"

    id: Mapped[str] = mapped_column(String, primary_key=True)
    kind: Mapped[str] = mapped_column(String)
    source: Mapped[str] = mapped_column(Text)
    camera_id: Mapped[str | None] = mapped_column(String)
    status: Mapped[str] = mapped_column(String, default=JobStatus.QUEUED, server_default=JobStatus.QUEUED.value)
    segments_total: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    segments_done: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    segments_failed: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    crops_indexed: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    frames: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    error: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[float] = mapped_column(Float, default=time.time)
    started_at: Mapped[float | None] = mapped_column(Float)
    finished_at: Mapped[float | None] = mapped_column(Float)


class Feedback(Base):
    """An investigator's verdict on whether two tracks show the same person.

    A pair is unordered: a newer verdict on (a, b) or (b, a) replaces the older
    row (``Database.add_feedback`` deletes it in the same transaction), and
    readers still keep only the newest row per pair, so two verdicts written at
    the same moment from two processes resolve to the later one.
    """

    __tablename__ = "feedback"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    track_id: Mapped[str] = mapped_column(String, index=True)
    candidate_track_id: Mapped[str] = mapped_column(String, index=True)
    verdict: Mapped[str] = mapped_column(String)  # one of FEEDBACK_VERDICTS
    username: Mapped[str] = mapped_column(String)
    created_at: Mapped[float] = mapped_column(Float, default=time.time, index=True)


FEEDBACK_VERDICTS = tuple(Verdict)


class Model(Base):
    """One trained embedding model in the registry (camtrace.training.registry drives its lifecycle)."""

    __tablename__ = "models"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    folder: Mapped[str] = mapped_column(Text)  # the checkpoint folder (or hub id) the encoder loads
    processor: Mapped[str | None] = mapped_column(Text)  # None: the folder's own processor
    model_version: Mapped[str] = mapped_column(String, index=True)
    parent: Mapped[str | None] = mapped_column(Text)  # what it was fine-tuned from: a registry id, folder or hub id
    datasets: Mapped[Any] = mapped_column(JSON, default=list)
    settings: Mapped[Any] = mapped_column(JSON, default=dict)
    metrics: Mapped[Any] = mapped_column(JSON, default=dict)
    status: Mapped[str] = mapped_column(String, default=ModelStatus.REGISTERED, server_default=ModelStatus.REGISTERED.value)
    index_name: Mapped[str | None] = mapped_column(String)  # Edge shard folder or server collection
    created_at: Mapped[float] = mapped_column(Float, default=time.time)
    activated_at: Mapped[float | None] = mapped_column(Float)


class ActiveModel(Base):
    """The one-row pointer to the model that embeds queries and new crops (no row: CAMTRACE_EMBED_MODEL)."""

    __tablename__ = "active_model"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)  # always 1
    model_id: Mapped[int | None] = mapped_column(ForeignKey("models.id"))
    index_name: Mapped[str | None] = mapped_column(String)
    switched_at: Mapped[float] = mapped_column(Float, default=time.time)


JOB_COUNTERS = ("segments_total", "segments_done", "segments_failed", "crops_indexed", "frames")
# Columns an upsert never rewrites: the first write's time stays.
_KEEP_ON_CONFLICT = frozenset({"created_at"})


def segment_id(video_id: str, index: int) -> str:
    return f"{video_id}:{int(index)}"


def alembic_config(url: str):
    """Alembic configured from code (no alembic.ini): the migrations folder and the database URL."""
    from alembic.config import Config

    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    # ConfigParser treats % as interpolation; URLs with escaped passwords carry it.
    config.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    return config


def _set_sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    # WAL lets readers run beside one writer; busy_timeout makes writers of
    # other processes wait instead of failing at once; foreign keys are off by
    # default in SQLite but always on in PostgreSQL, so turn them on here too.
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA busy_timeout=30000")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.close()


class Database:
    """The metadata database: SQLite (default, one file shared by the processes of a host) or PostgreSQL."""

    def __init__(self, url: str, *, echo: bool = False) -> None:
        self.url = url
        parsed = make_url(url)
        self.dialect = parsed.get_backend_name()
        if self.dialect not in ("sqlite", "postgresql"):
            raise StorageError(
                f"unsupported database {parsed.render_as_string(hide_password=True)}: "
                "CAMTRACE_DATABASE_URL must be sqlite:///... or postgresql+psycopg://..."
            )
        self._display = parsed.render_as_string(hide_password=True)
        kwargs: dict[str, Any] = {"echo": echo}
        self._sqlite_path: Path | None = None
        if self.dialect == "sqlite":
            kwargs["connect_args"] = {"timeout": 30}
            if parsed.database in (None, "", ":memory:"):
                kwargs["poolclass"] = StaticPool  # one shared in-memory database
            else:
                self._sqlite_path = Path(parsed.database).expanduser().resolve()
                self._sqlite_path.parent.mkdir(parents=True, exist_ok=True)
        else:
            kwargs["pool_pre_ping"] = True
        self.engine: Engine = create_engine(url, **kwargs)
        if self.dialect == "sqlite":
            event.listen(self.engine, "connect", _set_sqlite_pragmas)
        self._sessions = sessionmaker(self.engine, expire_on_commit=False)

    @classmethod
    def from_settings(cls, settings: Any) -> Database:
        return cls(settings.sql_url)

    def close(self) -> None:
        self.engine.dispose()

    def __enter__(self) -> Database:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # Errors and transactions ---------------------------------------------
    @contextlib.contextmanager
    def _guard(self, action: str) -> Iterator[None]:
        # The message names the database and the driver's error for the command line and the server log;
        # a remote client hears only which step failed (no URL, path or SQL).
        public = f"the database failed while {action}; the server log has the details"
        try:
            yield
        except (NotFoundError, StorageError):
            raise
        except OperationalError as exc:
            raise StorageError(
                f"database {self._display}: {action} failed: {' '.join(str(exc.orig).split())}; "
                "check that the database is reachable "
                "and CAMTRACE_DATABASE_URL is right",
                public=public,
            ) from exc
        except SQLAlchemyError as exc:
            raise StorageError(f"database {self._display}: {action} failed: {exc}", public=public) from exc

    @contextlib.contextmanager
    def _write(self, action: str) -> Iterator[Connection]:
        current = _TRANSACTION.get()
        if current is not None and current[0] is self:
            with self._guard(action):  # inside transaction(): the outer block commits or rolls back
                yield current[1]
            return
        with self._guard(action), self.engine.begin() as conn:
            yield conn

    @contextlib.contextmanager
    def transaction(self, action: str = "saving a change") -> Iterator[Connection]:
        """One transaction for every write made inside the block, by this object or any store over it.

        A change and its audit row are written this way: if either fails, neither is kept.
        Blocks nest: an inner one joins the outer transaction.
        """
        current = _TRANSACTION.get()
        if current is not None and current[0] is self:
            yield current[1]
            return
        with self._guard(action), self.engine.begin() as conn:
            token = _TRANSACTION.set((self, conn))
            try:
                yield conn
            finally:
                _TRANSACTION.reset(token)

    # Schema ----------------------------------------------------------------
    def migrate(self) -> None:
        """Bring the schema to the newest revision (Alembic ``upgrade head``); safe to repeat and to
        run from several processes at once (they take turns)."""
        from alembic import command

        config = alembic_config(self.url)
        with self._guard("migration"), self._migration_lock(), self.engine.begin() as conn:
            if self.dialect == "postgresql":
                conn.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": _MIGRATION_LOCK_KEY})
            config.attributes["connection"] = conn
            command.upgrade(config, "head")

    @contextlib.contextmanager
    def _migration_lock(self) -> Iterator[None]:
        if self._sqlite_path is None:
            yield
            return
        from filelock import FileLock

        with FileLock(str(self._sqlite_path) + ".migrate.lock", timeout=120):
            yield

    def revision(self) -> str | None:
        """The schema revision the database is at (None before the first migration)."""
        with self._guard("reading the schema revision"), self.engine.connect() as conn:
            from alembic.runtime.migration import MigrationContext

            return MigrationContext.configure(conn).get_current_revision()

    # Upsert machinery --------------------------------------------------------
    def _insert(self, table: Any) -> Any:
        if self.dialect == "sqlite":
            from sqlalchemy.dialects.sqlite import insert
        else:
            from sqlalchemy.dialects.postgresql import insert
        return insert(table)

    def _upsert(self, conn: Connection, model: type[Base], rows: Sequence[dict]) -> None:
        """INSERT ... ON CONFLICT (pk) DO UPDATE the columns each row names."""
        table = model.__table__
        keys = [c.name for c in table.primary_key]
        # One row per key, the last one winning, however the driver batches
        # the rows (PostgreSQL refuses a multi-row INSERT ... ON CONFLICT that
        # touches one row twice).
        unique = {tuple(row.get(k) for k in keys): row for row in rows}
        groups: dict[tuple[str, ...], list[dict]] = {}
        for row in unique.values():
            groups.setdefault(tuple(sorted(row)), []).append(row)
        for names, group in groups.items():
            stmt = self._insert(table)
            updates = {n: stmt.excluded[n] for n in names if n not in keys and n not in _KEEP_ON_CONFLICT}
            if updates:
                stmt = stmt.on_conflict_do_update(index_elements=keys, set_=updates)
            else:
                stmt = stmt.on_conflict_do_nothing(index_elements=keys)
            conn.execute(stmt, group)

    # Cameras ---------------------------------------------------------------
    def ensure_camera(self, camera_id: str, url: str | None = None) -> None:
        """Create the camera if missing; a given ``url`` replaces the stored one."""
        row: dict[str, Any] = {"id": camera_id}
        if url is not None:
            row["url"] = url
        with self._write(f"saving camera {camera_id!r}") as conn:
            self._upsert(conn, Camera, [row])

    def update_camera(self, camera_id: str, **fields: Any) -> None:
        """Set status, url, last_frame_at, reconnects or last_error of an existing camera."""
        fields = _columns(Camera, fields, exclude=("id", "created_at"))
        with self._write(f"updating camera {camera_id!r}") as conn:
            if conn.execute(update(Camera).where(Camera.id == camera_id).values(**fields)).rowcount == 0:
                raise NotFoundError(f"camera {camera_id!r} does not exist; add it first")

    def remove_camera_url(self, camera_id: str) -> None:
        """Stop recording a camera: its URL goes, its indexed footage stays searchable."""
        self.update_camera(camera_id, url=None, status="offline")

    def list_cameras(self) -> list[Camera]:
        with self._guard("listing cameras"), self._sessions() as session:
            return list(session.scalars(select(Camera).order_by(Camera.id)))

    def camera_ids(self) -> list[str]:
        with self._guard("listing cameras"), self.engine.connect() as conn:
            return list(conn.scalars(select(Camera.id).order_by(Camera.id)))

    # Videos and segments ---------------------------------------------------
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
        row = _plain_row(
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
        with self._write(f"saving video {video_id!r}") as conn:
            self._upsert(conn, Camera, [{"id": camera_id}])
            self._upsert(conn, Video, [row])

    def get_video(self, video_id: str) -> Video:
        with self._guard(f"reading video {video_id!r}"), self._sessions() as session:
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
            row["status"] = _check_status("segment", status, SEGMENT_STATUSES)
        if job_id is not None:
            row["job_id"] = job_id
        with self._write(f"saving segment {row['id']!r}") as conn:
            self._upsert(conn, Segment, [row])
        return row["id"]

    def mark_segment(
        self, segment_id: str, status: str, error: str | None = None, *, frames: int | None = None,
        crops: int | None = None,
    ) -> None:
        """Record a segment's outcome (and its frame and crop counts when given)."""
        _check_status("segment", status, SEGMENT_STATUSES)
        values: dict[str, Any] = {"status": status, "error": error}
        if frames is not None:
            values["frames"] = int(frames)
        if crops is not None:
            values["crops"] = int(crops)
        with self._write(f"marking segment {segment_id!r}") as conn:
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
        with self._write(f"starting segment {segment_id!r}") as conn:
            if conn.execute(query.values(attempts=Segment.attempts + 1)).rowcount == 0:
                return None
        with self._guard(f"reading segment {segment_id!r}"), self._sessions() as session:
            return session.get(Segment, segment_id)

    def fail_segment(self, segment_id: str, error: str) -> None:
        """Mark a segment failed with its error (a missing segment is ignored: nothing to mark)."""
        with self._write(f"failing segment {segment_id!r}") as conn:
            conn.execute(update(Segment).where(Segment.id == segment_id).values(status=SegmentStatus.FAILED, error=error))

    def set_segment_parts(self, segment_id: str, parts_total: int, *, frames: int = 0) -> None:
        """Record how many embed parts a detect task sent; a segment without crops is done at once."""
        values: dict[str, Any] = {"parts_total": int(parts_total), "frames": int(frames)}
        if parts_total == 0:
            values.update(status=SegmentStatus.DONE, crops=0, error=None)
        with self._write(f"saving parts of segment {segment_id!r}") as conn:
            conn.execute(delete(SegmentPart).where(SegmentPart.segment_id == segment_id))
            conn.execute(update(Segment).where(Segment.id == segment_id).values(**values))

    def part_done(self, segment_id: str, part: int, crops: int) -> bool:
        """Record a written embed part; marks the segment done when all its parts are in. Idempotent."""
        with self._write(f"saving part {part} of segment {segment_id!r}") as conn:
            self._upsert(conn, SegmentPart, [{"segment_id": segment_id, "part": int(part), "crops": int(crops)}])
            done_parts, done_crops = conn.execute(
                select(func.count(), func.coalesce(func.sum(SegmentPart.crops), 0)).where(
                    SegmentPart.segment_id == segment_id
                )
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

    def refresh_job(self, job_id: str) -> Job:
        """Recompute a job's progress from its segments (idempotent, whatever got redelivered)."""
        job = self.get_job(job_id)
        if job.kind != "ingest":  # other jobs (a re-index) count their own progress
            return job
        with self._guard(f"reading segments of job {job_id!r}"), self.engine.connect() as conn:
            rows = conn.execute(
                select(Segment.status, func.count(), func.coalesce(func.sum(Segment.crops), 0),
                       func.coalesce(func.sum(Segment.frames), 0))
                .where(Segment.job_id == job_id)
                .group_by(Segment.status)
            ).all()
            errors = list(conn.scalars(
                select(Segment.id + ": " + Segment.error).where(Segment.job_id == job_id, Segment.status == SegmentStatus.FAILED)
                .order_by(Segment.id).limit(20)
            ))
        by_status = {status: (count, crops, frames) for status, count, crops, frames in rows}
        done = by_status.get(SegmentStatus.DONE, (0, 0, 0))
        failed = by_status.get(SegmentStatus.FAILED, (0, 0, 0))
        owned = sum(count for count, _, _ in by_status.values())
        # Segments re-registered by a newer ingest of the same video belong to that job now;
        # this one finishes with what it still owns instead of waiting for them forever.
        taken = max(0, job.segments_total - owned) if job.status == JobStatus.RUNNING else 0
        if not rows and not taken:
            return job
        total = max(job.segments_total, owned)
        fields: dict[str, Any] = {
            "segments_total": total,
            "segments_done": done[0],
            "segments_failed": failed[0],
            "crops_indexed": int(done[1]),
            "frames": int(done[2] + failed[2]),
        }
        if taken:
            errors.append(f"{taken} segment(s) taken over by a newer ingest of the same video")
        if errors:
            fields["error"] = "; ".join(errors)
        if job.status in (JobStatus.QUEUED, JobStatus.RUNNING) and done[0] + failed[0] + taken >= total > 0:
            if owned == 0:
                fields["status"] = JobStatus.SUPERSEDED
            else:
                fields["status"] = JobStatus.FAILED if done[0] == 0 else JobStatus.DONE
        return self.update_job(job_id, **fields)

    def list_segments(self, video_id: str, status: str | None = None) -> list[Segment]:
        query = select(Segment).where(Segment.video_id == video_id).order_by(Segment.index)
        if status is not None:
            query = query.where(Segment.status == _check_status("segment", status, SEGMENT_STATUSES))
        with self._guard(f"listing segments of {video_id!r}"), self._sessions() as session:
            return list(session.scalars(query))

    # Tracks and detections ---------------------------------------------------
    def upsert_tracks(self, rows: Iterable[Mapping | Any]) -> int:
        """Save tracks (columns of ``Track``); returns how many rows were given."""
        prepared = [_columns(Track, _as_dict(r), require=("id",)) for r in rows]
        if prepared:
            with self._write("saving tracks") as conn:
                self._upsert(conn, Track, prepared)
        return len(prepared)

    def upsert_detections(self, rows: Iterable[Mapping | Any]) -> int:
        """Save detections (columns of ``Detection``; a ``bbox`` of 4 numbers may stand for x1..y2).

        Their tracks must be saved first (foreign key).
        """
        prepared = []
        for r in rows:
            row = _as_dict(r)
            if "bbox" in row:
                row = {k: v for k, v in row.items() if k != "bbox"} | dict(zip(("x1", "y1", "x2", "y2"), row["bbox"]))
            prepared.append(_columns(Detection, row, require=("point_id",)))
        if prepared:
            with self._write("saving detections") as conn:
                self._upsert(conn, Detection, prepared)
        return len(prepared)

    def tracks_by_ids(self, ids: Iterable[str]) -> dict[str, Track]:
        wanted = list(dict.fromkeys(ids))
        found: dict[str, Track] = {}
        with self._guard("reading tracks"), self._sessions() as session:
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
            with self._guard("reading detections"), self._sessions() as session:
                page = list(session.scalars(query))
            if not page:
                return
            yield page
            after = page[-1].point_id

    def detections_by_ids(self, point_ids: Sequence[str]) -> list[Detection]:
        found: list[Detection] = []
        with self._guard("reading detections"), self._sessions() as session:
            for start in range(0, len(point_ids), 500):
                chunk = list(point_ids[start : start + 500])
                found.extend(session.scalars(select(Detection).where(Detection.point_id.in_(chunk))))
        return found

    def track_detections(self, track_id: str) -> list[Detection]:
        query = select(Detection).where(Detection.track_id == track_id).order_by(Detection.ts, Detection.frame_index)
        with self._guard(f"reading detections of {track_id!r}"), self._sessions() as session:
            return list(session.scalars(query))

    def get_detection(self, point_id: str) -> Detection | None:
        with self._guard(f"reading detection {point_id!r}"), self._sessions() as session:
            return session.get(Detection, point_id)

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
        with self._write("creating a job") as conn:
            conn.execute(self._insert(Job.__table__).on_conflict_do_nothing(index_elements=["id"]), [row])
            # Read back on the same connection: inside transaction() the row is not committed yet.
            with Session(bind=conn) as session:
                return session.get(Job, row["id"])

    def jobs_for_sources(self, sources: Sequence[str]) -> list[Job]:
        """Every job that ingests one of ``sources``."""
        jobs: list[Job] = []
        with self._guard("reading jobs by source"), self._sessions() as session:
            for start in range(0, len(sources), 500):
                chunk = [str(source) for source in sources[start : start + 500]]
                jobs.extend(session.scalars(select(Job).where(Job.source.in_(chunk))))
        return jobs

    def update_job(self, job_id: str, **fields: Any) -> Job:
        """Set job columns (status, counters, error, started_at, finished_at ...) and return the job.

        A move to ``running`` stamps ``started_at`` and a move to ``done``, ``superseded`` or
        ``failed`` stamps ``finished_at``, unless given.
        """
        fields = _columns(Job, fields, exclude=("id", "created_at"))
        if "status" in fields:
            _check_status("job", fields["status"], JOB_STATUSES)
            now = time.time()
            if fields["status"] == JobStatus.RUNNING:
                fields.setdefault("started_at", now)
            elif fields["status"] in TERMINAL_JOB_STATUSES:
                fields.setdefault("finished_at", now)
        if fields:
            with self._write(f"updating job {job_id!r}") as conn:
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
            with self._write(f"updating job {job_id!r}") as conn:
                if conn.execute(update(Job).where(Job.id == job_id).values(**values)).rowcount == 0:
                    raise NotFoundError(f"job {job_id!r} does not exist")
        return self.get_job(job_id)

    def get_job(self, job_id: str) -> Job:
        with self._guard(f"reading job {job_id!r}"), self._sessions() as session:
            job = session.get(Job, job_id)
        if job is None:
            raise NotFoundError(f"job {job_id!r} does not exist; `camtrace jobs` lists the known ones")
        return job

    def list_jobs(self, limit: int = 50, status: str | None = None) -> list[Job]:
        """Newest first."""
        query = select(Job).order_by(Job.created_at.desc(), Job.id).limit(limit)
        if status is not None:
            query = query.where(Job.status == _check_status("job", status, JOB_STATUSES))
        with self._guard("listing jobs"), self._sessions() as session:
            return list(session.scalars(query))

    # Retention ---------------------------------------------------------------
    def detections_before(self, cutoff_ts: float, limit: int = 10_000) -> list[Detection]:
        """Up to ``limit`` detections seen before ``cutoff_ts`` (retention works in batches)."""
        query = select(Detection).where(Detection.ts < cutoff_ts).order_by(Detection.ts).limit(limit)
        with self._guard("reading old detections"), self._sessions() as session:
            return list(session.scalars(query))

    def delete_detections(self, point_ids: Sequence[str]) -> None:
        """Delete detections, then the tracks left without any."""
        with self._write("deleting old detections") as conn:
            for start in range(0, len(point_ids), 500):
                conn.execute(delete(Detection).where(Detection.point_id.in_(point_ids[start : start + 500])))
            conn.execute(delete(Track).where(~Track.id.in_(select(Detection.track_id).distinct())))

    def delete_videos_before(self, cutoff_ts: float) -> list[str]:
        """Delete videos that ended before ``cutoff_ts`` and have no detections left; returns their sources."""
        has_detections = select(Detection.video_id).distinct()
        query = select(Video.id, Video.source).where(
            Video.end_ts.is_not(None), Video.end_ts < cutoff_ts, Video.id.not_in(has_detections)
        )
        with self._write("deleting old videos") as conn:
            old = conn.execute(query).all()
            ids = [video_id for video_id, _ in old]
            for start in range(0, len(ids), 500):
                chunk = ids[start : start + 500]
                segments = select(Segment.id).where(Segment.video_id.in_(chunk))
                conn.execute(delete(SegmentPart).where(SegmentPart.segment_id.in_(segments)))
                conn.execute(delete(Segment).where(Segment.video_id.in_(chunk)))
                conn.execute(delete(Video).where(Video.id.in_(chunk)))
        return [source for _, source in old]

    # Re-identification feedback ----------------------------------------------
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
        with self._write(f"saving feedback on {track_id!r} and {candidate_track_id!r}") as conn:
            conn.execute(delete(Feedback).where(pair))
            new_id = conn.execute(Feedback.__table__.insert().values(**row)).inserted_primary_key[0]
        return Feedback(id=new_id, **row)

    def feedback_for(self, track_ids: Iterable[str]) -> list[Feedback]:
        """The current verdicts on every pair that involves one of ``track_ids`` (newest per pair)."""
        wanted = list(dict.fromkeys(track_ids))
        rows: dict[int, Feedback] = {}
        with self._guard("reading feedback"), self._sessions() as session:
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
        with self._guard("reading feedback"), self._sessions() as session:
            rows = _latest_per_pair(session.scalars(select(Feedback)))
        return [
            row for row in rows
            if (verdict is None or row.verdict == verdict) and (since is None or row.created_at >= since)
        ]

    # Totals ----------------------------------------------------------------
    def tracks_since(self, ts: float | None) -> int:
        """Tracks that end after ``ts`` (epoch seconds; None: every track)."""
        query = select(func.count()).select_from(Track)
        if ts is not None:
            query = query.where(Track.ts_end > ts)
        with self._guard("counting tracks"), self.engine.connect() as conn:
            return int(conn.scalar(query) or 0)

    def counts(self) -> dict[str, int]:
        models = {"cameras": Camera, "videos": Video, "tracks": Track, "detections": Detection}
        with self._guard("counting rows"), self.engine.connect() as conn:
            return {
                name: int(conn.scalar(select(func.count()).select_from(model)) or 0) for name, model in models.items()
            }


# Row helpers -------------------------------------------------------------------
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


def _as_dict(row: Mapping | Any) -> dict[str, Any]:
    if isinstance(row, Mapping):
        return dict(row)
    if dataclasses.is_dataclass(row) and not isinstance(row, type):
        return {f.name: getattr(row, f.name) for f in dataclasses.fields(row)}
    raise StorageError(f"a row must be a dict or a dataclass instance, not {type(row).__name__}")


def _plain_row(row: dict[str, Any]) -> dict[str, Any]:
    # Database drivers reject numpy scalars, which detection code hands over freely.
    return {k: (v.item() if isinstance(v, np.generic) else v) for k, v in row.items()}


def _columns(
    model: type[Base], row: dict[str, Any], *, require: Sequence[str] = (), exclude: Sequence[str] = ()
) -> dict[str, Any]:
    names = set(model.__table__.columns.keys()) - set(exclude)
    unknown = set(row) - names
    if unknown:
        raise StorageError(
            f"unknown column(s) {', '.join(sorted(unknown))} for table {model.__tablename__}; "
            f"its columns are {', '.join(sorted(names))}"
        )
    missing = [name for name in require if row.get(name) in (None, "")]
    if missing:
        raise StorageError(f"a {model.__tablename__} row needs {', '.join(missing)}: {row}")
    return _plain_row(row)


def _check_verdict(verdict: str) -> None:
    if verdict not in FEEDBACK_VERDICTS:
        raise StorageError(f"feedback verdict {verdict!r} is not one of {', '.join(FEEDBACK_VERDICTS)}")


def _check_status(what: str, status: str, allowed: Sequence[str]) -> str:
    if status not in allowed:
        raise StorageError(f"{what} status {status!r} is not one of {', '.join(allowed)}")
    return status
