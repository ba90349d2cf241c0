"""Distributed mode: per-segment work counters and the parts an embed worker has written.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-23
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("segments") as batch:
        batch.add_column(sa.Column("parts_total", sa.Integer(), nullable=True))
        batch.add_column(sa.Column("frames", sa.Integer(), nullable=False, server_default="0"))
        batch.add_column(sa.Column("crops", sa.Integer(), nullable=False, server_default="0"))
        batch.create_index("ix_segments_job_id", ["job_id"])
    op.create_table(
        "segment_parts",
        sa.Column("segment_id", sa.String(), sa.ForeignKey("segments.id", ondelete="CASCADE"), primary_key=True),
        sa.Column("part", sa.Integer(), primary_key=True),
        sa.Column("crops", sa.Integer(), nullable=False, server_default="0"),
    )


def downgrade() -> None:
    op.drop_table("segment_parts")
    with op.batch_alter_table("segments") as batch:
        batch.drop_index("ix_segments_job_id")
        batch.drop_column("crops")
        batch.drop_column("frames")
        batch.drop_column("parts_total")
