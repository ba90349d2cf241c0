"""The audit log: append-only and tamper-evident, written in the same transaction as the change it records.

This module has no call that updates or deletes an audit row, and database triggers refuse both. Each row
carries a SHA-256 hash over its content and the previous row's hash; the newest (id, hash) is kept in the
one-row table ``audit_chain``, which every append locks first, so concurrent writers take turns and never fork
the chain. ``verify_audit`` walks the chain and names the first row that does not fit (a row deleted, changed
or inserted behind the application's back), and the newest hash can be exported and checked later against the
log. A change and its audit row are written in one transaction (``audited``): a change that cannot be audited
is not made.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import Float, Integer, String, Text, select, update
from sqlalchemy.engine import Connection
from sqlalchemy.orm import Mapped, mapped_column

from camtrace.storage.sql import Base, Database

GENESIS_HASH = "0" * 64


class AuditEvent(Base):
    __tablename__ = "audit_log"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    ts: Mapped[float] = mapped_column(Float, index=True)
    username: Mapped[str | None] = mapped_column(String, index=True)  # None: an unknown name at login
    action: Mapped[str] = mapped_column(String)
    detail: Mapped[str] = mapped_column(Text)  # JSON object
    result_ids: Mapped[str] = mapped_column(Text)  # JSON list of track ids (or other ids) the action returned
    client: Mapped[str | None] = mapped_column(String)
    prev_hash: Mapped[str | None] = mapped_column(String)  # the previous row's hash (GENESIS_HASH for the first)
    hash: Mapped[str | None] = mapped_column(String)  # audit_hash() of this row


class AuditChain(Base):
    """The head of the audit chain: one row (id 1), locked by every append."""

    __tablename__ = "audit_chain"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    last_id: Mapped[int] = mapped_column(Integer)
    last_hash: Mapped[str] = mapped_column(String)


@dataclass(frozen=True)
class AuditRecord:
    id: int
    ts: float
    username: str | None
    action: str
    detail: dict
    result_ids: list[str]
    client: str | None

    def as_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


@dataclass
class AuditEntry:
    """An audit row being prepared: a change may add to it (a new id) before it is written."""

    username: str | None
    action: str
    detail: dict[str, Any] = field(default_factory=dict)
    result_ids: list[str] = field(default_factory=list)
    client: str | None = None


@dataclass(frozen=True)
class ChainReport:
    """What ``verify_audit`` found: ``ok``, or the first row that does not fit and why."""

    ok: bool
    rows: int
    last_id: int
    last_hash: str
    bad_row: int | None = None
    problem: str | None = None

    def as_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


def audit_hash(
    prev_hash: str, row_id: int, ts: float, username: str | None, action: str, detail: str, result_ids: str, client: str | None
) -> str:
    """SHA-256 over a row's stored content and the previous row's hash (the JSON texts as stored)."""
    content = json.dumps(
        [prev_hash, int(row_id), repr(float(ts)), username, action, detail, result_ids, client],
        ensure_ascii=True,
        separators=(",", ":"),
    )
    return hashlib.sha256(content.encode()).hexdigest()


class AuditLog:
    """The audit log of the metadata database ``db``."""

    def __init__(self, db: Database) -> None:
        self.db = db

    @contextlib.contextmanager
    def audited(
        self,
        username: str | None,
        action: str,
        detail: dict[str, Any] | None = None,
        result_ids: Sequence[str] = (),
        client: str | None = None,
    ) -> Iterator[AuditEntry]:
        """Make a change and write its audit row in one transaction; the block may add to the entry."""
        entry = AuditEntry(username, action, dict(detail or {}), list(result_ids), client)
        with self.db.transaction(f"saving {action}"):
            yield entry
            self.audit(entry.username, entry.action, entry.detail, entry.result_ids, entry.client)

    # Audit log (append-only, hash-chained) --------------------------------------------
    def audit(
        self,
        username: str | None,
        action: str,
        detail: dict[str, Any] | None = None,
        result_ids: Sequence[str] = (),
        client: str | None = None,
    ) -> int:
        """Append one row to the chain (joining an open ``audited`` transaction); returns its id."""
        with self.db.write(f"writing the audit log ({action})") as conn:
            last_id, last_hash = self._lock_chain(conn)
            row = {
                "id": last_id + 1,
                "ts": time.time(),
                "username": username,
                "action": action,
                "detail": json.dumps(detail or {}, default=str, sort_keys=True),
                "result_ids": json.dumps(list(result_ids)),
                "client": client,
            }
            row_hash = audit_hash(last_hash, **{("row_id" if k == "id" else k): v for k, v in row.items()})
            conn.execute(AuditEvent.__table__.insert().values(**row, prev_hash=last_hash, hash=row_hash))
            conn.execute(update(AuditChain).where(AuditChain.id == 1).values(last_id=row["id"], last_hash=row_hash))
        return row["id"]

    def _lock_chain(self, conn: Connection) -> tuple[int, str]:
        """The chain's head, locked until the transaction ends: appends take turns, so the chain never forks."""
        query = select(AuditChain.last_id, AuditChain.last_hash).where(AuditChain.id == 1)
        if self.db.dialect == "postgresql":
            query = query.with_for_update()
        else:
            # SQLite: a write first takes the database's write lock (readers never block it); the head read
            # after it is then the newest.
            conn.execute(update(AuditChain).where(AuditChain.id == 1).values(last_id=AuditChain.last_id))
        head = conn.execute(query).first()
        if head is None:
            conn.execute(AuditChain.__table__.insert().values(id=1, last_id=0, last_hash=GENESIS_HASH))
            return 0, GENESIS_HASH
        return int(head.last_id), str(head.last_hash)

    def audit_head(self) -> tuple[int, str]:
        """The newest row's id and hash: export them to check the log against later (``verify_audit``)."""
        with self.db.guard("reading the audit chain"), self.db.engine.connect() as conn:
            head = conn.execute(select(AuditChain.last_id, AuditChain.last_hash).where(AuditChain.id == 1)).first()
        return (int(head.last_id), str(head.last_hash)) if head else (0, GENESIS_HASH)

    def verify_audit(self, anchors: Sequence[tuple[int, str]] = (), page_size: int = 2000) -> ChainReport:
        """Walk the chain from the first row: each row's hash must match its content and the previous row's hash,
        the last row must be the head, and each exported (id, hash) anchor must still be in the chain."""
        walk = _ChainWalk(dict(anchors))
        while True:
            query = select(AuditEvent).where(AuditEvent.id > walk.prev_id).order_by(AuditEvent.id).limit(page_size)
            with self.db.guard("reading the audit log"), self.db.engine.connect() as conn:
                page = conn.execute(query).all()
                head = conn.execute(select(AuditChain.last_id, AuditChain.last_hash).where(AuditChain.id == 1)).first()
            head_id, head_hash = (int(head.last_id), str(head.last_hash)) if head else (0, GENESIS_HASH)
            for row in page:
                if (problem := walk.step(row, head_id)) is not None:
                    return problem
            if len(page) == page_size or (head_id > walk.prev_id and page):  # a full page, or appended meanwhile
                continue
            return walk.end(head_id, head_hash)

    def audit_rows(
        self,
        *,
        username: str | None = None,
        since: float | None = None,
        until: float | None = None,
        action: str | None = None,
        limit: int = 100,
        offset: int = 0,
    ) -> list[AuditRecord]:
        """Newest first."""
        query = select(AuditEvent).order_by(AuditEvent.id.desc()).limit(limit).offset(offset)
        if username is not None:
            query = query.where(AuditEvent.username == username)
        if since is not None:
            query = query.where(AuditEvent.ts >= since)
        if until is not None:
            query = query.where(AuditEvent.ts <= until)
        if action is not None:
            query = query.where(AuditEvent.action == action)
        with self.db.guard("reading the audit log"), self.db.engine.connect() as conn:
            rows = conn.execute(query).all()
        return [
            AuditRecord(row.id, row.ts, row.username, row.action, json.loads(row.detail), json.loads(row.result_ids), row.client)
            for row in rows
        ]


class _ChainWalk:
    """Where a walk along the audit chain stands: the last row that fit and the anchors not yet met."""

    def __init__(self, expected: dict[int, str]) -> None:
        self.expected = expected
        self.prev_id, self.prev_hash, self.rows = 0, GENESIS_HASH, 0

    def bad(self, row_id: int, problem: str) -> ChainReport:
        return ChainReport(False, self.rows, self.prev_id, self.prev_hash, row_id, problem)

    def step(self, row: Any, head_id: int) -> ChainReport | None:
        """The next row of the log: None when it fits, else what is wrong with it."""
        prev_id = self.prev_id
        if row.prev_hash != self.prev_hash:
            gap = (
                ""
                if row.id == prev_id + 1
                else (
                    f"; row {prev_id + 1} is missing"
                    if row.id == prev_id + 2
                    else f"; rows {prev_id + 1} to {row.id - 1} are missing"
                )
            )
            return self.bad(
                row.id, f"row {row.id} does not follow row {prev_id}: a row between them was deleted, changed or inserted{gap}"
            )
        content = audit_hash(row.prev_hash, row.id, row.ts, row.username, row.action, row.detail, row.result_ids, row.client)
        if row.hash != content:
            return self.bad(row.id, f"row {row.id} was changed after it was written (its hash does not match)")
        if row.id in self.expected and self.expected.pop(row.id) != row.hash:
            return self.bad(row.id, f"row {row.id} no longer carries the exported hash: the log was rewritten")
        self.prev_id, self.prev_hash, self.rows = row.id, row.hash, self.rows + 1
        if row.id > head_id:
            return self.bad(row.id, f"row {row.id} lies past the chain's head (row {head_id}): it was inserted")
        return None

    def end(self, head_id: int, head_hash: str) -> ChainReport:
        """The log is read to its end: it must end at the chain's head, with every anchor met."""
        if head_id > self.prev_id:
            return self.bad(
                head_id, f"the log ends at row {self.prev_id} but the chain's head is row {head_id}: the newest rows were deleted"
            )
        if head_hash != self.prev_hash:
            return self.bad(self.prev_id, f"the chain's head does not match row {self.prev_id}: the head or the log was rewritten")
        if self.expected:
            missing = min(self.expected)
            return self.bad(missing, f"row {missing} named by an exported hash is no longer in the log")
        return ChainReport(True, self.rows, self.prev_id, self.prev_hash)
