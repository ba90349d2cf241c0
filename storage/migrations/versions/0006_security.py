"""Security: a hash-chained audit log, token ids and expiry, absolute video paths.

Every existing audit row gets its hash (over its content and the previous
row's hash, in id order) and the chain's head goes into ``audit_chain``; the
append-only triggers are set aside for that and put back. Tokens get a public
id and an optional expiry. Video and job sources stored as relative paths are
made absolute where the file is found (from the folder the migration runs in,
or the folder holding the SQLite file's data folder); the others are left and
named in the log.

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-01
"""

import logging
import secrets
from collections.abc import Sequence
from pathlib import Path

import sqlalchemy as sa
from alembic import op

revision: str = "0006"
down_revision: str | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

log = logging.getLogger(__name__)
GENESIS_HASH = "0" * 64
SQLITE_TRIGGERS = {
    "audit_log_no_update": "BEFORE UPDATE ON audit_log BEGIN SELECT RAISE(ABORT, 'the audit log is append-only'); END",
    "audit_log_no_delete": "BEFORE DELETE ON audit_log BEGIN SELECT RAISE(ABORT, 'the audit log is append-only'); END",
}


def _audit_hash(*parts) -> str:
    # The same function the application uses, so rows hashed here verify there.
    from camtrace.storage.audit import audit_hash

    return audit_hash(*parts)


def _set_append_only(bind, on: bool) -> None:
    if bind.dialect.name == "postgresql":
        op.execute(f"ALTER TABLE audit_log {'ENABLE' if on else 'DISABLE'} TRIGGER audit_log_append_only")
        return
    for name, body in SQLITE_TRIGGERS.items():
        op.execute(f"CREATE TRIGGER {name} {body}" if on else f"DROP TRIGGER IF EXISTS {name}")


def _chain_existing_rows(bind) -> tuple[int, str]:
    audit = sa.table(
        "audit_log", sa.column("id"), sa.column("ts"), sa.column("username"), sa.column("action"),
        sa.column("detail"), sa.column("result_ids"), sa.column("client"), sa.column("prev_hash"), sa.column("hash"),
    )
    last_id, last_hash = 0, GENESIS_HASH
    rows = bind.execute(sa.select(audit).order_by(audit.c.id)).all()
    for row in rows:
        row_hash = _audit_hash(last_hash, row.id, row.ts, row.username, row.action, row.detail, row.result_ids,
                               row.client)
        bind.execute(audit.update().where(audit.c.id == row.id).values(prev_hash=last_hash, hash=row_hash))
        last_id, last_hash = row.id, row_hash
    return last_id, last_hash


def _absolute_sources(bind) -> None:
    bases = [Path.cwd()]
    database = bind.engine.url.database if bind.dialect.name == "sqlite" else None
    if database and database != ":memory:":
        bases.append(Path(database).expanduser().resolve().parent.parent)
    for table_name in ("videos", "jobs"):
        table = sa.table(table_name, sa.column("id"), sa.column("source"))
        for row_id, source in bind.execute(sa.select(table.c.id, table.c.source)).all():
            if not source or "://" in source or Path(source).is_absolute():
                continue
            found = next((base / source for base in bases if (base / source).exists()), None)
            if found is None:
                log.warning("%s %s: relative source %r not found from %s; left as it is",
                            table_name, row_id, source, ", ".join(map(str, bases)))
                continue
            bind.execute(table.update().where(table.c.id == row_id).values(source=str(found.resolve())))


def upgrade() -> None:
    bind = op.get_bind()
    op.add_column("audit_log", sa.Column("prev_hash", sa.String(), nullable=True))
    op.add_column("audit_log", sa.Column("hash", sa.String(), nullable=True))
    op.create_table(
        "audit_chain",
        sa.Column("id", sa.Integer(), primary_key=True, autoincrement=False),
        sa.Column("last_id", sa.Integer(), nullable=False),
        sa.Column("last_hash", sa.String(), nullable=False),
    )
    _set_append_only(bind, False)
    last_id, last_hash = _chain_existing_rows(bind)
    _set_append_only(bind, True)
    bind.execute(sa.text("INSERT INTO audit_chain (id, last_id, last_hash) VALUES (1, :last_id, :last_hash)"),
                 {"last_id": last_id, "last_hash": last_hash})

    op.add_column("api_tokens", sa.Column("id", sa.String(), nullable=True))
    op.add_column("api_tokens", sa.Column("expires_at", sa.Float(), nullable=True))
    tokens = sa.table("api_tokens", sa.column("token_hash"), sa.column("id"))
    for (token_hash,) in bind.execute(sa.select(tokens.c.token_hash)).all():
        bind.execute(tokens.update().where(tokens.c.token_hash == token_hash).values(id=secrets.token_hex(6)))
    op.create_index("ix_api_tokens_id", "api_tokens", ["id"], unique=True)
    # The per-address and global counters share this table with the per-name ones; start all afresh.
    op.execute("DELETE FROM login_failures")
    _absolute_sources(bind)


def downgrade() -> None:
    op.drop_index("ix_api_tokens_id", table_name="api_tokens")
    with op.batch_alter_table("api_tokens") as batch:
        batch.drop_column("expires_at")
        batch.drop_column("id")
    op.drop_table("audit_chain")
    bind = op.get_bind()
    _set_append_only(bind, False)
    with op.batch_alter_table("audit_log") as batch:
        batch.drop_column("hash")
        batch.drop_column("prev_hash")
    _set_append_only(bind, True)
