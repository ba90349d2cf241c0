"""The tamper-evident audit log on SQLite and PostgreSQL: a change and its row commit together, the hash chain
survives concurrent writers, and `camtrace audit verify` names the row that was deleted, changed or inserted
directly in the database (triggers dropped to do so)."""

from __future__ import annotations

import json
import multiprocessing
import os
import threading
from pathlib import Path

import pytest
from click.testing import CliRunner
from sqlalchemy import text
from storage_fixtures import postgres_url, url  # noqa: F401  (fixtures)

from camtrace.errors import StorageError
from camtrace.storage.access import AccessStore
from camtrace.storage.audit import GENESIS_HASH
from camtrace.storage.sql import Database, alembic_config


@pytest.fixture
def access(url: str):
    db = Database(url)
    db.migrate()
    yield AccessStore(db)
    db.close()


def cli(url: str, *args: str):
    from camtrace.cli import cli as camtrace_cli

    env = {"CAMTRACE_DATABASE_URL": url, "CAMTRACE_DATA_DIR": str(Path(os.environ.get("TMPDIR", "/tmp")) / "audit-cli")}
    return CliRunner().invoke(camtrace_cli, list(args), env=env)


def drop_triggers(db: Database) -> None:
    with db.engine.begin() as conn:
        if db.dialect == "postgresql":
            conn.execute(text("DROP TRIGGER audit_log_append_only ON audit_log"))
        else:
            conn.execute(text("DROP TRIGGER audit_log_no_update"))
            conn.execute(text("DROP TRIGGER audit_log_no_delete"))


def fill(access: AccessStore, rows: int = 6) -> None:
    for i in range(rows):
        access.audit(f"user{i % 2}", "search_text", {"text": f"red coat {i}"}, [f"t{i}"], "10.0.0.1")


def test_an_untouched_log_verifies_and_its_head_can_be_exported(access: AccessStore, url: str) -> None:
    assert access.verify_audit().ok and access.audit_head() == (0, GENESIS_HASH)
    fill(access)
    report = access.verify_audit()
    assert report.ok and report.rows == 6 and (report.last_id, report.last_hash) == access.audit_head()
    head = cli(url, "audit", "head")
    assert head.exit_code == 0 and head.stdout.strip() == f"6:{report.last_hash}"
    verified = cli(url, "audit", "verify", "--anchor", head.stdout.strip())
    assert verified.exit_code == 0 and "intact: 6 rows" in verified.stdout
    assert access.verify_audit([(6, "f" * 64)]).bad_row == 6  # a wrong anchor is not taken for good


@pytest.mark.parametrize(
    "tamper, bad_row, words",
    [
        ("DELETE FROM audit_log WHERE id = 3", 4, "row 3 is missing"),
        ('UPDATE audit_log SET detail = \'{"text": "blue coat"}\' WHERE id = 2', 2, "changed"),
        ("UPDATE audit_log SET client = '10.9.9.9' WHERE id = 5", 5, "changed"),
        (
            "INSERT INTO audit_log (id, ts, username, action, detail, result_ids, client, prev_hash, hash) "
            "VALUES (7, 1, 'x', 'login', '{}', '[]', 'cli', 'p', 'h')",
            7,
            "does not follow",
        ),
        ("DELETE FROM audit_log WHERE id >= 5", 6, "newest rows were deleted"),
    ],
)
def test_verify_names_the_first_row_deleted_changed_or_inserted_behind_the_log(
    access: AccessStore, url: str, tamper: str, bad_row: int, words: str
) -> None:
    fill(access)
    with access.db.engine.begin() as conn, pytest.raises(Exception, match="append-only"):
        conn.execute(text("DELETE FROM audit_log WHERE id = 3"))  # the triggers hold until dropped
    drop_triggers(access.db)
    with access.db.engine.begin() as conn:
        conn.execute(text(tamper))
    report = access.verify_audit()
    assert not report.ok and report.bad_row == bad_row and words in report.problem, report
    result = cli(url, "audit", "verify")
    assert result.exit_code == 1 and f"at row {bad_row}" in result.stderr


def test_a_rewritten_chain_is_caught_by_an_exported_hash(access: AccessStore) -> None:
    """Someone who rewrites every hash after an edit (and the head) still fails the check against the hash
    exported before."""
    from camtrace.storage.audit import audit_hash

    fill(access)
    anchor = access.audit_head()
    drop_triggers(access.db)
    with access.db.engine.begin() as conn:
        conn.execute(text("UPDATE audit_log SET username = 'nobody' WHERE id = 2"))
        prev = GENESIS_HASH
        for row in conn.execute(text("SELECT * FROM audit_log ORDER BY id")).mappings().all():
            new = audit_hash(
                prev, row["id"], row["ts"], row["username"], row["action"], row["detail"], row["result_ids"], row["client"]
            )
            conn.execute(
                text("UPDATE audit_log SET prev_hash = :p, hash = :h WHERE id = :i"), {"p": prev, "h": new, "i": row["id"]}
            )
            prev = new
        conn.execute(text("UPDATE audit_chain SET last_hash = :h"), {"h": prev})
    assert access.verify_audit().ok  # self-consistent again ...
    report = access.verify_audit([anchor])
    assert not report.ok and report.bad_row == anchor[0] and "rewritten" in report.problem  # ... but not the one exported


def _append_many(url: str, writer: int, count: int) -> None:
    db = Database(url)
    access = AccessStore(db)
    for i in range(count):
        access.audit(f"w{writer}", "search_text", {"i": i}, client=f"proc{writer}")
    db.close()


def test_concurrent_writers_in_threads_and_processes_never_fork_the_chain(access: AccessStore, url: str) -> None:
    threads = [threading.Thread(target=fill, args=(access, 15)) for _ in range(3)]
    context = multiprocessing.get_context("spawn")
    procs = [context.Process(target=_append_many, args=(url, n, 15)) for n in range(2)]
    for worker in (*threads, *procs):
        worker.start()
    for thread in threads:
        thread.join()
    for proc in procs:
        proc.join(timeout=120)
    assert [proc.exitcode for proc in procs] == [0, 0]
    report = access.verify_audit()
    assert report.ok and report.rows == 75 and report.last_id == 75, report
    with access.db.engine.connect() as conn:
        hashes = [row[0] for row in conn.execute(text("SELECT prev_hash FROM audit_log"))]
    assert len(set(hashes)) == 75  # each row follows a different row: no two appends saw the same head


def test_a_change_whose_audit_row_fails_is_not_made(access: AccessStore) -> None:
    """The fault is real: a trigger makes the database refuse audit inserts."""
    db = access.db
    with db.engine.begin() as conn:
        if db.dialect == "postgresql":
            conn.execute(
                text(
                    "CREATE FUNCTION refuse_audit() RETURNS trigger AS $$ BEGIN RAISE EXCEPTION "
                    "'audit inserts refused'; END; $$ LANGUAGE plpgsql"
                )
            )
            conn.execute(
                text("CREATE TRIGGER refuse_audit BEFORE INSERT ON audit_log FOR EACH ROW EXECUTE FUNCTION refuse_audit()")
            )
        else:
            conn.execute(
                text(
                    "CREATE TRIGGER refuse_audit BEFORE INSERT ON audit_log BEGIN SELECT RAISE(ABORT, 'audit inserts refused'); END"
                )
            )
    with pytest.raises(StorageError), access.audited("admin", "user_add", {"username": "ghost"}):
        access.add_user("ghost", "admin", password="long enough password")
    with pytest.raises(StorageError), access.audited("ines", "feedback"):
        db.add_feedback("a:0:1", "b:0:2", "same", "ines")
    assert [u.username for u, _ in access.users()] == [] and db.feedback_pairs() == []
    assert access.check_password("ghost", "long enough password") is None
    assert access.verify_audit().ok and access.audit_head()[0] == 0


def test_migration_chains_old_rows_gives_tokens_ids_and_makes_video_paths_absolute(
    url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from alembic import command

    db = Database(url)
    config = alembic_config(url)
    with db.engine.begin() as conn:
        config.attributes["connection"] = conn
        command.upgrade(config, "0005")
    footage = tmp_path / "site" / "footage"
    footage.mkdir(parents=True)
    (footage / "cam1.mp4").write_bytes(b"video")
    with db.engine.begin() as conn:
        conn.execute(text("INSERT INTO cameras (id, created_at, status, reconnects) VALUES ('cam1', 0, 'offline', 0)"))
        for vid, source in (("v1", "footage/cam1.mp4"), ("v2", "gone/cam9.mp4"), ("v3", "rtsp://cam/stream")):
            conn.execute(
                text(
                    "INSERT INTO videos (id, camera_id, source, fps, width, height, start_ts, created_at) "
                    "VALUES (:id, 'cam1', :source, 25, 64, 48, 0, 0)"
                ),
                {"id": vid, "source": source},
            )
        conn.execute(text("INSERT INTO users (username, role, created_at) VALUES ('ines', 'admin', 0)"))
        conn.execute(text("INSERT INTO api_tokens (token_hash, username, created_at) VALUES ('abc', 'ines', 0)"))
        for i in range(3):
            conn.execute(
                text(
                    "INSERT INTO audit_log (ts, username, action, detail, result_ids, client) "
                    "VALUES (:ts, 'ines', 'login', '{}', '[]', 'cli')"
                ),
                {"ts": 1000.0 + i},
            )
    monkeypatch.chdir(tmp_path / "site")  # where `camtrace ingest footage/cam1.mp4` was typed
    db.migrate()
    monkeypatch.chdir(tmp_path)
    with db.engine.connect() as conn:
        sources = dict(conn.execute(text("SELECT id, source FROM videos")).all())
        token_ids = [row[0] for row in conn.execute(text("SELECT id FROM api_tokens"))]
    assert sources == {"v1": str((footage / "cam1.mp4").resolve()), "v2": "gone/cam9.mp4", "v3": "rtsp://cam/stream"}
    assert len(token_ids) == 1 and token_ids[0]
    access = AccessStore(db)
    assert access.verify_audit().ok and access.audit_head()[0] == 3
    access.audit("ines", "login")
    report = access.verify_audit()
    assert report.ok and report.rows == 4
    assert json.loads(json.dumps(report.as_dict()))["last_id"] == 4
    db.close()
