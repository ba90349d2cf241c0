"""The metadata database's engine: connections, transactions, errors, migrations and the upsert.

Every write is an idempotent upsert by primary key (``INSERT ... ON CONFLICT
DO UPDATE``), so a redelivered task rewrites its rows instead of failing or
duplicating. On conflict only the columns a row names are updated, the others
keep their stored values (``created_at`` is never rewritten).
"""

from __future__ import annotations

import contextlib
import contextvars
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any, Self

from sqlalchemy import create_engine, event, text
from sqlalchemy.engine import Connection, Engine, make_url
from sqlalchemy.exc import OperationalError, SQLAlchemyError
from sqlalchemy.orm import sessionmaker
from sqlalchemy.pool import StaticPool

from camtrace.errors import NotFoundError, StorageError
from camtrace.storage.sql.tables import Base

MIGRATIONS_DIR = Path(__file__).resolve().parent.parent / "migrations"
# Constant key for PostgreSQL's advisory lock around migrations ("camt").
_MIGRATION_LOCK_KEY = 0x63616D74
# The open transaction of ``SqlEngine.transaction()`` in this thread or task, which ``write`` joins.
_TRANSACTION: contextvars.ContextVar[tuple[SqlEngine, Connection] | None] = contextvars.ContextVar(
    "camtrace_transaction", default=None
)
# Columns an upsert never rewrites: the first write's time stays.
_KEEP_ON_CONFLICT = frozenset({"created_at"})


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


class SqlEngine:
    """The connection to the metadata database (SQLite, one file shared by the processes of a host, or
    PostgreSQL): errors named by the step that failed, transactions, migrations and the upsert every store uses."""

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
        self.sessions = sessionmaker(self.engine, expire_on_commit=False)

    @classmethod
    def from_settings(cls, settings: Any) -> Self:
        return cls(settings.sql_url)

    def close(self) -> None:
        self.engine.dispose()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # Errors and transactions ---------------------------------------------
    @contextlib.contextmanager
    def guard(self, action: str) -> Iterator[None]:
        """Database errors inside the block become StorageError naming ``action``."""
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
    def write(self, action: str) -> Iterator[Connection]:
        """A connection in a transaction for one write (joining ``transaction()`` when one is open)."""
        current = _TRANSACTION.get()
        if current is not None and current[0] is self:
            with self.guard(action):  # inside transaction(): the outer block commits or rolls back
                yield current[1]
            return
        with self.guard(action), self.engine.begin() as conn:
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
        with self.guard(action), self.engine.begin() as conn:
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
        with self.guard("migration"), self._migration_lock(), self.engine.begin() as conn:
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
        with self.guard("reading the schema revision"), self.engine.connect() as conn:
            from alembic.runtime.migration import MigrationContext

            return MigrationContext.configure(conn).get_current_revision()

    # Upsert machinery --------------------------------------------------------
    def insert(self, table: Any) -> Any:
        if self.dialect == "sqlite":
            from sqlalchemy.dialects.sqlite import insert
        else:
            from sqlalchemy.dialects.postgresql import insert
        return insert(table)

    def upsert(self, conn: Connection, model: type[Base], rows: Sequence[dict]) -> None:
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
            stmt = self.insert(table)
            updates = {n: stmt.excluded[n] for n in names if n not in keys and n not in _KEEP_ON_CONFLICT}
            if updates:
                stmt = stmt.on_conflict_do_update(index_elements=keys, set_=updates)
            else:
                stmt = stmt.on_conflict_do_nothing(index_elements=keys)
            conn.execute(stmt, group)
