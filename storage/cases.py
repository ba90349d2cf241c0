"""SQL storage of cases: an investigation's tracks and notes, in the order they were added.

A case is what an investigator hands on: the tracks that show what happened and the notes that say why.
``camtrace.search.cases`` exports one as an archive whose manifest holds the SHA-256 of every file.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import Float, Integer, String, Text, select
from sqlalchemy.orm import Mapped, mapped_column

from camtrace.enums import CaseItemKind
from camtrace.errors import InputError, NotFoundError
from camtrace.storage.sql import Base, Database

TITLE_MAX_LENGTH = 200
NOTE_MAX_LENGTH = 5000


class CaseRow(Base):
    __tablename__ = "cases"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    title: Mapped[str] = mapped_column(String)
    username: Mapped[str] = mapped_column(String)
    created_at: Mapped[float] = mapped_column(Float, default=time.time)


class CaseItemRow(Base):
    __tablename__ = "case_items"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    case_id: Mapped[int] = mapped_column(Integer, index=True)
    kind: Mapped[str] = mapped_column(String)  # "track" or "note"
    track_id: Mapped[str | None] = mapped_column(String)
    text: Mapped[str] = mapped_column(Text, default="")  # a note, or why a track is in the case
    username: Mapped[str] = mapped_column(String)
    created_at: Mapped[float] = mapped_column(Float, default=time.time)


@dataclass(frozen=True)
class CaseItem:
    id: int
    kind: str
    track_id: str | None
    text: str
    username: str
    created_at: float

    def as_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


@dataclass(frozen=True)
class Case:
    id: int
    title: str
    username: str
    created_at: float
    items: tuple[CaseItem, ...] = field(default=())

    @property
    def track_ids(self) -> list[str]:
        return list(dict.fromkeys(i.track_id for i in self.items if i.kind == "track" and i.track_id))

    def as_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "title": self.title,
            "username": self.username,
            "created_at": self.created_at,
            "items": [i.as_dict() for i in self.items],
        }


class CaseStore:
    def __init__(self, db: Database) -> None:
        self.db = db

    def create(self, title: str, username: str) -> Case:
        title = (title or "").strip()
        if not title or len(title) > TITLE_MAX_LENGTH:
            raise InputError(f"a case needs a title of 1 to {TITLE_MAX_LENGTH} characters")
        now = time.time()
        with self.db.write("creating a case") as conn:
            case_id = conn.execute(
                CaseRow.__table__.insert().values(title=title, username=username, created_at=now)
            ).inserted_primary_key[0]
        return Case(int(case_id), title, username, now)

    def add_item(self, case_id: int, kind: str, username: str, *, track_id: str | None = None, text: str = "") -> Case:
        if kind not in tuple(CaseItemKind):
            raise InputError(f"a case item is a track or a note, not {kind!r}")
        if kind == "note" and not (text or "").strip():
            raise InputError("the note is empty")
        if len(text or "") > NOTE_MAX_LENGTH:
            raise InputError(f"the note is longer than {NOTE_MAX_LENGTH} characters")
        with self.db.write(f"adding to case {case_id}") as conn:
            self._case(conn, case_id)
            conn.execute(
                CaseItemRow.__table__.insert().values(
                    case_id=case_id, kind=kind, track_id=track_id, text=text or "", username=username, created_at=time.time()
                )
            )
            return self._case(conn, case_id)  # read in the same transaction: the new item is not committed yet

    def case(self, case_id: int) -> Case:
        with self.db.guard(f"reading case {case_id}"), self.db.engine.connect() as conn:
            return self._case(conn, case_id)

    @staticmethod
    def _case(conn, case_id: int) -> Case:
        row = conn.execute(select(CaseRow).where(CaseRow.id == case_id)).first()
        if row is None:
            raise NotFoundError(f"case {case_id} does not exist; `camtrace case list` shows the cases")
        items = conn.execute(
            select(CaseItemRow).where(CaseItemRow.case_id == case_id).order_by(CaseItemRow.created_at, CaseItemRow.id)
        ).all()
        return Case(
            int(row.id),
            row.title,
            row.username,
            float(row.created_at),
            tuple(CaseItem(int(i.id), i.kind, i.track_id, i.text or "", i.username, float(i.created_at)) for i in items),
        )

    def cases(self) -> list[Case]:
        with self.db.guard("listing cases"), self.db.engine.connect() as conn:
            ids = conn.execute(select(CaseRow.id).order_by(CaseRow.id)).scalars().all()
        return [self.case(int(i)) for i in ids]
