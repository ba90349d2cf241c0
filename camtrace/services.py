"""The composition root: builds each stage from settings, once, on first use.

The CLI, the local pipeline, the query service and the workers all get their
detector, encoder, index, database and crop store from here, so every entry
point wires the stages the same way. Models load lazily: a command that never
embeds never loads the encoder.
"""

from __future__ import annotations

from functools import cached_property

from camtrace.settings import Settings, prepare_ultralytics_env


class Services:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        prepare_ultralytics_env(settings)

    @cached_property
    def db(self):
        from camtrace.storage import Database

        database = Database(self.settings.sql_url)
        database.migrate()
        return database

    @cached_property
    def crops(self):
        from camtrace.storage import CropStore

        return CropStore(self.settings.crops_dir)

    @cached_property
    def detector(self):
        from camtrace.detection import PersonDetector

        return PersonDetector.from_settings(self.settings)

    @cached_property
    def encoder(self):
        from camtrace.embedding import ImageTextEncoder

        return ImageTextEncoder.from_settings(self.settings)

    @cached_property
    def index(self):
        """The vector index of the current model version (its size comes from the model's config: no weights load)."""
        from camtrace.storage import open_index

        encoder = self.encoder
        index = open_index(self.settings, encoder.model_version, encoder.dim)
        index.ensure()
        return index

    def close(self) -> None:
        if "index" in self.__dict__:
            self.index.close()
