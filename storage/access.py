"""Who may use the service, and what they did: users, API tokens, login sessions and the audit log.

Secrets are never stored: passwords as Argon2 hashes (argon2-cffi), API tokens
and session ids as SHA-256 hashes (they are 256-bit random strings, so a fast
hash is enough: nobody can guess a preimage). The audit log is append-only:
this module has no call that updates or deletes an audit row, and on
PostgreSQL migration 0004 adds a trigger that refuses both.

Repeated failed logins per username + client address are slowed down with an
exponential waiting time (``login_retry_after``) that the API answers with
429 and ``Retry-After``; the server never sleeps to slow anyone down.
"""

from __future__ import annotations

import hashlib
import json
import secrets
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError
from camtrace.storage.sql import Base, Database
from sqlalchemy import Float, ForeignKey, Integer, String, Text, delete, func, select
from sqlalchemy.orm import Mapped, mapped_column

from camtrace.errors import InputError, NotFoundError

ROLES = ("operator", "investigator", "admin")
SESSION_SECONDS = 12 * 3600
# Failed logins allowed before waiting starts; then 1 s, 2 s, 4 s ... up to 15 minutes.
FREE_LOGIN_FAILURES = 5
MAX_LOGIN_WAIT_SECONDS = 900.0

_hasher = PasswordHasher()
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


class LoginSession(Base):
    __tablename__ = "login_sessions"

    session_hash: Mapped[str] = mapped_column(String, primary_key=True)
    username: Mapped[str] = mapped_column(ForeignKey("users.username", ondelete="CASCADE"), index=True)
    created_at: Mapped[float] = mapped_column(Float, default=time.time)
    expires_at: Mapped[float] = mapped_column(Float)


class LoginFailure(Base):
    __tablename__ = "login_failures"

    username: Mapped[str] = mapped_column(String, primary_key=True)
    client: Mapped[str] = mapped_column(String, primary_key=True)
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


def secret_hash(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def new_secret() -> str:
    return secrets.token_urlsafe(32)


def _principal(user: User) -> Principal:
    cameras = tuple(json.loads(user.cameras)) if user.cameras is not None else None
    return Principal(user.username, user.role, cameras)


def login_wait_seconds(failures: int) -> float:
    """How long after the last failure the next attempt must wait."""
    if failures < FREE_LOGIN_FAILURES:
        return 0.0
    return min(MAX_LOGIN_WAIT_SECONDS, 2.0 ** (failures - FREE_LOGIN_FAILURES))


class AccessStore:
    """Users, tokens, sessions, login throttling and the audit log, in the metadata database."""

    def __init__(self, db: Database) -> None:
        self.db = db

    # Users ------------------------------------------------------------------
    def add_user(self, username: str, role: str, cameras: Sequence[str] | None = None, password: str | None = None) -> str:
        """Create a user and return a first API token (shown once)."""
        if role not in ROLES:
            raise InputError(f"role '{role}' is not one of {', '.join(ROLES)}")
        if not username or not username.strip():
            raise InputError("a user needs a name")
        with self.db._write(f"adding user {username}") as conn:
            if conn.execute(select(User.username).where(User.username == username)).first():
                raise InputError(f"user '{username}' exists already; remove it first or pick another name")
            conn.execute(
                User.__table__.insert().values(
                    username=username,
                    role=role,
                    cameras=json.dumps(list(cameras)) if cameras is not None else None,
                    password_hash=_hasher.hash(password) if password else None,
                    created_at=time.time(),
                )
            )
        return self.create_token(username)

    def users(self) -> list[tuple[Principal, float]]:
        with self.db._guard("listing users"), self.db.engine.connect() as conn:
            rows = conn.execute(select(User).order_by(User.username)).all()
        return [(_principal(row), row.created_at) for row in rows]

    def user_count(self) -> int:
        with self.db._guard("counting users"), self.db.engine.connect() as conn:
            return int(conn.execute(select(func.count()).select_from(User)).scalar_one())

    def get_user(self, username: str) -> Principal:
        with self.db._guard(f"reading user {username}"), self.db.engine.connect() as conn:
            row = conn.execute(select(User).where(User.username == username)).first()
        if row is None:
            raise NotFoundError(f"no user '{username}'; `camtrace user list` shows the users")
        return _principal(row)

    def remove_user(self, username: str) -> None:
        with self.db._write(f"removing user {username}") as conn:
            # Tokens and sessions go first: SQLite enforces no cascade without the foreign-keys pragma.
            conn.execute(delete(ApiToken).where(ApiToken.username == username))
            conn.execute(delete(LoginSession).where(LoginSession.username == username))
            if conn.execute(delete(User).where(User.username == username)).rowcount == 0:
                raise NotFoundError(f"no user '{username}'; `camtrace user list` shows the users")

    def set_password(self, username: str, password: str) -> None:
        if len(password) < 8:
            raise InputError("a password needs at least 8 characters")
        with self.db._write(f"setting the password of {username}") as conn:
            updated = conn.execute(
                User.__table__.update().where(User.username == username).values(password_hash=_hasher.hash(password))
            ).rowcount
            if updated == 0:
                raise NotFoundError(f"no user '{username}'; `camtrace user list` shows the users")
            conn.execute(delete(LoginSession).where(LoginSession.username == username))

    # Credentials ----------------------------------------------------------------
    def create_token(self, username: str) -> str:
        self.get_user(username)
        token = new_secret()
        with self.db._write(f"creating a token for {username}") as conn:
            row = {"token_hash": secret_hash(token), "username": username, "created_at": time.time()}
            conn.execute(ApiToken.__table__.insert().values(**row))
        return token

    def user_for_token(self, token: str) -> Principal | None:
        with self.db._guard("checking a token"), self.db.engine.connect() as conn:
            row = conn.execute(
                select(User).join(ApiToken, ApiToken.username == User.username).where(ApiToken.token_hash == secret_hash(token))
            ).first()
        return _principal(row) if row else None

    def check_password(self, username: str, password: str) -> Principal | None:
        with self.db._guard("checking a password"), self.db.engine.connect() as conn:
            row = conn.execute(select(User).where(User.username == username)).first()
        stored = row.password_hash if row is not None and row.password_hash else _DUMMY_HASH
        try:
            _hasher.verify(stored, password)
        except (VerificationError, InvalidHashError):
            return None
        return _principal(row) if row is not None and row.password_hash else None

    def create_session(self, username: str, seconds: float = SESSION_SECONDS) -> str:
        session_id = new_secret()
        now = time.time()
        with self.db._write("opening a session") as conn:
            conn.execute(delete(LoginSession).where(LoginSession.expires_at < now))
            conn.execute(
                LoginSession.__table__.insert().values(
                    session_hash=secret_hash(session_id), username=username, created_at=now, expires_at=now + seconds
                )
            )
        return session_id

    def user_for_session(self, session_id: str) -> Principal | None:
        with self.db._guard("checking a session"), self.db.engine.connect() as conn:
            row = conn.execute(
                select(User)
                .join(LoginSession, LoginSession.username == User.username)
                .where(LoginSession.session_hash == secret_hash(session_id), LoginSession.expires_at > time.time())
            ).first()
        return _principal(row) if row else None

    def end_session(self, session_id: str) -> None:
        with self.db._write("closing a session") as conn:
            conn.execute(delete(LoginSession).where(LoginSession.session_hash == secret_hash(session_id)))

    # Login throttling -------------------------------------------------------------
    def login_retry_after(self, username: str, client: str, now: float | None = None) -> float:
        """Seconds this username + client must still wait before the next login attempt (0: may try now)."""
        now = time.time() if now is None else now
        with self.db._guard("checking login failures"), self.db.engine.connect() as conn:
            row = conn.execute(
                select(LoginFailure).where(LoginFailure.username == username, LoginFailure.client == client)
            ).first()
        if row is None:
            return 0.0
        return max(0.0, row.last_failed_at + login_wait_seconds(row.failures) - now)

    def record_login_failure(self, username: str, client: str) -> float:
        """Count a failure; returns the wait before the next attempt."""
        with self.db._write("recording a failed login") as conn:
            row = conn.execute(
                select(LoginFailure).where(LoginFailure.username == username, LoginFailure.client == client)
            ).first()
            failures = (row.failures if row else 0) + 1
            self.db._upsert(
                conn, LoginFailure, [{"username": username, "client": client, "failures": failures, "last_failed_at": time.time()}]
            )
        return login_wait_seconds(failures)

    def clear_login_failures(self, username: str, client: str) -> None:
        with self.db._write("clearing failed logins") as conn:
            conn.execute(delete(LoginFailure).where(LoginFailure.username == username, LoginFailure.client == client))

    # Audit log (append-only) ---------------------------------------------------------
    def audit(
        self,
        username: str | None,
        action: str,
        detail: dict[str, Any] | None = None,
        result_ids: Sequence[str] = (),
        client: str | None = None,
    ) -> None:
        with self.db._write(f"writing the audit log ({action})") as conn:
            conn.execute(
                AuditEvent.__table__.insert().values(
                    ts=time.time(),
                    username=username,
                    action=action,
                    detail=json.dumps(detail or {}, default=str, sort_keys=True),
                    result_ids=json.dumps(list(result_ids)),
                    client=client,
                )
            )

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
        with self.db._guard("reading the audit log"), self.db.engine.connect() as conn:
            rows = conn.execute(query).all()
        return [
            AuditRecord(row.id, row.ts, row.username, row.action, json.loads(row.detail), json.loads(row.result_ids), row.client)
            for row in rows
        ]
