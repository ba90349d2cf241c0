"""Rows as the stores take them: dicts or dataclasses whose field names are column names."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from camtrace.errors import StorageError
from camtrace.storage.sql.tables import Base


def as_dict(row: Mapping | Any) -> dict[str, Any]:
    if isinstance(row, Mapping):
        return dict(row)
    if dataclasses.is_dataclass(row) and not isinstance(row, type):
        return {f.name: getattr(row, f.name) for f in dataclasses.fields(row)}
    raise StorageError(f"a row must be a dict or a dataclass instance, not {type(row).__name__}")


def plain_row(row: dict[str, Any]) -> dict[str, Any]:
    # Database drivers reject numpy scalars, which detection code hands over freely.
    return {k: (v.item() if isinstance(v, np.generic) else v) for k, v in row.items()}


def columns(model: type[Base], row: dict[str, Any], *, require: Sequence[str] = (), exclude: Sequence[str] = ()) -> dict[str, Any]:
    names = set(model.__table__.columns.keys()) - set(exclude)
    unknown = set(row) - names
    if unknown:
        raise StorageError(
            f"unknown column(s) {', '.join(sorted(unknown))} for table {model.__tablename__}; "
            f"its columns are {', '.join(sorted(names))}"
        )
    missing = [name for name in require if row.get(name) in (None, "")]
    if missing:
        raise StorageError(f"a {model.__tablename__} row needs {', '.join(missing)}: {row}")
    return plain_row(row)


def check_status(what: str, status: str, allowed: Sequence[str]) -> str:
    if status not in allowed:
        raise StorageError(f"{what} status {status!r} is not one of {', '.join(allowed)}")
    return status
