"""SQL metadata: cameras, videos, segments, tracks, detections, jobs and re-id feedback.

``Database`` is the one object callers hold: the engine (``SqlEngine``:
connections, transactions, errors, migrations, the upsert) with the records of
each concern in a module of its own (cameras, ingest, tracks, feedback). The
access store (camtrace.storage.access), the model registry
(camtrace.training.registry) and the evidence store keep their tables beside
these and use the engine's public calls. The schema is created and upgraded by
Alembic (``Database.migrate()``), never by ``create_all``, so SQLite and
PostgreSQL always hold the same schema.

All times are epoch seconds (float), like ``ts`` in the vector payload, so
both databases store them alike and nothing depends on time zones.
"""

from __future__ import annotations

from camtrace.storage.sql.cameras import CameraRecords
from camtrace.storage.sql.engine import MIGRATIONS_DIR, SqlEngine, alembic_config
from camtrace.storage.sql.feedback import FeedbackRecords
from camtrace.storage.sql.ingest import IngestRecords, SegmentTally
from camtrace.storage.sql.tables import (
    FEEDBACK_VERDICTS,
    JOB_COUNTERS,
    JOB_STATUSES,
    SEGMENT_STATUSES,
    ActiveModel,
    Base,
    Camera,
    Detection,
    Feedback,
    Job,
    Model,
    Segment,
    SegmentPart,
    Track,
    Video,
    segment_id,
)
from camtrace.storage.sql.tracks import TrackRecords


class Database(CameraRecords, IngestRecords, TrackRecords, FeedbackRecords):
    """The metadata database: SQLite (default, one file shared by the processes of a host) or PostgreSQL."""


__all__ = [
    "FEEDBACK_VERDICTS",
    "JOB_COUNTERS",
    "JOB_STATUSES",
    "MIGRATIONS_DIR",
    "SEGMENT_STATUSES",
    "ActiveModel",
    "Base",
    "Camera",
    "Database",
    "Detection",
    "Feedback",
    "Job",
    "Model",
    "Segment",
    "SegmentPart",
    "SegmentTally",
    "SqlEngine",
    "Track",
    "Video",
    "alembic_config",
    "segment_id",
]
