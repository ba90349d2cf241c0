"""Fixtures for the storage tests: a throwaway PostgreSQL database per test.

Imported by the test modules that use them (tests/conftest.py belongs to the
whole suite). PostgreSQL is looked for at PGHOST:PGPORT (127.0.0.1:5432) with
the users postgres and root (trust auth), as CI runs it; when no server
answers, the PostgreSQL variants are skipped and say why.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

PG_HOST = os.environ.get("PGHOST", "127.0.0.1")
PG_PORT = int(os.environ.get("PGPORT", "5432"))
PG_USERS = ("postgres", "root")


def _admin_connection():
    """An autocommit connection to the server's `test` (or `postgres`) database, or the reason there is none."""
    import psycopg

    problems = []
    for user in PG_USERS:
        for dbname in ("test", "postgres"):
            try:
                return psycopg.connect(
                    host=PG_HOST, port=PG_PORT, user=user, dbname=dbname, autocommit=True, connect_timeout=3
                ), user
            except psycopg.Error as exc:
                problems.append(f"{user}@{dbname}: {str(exc).strip().splitlines()[0]}")
    return None, "; ".join(problems)


@pytest.fixture
def postgres_url() -> Iterator[str]:
    """A fresh database camtrace_test_<random> on the local server, dropped afterwards."""
    conn, user = _admin_connection()
    if conn is None:
        pytest.skip(f"no PostgreSQL server answers at {PG_HOST}:{PG_PORT} ({user})")
    name = f"camtrace_test_{uuid.uuid4().hex[:12]}"
    with conn:
        conn.execute(f'CREATE DATABASE "{name}"')
        try:
            yield f"postgresql+psycopg://{user}@{PG_HOST}:{PG_PORT}/{name}"
        finally:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture(params=["sqlite", "postgresql"])
def url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """The same test on SQLite (a file in the test's folder) and on a fresh PostgreSQL database."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'data' / 'camtrace.db'}"
    return request.getfixturevalue("postgres_url")
