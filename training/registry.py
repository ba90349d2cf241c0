"""The model registry: every trained embedding model, its evaluation and which one is active.

A model is registered as a checkpoint folder (or hub id) with its
``model_version``, what it was fine-tuned from, the datasets and settings of
its training run and its evaluation results. Its lifecycle is
``registered -> active -> retired`` (and back to ``registered`` when a
rollback leaves it). One row of ``active_model`` names the model that embeds
queries and new crops and the index (Edge shard folder or server collection)
holding its vectors; it is switched together with the statuses in one
transaction, so no reader ever sees two active models. With no active model,
CAMTRACE_EMBED_MODEL serves, as before there was a registry.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from sqlalchemy import select, update

from camtrace.enums import ModelStatus
from camtrace.errors import InputError, NotFoundError, StorageError
from camtrace.storage.sql import ActiveModel, Database, Model

MODEL_STATUSES = tuple(ModelStatus)
_POINTER_ID = 1


@dataclass(frozen=True)
class ModelEntry:
    id: int
    folder: str
    processor: str | None
    model_version: str
    parent: str | None
    datasets: Any
    settings: dict
    metrics: dict
    status: str
    index_name: str | None
    created_at: float
    activated_at: float | None

    @classmethod
    def from_row(cls, row: Model) -> ModelEntry:
        return cls(
            id=row.id,
            folder=row.folder,
            processor=row.processor,
            model_version=row.model_version,
            parent=row.parent,
            datasets=row.datasets if row.datasets is not None else [],
            settings=dict(row.settings or {}),
            metrics=dict(row.metrics or {}),
            status=row.status,
            index_name=row.index_name,
            created_at=row.created_at,
            activated_at=row.activated_at,
        )

    def metric(self, name: str) -> float | None:
        """A figure of the evaluation results by dotted name (``text_to_identity.top1``), None when absent."""
        return metric_value(self.metrics, name)

    def as_dict(self) -> dict:
        return asdict(self)


def metric_value(metrics: Mapping | None, name: str) -> float | None:
    value: Any = metrics or {}
    for part in name.split("."):
        if not isinstance(value, Mapping) or part not in value:
            return None
        value = value[part]
    return float(value) if isinstance(value, (int, float)) else None


def model_version_of(folder: str, processor: str | None = None) -> str:
    """What ``ImageTextEncoder.model_version`` reports for this folder (read from the files, no loading)."""
    from camtrace.embedding import ImageTextEncoder

    return ImageTextEncoder(folder, processor, device="cpu").model_version


class ModelRegistry:
    """Registered models in SQL (the ``models`` and ``active_model`` tables of camtrace.storage.sql)."""

    def __init__(self, db: Database) -> None:
        self.db = db

    # Writing -----------------------------------------------------------------
    def register(
        self,
        folder: str | Path,
        parent: str | int | None = None,
        datasets: Sequence[str] | Mapping[str, Any] = (),
        settings: Mapping[str, Any] | None = None,
        metrics: Mapping[str, Any] | None = None,
        *,
        processor: str | None = None,
        model_version: str | None = None,
    ) -> int:
        """Add a trained model; returns its id. Registering the same folder with the same weights
        again returns the existing id (a repeated training task adds no second entry)."""
        local = Path(folder).expanduser()
        folder_text = str(local.resolve()) if local.exists() else str(folder)
        if not local.is_dir() and (isinstance(folder, Path) or str(folder).startswith(("/", ".", "~"))):
            raise InputError(
                f"model folder {folder} does not exist; register the folder a training run wrote (its config.json "
                "and weights), or a hub id such as owner/name"
            )
        version = model_version or model_version_of(folder_text, processor)
        row = {
            "folder": folder_text,
            "processor": processor,
            "model_version": version,
            "parent": None if parent is None else str(parent),
            "datasets": _plain_json(datasets if isinstance(datasets, Mapping) else list(datasets)),
            "settings": _plain_json(dict(settings or {})),
            "metrics": _plain_json(dict(metrics or {})),
            "status": ModelStatus.REGISTERED,
            "created_at": time.time(),
        }
        with self.db.write(f"registering model {folder_text}") as conn:
            existing = conn.scalar(select(Model.id).where(Model.folder == folder_text, Model.model_version == version).limit(1))
            if existing is not None:
                return int(existing)
            return int(conn.execute(Model.__table__.insert().values(**row).returning(Model.id)).scalar_one())

    def set_metrics(self, model_id: int, metrics: Mapping[str, Any]) -> ModelEntry:
        """Store (replace) a model's evaluation results."""
        self._update(model_id, "saving evaluation results", metrics=_plain_json(dict(metrics)))
        return self.get(model_id)

    def set_index(self, model_id: int, index_name: str) -> ModelEntry:
        """Record which index holds the model's vectors (set when a re-index has built it)."""
        self._update(model_id, "saving the index name", index_name=index_name)
        return self.get(model_id)

    def set_active(self, model_id: int, index_name: str | None = None) -> ModelEntry:
        """Make a model the active one, in one transaction: the previous active model is retired,
        this one becomes active and the pointer names it and its index."""
        now = time.time()
        with self.db.write(f"activating model {model_id}") as conn:
            row = conn.execute(select(Model.id, Model.index_name).where(Model.id == model_id)).first()
            if row is None:
                raise NotFoundError(f"model {model_id} is not registered; `camtrace models list` shows the ids")
            index_name = index_name or row.index_name
            if not index_name:
                raise StorageError(f"model {model_id} has no index yet; `camtrace models promote {model_id}` builds it")
            others_active = update(Model).where(Model.status == ModelStatus.ACTIVE, Model.id != model_id)
            conn.execute(others_active.values(status=ModelStatus.RETIRED))
            promoted = update(Model).where(Model.id == model_id)
            conn.execute(promoted.values(status=ModelStatus.ACTIVE, index_name=index_name, activated_at=now))
            self._point(conn, model_id, index_name, now)
        return self.get(model_id)

    def rollback(self) -> ModelEntry | None:
        """Return to the model that was active before the current one, in one transaction.

        The current model goes back to ``registered`` (it can be promoted again);
        the retired model activated most recently becomes active again with its
        index, which promotion left in place. With no such model the pointer is
        cleared and CAMTRACE_EMBED_MODEL serves again with its own index. Returns
        the model now active (None: the configured one).
        """
        now = time.time()
        with self.db.write("rolling back the active model") as conn:
            current = conn.scalar(select(ActiveModel.model_id).where(ActiveModel.id == _POINTER_ID))
            if current is None:
                raise InputError("no registered model is active, so there is nothing to roll back")
            target = conn.execute(_previous_query(current)).first()
            conn.execute(update(Model).where(Model.id == current).values(status=ModelStatus.REGISTERED))
            if target is None:
                self._point(conn, None, None, now)
                return None
            conn.execute(update(Model).where(Model.id == target.id).values(status=ModelStatus.ACTIVE))
            self._point(conn, target.id, target.index_name, now)
        return self.get(target.id)

    def rollback_target(self) -> ModelEntry | None:
        """The model ``rollback()`` would return to (None: CAMTRACE_EMBED_MODEL)."""
        current, _ = self.active_pointer()
        if current is None:
            raise InputError("no registered model is active, so there is nothing to roll back")
        with self.db.guard("reading models"), self.db.engine.connect() as conn:
            target = conn.execute(_previous_query(current)).first()
        return None if target is None else self.get(target.id)

    def _point(self, conn, model_id: int | None, index_name: str | None, now: float) -> None:
        self.db.upsert(conn, ActiveModel, [{"id": _POINTER_ID, "model_id": model_id, "index_name": index_name, "switched_at": now}])

    def _update(self, model_id: int, action: str, **values: Any) -> None:
        with self.db.write(f"{action} of model {model_id}") as conn:
            if conn.execute(update(Model).where(Model.id == model_id).values(**values)).rowcount == 0:
                raise NotFoundError(f"model {model_id} is not registered; `camtrace models list` shows the ids")

    # Reading -----------------------------------------------------------------
    def list(self) -> list[ModelEntry]:
        """Every registered model, oldest first."""
        with self.db.guard("listing models"), self.db.sessions() as session:
            return [ModelEntry.from_row(row) for row in session.scalars(select(Model).order_by(Model.id))]

    def get(self, model_id: int | str) -> ModelEntry:
        try:
            key = int(model_id)
        except (TypeError, ValueError):
            raise InputError(f"model id {model_id!r} is not a number; `camtrace models list` shows the ids") from None
        with self.db.guard(f"reading model {key}"), self.db.sessions() as session:
            row = session.get(Model, key)
        if row is None:
            raise NotFoundError(f"model {key} is not registered; `camtrace models list` shows the ids")
        return ModelEntry.from_row(row)

    def active(self) -> ModelEntry | None:
        """The active model (None: no registered model is active; CAMTRACE_EMBED_MODEL serves)."""
        model_id, _ = self.active_pointer()
        return None if model_id is None else self.get(model_id)

    def active_pointer(self) -> tuple[int | None, str | None]:
        """(model id, index name) of the active model: one cheap read, polled by long-running services."""
        with self.db.guard("reading the active model"), self.db.engine.connect() as conn:
            row = conn.execute(select(ActiveModel.model_id, ActiveModel.index_name).where(ActiveModel.id == _POINTER_ID)).first()
        return (None, None) if row is None else (row.model_id, row.index_name)

    def by_version(self, model_version: str) -> ModelEntry | None:
        """The newest registered model with this model_version, if any."""
        with self.db.guard("reading models"), self.db.sessions() as session:
            row = session.scalars(
                select(Model).where(Model.model_version == model_version).order_by(Model.id.desc()).limit(1)
            ).first()
        return None if row is None else ModelEntry.from_row(row)

    def last_created_at(self) -> float | None:
        """When the newest model was registered (None: none yet)."""
        with self.db.guard("reading models"), self.db.engine.connect() as conn:
            from sqlalchemy import func

            return conn.scalar(select(func.max(Model.created_at)))


def _previous_query(current: int):
    """The retired model (with an index) activated most recently, other than ``current``."""
    return (
        select(Model.id, Model.index_name)
        .where(Model.status == ModelStatus.RETIRED, Model.index_name.is_not(None), Model.id != current)
        .order_by(Model.activated_at.desc(), Model.id.desc())
        .limit(1)
    )


def _plain_json(value: Any) -> Any:
    """JSON-ready values (paths and numpy scalars become strings and numbers)."""
    import numpy as np

    if isinstance(value, Mapping):
        return {str(k): _plain_json(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain_json(v) for v in value]
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, Path):
        return str(value)
    return value
