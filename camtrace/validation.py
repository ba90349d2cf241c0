"""What a user name, a password, a camera id, a time or a free text may be: one rule for the CLI and the API.

The HTTP schemas build their field types from these constants and functions,
and the stages (the access store, the search filters) call the same
functions, so a value the API refuses is refused at the command line too.
Each check raises ``InputError`` naming the field and the rule.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Sequence
from datetime import datetime
from pathlib import Path

from camtrace.errors import InputError

USERNAME_PATTERN = r"^[A-Za-z0-9._@-]+$"
CAMERA_PATTERN = r"^[A-Za-z0-9._-]+$"
NAME_MAX_LENGTH = 200
PASSWORD_MIN_LENGTH = 8
PASSWORD_MAX_LENGTH = 1000
# Times are epoch seconds between 1970 and the end of year 9999: what datetime can show.
EARLIEST_TS = 0.0
LATEST_TS = 253402300799.0

_USERNAME = re.compile(USERNAME_PATTERN)
_CAMERA = re.compile(CAMERA_PATTERN)
# scheme://user:password@host -> scheme://***@host; also secrets passed as query parameters.
_URL_USERINFO = re.compile(r"(?i)\b([a-z][a-z0-9+.-]*://)[^/\s?#]+@")
_SECRET_QUERY = re.compile(r"(?i)([?&;](?:user(?:name)?|pass(?:word|wd)?|pwd|token|key|secret|auth|sig)=)[^&;#\s'\"]*")


def no_nul(value: str, name: str) -> str:
    """Refuse NUL characters: file systems and PostgreSQL cannot hold them."""
    if "\x00" in value:
        raise InputError(f"{name} contains a NUL character")
    return value


def _named(value: str, name: str, pattern: re.Pattern, allowed: str) -> str:
    if not isinstance(value, str) or not value or len(value) > NAME_MAX_LENGTH or not pattern.fullmatch(value):
        raise InputError(f"{name} '{value}' must be 1 to {NAME_MAX_LENGTH} characters of {allowed}")
    return value


def username(value: str) -> str:
    return _named(value, "user name", _USERNAME, "letters, digits and . _ @ -")


def camera_id(value: str) -> str:
    return _named(value, "camera id", _CAMERA, "letters, digits and . _ -")


def camera_ids(values: Iterable[str] | None) -> list[str] | None:
    return None if values is None else [camera_id(value) for value in values]


def password(value: str) -> str:
    if not isinstance(value, str) or not PASSWORD_MIN_LENGTH <= len(value) <= PASSWORD_MAX_LENGTH:
        raise InputError(f"a password needs {PASSWORD_MIN_LENGTH} to {PASSWORD_MAX_LENGTH} characters")
    return no_nul(value, "the password")


def moment(value: str | float | int | None, name: str) -> float | None:
    """An ISO 8601 time or epoch seconds as epoch seconds; NaN, infinities and years past 9999 are refused."""
    if value is None or value == "":
        return None
    if isinstance(value, bool):
        raise InputError(f"{name}: {value!r} is not a time")
    if isinstance(value, str):
        no_nul(value, name)
        try:
            ts = float(value)
        except ValueError:
            try:
                ts = datetime.fromisoformat(value).timestamp()
            except (ValueError, OverflowError):
                raise InputError(f"{name}: '{value}' is not an ISO time such as 2026-01-31T14:05:00 nor epoch seconds") from None
    else:
        ts = float(value)
    if not math.isfinite(ts) or not EARLIEST_TS <= ts <= LATEST_TS:
        raise InputError(f"{name}: {value!r} is outside the times camtrace can store (1970 to 9999)")
    return ts


def mask_secrets(text: str | None) -> str | None:
    """``text`` with the credentials of every URL in it masked: user and password, and secret query values."""
    if not text:
        return text
    return _SECRET_QUERY.sub(r"\1***", _URL_USERINFO.sub(r"\1***@", text))


def inside_roots(path: Path, roots: Sequence[Path]) -> bool:
    """Whether a resolved ``path`` is one of ``roots`` (resolved folders) or lies under one."""
    return any(path == root or path.is_relative_to(root) for root in roots)
