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

import contextlib
import hashlib
import logging
import os
import re
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from camtrace.errors import ConfigError, InputError, ModelLoadError

# Re-exported: the base and device helpers lived here before the detector shared them.
from camtrace.inference import InferenceModel as InferenceModel
from camtrace.inference import inference_dtype as inference_dtype
from camtrace.inference import onnx_providers, onnx_session_options
from camtrace.inference import resolve_device as resolve_device

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
    # Fixed-size square input: the vision tower exports to ONNX with one input (NaFlex needs masks and shapes).
    fixed_image_size: bool = True


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
register_family(ModelFamily("siglip2", _siglip_dims, lowercase_text=True, fixed_image_size=False))
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
    """Model, processor and the settings that must travel with them, loaded together.

    On ONNX Runtime ``session`` runs the vision tower and ``model`` (PyTorch,
    for text queries) stays None until the first text comes.
    """

    model: Any
    processor: Any
    family: ModelFamily
    dim: int
    dtype: Any
    text_kwargs: dict[str, Any]
    session: Any = None
    quantization: str = "fp32"
    pixel_transform: Any = None  # on CUDA: resize + normalise on the device instead of the processor's PIL path


class ImageTextEncoder(InferenceModel):
    """Person crops and text queries -> L2-normalised float32 vectors in one shared space."""

    def __init__(
        self,
        model: str | os.PathLike[str],
        processor: str | os.PathLike[str] | None = None,
        device: str = "auto",
        batch_size: int = 64,
        text_max_length: int = 64,
        runtime: str = "torch",
        exports_dir: str | os.PathLike[str] | None = None,
        onnx_quantize: str = "auto",
        gpu_precision: str = "auto",
        cpu_threads: int = 0,
    ) -> None:
        super().__init__(str(model), device, runtime, cpu_threads)
        inference_dtype(resolve_device("cpu"), gpu_precision)  # validates the name without touching a GPU
        self.gpu_precision = gpu_precision
        if onnx_quantize not in ONNX_QUANTIZE:
            raise ConfigError(f"CAMTRACE_ONNX_QUANTIZE must be one of {', '.join(ONNX_QUANTIZE)}, not {onnx_quantize!r}")
        self.exports_dir = Path(exports_dir) if exports_dir is not None else None
        # auto is int8: on random siglip2-base weights it moved Top-1 and mAP by less than 0.5 points
        # (benchmarks/bench_runtimes.py); set fp32 for a model where it does not.
        self.onnx_quantization = "fp32" if onnx_quantize == "fp32" else "int8"
        if batch_size < 1:
            raise ConfigError("CAMTRACE_EMBED_BATCH_SIZE must be at least 1")
        if text_max_length < 1:
            raise ConfigError("CAMTRACE_EMBED_TEXT_MAX_LENGTH must be at least 1")
        self.processor_name = str(processor) if processor not in (None, "") else None
        self.batch_size = batch_size
        self.text_max_length = text_max_length
        self._bundle: _Bundle | None = None
        self._version: str | None = None
        self._config_dim: int | None = None

    @classmethod
    def from_settings(
        cls, settings: Settings, model: str | os.PathLike[str] | None = None, processor: str | None = None
    ) -> ImageTextEncoder:
        """The one way camtrace builds an encoder: ``model`` (a registry entry's folder, a folder named on the
        command line; None: CAMTRACE_EMBED_MODEL with its processor) on the device, runtime, precision, CPU
        threads, exports folder and batch sizes the settings choose. ``processor`` None: the model's own."""
        if model is None:
            model, processor = settings.embed_model, settings.effective_embed_processor()
        return cls(
            model,
            processor,
            device=settings.device,
            batch_size=settings.embed_batch_size,
            text_max_length=settings.embed_text_max_length,
            runtime=settings.runtime,
            exports_dir=settings.exports_dir,
            onnx_quantize=settings.onnx_quantize,
            gpu_precision=settings.gpu_precision,
            cpu_threads=settings.cpu_threads,
        )

    def __repr__(self) -> str:
        state = "loaded" if self.loaded else "not loaded"
        return f"ImageTextEncoder({self.model_name!r}, processor={self.processor_name!r}, {state})"

    # -- loading -----------------------------------------------------------
    def _config_and_family(self) -> tuple[Any, ModelFamily]:
        """The model's config.json and its family: no weights are read."""
        from transformers import AutoConfig

        config = _from_pretrained(AutoConfig.from_pretrained, self.model_name, "model")
        family = MODEL_FAMILIES.get(getattr(config, "model_type", ""))
        if family is None:
            raise _load_error(
                self.model_name,
                "model",
                f"model type {getattr(config, 'model_type', None)!r} is not an image-text family camtrace knows "
                f"(supported: {', '.join(sorted(MODEL_FAMILIES))})",
            )
        return config, family

    def _images_on_onnx(self, family: ModelFamily) -> bool:
        """The image side runs on ONNX Runtime: the runtime says so and the family's input has a fixed size."""
        return self.runtime == "onnx" and family.fixed_image_size

    def _load(self) -> None:
        from transformers import AutoProcessor
        from transformers.utils import logging as hf_logging

        # Workers and the CLI have their own progress reporting; keep transformers' bars out of it.
        hf_logging.disable_progress_bar()

        ref = self.model_name
        config, family = self._config_and_family()
        image_dim, text_dim = family.dims(config)
        if image_dim != text_dim:
            raise _load_error(ref, "model", f"image ({image_dim}) and text ({text_dim}) embeddings differ in size")

        device = self.device
        dtype = inference_dtype(device, self.gpu_precision)
        folder = _local_folder(ref)
        # Taken before reading the weights, so the version names what gets loaded.
        version = folder_version(folder) if folder is not None else None
        if version is None and (commit := hub_cached_commit(ref)) is not None:
            version = f"{ref}@{commit[:12]}"
        use_onnx = self._images_on_onnx(family)
        if self.runtime == "onnx" and not use_onnx:
            log.warning("%s (%s) has variable-size image input: it runs on PyTorch", ref, config.model_type)
        if use_onnx and self.exports_dir is None:
            raise ConfigError("the ONNX runtime needs a folder for its exports; set CAMTRACE_DATA_DIR")
        model = None if use_onnx else self._load_torch_model(ref, device, dtype)

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
        bundle = _Bundle(model, processor, family, image_dim, dtype, text_kwargs)
        if use_onnx:
            bundle.quantization = self.onnx_quantization
            bundle.session = self._onnx_session(ref, config, version, bundle.quantization)
            bundle.dtype = None
        elif device.type == "cuda":
            bundle.pixel_transform = DevicePixelTransform.from_processor(processor.image_processor, device, dtype)
        self._bundle = bundle
        self._version = version
        runtime = f"onnx {bundle.quantization}" if use_onnx else f"torch {dtype}"
        log.info("loaded embedding model %s (%s, dim %d) on %s, %s", ref, config.model_type, image_dim, device, runtime)

    def _load_torch_model(self, ref: str, device: torch.device, dtype: torch.dtype) -> Any:
        from transformers import AutoModel

        # SDPA: fused attention kernels on GPUs (and the default where transformers supports it).
        model = _from_pretrained(AutoModel.from_pretrained, ref, "model", attn_implementation="sdpa")
        for tower in ("get_image_features", "get_text_features"):
            if not callable(getattr(model, tower, None)):
                raise _load_error(ref, "model", f"{type(model).__name__} lacks {tower}: it needs image and text towers")
        # Cast after loading: checkpoints are stored in various dtypes and the kwarg's name varies by version.
        return model.to(device=device, dtype=dtype).eval()

    def _onnx_session(self, ref: str, config: Any, version: str, quantization: str) -> Any:
        """An ONNX Runtime session of the vision tower, exported (once per model version) into the exports dir."""
        import onnxruntime as ort

        from camtrace.exports import ExportSpec, ensure_export

        image_size = int(config.vision_config.image_size)
        spec = ExportSpec(
            name=f"vision-{quantization}",
            source_version=version,
            runtime=f"onnxruntime>={ort.__version__.split('.')[0]}",
            quantization=quantization,
            file_name="vision.onnx",
            options={"image_size": image_size, "output": "l2-normalised pooled image embedding"},
        )
        assert self.exports_dir is not None
        path = ensure_export(
            self.exports_dir,
            spec,
            lambda work: export_vision_tower(ref, image_size, work, quantization),
            f"the ONNX {quantization} export of the image encoder",
        )
        try:
            return ort.InferenceSession(
                str(path), onnx_session_options(self.cpu_threads), providers=onnx_providers(self.device)
            )
        except Exception as exc:
            raise ModelLoadError(
                f"cannot open the ONNX export {path} of {ref!r} ({_first_line(exc)}); delete it to rebuild, "
                "or set CAMTRACE_RUNTIME=torch"
            ) from exc

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
        """The vector size, read from the model's config.json: no weights are loaded for it."""
        with self._lock:
            if self._bundle is not None:
                return self._bundle.dim
            if self._config_dim is None:
                config, family = self._config_and_family()
                self._config_dim = family.dims(config)[0]
            return self._config_dim

    @property
    def runtime_label(self) -> str:
        """What runs the image side, e.g. ``onnx int8`` or ``torch bf16``. Before loading it is read from the
        config and the settings, so reporting it (``camtrace stats``) loads no weights."""
        bundle = self._bundle
        if bundle is not None:
            if bundle.session is not None:
                return f"onnx {bundle.quantization}"
            dtype = bundle.dtype
        else:
            _, family = self._config_and_family()
            if self._images_on_onnx(family):
                return f"onnx {self.onnx_quantization}"
            dtype = inference_dtype(self.device, self.gpu_precision)
        return "torch " + _DTYPE_NAMES.get(str(dtype), str(dtype))

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
        with self._lock:
            if bundle.model is None:  # ONNX runtime: the text side loads on the first query
                bundle.dtype = inference_dtype(self.device, self.gpu_precision)
                bundle.model = self._load_torch_model(self.model_name, self.device, bundle.dtype)
        return self._run(bundle, items, self._text_batch)

    def _run(self, bundle: _Bundle, items: list[Any], step: Callable[[_Bundle, list[Any]], torch.Tensor]) -> np.ndarray:
        import torch

        out = np.empty((len(items), bundle.dim), dtype=np.float32)
        if bundle.session is not None and step == self._image_batch:
            # Dynamic int8 quantises activations with one scale per input tensor, i.e. per batch: one crop per
            # run keeps a crop's vector independent of its batch mates (local, distributed and backfill agree).
            size = 1 if bundle.quantization == "int8" else self.batch_size
            for start in range(0, len(items), size):
                out[start : start + size] = self._onnx_image_batch(bundle, items[start : start + size])
            return out
        with torch.inference_mode():
            for start in range(0, len(items), self.batch_size):
                feats = step(bundle, items[start : start + self.batch_size]).float()
                feats = feats / feats.norm(dim=-1, keepdim=True).clamp_min(1e-12)
                out[start : start + len(feats)] = feats.cpu().numpy()
        return out

    # The sub-processors are called directly: through the processor's __call__,
    # class-level defaults (Siglip2Processor's patch_size=16, max_num_patches=256)
    # override the image processor's saved configuration.
    def _onnx_image_batch(self, bundle: _Bundle, arrays: list[np.ndarray]) -> np.ndarray:
        inputs = bundle.processor.image_processor(arrays, return_tensors="np", input_data_format="channels_last")
        pixels = np.ascontiguousarray(inputs["pixel_values"], dtype=np.float32)
        return bundle.session.run(None, {"pixel_values": pixels})[0]

    def _image_batch(self, bundle: _Bundle, arrays: list[np.ndarray]) -> torch.Tensor:
        if bundle.pixel_transform is not None:
            return _pooled(bundle.model.get_image_features(pixel_values=bundle.pixel_transform(arrays)))
        # channels_last stated explicitly: a 3-pixel-high crop would otherwise be read as channels-first.
        inputs = bundle.processor.image_processor(arrays, return_tensors="pt", input_data_format="channels_last")
        inputs = inputs.to(device=self.device, dtype=bundle.dtype)
        return _pooled(bundle.model.get_image_features(**inputs))

    def _text_batch(self, bundle: _Bundle, texts: list[str]) -> torch.Tensor:
        inputs = bundle.processor.tokenizer(texts, return_tensors="pt", **bundle.text_kwargs)
        inputs = inputs.to(self.device)
        return _pooled(bundle.model.get_text_features(**inputs))


ONNX_QUANTIZE = ("auto", "int8", "fp32")
_DTYPE_NAMES = {"torch.bfloat16": "bf16", "torch.float16": "fp16", "torch.float32": "fp32"}


def export_vision_tower(ref: str, image_size: int, work: Path, quantization: str) -> Path:
    """Export the vision tower (pixels -> L2-normalised pooled embedding, dynamic batch) to ONNX in ``work``."""
    import torch
    from onnxruntime.quantization import QuantType, quantize_dynamic
    from transformers import AutoModel

    model = _from_pretrained(AutoModel.from_pretrained, ref, "model", attn_implementation="eager")
    model = model.to(device="cpu", dtype=torch.float32).eval()

    class VisionEmbedding(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.model = model

        def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
            feats = _pooled(self.model.get_image_features(pixel_values=pixel_values))
            return feats / feats.norm(dim=-1, keepdim=True).clamp_min(1e-12)

    fp32 = work / "vision-fp32.onnx"
    with torch.inference_mode():
        # The TorchScript exporter: one self-contained file, and a dynamic batch axis by name.
        torch.onnx.export(
            VisionEmbedding().eval(),
            (torch.zeros(2, 3, image_size, image_size),),
            str(fp32),
            input_names=["pixel_values"],
            output_names=["embedding"],
            dynamic_axes={"pixel_values": {0: "batch"}, "embedding": {0: "batch"}},
            opset_version=17,
            dynamo=False,
        )
    if quantization == "fp32":
        return fp32
    int8 = work / "vision-int8.onnx"
    with _quiet_quantization_advice():
        quantize_dynamic(str(fp32), str(int8), weight_type=QuantType.QInt8)
    return int8


@contextlib.contextmanager
def _quiet_quantization_advice():
    """ONNX Runtime's quantizer logs advice to the root logger on every export ("consider pre-processing"): it
    is meant for whoever tunes a quantization by hand, not for a user whose first run builds the export."""

    def drop(record: logging.LogRecord) -> bool:
        return "pre-processing before quantization" not in record.getMessage()

    root = logging.getLogger()
    root.addFilter(drop)
    try:
        yield
    finally:
        root.removeFilter(drop)


class DevicePixelTransform:
    """Crops -> model input on the GPU: uint8 copied from pinned memory, then one resize + normalise there.

    Used for fixed-size, squash-resize processors (SigLIP's): what the processor does
    with PIL on the CPU, done in a few GPU kernels per batch.
    """

    def __init__(self, size: tuple[int, int], mean: Sequence[float], std: Sequence[float], scale: float,
                 device: torch.device, dtype: torch.dtype) -> None:
        import torch

        self.size = size
        self.device = device
        self.dtype = dtype
        self.scale = scale
        self.mean = torch.tensor(mean, dtype=torch.float32, device=device).view(1, 3, 1, 1)
        self.std = torch.tensor(std, dtype=torch.float32, device=device).view(1, 3, 1, 1)

    @classmethod
    def from_processor(cls, image_processor: Any, device: torch.device, dtype: torch.dtype) -> DevicePixelTransform | None:
        """The transform equivalent to ``image_processor``, or None where it is not a plain squash-resize."""
        size = getattr(image_processor, "size", None) or {}
        height, width = (size.get(key) if isinstance(size, dict) else getattr(size, key, None) for key in ("height", "width"))
        if not (height and width):
            return None  # shortest-edge + centre crop (CLIP) or NaFlex (SigLIP2): the processor's own path
        if getattr(image_processor, "do_center_crop", False) or not getattr(image_processor, "do_resize", True):
            return None
        mean = image_processor.image_mean if getattr(image_processor, "do_normalize", True) else [0.0] * 3
        std = image_processor.image_std if getattr(image_processor, "do_normalize", True) else [1.0] * 3
        scale = float(image_processor.rescale_factor) if getattr(image_processor, "do_rescale", True) else 1.0
        return cls((int(height), int(width)), mean, std, scale, device, dtype)

    def __call__(self, arrays: Sequence[np.ndarray]) -> torch.Tensor:
        import torch
        import torch.nn.functional as F

        pin = self.device.type == "cuda"
        out = []
        for array in arrays:
            host = torch.from_numpy(array)
            if pin:
                host = host.pin_memory()
            image = host.to(self.device, non_blocking=True).permute(2, 0, 1).unsqueeze(0).float()
            out.append(F.interpolate(image, size=self.size, mode="bicubic", antialias=True, align_corners=False))
        batch = torch.cat(out).clamp_(0, 255) * self.scale
        return ((batch - self.mean) / self.std).to(self.dtype)


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
