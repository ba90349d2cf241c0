"""The feedback table on SQLite and on a real PostgreSQL: the newest verdict on an unordered pair
wins, and training reads the current verdicts with who gave them and when."""

from __future__ import annotations

from pathlib import Path

import pytest
from storage_fixtures import postgres_url  # noqa: F401  (fixture)

from camtrace.errors import StorageError
from camtrace.storage.sql import Database


@pytest.fixture(params=["sqlite", "postgresql"])
def db(request: pytest.FixtureRequest, tmp_path: Path):
    url = f"sqlite:///{tmp_path / 'camtrace.db'}" if request.param == "sqlite" else request.getfixturevalue("postgres_url")
    database = Database(url)
    database.migrate()
    yield database
    database.close()


def test_newest_verdict_per_pair_wins_and_training_reads_them(db: Database) -> None:
    db.add_feedback("a", "b", "same", "ines", created_at=100.0)
    db.add_feedback("a", "c", "different", "ines", created_at=110.0)
    db.add_feedback("b", "a", "different", "omar", created_at=120.0)  # the same pair, the other way round
    db.add_feedback("d", "e", "same", "omar", created_at=130.0)

    current = [(f.track_id, f.candidate_track_id, f.verdict, f.username, f.created_at) for f in db.feedback_pairs()]
    assert current == [
        ("a", "c", "different", "ines", 110.0),
        ("b", "a", "different", "omar", 120.0),
        ("d", "e", "same", "omar", 130.0),
    ]
    assert [f.candidate_track_id for f in db.feedback_pairs(verdict="same")] == ["e"]
    assert [f.track_id for f in db.feedback_pairs(since=115.0)] == ["b", "d"]
    assert {(f.track_id, f.candidate_track_id) for f in db.feedback_for(["a"])} == {("a", "c"), ("b", "a")}
    assert db.feedback_for(["zzz"]) == []


def test_bad_feedback_is_refused(db: Database) -> None:
    with pytest.raises(StorageError, match="verdict 'maybe'"):
        db.add_feedback("a", "b", "maybe", "ines")
    with pytest.raises(StorageError, match="two different tracks"):
        db.add_feedback("a", "a", "same", "ines")
    with pytest.raises(StorageError, match="verdict 'unsure'"):
        db.feedback_pairs(verdict="unsure")
    assert db.feedback_pairs() == []
