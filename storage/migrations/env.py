"""Alembic environment, configured from code (see camtrace.storage.sql.alembic_config).

``Database.migrate()`` hands over an open connection in
``config.attributes["connection"]``; without one (e.g. ``alembic revision
--autogenerate`` run by hand) an engine is made from ``sqlalchemy.url``.
"""

from __future__ import annotations

from alembic import context
from sqlalchemy import create_engine, pool

from camtrace.storage import access as _access  # noqa: F401 (their tables join Base.metadata)
from camtrace.storage import audit as _audit  # noqa: F401
from camtrace.storage import cases as _cases  # noqa: F401
from camtrace.storage import evidence as _evidence  # noqa: F401
from camtrace.storage import watchlists as _watchlists  # noqa: F401
from camtrace.storage.sql import Base

config = context.config
target_metadata = Base.metadata


def _run(connection) -> None:
    context.configure(
        connection=connection,
        target_metadata=target_metadata,
        # SQLite can alter tables only by copying them; batch mode does that.
        render_as_batch=connection.dialect.name == "sqlite",
        compare_type=True,
    )
    with context.begin_transaction():
        context.run_migrations()


def run_migrations_offline() -> None:
    context.configure(
        url=config.get_main_option("sqlalchemy.url"),
        target_metadata=target_metadata,
        literal_binds=True,
        dialect_opts={"paramstyle": "named"},
    )
    with context.begin_transaction():
        context.run_migrations()


def run_migrations_online() -> None:
    connection = config.attributes.get("connection")
    if connection is not None:
        _run(connection)
        return
    engine = create_engine(config.get_main_option("sqlalchemy.url"), poolclass=pool.NullPool)
    with engine.connect() as connection:
        _run(connection)
    engine.dispose()


if context.is_offline_mode():
    run_migrations_offline()
else:
    run_migrations_online()
