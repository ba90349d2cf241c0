"""Identity evidence: the fitted same-person calibration and camera links, one document per model version.

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-05
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0007"
down_revision: str | None = "0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "identity_evidence",
        sa.Column("model_version", sa.String(), primary_key=True),
        sa.Column("document", sa.JSON(), nullable=False),
        sa.Column("feedback_at", sa.Float(), nullable=False),
        sa.Column("learned_at", sa.Float(), nullable=False),
    )


def downgrade() -> None:
    op.drop_table("identity_evidence")
