"""Cameras: their streams and recording status."""

from __future__ import annotations

from typing import Any

from sqlalchemy import select, update

from camtrace.errors import NotFoundError
from camtrace.storage.sql.engine import SqlEngine
from camtrace.storage.sql.rows import columns
from camtrace.storage.sql.tables import Camera


class CameraRecords(SqlEngine):
    def ensure_camera(self, camera_id: str, url: str | None = None) -> None:
        """Create the camera if missing; a given ``url`` replaces the stored one."""
        row: dict[str, Any] = {"id": camera_id}
        if url is not None:
            row["url"] = url
        with self.write(f"saving camera {camera_id!r}") as conn:
            self.upsert(conn, Camera, [row])

    def update_camera(self, camera_id: str, **fields: Any) -> None:
        """Set status, url, last_frame_at, reconnects or last_error of an existing camera."""
        fields = columns(Camera, fields, exclude=("id", "created_at"))
        with self.write(f"updating camera {camera_id!r}") as conn:
            if conn.execute(update(Camera).where(Camera.id == camera_id).values(**fields)).rowcount == 0:
                raise NotFoundError(f"camera {camera_id!r} does not exist; add it first")

    def remove_camera_url(self, camera_id: str) -> None:
        """Stop recording a camera: its URL goes, its indexed footage stays searchable."""
        self.update_camera(camera_id, url=None, status="offline")

    def list_cameras(self) -> list[Camera]:
        with self.guard("listing cameras"), self.sessions() as session:
            return list(session.scalars(select(Camera).order_by(Camera.id)))

    def camera_ids(self) -> list[str]:
        with self.guard("listing cameras"), self.engine.connect() as conn:
            return list(conn.scalars(select(Camera.id).order_by(Camera.id)))
