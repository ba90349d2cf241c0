"""The tables of the metadata database (SQLAlchemy 2 ORM); Alembic migrations create and upgrade them."""

from __future__ import annotations

import time
from typing import Any

from sqlalchemy import JSON, Float, ForeignKey, Integer, String, Text
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from camtrace.enums import JobStatus, ModelStatus, SegmentStatus, Verdict

SEGMENT_STATUSES = tuple(SegmentStatus)
JOB_STATUSES = tuple(JobStatus)
FEEDBACK_VERDICTS = tuple(Verdict)
JOB_COUNTERS = ("segments_total", "segments_done", "segments_failed", "crops_indexed", "frames")


def segment_id(video_id: str, index: int) -> str:
    return f"{video_id}:{int(index)}"


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
