"""Initial schema: cameras, videos, segments, tracks, detections, jobs.

Revision ID: 0001
Revises:
Create Date: 2025-01-01
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0001"
down_revision: str | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "cameras",
        sa.Column("id", sa.String(), primary_key=True),
        sa.Column("url", sa.Text(), nullable=True),
        sa.Column("created_at", sa.Float(), nullable=False),
        sa.Column("status", sa.String(), nullable=False, server_default="offline"),
        sa.Column("last_frame_at", sa.Float(), nullable=True),
        sa.Column("reconnects", sa.Integer(), nullable=False, server_default="0"),
        sa.Column("last_error", sa.Text(), nullable=True),
    )
    op.create_table(
        "videos",
        sa.Column("id", sa.String(), primary_key=True),
        sa.Column("camera_id", sa.String(), sa.ForeignKey("cameras.id"), nullable=False),
        sa.Column("source", sa.Text(), nullable=False),
        sa.Column("fps", sa.Float(), nullable=False),
        sa.Column("frame_count", sa.Integer(), nullable=True),
        sa.Column("width", sa.Integer(), nullable=False),
        sa.Column("height", sa.Integer(), nullable=False),
        sa.Column("start_ts", sa.Float(), nullable=False),
        sa.Column("end_ts", sa.Float(), nullable=True),
        sa.Column("created_at", sa.Float(), nullable=False),
    )
    op.create_table(
        "segments",
        sa.Column("id", sa.String(), primary_key=True),
        sa.Column("video_id", sa.String(), sa.ForeignKey("videos.id"), nullable=False),
        sa.Column("index", sa.Integer(), nullable=False),
        sa.Column("start_frame", sa.Integer(), nullable=False),
        sa.Column("end_frame", sa.Integer(), nullable=False),
        sa.Column("status", sa.String(), nullable=False, server_default="pending"),
        sa.Column("error", sa.Text(), nullable=True),
        sa.Column("attempts", sa.Integer(), nullable=False, server_default="0"),
        sa.Column("job_id", sa.String(), nullable=True),
    )
    op.create_table(
        "tracks",
        sa.Column("id", sa.String(), primary_key=True),
        sa.Column("camera_id", sa.String(), nullable=False),
        sa.Column("video_id", sa.String(), nullable=False),
        sa.Column("segment_index", sa.Integer(), nullable=False),
        sa.Column("ts_start", sa.Float(), nullable=False),
        sa.Column("ts_end", sa.Float(), nullable=False),
        sa.Column("n_boxes", sa.Integer(), nullable=False),
        sa.Column("best_crop_key", sa.String(), nullable=True),
    )
    op.create_index("ix_tracks_camera_id", "tracks", ["camera_id"])
    op.create_index("ix_tracks_ts_start", "tracks", ["ts_start"])
    op.create_table(
        "detections",
        sa.Column("point_id", sa.String(), primary_key=True),
        sa.Column("track_id", sa.String(), sa.ForeignKey("tracks.id"), nullable=False),
        sa.Column("camera_id", sa.String(), nullable=False),
        sa.Column("video_id", sa.String(), nullable=False),
        sa.Column("frame_index", sa.Integer(), nullable=False),
        sa.Column("ts", sa.Float(), nullable=False),
        sa.Column("x1", sa.Float(), nullable=False),
        sa.Column("y1", sa.Float(), nullable=False),
        sa.Column("x2", sa.Float(), nullable=False),
        sa.Column("y2", sa.Float(), nullable=False),
        sa.Column("det_conf", sa.Float(), nullable=False),
        sa.Column("quality", sa.Float(), nullable=False),
        sa.Column("crop_key", sa.String(), nullable=False),
        sa.Column("model_version", sa.String(), nullable=False),
    )
    op.create_index("ix_detections_track_id", "detections", ["track_id"])
    op.create_table(
        "jobs",
        sa.Column("id", sa.String(), primary_key=True),
        sa.Column("kind", sa.String(), nullable=False),
        sa.Column("source", sa.Text(), nullable=False),
        sa.Column("camera_id", sa.String(), nullable=True),
        sa.Column("status", sa.String(), nullable=False, server_default="queued"),
        sa.Column("segments_total", sa.Integer(), nullable=False, server_default="0"),
        sa.Column("segments_done", sa.Integer(), nullable=False, server_default="0"),
        sa.Column("segments_failed", sa.Integer(), nullable=False, server_default="0"),
        sa.Column("crops_indexed", sa.Integer(), nullable=False, server_default="0"),
        sa.Column("frames", sa.Integer(), nullable=False, server_default="0"),
        sa.Column("error", sa.Text(), nullable=True),
        sa.Column("created_at", sa.Float(), nullable=False),
        sa.Column("started_at", sa.Float(), nullable=True),
        sa.Column("finished_at", sa.Float(), nullable=True),
    )


def downgrade() -> None:
    op.drop_table("jobs")
    op.drop_index("ix_detections_track_id", table_name="detections")
    op.drop_table("detections")
    op.drop_index("ix_tracks_ts_start", table_name="tracks")
    op.drop_index("ix_tracks_camera_id", table_name="tracks")
    op.drop_table("tracks")
    op.drop_table("segments")
    op.drop_table("videos")
    op.drop_table("cameras")
