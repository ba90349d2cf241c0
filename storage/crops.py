"""Crop store: person-crop JPEGs in a folder, addressed by keys like ``camera/video/point.jpg``.

Writes are atomic (temp file in the same folder, then ``os.replace``), so a
reader sees either the whole old file or the whole new one, and a worker
killed mid-write leaves no half JPEG behind under the key.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Iterable
from pathlib import Path, PurePosixPath

from camtrace.errors import InputError, NotFoundError, StorageError


class CropStore:
    def __init__(self, root: Path | str) -> None:
        self.root = Path(root).expanduser().resolve()

    @classmethod
    def from_settings(cls, settings) -> CropStore:
        return cls(settings.crops_dir)

    def path(self, key: str) -> Path:
        """The file a key names; rejects keys that would leave the store's folder."""
        if not isinstance(key, str) or not key.strip():
            raise InputError(f"crop key {key!r} is empty")
        posix = PurePosixPath(key)
        if "\\" in key or "\x00" in key or posix.is_absolute() or any(part in ("..", "") for part in key.split("/")):
            raise InputError(
                f"crop key {key!r} is not a relative path inside the crop store "
                "(no '..', no leading '/', no empty parts, '/' as separator)"
            )
        path = self.root.joinpath(*posix.parts)
        # A symlinked folder inside the store could still point outside it.
        if not path.resolve().is_relative_to(self.root):
            raise InputError(
                f"crop key {key!r} resolves outside the crop store {self.root}",
                public=f"crop key {key!r} is not a crop of this service",
            )
        return path

    def put(self, key: str, data: bytes) -> Path:
        path = self.path(key)
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            fd, temp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
            try:
                with os.fdopen(fd, "wb") as handle:
                    handle.write(data)
                os.replace(temp, path)
            except BaseException:
                with contextlib.suppress(OSError):
                    os.unlink(temp)
                raise
        except OSError as exc:
            raise StorageError(
                f"cannot write crop {key!r} under {self.root}: {exc}",
                public=f"cannot write crop {key!r}; the server log has the details",
            ) from exc
        return path

    def get(self, key: str) -> bytes:
        path = self.path(key)
        try:
            return path.read_bytes()
        except FileNotFoundError:
            raise NotFoundError(
                f"crop {key!r} is not in the crop store {self.root}", public=f"crop {key!r} does not exist"
            ) from None
        except OSError as exc:
            raise StorageError(
                f"cannot read crop {key!r} under {self.root}: {exc}",
                public=f"cannot read crop {key!r}; the server log has the details",
            ) from exc

    def exists(self, key: str) -> bool:
        return self.path(key).is_file()

    def delete(self, keys: Iterable[str] | str) -> int:
        """Remove crops (missing ones are fine); returns how many files were removed."""
        if isinstance(keys, str):
            keys = [keys]
        removed = 0
        for key in keys:
            try:
                self.path(key).unlink()
                removed += 1
            except FileNotFoundError:
                pass
            except OSError as exc:
                raise StorageError(f"cannot delete crop {key!r} under {self.root}: {exc}") from exc
        return removed
