"""SQL storage of watchlists and their alerts: entries, alerts and the delivery log of every alert.

An entry watches for a person (a track, joined at match time by the tracks
confirmed as the same person) or for a description (text). A new track that
matches an entry becomes one alert row (unique per entry and track, so a
redelivered segment never alerts twice), with one delivery row per target
(MQTT, each webhook) that says whether it reached it, how often it was tried
and when to try again: a target that is down loses nothing, its deliveries
wait as ``pending`` until a later pass gets through.

Every write joins an open ``Database.transaction()`` (an audited change), so
an entry, an alert or a verdict on it is kept only with its audit row.
"""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Float, Integer, String, Text, UniqueConstraint, delete, func, select, update
from sqlalchemy.orm import Mapped, mapped_column

from camtrace.enums import AlertStatus, DeliveryStatus, WatchKind
from camtrace.errors import InputError, NotFoundError
from camtrace.storage.sql import Base, Database

ENTRY_KINDS = tuple(WatchKind)
ALERT_STATUSES = tuple(AlertStatus)
DELIVERY_STATUSES = tuple(DeliveryStatus)


class WatchEntryRow(Base):
    __tablename__ = "watch_entries"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    kind: Mapped[str] = mapped_column(String)  # one of ENTRY_KINDS
    track_id: Mapped[str | None] = mapped_column(String)  # person: the seed track
    text: Mapped[str | None] = mapped_column(Text)  # description: what to look for
    cameras: Mapped[str | None] = mapped_column(Text)  # JSON list; NULL: every camera
    since: Mapped[float | None] = mapped_column(Float)
    until: Mapped[float | None] = mapped_column(Float)
    min_probability: Mapped[float | None] = mapped_column(Float)  # NULL: CAMTRACE_TRACE_MIN_SCORE when matching
    min_score: Mapped[float | None] = mapped_column(Float)  # description: the similarity bar (calibrated at creation)
    username: Mapped[str] = mapped_column(String)
    note: Mapped[str] = mapped_column(Text, default="")
    created_at: Mapped[float] = mapped_column(Float, default=time.time)


class AlertRow(Base):
    __tablename__ = "alerts"
    __table_args__ = (UniqueConstraint("entry_id", "track_id", name="uq_alerts_entry_track"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    entry_id: Mapped[int] = mapped_column(Integer, index=True)
    track_id: Mapped[str] = mapped_column(String, index=True)
    camera_id: Mapped[str] = mapped_column(String, index=True)
    ts: Mapped[float] = mapped_column(Float)  # the track's first moment
    probability: Mapped[float | None] = mapped_column(Float)  # person: P(same person); description: none
    score: Mapped[float] = mapped_column(Float)
    crop_key: Mapped[str | None] = mapped_column(String)
    status: Mapped[str] = mapped_column(String, default=AlertStatus.NEW)  # one of ALERT_STATUSES
    handled_by: Mapped[str | None] = mapped_column(String)
    handled_at: Mapped[float | None] = mapped_column(Float)
    created_at: Mapped[float] = mapped_column(Float, default=time.time, index=True)


class AlertDeliveryRow(Base):
    __tablename__ = "alert_deliveries"
    __table_args__ = (UniqueConstraint("alert_id", "target", name="uq_alert_deliveries_alert_target"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    alert_id: Mapped[int] = mapped_column(Integer, index=True)
    target: Mapped[str] = mapped_column(String)  # "mqtt" or "webhook:<key>" (a hash of the URL, never the URL)
    label: Mapped[str] = mapped_column(String)  # the target for people: the URL with any password masked
    status: Mapped[str] = mapped_column(String, default=DeliveryStatus.PENDING)  # one of DELIVERY_STATUSES
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    next_at: Mapped[float] = mapped_column(Float, index=True)
    last_error: Mapped[str | None] = mapped_column(Text)
    delivered_at: Mapped[float | None] = mapped_column(Float)
    created_at: Mapped[float] = mapped_column(Float, default=time.time)


@dataclass(frozen=True)
class WatchEntry:
    id: int
    kind: str
    track_id: str | None
    text: str | None
    cameras: tuple[str, ...] | None
    since: float | None
    until: float | None
    min_probability: float | None
    min_score: float | None
    username: str
    note: str
    created_at: float

    def as_dict(self) -> dict[str, Any]:
        out = dict(self.__dict__)
        out["cameras"] = list(self.cameras) if self.cameras is not None else None
        return out

    def covers(self, camera_id: str, ts: float) -> bool:
        """Whether a sighting on ``camera_id`` at ``ts`` lies within the entry's cameras and time window."""
        if self.cameras is not None and camera_id not in self.cameras:
            return False
        return (self.since is None or ts >= self.since) and (self.until is None or ts <= self.until)


@dataclass(frozen=True)
class Alert:
    id: int
    entry_id: int
    track_id: str
    camera_id: str
    ts: float
    probability: float | None
    score: float
    crop_key: str | None
    status: str
    handled_by: str | None
    handled_at: float | None
    created_at: float

    def as_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


@dataclass(frozen=True)
class NewAlert:
    """A match found by the watcher, before it is stored."""

    entry_id: int
    track_id: str
    camera_id: str
    ts: float
    probability: float | None
    score: float
    crop_key: str | None


@dataclass(frozen=True)
class Delivery:
    id: int
    alert_id: int
    target: str
    label: str
    status: str
    attempts: int
    next_at: float
    last_error: str | None
    delivered_at: float | None

    def as_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


def _entry(row: Any) -> WatchEntry:
    return WatchEntry(
        int(row.id),
        row.kind,
        row.track_id,
        row.text,
        tuple(json.loads(row.cameras)) if row.cameras is not None else None,
        row.since,
        row.until,
        row.min_probability,
        row.min_score,
        row.username,
        row.note or "",
        float(row.created_at),
    )


def _alert(row: Any) -> Alert:
    return Alert(
        int(row.id),
        int(row.entry_id),
        row.track_id,
        row.camera_id,
        float(row.ts),
        None if row.probability is None else float(row.probability),
        float(row.score),
        row.crop_key,
        row.status,
        row.handled_by,
        row.handled_at,
        float(row.created_at),
    )


def _delivery(row: Any) -> Delivery:
    return Delivery(
        int(row.id),
        int(row.alert_id),
        row.target,
        row.label,
        row.status,
        int(row.attempts),
        float(row.next_at),
        row.last_error,
        row.delivered_at,
    )


class WatchStore:
    """Watch entries, alerts and deliveries in the metadata database."""

    def __init__(self, db: Database) -> None:
        self.db = db

    # Entries ----------------------------------------------------------------
    def add_entry(
        self,
        kind: str,
        *,
        username: str,
        track_id: str | None = None,
        text: str | None = None,
        cameras: Sequence[str] | None = None,
        since: float | None = None,
        until: float | None = None,
        min_probability: float | None = None,
        min_score: float | None = None,
        note: str = "",
    ) -> WatchEntry:
        if kind not in ENTRY_KINDS:
            raise InputError(f"a watch entry is one of {', '.join(ENTRY_KINDS)}, not {kind!r}")
        row = {
            "kind": kind,
            "track_id": track_id,
            "text": text,
            "cameras": json.dumps(list(cameras)) if cameras is not None else None,
            "since": since,
            "until": until,
            "min_probability": min_probability,
            "min_score": min_score,
            "username": username,
            "note": note or "",
            "created_at": time.time(),
        }
        with self.db.write("adding a watch entry") as conn:
            new_id = conn.execute(WatchEntryRow.__table__.insert().values(**row)).inserted_primary_key[0]
        return _entry(type("Row", (), {"id": new_id, **row}))

    def entries(self) -> list[WatchEntry]:
        with self.db.guard("reading the watchlist"), self.db.engine.connect() as conn:
            rows = conn.execute(select(WatchEntryRow).order_by(WatchEntryRow.id)).all()
        return [_entry(row) for row in rows]

    def entry(self, entry_id: int) -> WatchEntry:
        with self.db.guard("reading the watchlist"), self.db.engine.connect() as conn:
            row = conn.execute(select(WatchEntryRow).where(WatchEntryRow.id == entry_id)).first()
        if row is None:
            raise NotFoundError(f"watch entry {entry_id} does not exist; `camtrace watch list` shows the entries")
        return _entry(row)

    def remove_entry(self, entry_id: int) -> WatchEntry:
        """Delete an entry (its alerts stay, as history); returns what it was."""
        entry = self.entry(entry_id)
        with self.db.write(f"removing watch entry {entry_id}") as conn:
            conn.execute(delete(WatchEntryRow).where(WatchEntryRow.id == entry_id))
        return entry

    def version(self) -> tuple[int, int]:
        """(number of entries, newest id): changes whenever an entry is added or removed."""
        with self.db.guard("reading the watchlist"), self.db.engine.connect() as conn:
            count, newest = conn.execute(select(func.count(WatchEntryRow.id), func.max(WatchEntryRow.id))).one()
        return int(count or 0), int(newest or 0)

    # Alerts -----------------------------------------------------------------
    def add_alert(self, alert: NewAlert, targets: Sequence[tuple[str, str]]) -> Alert | None:
        """Store a match with a pending delivery per (target, label); None when this entry already alerted on
        this track (a segment indexed twice)."""
        now = time.time()
        with self.db.write(f"saving an alert on track {alert.track_id!r}") as conn:
            exists = conn.execute(
                select(AlertRow.id).where(AlertRow.entry_id == alert.entry_id, AlertRow.track_id == alert.track_id)
            ).first()
            if exists is not None:
                return None
            row = {**alert.__dict__, "status": AlertStatus.NEW, "handled_by": None, "handled_at": None, "created_at": now}
            alert_id = conn.execute(AlertRow.__table__.insert().values(**row)).inserted_primary_key[0]
            for target, label in targets:
                conn.execute(
                    AlertDeliveryRow.__table__.insert().values(
                        alert_id=alert_id,
                        target=target,
                        label=label,
                        status=DeliveryStatus.PENDING,
                        attempts=0,
                        next_at=now,
                        created_at=now,
                    )
                )
        return _alert(type("Row", (), {"id": alert_id, **row}))

    def alerted_near(self, entry_id: int, camera_id: str, ts: float, seconds: float) -> bool:
        """Whether the entry alerted on this camera for a sighting within ``seconds`` of ``ts``."""
        query = (
            select(AlertRow.id)
            .where(
                AlertRow.entry_id == entry_id,
                AlertRow.camera_id == camera_id,
                AlertRow.ts >= ts - seconds,
                AlertRow.ts <= ts + seconds,
            )
            .limit(1)
        )
        with self.db.guard("reading alerts"), self.db.engine.connect() as conn:
            return conn.execute(query).first() is not None

    def alerts(
        self,
        *,
        cameras: Sequence[str] | None = None,
        status: str | None = None,
        after_id: int = 0,
        limit: int = 100,
        offset: int = 0,
        newest_first: bool = True,
    ) -> list[Alert]:
        """Alerts on ``cameras`` (None: every camera), newest first unless ``newest_first`` is false."""
        if status is not None and status not in ALERT_STATUSES:
            raise InputError(f"alert status {status!r} is not one of {', '.join(ALERT_STATUSES)}")
        order = AlertRow.id.desc() if newest_first else AlertRow.id
        query = select(AlertRow).where(AlertRow.id > after_id).order_by(order).limit(limit).offset(offset)
        if cameras is not None:
            query = query.where(AlertRow.camera_id.in_(list(cameras)))
        if status is not None:
            query = query.where(AlertRow.status == status)
        with self.db.guard("reading alerts"), self.db.engine.connect() as conn:
            return [_alert(row) for row in conn.execute(query).all()]

    def alert(self, alert_id: int, cameras: Sequence[str] | None = None) -> Alert:
        """One alert; an alert on a camera outside ``cameras`` is reported like a missing one."""
        with self.db.guard("reading alerts"), self.db.engine.connect() as conn:
            row = conn.execute(select(AlertRow).where(AlertRow.id == alert_id)).first()
        if row is None or (cameras is not None and row.camera_id not in cameras):
            raise NotFoundError(f"alert {alert_id} does not exist; GET /api/alerts lists the alerts")
        return _alert(row)

    def set_status(self, alert_id: int, status: str, username: str) -> Alert:
        if status not in ALERT_STATUSES:
            raise InputError(f"alert status {status!r} is not one of {', '.join(ALERT_STATUSES)}")
        now = time.time()
        with self.db.write(f"updating alert {alert_id}") as conn:
            updated = conn.execute(
                update(AlertRow).where(AlertRow.id == alert_id).values(status=status, handled_by=username, handled_at=now)
            ).rowcount
            if not updated:
                raise NotFoundError(f"alert {alert_id} does not exist; GET /api/alerts lists the alerts")
            row = conn.execute(select(AlertRow).where(AlertRow.id == alert_id)).one()
        return _alert(row)

    # Deliveries ---------------------------------------------------------------
    def due_deliveries(self, now: float | None = None, limit: int = 100, alert_ids: Sequence[int] | None = None) -> list[Delivery]:
        """Pending deliveries whose time has come (of ``alert_ids`` only, when given), oldest first."""
        now = time.time() if now is None else now
        query = (
            select(AlertDeliveryRow)
            .where(AlertDeliveryRow.status == DeliveryStatus.PENDING, AlertDeliveryRow.next_at <= now)
            .order_by(AlertDeliveryRow.id)
            .limit(limit)
        )
        if alert_ids is not None:
            query = query.where(AlertDeliveryRow.alert_id.in_(list(alert_ids)))
        with self.db.guard("reading alert deliveries"), self.db.engine.connect() as conn:
            return [_delivery(row) for row in conn.execute(query).all()]

    def deliveries(self, alert_id: int | None = None) -> list[Delivery]:
        query = select(AlertDeliveryRow).order_by(AlertDeliveryRow.id)
        if alert_id is not None:
            query = query.where(AlertDeliveryRow.alert_id == alert_id)
        with self.db.guard("reading alert deliveries"), self.db.engine.connect() as conn:
            return [_delivery(row) for row in conn.execute(query).all()]

    def claim(self, delivery: Delivery, seconds: float) -> bool:
        """Take a due delivery for ``seconds`` (its next try moves past them), so that two processes sending at
        once (beat and an embed worker) do not both send it; False when another process took it first."""
        with self.db.write(f"claiming alert delivery {delivery.id}") as conn:
            taken = conn.execute(
                update(AlertDeliveryRow)
                .where(
                    AlertDeliveryRow.id == delivery.id,
                    AlertDeliveryRow.status == DeliveryStatus.PENDING,
                    AlertDeliveryRow.next_at == delivery.next_at,
                )
                .values(next_at=time.time() + seconds)
            ).rowcount
        return taken == 1

    def record_attempt(self, delivery_id: int, *, error: str | None, next_at: float | None) -> None:
        """One try of a delivery: delivered (``error`` None), to try again at ``next_at``, or given up (None)."""
        now = time.time()
        if error is None:
            values: dict[str, Any] = {"status": DeliveryStatus.DELIVERED, "delivered_at": now, "last_error": None}
        else:
            status = DeliveryStatus.PENDING if next_at is not None else DeliveryStatus.FAILED
            values = {"status": status, "last_error": error[:2000], "next_at": next_at if next_at is not None else now}
        with self.db.write(f"logging alert delivery {delivery_id}") as conn:
            conn.execute(
                update(AlertDeliveryRow)
                .where(AlertDeliveryRow.id == delivery_id)
                .values(attempts=AlertDeliveryRow.attempts + 1, **values)
            )
