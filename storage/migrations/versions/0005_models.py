"""Model registry: trained embedding models and the pointer to the active one.

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-23
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "models",
        sa.Column("id", sa.Integer(), primary_key=True, autoincrement=True),
        sa.Column("folder", sa.Text(), nullable=False),
        sa.Column("processor", sa.Text(), nullable=True),
        sa.Column("model_version", sa.String(), nullable=False),
        sa.Column("parent", sa.Text(), nullable=True),
        sa.Column("datasets", sa.JSON(), nullable=False),
        sa.Column("settings", sa.JSON(), nullable=False),
        sa.Column("metrics", sa.JSON(), nullable=False),
        sa.Column("status", sa.String(), nullable=False, server_default="registered"),
        sa.Column("index_name", sa.String(), nullable=True),
        sa.Column("created_at", sa.Float(), nullable=False),
        sa.Column("activated_at", sa.Float(), nullable=True),
    )
    op.create_index("ix_models_model_version", "models", ["model_version"])
    op.create_table(
        "active_model",
        sa.Column("id", sa.Integer(), primary_key=True, autoincrement=False),
        sa.Column("model_id", sa.Integer(), sa.ForeignKey("models.id"), nullable=True),
        sa.Column("index_name", sa.String(), nullable=True),
        sa.Column("switched_at", sa.Float(), nullable=False),
    )


def downgrade() -> None:
    op.drop_table("active_model")
    op.drop_index("ix_models_model_version", table_name="models")
    op.drop_table("models")
