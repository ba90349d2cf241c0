"""The model registry on SQLite and PostgreSQL: registering, statuses, the active pointer, rollback order."""

from __future__ import annotations

import threading
from pathlib import Path

import numpy as np
import pytest
from storage_fixtures import postgres_url, url  # noqa: F401  (fixtures)

from camtrace.errors import InputError, NotFoundError, StorageError
from camtrace.storage import Database
from camtrace.training.registry import ModelRegistry, model_version_of


@pytest.fixture
def registry(url: str):
    database = Database(url)
    database.migrate()
    yield ModelRegistry(database)
    database.close()


@pytest.fixture(scope="module")
def model_folders(tmp_path_factory, tiny_siglip_dir: Path) -> list[Path]:
    """Three model folders with different weights (copies of the tiny model with one byte changed)."""
    import shutil

    folders = []
    for number in range(3):
        folder = tmp_path_factory.mktemp("models") / f"run-{number}"
        shutil.copytree(tiny_siglip_dir, folder)
        (folder / "config.json").write_text((folder / "config.json").read_text() + " " * number)
        folders.append(folder)
    return folders


def metrics(top1: float) -> dict:
    return {"text_to_identity": {"top1": np.float32(top1), "mrr": top1 + 1}, "image_reid": None}


def test_register_list_get_and_bad_input(registry: ModelRegistry, model_folders: list[Path]) -> None:
    assert registry.list() == [] and registry.active() is None and registry.last_created_at() is None
    first = registry.register(
        model_folders[0],
        parent="google/siglip2-base-patch16-224",
        datasets=["market1501:/data/Market-1501"],
        settings={"epochs": 3, "out_dir": Path("/runs/1")},
        metrics=metrics(41.5),
    )
    second = registry.register(model_folders[1], parent=first, datasets={"train": ["csv:/d.csv"], "val": None})
    # The same folder with the same weights again (a redelivered training task) adds nothing.
    assert registry.register(model_folders[0]) == first
    entries = registry.list()
    assert [e.id for e in entries] == [first, second]
    one = registry.get(str(first))
    assert one.model_version == model_version_of(str(model_folders[0])) != entries[1].model_version
    assert one.folder == str(model_folders[0].resolve()) and one.parent == "google/siglip2-base-patch16-224"
    assert one.settings == {"epochs": 3, "out_dir": "/runs/1"} and one.datasets == ["market1501:/data/Market-1501"]
    assert one.metric("text_to_identity.top1") == pytest.approx(41.5) and one.metric("image_reid.map") is None
    assert one.status == "registered" and one.index_name is None and one.activated_at is None
    assert registry.get(second).parent == str(first)
    assert registry.by_version(one.model_version).id == first
    assert registry.last_created_at() == pytest.approx(entries[1].created_at)
    assert registry.set_metrics(second, metrics(50.0)).metric("text_to_identity.top1") == 50.0

    with pytest.raises(NotFoundError, match="model 999 is not registered"):
        registry.get(999)
    with pytest.raises(InputError, match="'abc' is not a number"):
        registry.get("abc")
    with pytest.raises(InputError, match="does not exist"):
        registry.register(model_folders[0].parent / "missing")
    assert len(registry.list()) == 2


def test_activation_retires_the_previous_model_and_rollback_walks_back(registry: ModelRegistry, model_folders: list[Path]) -> None:
    ids = [registry.register(folder) for folder in model_folders]
    with pytest.raises(StorageError, match="has no index yet"):
        registry.set_active(ids[0])
    with pytest.raises(InputError, match="nothing to roll back"):
        registry.rollback()
    for number, model_id in enumerate(ids):
        registry.set_index(model_id, f"shard-{number}")
    with pytest.raises(NotFoundError):
        registry.set_active(12345)

    for model_id in ids:
        registry.set_active(model_id)
    statuses = {e.id: e.status for e in registry.list()}
    assert statuses == {ids[0]: "retired", ids[1]: "retired", ids[2]: "active"}
    assert registry.active_pointer() == (ids[2], "shard-2")

    # Rollback goes back in activation order; the model left behind can be promoted again.
    assert registry.rollback_target().id == ids[1]
    assert registry.rollback().id == ids[1]
    assert registry.active_pointer() == (ids[1], "shard-1") and registry.get(ids[2]).status == "registered"
    assert registry.rollback().id == ids[0]
    assert registry.rollback() is None  # back to the configured model
    assert registry.active_pointer() == (None, None) and registry.active() is None
    assert {e.status for e in registry.list()} == {"registered"}


def test_readers_never_see_two_active_models_during_switches(registry: ModelRegistry, model_folders: list[Path]) -> None:
    ids = [registry.register(folder) for folder in model_folders[:2]]
    for model_id in ids:
        registry.set_index(model_id, f"shard-{model_id}")
    registry.set_active(ids[0])
    seen: list[tuple] = []
    stop = threading.Event()

    def read() -> None:
        while not stop.is_set():
            active = [e for e in registry.list() if e.status == "active"]
            pointer = registry.active_pointer()
            seen.append((len(active), pointer[0] in ids, pointer[1] == f"shard-{pointer[0]}"))

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    for turn in range(20):
        registry.set_active(ids[turn % 2])
    stop.set()
    reader.join(30)
    assert seen and all(row == (1, True, True) for row in seen)
