"""Crop store: atomic writes, reads, deletes, and keys that cannot escape the folder."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from camtrace.errors import InputError, NotFoundError, StorageError
from camtrace.storage.crops import CropStore

JPEG = b"\xff\xd8\xff\xe0" + bytes(range(256)) * 8 + b"\xff\xd9"


def test_put_get_exists_delete(tmp_path: Path) -> None:
    store = CropStore(tmp_path / "crops")
    key = "gate/v1/5b0c2c1e.jpg"
    assert not store.exists(key)
    path = store.put(key, JPEG)
    assert path == (tmp_path / "crops" / "gate" / "v1" / "5b0c2c1e.jpg").resolve()
    assert path.read_bytes() == JPEG and store.get(key) == JPEG and store.exists(key)

    store.put(key, b"newer")  # overwrite in place
    assert store.get(key) == b"newer"
    assert os.listdir(path.parent) == ["5b0c2c1e.jpg"]  # no temp files left behind

    store.put("gate/v1/other.jpg", JPEG)
    assert store.delete([key, "gate/v1/missing.jpg"]) == 1
    assert not store.exists(key) and store.exists("gate/v1/other.jpg")
    with pytest.raises(NotFoundError, match="gate/v1/5b0c2c1e.jpg"):
        store.get(key)


@pytest.mark.parametrize(
    "key", ["../outside.jpg", "gate/../../outside.jpg", "/etc/passwd", "gate//x.jpg", "gate\\..\\x.jpg", "", "a/./../b"]
)
def test_keys_cannot_escape_the_root(tmp_path: Path, key: str) -> None:
    store = CropStore(tmp_path / "crops")
    with pytest.raises(InputError, match="crop key"):
        store.put(key, JPEG)
    assert not (tmp_path / "outside.jpg").exists()


def test_symlinked_folder_cannot_lead_outside(tmp_path: Path) -> None:
    outside = tmp_path / "elsewhere"
    outside.mkdir()
    store = CropStore(tmp_path / "crops")
    store.root.mkdir(parents=True)
    (store.root / "cam").symlink_to(outside, target_is_directory=True)
    with pytest.raises(InputError, match="outside the crop store"):
        store.put("cam/x.jpg", JPEG)
    assert list(outside.iterdir()) == []


def test_failed_write_leaves_no_temp_file(tmp_path: Path) -> None:
    store = CropStore(tmp_path / "crops")
    store.put("gate/v1/p.jpg", JPEG)
    # A key naming an existing folder: the final rename fails for real.
    with pytest.raises(StorageError, match="cannot write crop 'gate/v1'"):
        store.put("gate/v1", b"not a folder")
    assert sorted(os.listdir(store.root / "gate")) == ["v1"]
    assert store.get("gate/v1/p.jpg") == JPEG
