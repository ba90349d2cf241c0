"""Image and text encoders for SigLIP / SigLIP2 / CLIP checkpoints.

``InferenceModel`` owns what every model wrapper shares: where the weights
live, the device, lazy loading on first use, ``load()`` / ``unload()``.
``ImageTextEncoder`` adds one image-text bundle (model, processor and the text
settings that must travel with them) loaded through ``AutoModel`` and
``AutoProcessor``, and turns crops and queries into L2-normalised float32
vectors. Families are looked up in ``MODEL_FAMILIES`` by ``config.model_type``:
supporting another family means registering one more ``ModelFamily``.
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
import threading
from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from camtrace.errors import ConfigError, InputError, ModelLoadError

if TYPE_CHECKING:
    import torch
    from PIL import Image

    from camtrace.settings import Settings

log = logging.getLogger(__name__)

_MODEL_ENV = "CAMTRACE_EMBED_MODEL"
_PROCESSOR_ENV = "CAMTRACE_EMBED_PROCESSOR"
# One HEAD request, no retries: long enough for a slow link, short enough that
# an offline host fails in seconds instead of huggingface_hub's ~25 s of retries.
_HUB_PROBE_TIMEOUT_S = 5.0
_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*(/[A-Za-z0-9][\w.-]*)?$")
_WEIGHT_PATTERNS = ("*.safetensors", "*.safetensors.index.json", "pytorch_model*.bin")


# --------------------------------------------------------------------------
# Devices
# --------------------------------------------------------------------------
def resolve_device(device: str) -> torch.device:
    """``auto`` -> ``cuda`` when available, else ``cpu``; ``cuda``/``cuda:N``/``mps`` must exist."""
    import torch

    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device == "cpu":
        return torch.device("cpu")
    if device == "cuda" or (device.startswith("cuda:") and device[5:].isdigit()):
        if not torch.cuda.is_available():
            raise ConfigError(f"device {device!r} requested but CUDA is not available; set CAMTRACE_DEVICE=cpu or auto")
        index = int(device[5:]) if ":" in device else 0
        if index >= torch.cuda.device_count():
            raise ConfigError(
                f"device {device!r} requested but only {torch.cuda.device_count()} CUDA device(s) exist; "
                "fix CAMTRACE_DEVICE"
            )
        return torch.device(device)
    if device == "mps":
        if not torch.backends.mps.is_available():
            raise ConfigError("device 'mps' requested but it is not available; set CAMTRACE_DEVICE=cpu or auto")
        return torch.device("mps")
    raise ConfigError(f"unknown device {device!r}; CAMTRACE_DEVICE must be auto, cpu, cuda, cuda:N or mps")


def inference_dtype(device: torch.device) -> torch.dtype:
    """bf16 where the GPU supports it (fp16 otherwise); float32 elsewhere."""
    import torch

    if device.type == "cuda":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    return torch.float32


# --------------------------------------------------------------------------
# Base class
# --------------------------------------------------------------------------
class InferenceModel(ABC):
    """A model loaded lazily, once, on first use; ``unload()`` frees it again."""

    def __init__(self, model: str, device: str = "auto") -> None:
        self.model_name = str(model)
        self.device_setting = device
        self._device: torch.device | None = None
        self._loaded = False
        # Worker thread pools may hit the first request concurrently.
        self._lock = threading.RLock()

    @property
    def device(self) -> torch.device:
        if self._device is None:
            self._device = resolve_device(self.device_setting)
        return self._device

    @property
    def loaded(self) -> bool:
        return self._loaded

    def load(self) -> None:
        with self._lock:
            if not self._loaded:
                self._load()
                self._loaded = True

    def unload(self) -> None:
        with self._lock:
            if not self._loaded:
                return
            self._unload()
            self._loaded = False
            if self._device is not None and self._device.type == "cuda":
                import torch

                torch.cuda.empty_cache()

    def _ensure_loaded(self) -> None:
        if not self._loaded:
            self.load()

    @abstractmethod
    def _load(self) -> None:
        """Read the weights onto ``self.device``; raise ModelLoadError on failure."""

    @abstractmethod
    def _unload(self) -> None:
        """Drop every reference to the weights."""


# --------------------------------------------------------------------------
# Families
# --------------------------------------------------------------------------
@dataclass(frozen=True)
class ModelFamily:
    """What differs between image-text families once AutoModel/AutoProcessor have done their part."""

    model_type: str
    # (image dim, text dim) from the config, checked equal at load time.
    dims: Callable[[Any], tuple[int, int]]
    # SigLIP/SigLIP2 were trained on lower-cased text; the Gemma tokenizer does not lower-case.
    lowercase_text: bool
    # SigLIP pools the last position, so padding must be what training used.
    text_padding: str = "max_length"


def _siglip_dims(config: Any) -> tuple[int, int]:
    text = config.text_config
    return config.vision_config.hidden_size, getattr(text, "projection_size", None) or text.hidden_size


def _clip_dims(config: Any) -> tuple[int, int]:
    return config.projection_dim, config.projection_dim


MODEL_FAMILIES: dict[str, ModelFamily] = {}


def register_family(family: ModelFamily) -> ModelFamily:
    MODEL_FAMILIES[family.model_type] = family
    return family


register_family(ModelFamily("siglip", _siglip_dims, lowercase_text=True))
register_family(ModelFamily("siglip2", _siglip_dims, lowercase_text=True))
register_family(ModelFamily("clip", _clip_dims, lowercase_text=False))


# --------------------------------------------------------------------------
# Where weights come from
# --------------------------------------------------------------------------
def _env_true(name: str) -> bool:
    return os.environ.get(name, "").strip().upper() in {"1", "ON", "YES", "TRUE"}


def _hub_offline() -> bool:
    return _env_true("HF_HUB_OFFLINE") or _env_true("TRANSFORMERS_OFFLINE")


def _local_folder(ref: str) -> Path | None:
    path = Path(ref).expanduser()
    return path if path.exists() else None


def _looks_like_hub_id(ref: str) -> bool:
    return bool(_HUB_ID.match(ref)) and not ref.startswith((".", "~"))


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__


def _load_error(ref: str, what: str, reason: str) -> ModelLoadError:
    """``what`` is "model" or "processor"; the hint names the settings that fix it."""
    if what == "model":
        hint = f"set {_MODEL_ENV} to a local SigLIP/SigLIP2/CLIP checkpoint folder"
    else:
        hint = (
            f"set {_PROCESSOR_ENV} to a local processor folder (empty: use the model folder's own) "
            f"and {_MODEL_ENV} to a local checkpoint folder"
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
        raise _load_error(ref, what, reason) from exc
    except RepositoryNotFoundError as exc:
        reason = "no such folder, nor repository on the Hugging Face hub (or it is private)"
        raise _load_error(ref, what, reason) from exc
    except HfHubHTTPError as exc:
        status = exc.response.status_code if exc.response is not None else "?"
        if status == 404:  # repo exists but lacks the probed file: let transformers explain
            return
        raise _load_error(ref, what, f"no such folder, and the Hugging Face hub answered HTTP {status}") from exc
    except Exception as exc:  # network errors differ across huggingface_hub versions
        reason = f"no such folder, not in the Hugging Face cache, and the hub cannot be reached ({_first_line(exc)})"
        raise _load_error(ref, what, reason) from exc


def _from_pretrained(loader: Callable[..., Any], ref: str, what: str, **kwargs: Any) -> Any:
    """Load from a local folder, else from the HF cache, else (if online and reachable) from the hub."""
    folder = _local_folder(ref)
    try:
        if folder is not None:
            if not folder.is_dir():
                raise _load_error(ref, what, "it is a file; name the folder that holds config.json and the weights")
            return loader(str(folder), **kwargs)
        if not _looks_like_hub_id(ref):
            raise _load_error(ref, what, "no such folder")
        try:
            return loader(ref, local_files_only=True, **kwargs)
        except OSError as exc:
            if _hub_offline():
                raise _load_error(
                    ref, what, "no such folder, and not in the Hugging Face cache (HF_HUB_OFFLINE is set)"
                ) from exc
        _probe_hub(ref, what)
        return loader(ref, **kwargs)
    except ModelLoadError:
        raise
    except Exception as exc:  # transformers raises OSError, ValueError, KeyError... for bad folders
        where = "folder" if folder is not None else "hub id"
        raise _load_error(ref, what, f"{where} holds no loadable {what} ({_first_line(exc)})") from exc


# --------------------------------------------------------------------------
# Model versions
# --------------------------------------------------------------------------
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
        raise _load_error(str(folder), "model", "the folder holds neither config.json nor weights")
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


# --------------------------------------------------------------------------
# The encoder
# --------------------------------------------------------------------------
@dataclass
class _Bundle:
    """Model, processor and the settings that must travel with them, loaded together."""

    model: Any
    processor: Any
    family: ModelFamily
    dim: int
    dtype: Any
    text_kwargs: dict[str, Any]


class ImageTextEncoder(InferenceModel):
    """Person crops and text queries -> L2-normalised float32 vectors in one shared space."""

    def __init__(
        self,
        model: str | os.PathLike[str],
        processor: str | os.PathLike[str] | None = None,
        device: str = "auto",
        batch_size: int = 64,
        text_max_length: int = 64,
    ) -> None:
        super().__init__(str(model), device)
        if batch_size < 1:
            raise ConfigError("CAMTRACE_EMBED_BATCH_SIZE must be at least 1")
        if text_max_length < 1:
            raise ConfigError("CAMTRACE_EMBED_TEXT_MAX_LENGTH must be at least 1")
        self.processor_name = str(processor) if processor not in (None, "") else None
        self.batch_size = batch_size
        self.text_max_length = text_max_length
        self._bundle: _Bundle | None = None
        self._version: str | None = None

    @classmethod
    def from_settings(cls, settings: Settings) -> ImageTextEncoder:
        return cls(
            settings.embed_model,
            settings.effective_embed_processor(),
            device=settings.device,
            batch_size=settings.embed_batch_size,
            text_max_length=settings.embed_text_max_length,
        )

    def __repr__(self) -> str:
        state = "loaded" if self.loaded else "not loaded"
        return f"ImageTextEncoder({self.model_name!r}, processor={self.processor_name!r}, {state})"

    # -- loading -----------------------------------------------------------
    def _load(self) -> None:
        from transformers import AutoConfig, AutoModel, AutoProcessor
        from transformers.utils import logging as hf_logging

        # Workers and the CLI have their own progress reporting; keep transformers' bars out of it.
        hf_logging.disable_progress_bar()

        ref = self.model_name
        config = _from_pretrained(AutoConfig.from_pretrained, ref, "model")
        family = MODEL_FAMILIES.get(getattr(config, "model_type", ""))
        if family is None:
            raise _load_error(
                ref,
                "model",
                f"model type {getattr(config, 'model_type', None)!r} is not an image-text family camtrace knows "
                f"(supported: {', '.join(sorted(MODEL_FAMILIES))})",
            )
        image_dim, text_dim = family.dims(config)
        if image_dim != text_dim:
            raise _load_error(ref, "model", f"image ({image_dim}) and text ({text_dim}) embeddings differ in size")

        device = self.device
        dtype = inference_dtype(device)
        folder = _local_folder(ref)
        # Taken before reading the weights, so the version names what gets loaded.
        version = folder_version(folder) if folder is not None else None
        model = _from_pretrained(AutoModel.from_pretrained, ref, "model")
        for tower in ("get_image_features", "get_text_features"):
            if not callable(getattr(model, tower, None)):
                raise _load_error(ref, "model", f"{type(model).__name__} lacks {tower}: it needs image and text towers")
        # Cast after loading: checkpoints are stored in various dtypes and the kwarg's name varies by version.
        model.to(device=device, dtype=dtype).eval()

        processor_ref = self.processor_name or ref
        processor = _from_pretrained(AutoProcessor.from_pretrained, processor_ref, "processor")
        if getattr(processor, "tokenizer", None) is None or getattr(processor, "image_processor", None) is None:
            raise _load_error(
                processor_ref, "processor", f"{type(processor).__name__} lacks a tokenizer or an image processor"
            )

        # Never ask for more positions than the text tower has.
        max_positions = getattr(config.text_config, "max_position_embeddings", None) or self.text_max_length
        text_kwargs = {
            "padding": family.text_padding,
            "max_length": min(self.text_max_length, max_positions),
            "truncation": True,
        }
        if version is None:
            commit = hub_cached_commit(ref)
            version = f"{ref}@{commit[:12]}" if commit else ref
        self._bundle = _Bundle(model, processor, family, image_dim, dtype, text_kwargs)
        self._version = version
        log.info("loaded embedding model %s (%s, dim %d) on %s", ref, config.model_type, image_dim, device)

    def _unload(self) -> None:
        self._bundle = None
        self._version = None

    def _get_bundle(self) -> _Bundle:
        self._ensure_loaded()
        assert self._bundle is not None
        return self._bundle

    # -- metadata ------------------------------------------------------------
    @property
    def dim(self) -> int:
        return self._get_bundle().dim

    @property
    def model_version(self) -> str:
        """Identifies the weights: ``<folder>@<hash>`` or ``<hub id>@<commit>``.

        A local folder or a hub id already in the HF cache is identified without
        loading; otherwise the model is loaded (downloaded) first, or the load
        error explains why it cannot be.
        """
        with self._lock:
            if self._version is not None:  # set at load: what is in memory
                return self._version
            folder = _local_folder(self.model_name)
            if folder is not None:
                return folder_version(folder)
            commit = hub_cached_commit(self.model_name)
            if commit is not None:
                return f"{self.model_name}@{commit[:12]}"
            self.load()
            assert self._version is not None
            return self._version

    # -- encoding ------------------------------------------------------------
    def encode_images(self, images: Sequence[Image.Image | np.ndarray]) -> np.ndarray:
        """RGB images (PIL or uint8 HxWx3 arrays) -> float32 (n, dim), unit rows."""
        arrays = [_as_rgb_array(image, i) for i, image in enumerate(images)]
        bundle = self._get_bundle()
        if not arrays:
            return np.zeros((0, bundle.dim), dtype=np.float32)
        return self._run(bundle, arrays, self._image_batch)

    def encode_texts(self, texts: Sequence[str]) -> np.ndarray:
        """Descriptions ("man, grey hoodie, blue jeans") -> float32 (n, dim), unit rows."""
        if isinstance(texts, str):
            raise InputError("encode_texts takes a list of strings, not one string")
        for i, text in enumerate(texts):
            if not isinstance(text, str):
                raise InputError(f"text {i} is {type(text).__name__}, not str")
        bundle = self._get_bundle()
        items = [text.lower() for text in texts] if bundle.family.lowercase_text else list(texts)
        if not items:
            return np.zeros((0, bundle.dim), dtype=np.float32)
        return self._run(bundle, items, self._text_batch)

    def _run(self, bundle: _Bundle, items: list[Any], step: Callable[[_Bundle, list[Any]], torch.Tensor]) -> np.ndarray:
        import torch

        out = np.empty((len(items), bundle.dim), dtype=np.float32)
        with torch.inference_mode():
            for start in range(0, len(items), self.batch_size):
                feats = step(bundle, items[start : start + self.batch_size]).float()
                feats = feats / feats.norm(dim=-1, keepdim=True).clamp_min(1e-12)
                out[start : start + len(feats)] = feats.cpu().numpy()
        return out

    # The sub-processors are called directly: through the processor's __call__,
    # class-level defaults (Siglip2Processor's patch_size=16, max_num_patches=256)
    # override the image processor's saved configuration.
    def _image_batch(self, bundle: _Bundle, arrays: list[np.ndarray]) -> torch.Tensor:
        # channels_last stated explicitly: a 3-pixel-high crop would otherwise be read as channels-first.
        inputs = bundle.processor.image_processor(arrays, return_tensors="pt", input_data_format="channels_last")
        inputs = inputs.to(device=self.device, dtype=bundle.dtype)
        return _pooled(bundle.model.get_image_features(**inputs))

    def _text_batch(self, bundle: _Bundle, texts: list[str]) -> torch.Tensor:
        inputs = bundle.processor.tokenizer(texts, return_tensors="pt", **bundle.text_kwargs)
        inputs = inputs.to(self.device)
        return _pooled(bundle.model.get_text_features(**inputs))


def _pooled(output: Any) -> torch.Tensor:
    """transformers 5 returns an output object; older versions a tensor."""
    pooled = getattr(output, "pooler_output", None)
    if pooled is not None:
        return pooled
    if isinstance(output, tuple):
        return output[1] if len(output) > 1 else output[0]
    return output


def _as_rgb_array(image: Any, index: int) -> np.ndarray:
    from PIL import Image

    if isinstance(image, Image.Image):
        image = np.array(image.convert("RGB") if image.mode != "RGB" else image)
    if not isinstance(image, np.ndarray):
        raise InputError(f"image {index} is {type(image).__name__}; pass PIL images or uint8 HxWx3 RGB arrays")
    if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
        raise InputError(f"image {index} has shape {image.shape} and dtype {image.dtype}; expected uint8 HxWx3 RGB")
    if image.shape[0] == 0 or image.shape[1] == 0:
        raise InputError(f"image {index} is empty ({image.shape[0]}x{image.shape[1]} pixels)")
    # torch refuses to wrap read-only memory without a warning (and a risk).
    return image if image.flags.writeable else image.copy()
