"""Where an image-text model's weights come from: a local folder, the Hugging Face cache, or the hub.

A folder is used as it is; a hub id is served from the cache first and fetched
only when the hub answers a quick probe, so an offline host fails in seconds
with a message naming the setting that points at local weights. A model's
version (``folder_version``, ``hub_cached_commit``) names the weights without
loading them.
"""

from __future__ import annotations

import hashlib
import os
import re
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

from camtrace.errors import ModelLoadError

MODEL_ENV = "CAMTRACE_EMBED_MODEL"
PROCESSOR_ENV = "CAMTRACE_EMBED_PROCESSOR"
# One HEAD request, no retries: long enough for a slow link, short enough that
# an offline host fails in seconds instead of huggingface_hub's ~25 s of retries.
_HUB_PROBE_TIMEOUT_S = 5.0
_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*(/[A-Za-z0-9][\w.-]*)?$")
_WEIGHT_PATTERNS = ("*.safetensors", "*.safetensors.index.json", "pytorch_model*.bin")


def _env_true(name: str) -> bool:
    return os.environ.get(name, "").strip().upper() in {"1", "ON", "YES", "TRUE"}


def _hub_offline() -> bool:
    return _env_true("HF_HUB_OFFLINE") or _env_true("TRANSFORMERS_OFFLINE")


def local_folder(ref: str) -> Path | None:
    path = Path(ref).expanduser()
    return path if path.exists() else None


def _looks_like_hub_id(ref: str) -> bool:
    return bool(_HUB_ID.match(ref)) and not ref.startswith((".", "~"))


def first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__


def load_error(ref: str, what: str, reason: str) -> ModelLoadError:
    """``what`` is "model" or "processor"; the hint names the settings that fix it."""
    if what == "model":
        hint = f"set {MODEL_ENV} to a local SigLIP/SigLIP2/CLIP checkpoint folder"
    else:
        hint = (
            f"set {PROCESSOR_ENV} to a local processor folder (empty: use the model folder's own) "
            f"and {MODEL_ENV} to a local checkpoint folder"
        )
    return ModelLoadError(f"cannot load embedding {what} {ref!r}: {reason}; {hint}")


def _probe_hub(ref: str, what: str) -> None:
    """One quick request before transformers' retrying download: unreachable hub -> error in seconds."""
    from huggingface_hub import get_hf_file_metadata, hf_hub_url
    from huggingface_hub.errors import GatedRepoError, HfHubHTTPError, RepositoryNotFoundError

    probed = "config.json" if what == "model" else "tokenizer_config.json"
    try:
        get_hf_file_metadata(hf_hub_url(ref, probed), timeout=_HUB_PROBE_TIMEOUT_S)
    except GatedRepoError as exc:
        reason = "no such folder, and the hub repository is gated (log in with `hf auth login`)"
        raise load_error(ref, what, reason) from exc
    except RepositoryNotFoundError as exc:
        reason = "no such folder, nor repository on the Hugging Face hub (or it is private)"
        raise load_error(ref, what, reason) from exc
    except HfHubHTTPError as exc:
        status = exc.response.status_code if exc.response is not None else "?"
        if status == 404:  # repo exists but lacks the probed file: let transformers explain
            return
        raise load_error(ref, what, f"no such folder, and the Hugging Face hub answered HTTP {status}") from exc
    except Exception as exc:  # network errors differ across huggingface_hub versions
        reason = f"no such folder, not in the Hugging Face cache, and the hub cannot be reached ({first_line(exc)})"
        raise load_error(ref, what, reason) from exc


def from_pretrained(loader: Callable[..., Any], ref: str, what: str, **kwargs: Any) -> Any:
    """Load from a local folder, else from the HF cache, else (if online and reachable) from the hub."""
    folder = local_folder(ref)
    try:
        if folder is not None:
            if not folder.is_dir():
                raise load_error(ref, what, "it is a file; name the folder that holds config.json and the weights")
            return loader(str(folder), **kwargs)
        if not _looks_like_hub_id(ref):
            raise load_error(ref, what, "no such folder")
        try:
            return loader(ref, local_files_only=True, **kwargs)
        except OSError as exc:
            if _hub_offline():
                raise load_error(ref, what, "no such folder, and not in the Hugging Face cache (HF_HUB_OFFLINE is set)") from exc
        _probe_hub(ref, what)
        return loader(ref, **kwargs)
    except ModelLoadError:
        raise
    except Exception as exc:  # transformers raises OSError, ValueError, KeyError... for bad folders
        where = "folder" if folder is not None else "hub id"
        raise load_error(ref, what, f"{where} holds no loadable {what} ({first_line(exc)})") from exc


_digest_cache: dict[tuple[str, int, int], str] = {}
_digest_lock = threading.Lock()


def _file_digest(path: Path) -> str:
    """sha256 of a file's content, remembered per (path, size, mtime) so repeated calls cost a stat."""
    stat = path.stat()
    key = (str(path.resolve()), stat.st_size, stat.st_mtime_ns)
    with _digest_lock:
        cached = _digest_cache.get(key)
    if cached is None:
        with path.open("rb") as fh:
            cached = hashlib.file_digest(fh, "sha256").hexdigest()
        with _digest_lock:
            _digest_cache[key] = cached
    return cached


def folder_version(folder: Path) -> str:
    """``<folder name>@<12 hex>`` over config.json and the weight files' content."""
    folder = folder.expanduser().resolve()
    files = {folder / "config.json"} if (folder / "config.json").is_file() else set()
    for pattern in _WEIGHT_PATTERNS:
        files.update(p for p in folder.glob(pattern) if p.is_file())
    if not files:
        raise load_error(str(folder), "model", "the folder holds neither config.json nor weights")
    total = hashlib.sha256()
    for path in sorted(files):
        total.update(f"{path.name}\0{_file_digest(path)}\n".encode())
    return f"{folder.name}@{total.hexdigest()[:12]}"


def hub_cached_commit(repo_id: str) -> str | None:
    """Commit of the snapshot the local HF cache would serve for ``repo_id``, if any."""
    from huggingface_hub import try_to_load_from_cache

    try:
        cached = try_to_load_from_cache(repo_id, "config.json")
    except Exception:  # invalid repo id and the like: no version to report
        return None
    if not isinstance(cached, str):
        return None
    parts = Path(cached).parts
    if "snapshots" in parts:
        return parts[parts.index("snapshots") + 1]
    return None
