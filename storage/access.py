"""Who may use the service, and what they did: users, API tokens, login sessions and the audit log.

Secrets are never stored: passwords as Argon2 hashes (argon2-cffi), API tokens
and session ids as SHA-256 hashes (they are 256-bit random strings, so a fast
hash is enough: nobody can guess a preimage). A token has a short public id
(to list and revoke it) and an optional expiry.

The audit log is append-only and tamper-evident. This module has no call that
updates or deletes an audit row, and database triggers refuse both. Each row
carries a SHA-256 hash over its content and the previous row's hash; the
newest (id, hash) is kept in the one-row table ``audit_chain``, which every
append locks first, so concurrent writers take turns and never fork the chain.
``verify_audit`` walks the chain and names the first row that does not fit (a
row deleted, changed or inserted behind the application's back), and the
newest hash can be exported and checked later against the log.

A change and its audit row are written in one transaction (``audited``): a
change that cannot be audited is not made.

Failed logins are slowed down per (name, client address), per address and
globally, with an exponential waiting time (``login_retry_after``) that the
API answers with 429 and ``Retry-After``; the server never sleeps to slow
anyone down. At most ``HASH_SLOTS`` Argon2 checks run at once, so a flood of
logins cannot take the CPU and memory that searches need.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import secrets
import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError
from camtrace.storage.sql import Base, Database
from sqlalchemy import Float, ForeignKey, Integer, String, Text, delete, func, select, update
from sqlalchemy.engine import Connection
from sqlalchemy.orm import Mapped, mapped_column

from camtrace import validation
from camtrace.enums import Role
from camtrace.errors import InputError, NotFoundError, TooManyAttemptsError

ROLES = tuple(Role)
SESSION_SECONDS = 12 * 3600
MAX_LOGIN_WAIT_SECONDS = 900.0
# Failed logins allowed before waiting starts (then 1 s, 2 s, 4 s ... up to 15 minutes), per
# (name, address), per address whatever the names, and for the whole service.
FREE_LOGIN_FAILURES = 5
FREE_ADDRESS_FAILURES = 20
FREE_GLOBAL_FAILURES = 200
# An address's or the service's count starts afresh this long after its last failure.
FAILURE_MEMORY_SECONDS = 3600.0
# Keys of the per-address and global counters in login_failures (a real login name is never empty).
_ANY_NAME = ""
_ANY_CLIENT = ""
# Argon2 checks running at once (each takes 64 MiB and a core for tens of ms); a login that finds
# every slot taken for this long is answered 429 instead of waiting on a server thread.
HASH_SLOTS = 2
HASH_WAIT_SECONDS = 0.5
GENESIS_HASH = "0" * 64

_hasher = PasswordHasher()
_hash_slots = threading.BoundedSemaphore(HASH_SLOTS)
# Verified against when the username is unknown, so both cases take as long.
_DUMMY_HASH = _hasher.hash("camtrace-no-such-user")


class User(Base):
    __tablename__ = "users"

    username: Mapped[str] = mapped_column(String, primary_key=True)
    role: Mapped[str] = mapped_column(String)
    cameras: Mapped[str | None] = mapped_column(Text)  # JSON list; NULL: every camera
    password_hash: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[float] = mapped_column(Float, default=time.time)


class ApiToken(Base):
    __tablename__ = "api_tokens"

    token_hash: Mapped[str] = mapped_column(String, primary_key=True)
    username: Mapped[str] = mapped_column(ForeignKey("users.username", ondelete="CASCADE"), index=True)
    created_at: Mapped[float] = mapped_column(Float, default=time.time)
    id: Mapped[str | None] = mapped_column(String, unique=True, index=True)  # public: names the token to list/revoke it
    expires_at: Mapped[float | None] = mapped_column(Float)  # NULL: never


class LoginSession(Base):
    __tablename__ = "login_sessions"

    session_hash: Mapped[str] = mapped_column(String, primary_key=True)
    username: Mapped[str] = mapped_column(ForeignKey("users.username", ondelete="CASCADE"), index=True)
    created_at: Mapped[float] = mapped_column(Float, default=time.time)
    expires_at: Mapped[float] = mapped_column(Float)


class LoginFailure(Base):
    __tablename__ = "login_failures"

    username: Mapped[str] = mapped_column(String, primary_key=True)  # "": every name (per address, or global)
    client: Mapped[str] = mapped_column(String, primary_key=True)  # "": every address (global)
    failures: Mapped[int] = mapped_column(Integer, default=0)
    last_failed_at: Mapped[float] = mapped_column(Float)


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
class Principal:
    """The authenticated caller: what the API checks roles and camera limits against."""

    username: str
    role: str
    cameras: tuple[str, ...] | None  # None: every camera

    def as_dict(self) -> dict[str, Any]:
        return {"username": self.username, "role": self.role, "cameras": list(self.cameras) if self.cameras is not None else None}


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
class TokenInfo:
    """A token as listed: never the secret, which is shown once when it is made."""

    id: str
    username: str
    created_at: float
    expires_at: float | None

    def as_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


@dataclass(frozen=True)
class NewToken(TokenInfo):
    token: str = ""


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


def secret_hash(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def new_secret() -> str:
    return secrets.token_urlsafe(32)


def audit_hash(prev_hash: str, row_id: int, ts: float, username: str | None, action: str, detail: str,
               result_ids: str, client: str | None) -> str:
    """SHA-256 over a row's stored content and the previous row's hash (the JSON texts as stored)."""
    content = json.dumps([prev_hash, int(row_id), repr(float(ts)), username, action, detail, result_ids, client],
                         ensure_ascii=True, separators=(",", ":"))
    return hashlib.sha256(content.encode()).hexdigest()


def _principal(user: User) -> Principal:
    cameras = tuple(json.loads(user.cameras)) if user.cameras is not None else None
    return Principal(user.username, user.role, cameras)


def login_wait_seconds(failures: int, free: int = FREE_LOGIN_FAILURES) -> float:
    """How long after the last failure the next attempt must wait."""
    if failures < free:
        return 0.0
    return min(MAX_LOGIN_WAIT_SECONDS, 2.0 ** (failures - free))


def _failure_keys(username: str, client: str) -> list[tuple[str, str, int]]:
    """The counters one failed login adds to: (name, address), the address, everything; with their free attempts."""
    return [(username, client, FREE_LOGIN_FAILURES), (_ANY_NAME, client, FREE_ADDRESS_FAILURES),
            (_ANY_NAME, _ANY_CLIENT, FREE_GLOBAL_FAILURES)]


def _token_info(row: ApiToken) -> TokenInfo:
    return TokenInfo(row.id or "", row.username, row.created_at, row.expires_at)


class AccessStore:
    """Users, tokens, sessions, login throttling and the audit log, in the metadata database."""

    def __init__(self, db: Database) -> None:
        self.db = db

    # Audited changes -----------------------------------------------------------
    @contextlib.contextmanager
    def audited(
        self, username: str | None, action: str, detail: dict[str, Any] | None = None,
        result_ids: Sequence[str] = (), client: str | None = None,
    ) -> Iterator[AuditEntry]:
        """Make a change and write its audit row in one transaction; the block may add to the entry."""
        entry = AuditEntry(username, action, dict(detail or {}), list(result_ids), client)
        with self.db.transaction(f"saving {action}"):
            yield entry
            self.audit(entry.username, entry.action, entry.detail, entry.result_ids, entry.client)

    # Users ------------------------------------------------------------------
    def add_user(
        self, username: str, role: str, cameras: Sequence[str] | None = None, password: str | None = None,
        *, token_expires_at: float | None = None,
    ) -> NewToken:
        """Create a user and return a first API token (shown once)."""
        validation.username(username)
        if role not in ROLES:
            raise InputError(f"role '{role}' is not one of {', '.join(ROLES)}")
        cameras = validation.camera_ids(cameras)
        password_hash = self._hash_password(validation.password(password)) if password else None
        with self.db.transaction(f"adding user {username}") as conn:
            if conn.execute(select(User.username).where(User.username == username)).first():
                raise InputError(f"user '{username}' exists already; remove it first or pick another name")
            conn.execute(
                User.__table__.insert().values(
                    username=username,
                    role=role,
                    cameras=json.dumps(list(cameras)) if cameras is not None else None,
                    password_hash=password_hash,
                    created_at=time.time(),
                )
            )
            return self._insert_token(conn, username, token_expires_at)

    def users(self) -> list[tuple[Principal, float]]:
        with self.db.guard("listing users"), self.db.engine.connect() as conn:
            rows = conn.execute(select(User).order_by(User.username)).all()
        return [(_principal(row), row.created_at) for row in rows]

    def user_count(self) -> int:
        with self.db.guard("counting users"), self.db.engine.connect() as conn:
            return int(conn.execute(select(func.count()).select_from(User)).scalar_one())

    def get_user(self, username: str) -> Principal:
        with self.db.guard(f"reading user {username}"), self.db.engine.connect() as conn:
            row = conn.execute(select(User).where(User.username == username)).first()
        if row is None:
            raise NotFoundError(f"no user '{username}'; `camtrace user list` shows the users")
        return _principal(row)

    def remove_user(self, username: str) -> None:
        with self.db.write(f"removing user {username}") as conn:
            # Tokens and sessions go first: SQLite enforces no cascade without the foreign-keys pragma.
            conn.execute(delete(ApiToken).where(ApiToken.username == username))
            conn.execute(delete(LoginSession).where(LoginSession.username == username))
            if conn.execute(delete(User).where(User.username == username)).rowcount == 0:
                raise NotFoundError(f"no user '{username}'; `camtrace user list` shows the users")

    def set_password(self, username: str, password: str) -> None:
        password_hash = self._hash_password(validation.password(password))
        with self.db.write(f"setting the password of {username}") as conn:
            updated = conn.execute(
                User.__table__.update().where(User.username == username).values(password_hash=password_hash)
            ).rowcount
            if updated == 0:
                raise NotFoundError(f"no user '{username}'; `camtrace user list` shows the users")
            conn.execute(delete(LoginSession).where(LoginSession.username == username))

    # Tokens -------------------------------------------------------------------
    def create_token(self, username: str, expires_at: float | None = None) -> NewToken:
        """Another API token for ``username`` (the secret is in the answer only), valid until ``expires_at``."""
        with self.db.write(f"creating a token for {username}") as conn:
            if conn.execute(select(User.username).where(User.username == username)).first() is None:
                raise NotFoundError(f"no user '{username}'; `camtrace user list` shows the users")
            return self._insert_token(conn, username, expires_at)

    @staticmethod
    def _insert_token(conn: Connection, username: str, expires_at: float | None) -> NewToken:
        if expires_at is not None:
            expires_at = validation.moment(expires_at, "the expiry")
            if expires_at <= time.time():
                raise InputError("a token's expiry must lie in the future")
        token, now = new_secret(), time.time()
        token_id = secrets.token_hex(6)
        conn.execute(ApiToken.__table__.insert().values(
            token_hash=secret_hash(token), id=token_id, username=username, created_at=now, expires_at=expires_at
        ))
        return NewToken(token_id, username, now, expires_at, token)

    def tokens(self, username: str) -> list[TokenInfo]:
        """A user's tokens, oldest first (expired ones included, marked by ``expires_at``)."""
        self.get_user(username)
        with self.db.guard(f"listing the tokens of {username}"), self.db.engine.connect() as conn:
            rows = conn.execute(
                select(ApiToken).where(ApiToken.username == username).order_by(ApiToken.created_at, ApiToken.id)
            ).all()
        return [_token_info(row) for row in rows]

    def revoke_token(self, token_id: str) -> TokenInfo:
        """Delete one token by its public id; returns what it was."""
        with self.db.write(f"revoking token {token_id}") as conn:
            row = conn.execute(select(ApiToken).where(ApiToken.id == token_id)).first()
            if row is None:
                raise NotFoundError(f"no token '{token_id}'; `camtrace token list NAME` shows a user's tokens")
            conn.execute(delete(ApiToken).where(ApiToken.id == token_id))
        return _token_info(row)

    def user_for_token(self, token: str) -> Principal | None:
        now = time.time()
        with self.db.guard("checking a token"), self.db.engine.connect() as conn:
            row = conn.execute(
                select(User).join(ApiToken, ApiToken.username == User.username).where(
                    ApiToken.token_hash == secret_hash(token),
                    (ApiToken.expires_at.is_(None)) | (ApiToken.expires_at > now),
                )
            ).first()
        return _principal(row) if row else None

    # Passwords and sessions -------------------------------------------------------
    @staticmethod
    @contextlib.contextmanager
    def _hash_slot() -> Iterator[None]:
        if not _hash_slots.acquire(timeout=HASH_WAIT_SECONDS):
            raise TooManyAttemptsError("the server is busy checking other logins; try again in a second", 1.0)
        try:
            yield
        finally:
            _hash_slots.release()

    def _hash_password(self, password: str) -> str:
        with self._hash_slot():
            return _hasher.hash(password)

    def check_password(self, username: str, password: str) -> Principal | None:
        with self.db.guard("checking a password"), self.db.engine.connect() as conn:
            row = conn.execute(select(User).where(User.username == username)).first()
        stored = row.password_hash if row is not None and row.password_hash else _DUMMY_HASH
        with self._hash_slot():
            try:
                _hasher.verify(stored, password)
            except (VerificationError, InvalidHashError):
                return None
        return _principal(row) if row is not None and row.password_hash else None

    def create_session(self, username: str, seconds: float = SESSION_SECONDS) -> str:
        session_id = new_secret()
        now = time.time()
        with self.db.write("opening a session") as conn:
            conn.execute(delete(LoginSession).where(LoginSession.expires_at < now))
            conn.execute(
                LoginSession.__table__.insert().values(
                    session_hash=secret_hash(session_id), username=username, created_at=now, expires_at=now + seconds
                )
            )
        return session_id

    def user_for_session(self, session_id: str) -> Principal | None:
        with self.db.guard("checking a session"), self.db.engine.connect() as conn:
            row = conn.execute(
                select(User)
                .join(LoginSession, LoginSession.username == User.username)
                .where(LoginSession.session_hash == secret_hash(session_id), LoginSession.expires_at > time.time())
            ).first()
        return _principal(row) if row else None

    def end_session(self, session_id: str) -> str | None:
        """Close a session; returns whose it was (None: no such open session)."""
        with self.db.write("closing a session") as conn:
            owner = conn.execute(
                select(LoginSession.username).where(LoginSession.session_hash == secret_hash(session_id))
            ).scalar()
            conn.execute(delete(LoginSession).where(LoginSession.session_hash == secret_hash(session_id)))
        return owner

    # Login throttling -------------------------------------------------------------
    def login_retry_after(self, username: str, client: str, now: float | None = None) -> float:
        """Seconds before the next login attempt of this name from this address (0: may try now): the longest
        wait of the (name, address), the address and the global counters."""
        now = time.time() if now is None else now
        keys = _failure_keys(username, client)
        with self.db.guard("checking login failures"), self.db.engine.connect() as conn:
            rows = {
                (row.username, row.client): row
                for row in conn.execute(select(LoginFailure).where(
                    LoginFailure.client.in_({client, _ANY_CLIENT}), LoginFailure.username.in_({username, _ANY_NAME})
                ))
            }
        wait = 0.0
        for name, address, free in keys:
            row = rows.get((name, address))
            if row is not None:
                wait = max(wait, row.last_failed_at + login_wait_seconds(row.failures, free) - now)
        return max(0.0, wait)

    def record_login_failure(self, username: str, client: str) -> float:
        """Count a failure on every counter it belongs to; returns the wait before this pair's next attempt."""
        now = time.time()
        waits = []
        with self.db.write("recording a failed login") as conn:
            for name, address, free in _failure_keys(username, client):
                row = conn.execute(
                    select(LoginFailure).where(LoginFailure.username == name, LoginFailure.client == address)
                ).first()
                forgotten = row is not None and name == _ANY_NAME and now - row.last_failed_at > FAILURE_MEMORY_SECONDS
                failures = (row.failures if row is not None and not forgotten else 0) + 1
                self.db.upsert(
                    conn, LoginFailure, [{"username": name, "client": address, "failures": failures, "last_failed_at": now}]
                )
                waits.append(login_wait_seconds(failures, free))
        return waits[0]

    def clear_login_failures(self, username: str, client: str) -> None:
        """A successful login clears its (name, address) counter; the address and global ones run out by themselves."""
        with self.db.write("clearing failed logins") as conn:
            conn.execute(delete(LoginFailure).where(LoginFailure.username == username, LoginFailure.client == client))

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
        expected = dict(anchors)
        prev_id, prev_hash, rows = 0, GENESIS_HASH, 0

        def bad(row_id: int, problem: str) -> ChainReport:
            return ChainReport(False, rows, prev_id, prev_hash, row_id, problem)

        while True:
            query = select(AuditEvent).where(AuditEvent.id > prev_id).order_by(AuditEvent.id).limit(page_size)
            with self.db.guard("reading the audit log"), self.db.engine.connect() as conn:
                page = conn.execute(query).all()
                head = conn.execute(select(AuditChain.last_id, AuditChain.last_hash).where(AuditChain.id == 1)).first()
            head_id, head_hash = (int(head.last_id), str(head.last_hash)) if head else (0, GENESIS_HASH)
            for row in page:
                if row.prev_hash != prev_hash:
                    gap = "" if row.id == prev_id + 1 else (
                        f"; row {prev_id + 1} is missing" if row.id == prev_id + 2
                        else f"; rows {prev_id + 1} to {row.id - 1} are missing")
                    return bad(row.id, f"row {row.id} does not follow row {prev_id}: a row between them was deleted, "
                                       f"changed or inserted{gap}")
                content = audit_hash(row.prev_hash, row.id, row.ts, row.username, row.action, row.detail,
                                     row.result_ids, row.client)
                if row.hash != content:
                    return bad(row.id, f"row {row.id} was changed after it was written (its hash does not match)")
                if row.id in expected and expected.pop(row.id) != row.hash:
                    return bad(row.id, f"row {row.id} no longer carries the exported hash: the log was rewritten")
                prev_id, prev_hash, rows = row.id, row.hash, rows + 1
                if row.id > head_id:
                    return bad(row.id, f"row {row.id} lies past the chain's head (row {head_id}): it was inserted")
            if len(page) == page_size:
                continue
            if head_id > prev_id:  # appended while this walk ran: read on
                if page:
                    continue
                return bad(head_id, f"the log ends at row {prev_id} but the chain's head is row {head_id}: "
                                    "the newest rows were deleted")
            if head_hash != prev_hash:
                return bad(prev_id, f"the chain's head does not match row {prev_id}: the head or the log was rewritten")
            if expected:
                missing = min(expected)
                return bad(missing, f"row {missing} named by an exported hash is no longer in the log")
            return ChainReport(True, rows, prev_id, prev_hash)

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
