"""Who may use the service, and what they did: users, API tokens, login sessions and the audit log.

Secrets are never stored: passwords as Argon2 hashes (argon2-cffi), API tokens
and session ids as SHA-256 hashes (they are 256-bit random strings, so a fast
hash is enough: nobody can guess a preimage). A token has a short public id
(to list and revoke it) and an optional expiry.

The audit log (append-only, hash-chained, written in the change's own
transaction) is camtrace.storage.audit, which the access store extends.

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
from dataclasses import dataclass
from typing import Any

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError
from sqlalchemy import Float, ForeignKey, Integer, String, Text, delete, func, select
from sqlalchemy.engine import Connection
from sqlalchemy.orm import Mapped, mapped_column

from camtrace import validation
from camtrace.enums import Role
from camtrace.errors import InputError, NotFoundError, TooManyAttemptsError
from camtrace.storage.audit import AuditLog
from camtrace.storage.sql import Base

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


@dataclass(frozen=True)
class Principal:
    """The authenticated caller: what the API checks roles and camera limits against."""

    username: str
    role: str
    cameras: tuple[str, ...] | None  # None: every camera

    def as_dict(self) -> dict[str, Any]:
        return {"username": self.username, "role": self.role, "cameras": list(self.cameras) if self.cameras is not None else None}


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


def secret_hash(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def new_secret() -> str:
    return secrets.token_urlsafe(32)


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
    return [
        (username, client, FREE_LOGIN_FAILURES),
        (_ANY_NAME, client, FREE_ADDRESS_FAILURES),
        (_ANY_NAME, _ANY_CLIENT, FREE_GLOBAL_FAILURES),
    ]


def _token_info(row: ApiToken) -> TokenInfo:
    return TokenInfo(row.id or "", row.username, row.created_at, row.expires_at)


class AccessStore(AuditLog):
    """Users, tokens, sessions and login throttling in the metadata database; every change is audited in its
    transaction through the audit log (camtrace.storage.audit) it extends."""

    # Users ------------------------------------------------------------------
    def add_user(
        self,
        username: str,
        role: str,
        cameras: Sequence[str] | None = None,
        password: str | None = None,
        *,
        token_expires_at: float | None = None,
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
        conn.execute(
            ApiToken.__table__.insert().values(
                token_hash=secret_hash(token), id=token_id, username=username, created_at=now, expires_at=expires_at
            )
        )
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
                select(User)
                .join(ApiToken, ApiToken.username == User.username)
                .where(
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
            owner = conn.execute(select(LoginSession.username).where(LoginSession.session_hash == secret_hash(session_id))).scalar()
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
                for row in conn.execute(
                    select(LoginFailure).where(
                        LoginFailure.client.in_({client, _ANY_CLIENT}), LoginFailure.username.in_({username, _ANY_NAME})
                    )
                )
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
