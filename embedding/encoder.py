"""Image and text encoders for SigLIP / SigLIP2 / CLIP checkpoints.

``ImageTextEncoder`` turns person crops and text queries into L2-normalised
float32 vectors in one shared space. It knows the model (its family, processor,
text settings and version), not what runs it: the image side is a
``VisionSession`` (camtrace.embedding.sessions) picked once at load from the
runtime the settings resolve, the text side a PyTorch ``TextTower``. Where the
weights come from is camtrace.embedding.weights; the families are
camtrace.embedding.families.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from camtrace.embedding.families import MODEL_FAMILIES, ModelFamily, config_and_family, register_family
from camtrace.embedding.sessions import TextTower, TorchModel, TorchVision, VisionSession, onnx_vision, torch_label
from camtrace.embedding.weights import folder_version, from_pretrained, hub_cached_commit, load_error, local_folder
from camtrace.enums import OnnxQuantization
from camtrace.errors import ConfigError, InputError

# Re-exported: the base and device helpers lived here before the detector shared them.
from camtrace.inference import InferenceModel as InferenceModel
from camtrace.inference import inference_dtype as inference_dtype
from camtrace.inference import resolve_device as resolve_device

if TYPE_CHECKING:
    from PIL import Image

    from camtrace.settings import Settings

__all__ = ["MODEL_FAMILIES", "ImageTextEncoder", "ModelFamily", "folder_version", "hub_cached_commit", "register_family"]

log = logging.getLogger(__name__)

ONNX_QUANTIZE = tuple(OnnxQuantization)


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
        self.vision: VisionSession | None = None
        self.text: TextTower | None = None
        self._dim: int | None = None
        self._version: str | None = None
        self._reid_dim: int | None = None

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
    def _images_on_onnx(self, family: ModelFamily) -> bool:
        """The image side runs on ONNX Runtime: the runtime says so and the family's input has a fixed size."""
        return self.runtime == "onnx" and family.fixed_image_size

    def _load(self) -> None:
        from transformers import AutoProcessor
        from transformers.utils import logging as hf_logging

        # Workers and the CLI have their own progress reporting; keep transformers' bars out of it.
        hf_logging.disable_progress_bar()

        ref = self.model_name
        config, family = config_and_family(ref)
        image_dim, text_dim = family.dims(config)
        if image_dim != text_dim:
            raise load_error(ref, "model", f"image ({image_dim}) and text ({text_dim}) embeddings differ in size")
        version = self._stored_version()  # taken before reading the weights, so it names what gets loaded
        use_onnx = self._images_on_onnx(family)
        if self.runtime == "onnx" and not use_onnx:
            log.warning("%s (%s) has variable-size image input: it runs on PyTorch", ref, config.model_type)
        if use_onnx and self.exports_dir is None:
            raise ConfigError("the ONNX runtime needs a folder for its exports; set CAMTRACE_DATA_DIR")
        torch_model = TorchModel(ref, self.device, self.gpu_precision)
        if not use_onnx:
            torch_model.model  # noqa: B018 - the weights load now, so a bad checkpoint fails at load, not at first use

        processor_ref = self.processor_name or ref
        processor = from_pretrained(AutoProcessor.from_pretrained, processor_ref, "processor")
        if getattr(processor, "tokenizer", None) is None or getattr(processor, "image_processor", None) is None:
            raise load_error(processor_ref, "processor", f"{type(processor).__name__} lacks a tokenizer or an image processor")

        # Never ask for more positions than the text tower has.
        max_positions = getattr(config.text_config, "max_position_embeddings", None) or self.text_max_length
        text_kwargs = {"padding": family.text_padding, "max_length": min(self.text_max_length, max_positions), "truncation": True}
        if version is None:  # not in the cache before loading: the download just made it, so its commit is known now
            commit = hub_cached_commit(ref)
            version = f"{ref}@{commit[:12]}" if commit else ref
        head = self._anchor_head(config)
        if use_onnx:
            self.vision = onnx_vision(
                ref,
                config,
                version,
                processor.image_processor,
                quantization=self.onnx_quantization,
                device=self.device,
                exports_dir=self.exports_dir,
                cpu_threads=self.cpu_threads,
                batch_size=self.batch_size,
                head=head,
            )
        else:
            self.vision = TorchVision(torch_model, processor.image_processor, self.batch_size, head)
        self._reid_dim = head.config.width if head is not None else None
        self.text = TextTower(torch_model, processor.tokenizer, text_kwargs, family, self.batch_size)
        self._dim = image_dim
        self._version = version
        log.info(
            "loaded embedding model %s (%s, dim %d) on %s, %s", ref, config.model_type, image_dim, self.device, self.vision.label
        )

    def _anchor_head(self, config: Any) -> Any:
        """The folder's anchor head (camtrace.embedding.anchor_head), or None where it has none."""
        if not self.has_reid_head:
            return None
        from camtrace.embedding.anchor_head import load_anchor_head

        head = load_anchor_head(self.model_name)
        width, layers = int(config.vision_config.hidden_size), int(config.vision_config.num_hidden_layers)
        if head.config.width != width or not -layers <= head.config.layer <= layers:
            raise load_error(
                self.model_name,
                "model",
                f"its anchor head (width {head.config.width}, layer "
                f"{head.config.layer}) does not fit the vision tower (width {width}, {layers} blocks); "
                "retrain it with `camtrace train --head anchors` or delete anchor_head.*",
            )
        return head

    def _stored_version(self) -> str | None:
        """The version of a local folder, or of the hub snapshot in the cache; None where neither is there."""
        folder = local_folder(self.model_name)
        if folder is not None:
            return folder_version(folder)
        commit = hub_cached_commit(self.model_name)
        return f"{self.model_name}@{commit[:12]}" if commit is not None else None

    def _unload(self) -> None:
        self.vision = None
        self.text = None
        self._version = None
        self._reid_dim = None

    # -- metadata ------------------------------------------------------------
    @property
    def dim(self) -> int:
        """The vector size, read from the model's config.json: no weights are loaded for it."""
        with self._lock:
            if self._dim is None:
                config, family = config_and_family(self.model_name)
                self._dim = family.dims(config)[0]
            return self._dim

    @property
    def has_reid_head(self) -> bool:
        """Whether the model folder holds an anchor head, i.e. crops get a re-id vector besides the text-aligned one
        (read from the folder: no weights are loaded)."""
        from camtrace.embedding.anchor_head import has_anchor_head

        folder = local_folder(self.model_name)
        return folder is not None and has_anchor_head(folder)

    @property
    def reid_dim(self) -> int | None:
        """The re-id vector's size (the head's width), None without a head; read from anchor_head.json."""
        with self._lock:
            if self._reid_dim is None and self.has_reid_head:
                from camtrace.embedding.anchor_head import read_head_config

                self._reid_dim = read_head_config(self.model_name).width
            return self._reid_dim

    @property
    def runtime_label(self) -> str:
        """What runs the image side, e.g. ``onnx int8`` or ``torch bf16``. Before loading it is read from the
        config and the settings, so reporting it (``camtrace stats``) loads no weights."""
        if self.vision is not None:
            return self.vision.label
        _, family = config_and_family(self.model_name)
        if self._images_on_onnx(family):
            return f"onnx {self.onnx_quantization}"
        return torch_label(inference_dtype(self.device, self.gpu_precision))

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
            version = self._stored_version()
            if version is not None:
                return version
            self.load()
            assert self._version is not None
            return self._version

    # -- encoding ------------------------------------------------------------
    def encode_images(self, images: Sequence[Image.Image | np.ndarray]) -> np.ndarray:
        """RGB images (PIL or uint8 HxWx3 arrays) -> float32 (n, dim), unit rows."""
        arrays = [_as_rgb_array(image, i) for i, image in enumerate(images)]
        self._ensure_loaded()
        assert self.vision is not None
        if not arrays:
            return np.zeros((0, self.dim), dtype=np.float32)
        return self.vision.embed(arrays, self.dim)

    def encode_image_pair(self, images: Sequence[Image.Image | np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
        """RGB images -> (text-aligned rows as ``encode_images`` gives, the anchor head's re-id rows), one pass of
        the tower for both. A model without a head has no re-id vector: ConfigError."""
        if not self.has_reid_head:
            raise ConfigError(
                f"{self.model_name} has no anchor head (anchor_head.json and anchor_head.safetensors): "
                "train one with `camtrace train --head anchors`, or use encode_images"
            )
        arrays = [_as_rgb_array(image, i) for i, image in enumerate(images)]
        self._ensure_loaded()
        assert self.vision is not None and self._reid_dim is not None
        if not arrays:
            return np.zeros((0, self.dim), dtype=np.float32), np.zeros((0, self._reid_dim), dtype=np.float32)
        return self.vision.embed_pair(arrays, self.dim)

    def encode_reid_images(self, images: Sequence[Image.Image | np.ndarray]) -> np.ndarray:
        """RGB images -> the anchor head's unit re-id rows (photo and track queries); ConfigError without a head."""
        return self.encode_image_pair(images)[1]

    def encode_texts(self, texts: Sequence[str]) -> np.ndarray:
        """Descriptions ("man, grey hoodie, blue jeans") -> float32 (n, dim), unit rows."""
        if isinstance(texts, str):
            raise InputError("encode_texts takes a list of strings, not one string")
        for i, text in enumerate(texts):
            if not isinstance(text, str):
                raise InputError(f"text {i} is {type(text).__name__}, not str")
        self._ensure_loaded()
        assert self.text is not None
        if not texts:
            return np.zeros((0, self.dim), dtype=np.float32)
        return self.text.embed(texts, self.dim)


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
