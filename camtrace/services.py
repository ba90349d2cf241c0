"""The composition root: builds each stage from settings, once, on first use.

The CLI, the local pipeline, the query service and the workers all get their
detector, encoder, index, database and crop store from here, so every entry
point wires the stages the same way. Models load lazily: a command that never
embeds never loads the encoder.

The embedding model is the registry's active model when one is active (see
camtrace.training.registry), else CAMTRACE_EMBED_MODEL. Its encoder and the
index of its vectors are chosen together (``model()``), so a search or a
write never pairs one model's vectors with another model's index. Long-running
processes re-read the active pointer every CAMTRACE_MODEL_REFRESH_SECONDS and
switch after a promotion or a rollback; work already holding a ``model()``
finishes with the one it took.
"""

from __future__ import annotations

import logging
import threading
import time
from functools import cached_property
from typing import TYPE_CHECKING

from camtrace.errors import StorageError
from camtrace.settings import Settings, prepare_ultralytics_env

if TYPE_CHECKING:
    import numpy as np

    from camtrace.detection import PersonDetector
    from camtrace.embedding import ImageTextEncoder
    from camtrace.storage import CropStore, Database
    from camtrace.storage.index import VectorIndex
    from camtrace.training.registry import ModelEntry, ModelRegistry

log = logging.getLogger(__name__)


class EmbeddingModel:
    """One model's encoder and the index holding that model's vectors, always used as a pair.

    ``model_id`` is the registry id (None: CAMTRACE_EMBED_MODEL). The index is
    opened on first use, so a process that only encodes never touches it.
    """

    def __init__(
        self,
        settings: Settings,
        encoder: ImageTextEncoder,
        model_id: int | None = None,
        index_name: str | None = None,
        *,
        keep_index_open: float = 0.0,
        index: VectorIndex | None = None,
    ) -> None:
        self.settings = settings
        self.encoder = encoder
        self.model_id = model_id
        self.index_name = index_name
        self.keep_index_open = keep_index_open
        self._lock = threading.Lock()
        self._index = index  # None: opened on first use
        self._reid_index: VectorIndex | None = None

    @property
    def index(self) -> VectorIndex:
        """The vector index of this model version, opened once (its size comes from the model's config:
        no weights load)."""
        with self._lock:
            if self._index is None:
                self._index = self._open_index()
            return self._index

    def _open_index(self) -> VectorIndex:
        from camtrace.storage import open_index

        index = open_index(self.settings, self.encoder.model_version, self.encoder.dim)
        if self.keep_index_open and hasattr(index, "keep_open"):  # embedded index: keep the shard loaded
            index.keep_open = self.keep_index_open
        if self.index_name and index.name != self.index_name:
            index.close()
            raise StorageError(
                f"the registry names index {self.index_name!r} for model {self.model_id}, but its weights "
                f"({self.encoder.model_version}) belong in {index.name!r}: the model folder changed after "
                "registration; register it again and promote the new entry"
            )
        return index

    @property
    def reid_index(self) -> VectorIndex | None:
        """The anchor head's re-id vectors (camtrace.storage.reid), keyed by the main index's point ids; None when
        the model has no head."""
        dim = self.encoder.reid_dim if self.encoder is not None else None  # None: a pinned index of known vectors
        if dim is None:
            return None
        with self._lock:
            if self._reid_index is None:
                from camtrace.storage.reid import open_reid_index

                self._reid_index = open_reid_index(self.settings, self.encoder.model_version, dim)
                if self.keep_index_open and hasattr(self._reid_index, "keep_open"):
                    self._reid_index.keep_open = self.keep_index_open
            return self._reid_index

    @property
    def match_index(self) -> VectorIndex:
        """The index person-to-person matching reads (re-id, photo search, identity evidence): the re-id vectors
        when the model has an anchor head, else the model's own."""
        reid = self.reid_index
        return reid if reid is not None else self.index

    def match_vectors(self, images) -> np.ndarray:
        """Query vectors of RGB crops for ``match_index``: the head's re-id vectors, else ``encode_images``."""
        if self.reid_index is not None:
            return self.encoder.encode_reid_images(images)
        return self.encoder.encode_images(images)

    def close(self) -> None:
        if self._index is not None:
            self._index.close()
        if self._reid_index is not None:
            self._reid_index.close()


class Services:
    """Every stage of one process, built from ``settings`` on first use. Use it as a context manager (``with
    Services(settings) as services:``) so the index and the database connections are let go at the end."""

    def __init__(self, settings: Settings, *, keep_index_open: float = 0.0) -> None:
        """``keep_index_open``: seconds an embedded index stays loaded between uses (the query service's
        searches); 0 opens and closes it around each use, so other processes can take their turn."""
        self.settings = settings
        self.keep_index_open = keep_index_open
        prepare_ultralytics_env(settings)
        self._model: EmbeddingModel | None = None
        self._model_key: tuple[int | None, str | None] | None = None
        self._checked_at = float("-inf")
        self._model_lock = threading.RLock()
        self._pinned = False

    def __enter__(self) -> Services:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @cached_property
    def db(self) -> Database:
        from camtrace.storage import Database

        database = Database(self.settings.sql_url)
        database.migrate()
        return database

    @cached_property
    def crops(self) -> CropStore:
        from camtrace.storage import CropStore

        return CropStore(self.settings.crops_dir)

    @cached_property
    def detector(self) -> PersonDetector:
        from camtrace.detection import PersonDetector

        return PersonDetector.from_settings(self.settings)

    @cached_property
    def registry(self) -> ModelRegistry:
        from camtrace.training.registry import ModelRegistry

        return ModelRegistry(self.db)

    def model(self) -> EmbeddingModel:
        """The active embedding model with its index, re-checked against the registry at most every
        CAMTRACE_MODEL_REFRESH_SECONDS. Take it once per unit of work (a query, a batch)."""
        with self._model_lock:
            now = time.monotonic()
            if self._pinned or (self._model is not None and now - self._checked_at < self.settings.model_refresh_seconds):
                return self._model
            try:
                key = self.registry.active_pointer()
            except StorageError:
                if self._model is None:
                    raise
                # The database is away for a moment: keep serving the model in hand.
                log.warning("cannot read the active model; keeping model %s", self._model.model_id, exc_info=True)
                return self._model
            self._checked_at = now
            if self._model is None or key != self._model_key:
                previous = self._model
                self._model = self._build_model(*key)
                self._model_key = key
                if previous is not None:
                    log.info("embedding model switched to %s (registry model %s)", self._model.encoder, key[0])
            return self._model

    def pin(self, model: EmbeddingModel) -> None:
        """Serve ``model`` (an encoder with its index) from now on, whatever the registry says: a fixed
        model for a benchmark, a backfill or a test scene of known vectors."""
        with self._model_lock:
            self._model, self._model_key, self._pinned = model, (model.model_id, model.index_name), True

    def _build_model(self, model_id: int | None, index_name: str | None) -> EmbeddingModel:
        encoder = self.encoder_for(None if model_id is None else self.registry.get(model_id))
        return EmbeddingModel(self.settings, encoder, model_id, index_name, keep_index_open=self.keep_index_open)

    def encoder_for(self, entry: ModelEntry | None = None) -> ImageTextEncoder:
        """An encoder (not loaded yet) of a registered model (None: CAMTRACE_EMBED_MODEL), on the device,
        runtime, precision and threads of this host's settings, like every other encoder."""
        from camtrace.embedding import ImageTextEncoder

        if entry is None:
            return ImageTextEncoder.from_settings(self.settings)
        return ImageTextEncoder.from_settings(self.settings, entry.folder, entry.processor)

    @property
    def encoder(self) -> ImageTextEncoder:
        """The active model's encoder; pair it with ``index`` only through one ``model()``."""
        return self.model().encoder

    @property
    def index(self) -> VectorIndex:
        """The active model's vector index; pair it with ``encoder`` only through one ``model()``."""
        return self.model().index

    def close(self) -> None:
        """Let the index and the database connections go (the object stays usable: they reopen on use)."""
        if self._model is not None:
            self._model.close()
        if "db" in self.__dict__:
            self.db.close()
