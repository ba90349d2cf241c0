"""Runtimes for the image-text model: what runs a tower, apart from what the model is.

``VisionSession`` is the one interface the encoder sees for images: RGB arrays
in, L2-normalised float32 rows out, and a ``label`` such as ``onnx int8`` or
``torch bf16``. ``TorchVision`` runs the transformers model (with the GPU
preprocessing where the device is a GPU), ``OnnxVision`` an exported vision
tower on ONNX Runtime. ``open_vision_session`` picks one, once, from the
runtime the settings resolved. Text queries always run on PyTorch
(``TextTower``); on the ONNX runtime its weights load with the first query.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np

from camtrace.embedding.families import ModelFamily, pooled_output
from camtrace.embedding.gpu import DevicePixelTransform
from camtrace.embedding.weights import first_line, from_pretrained, load_error
from camtrace.errors import ConfigError, ModelLoadError
from camtrace.inference import inference_dtype, open_onnx_session

if TYPE_CHECKING:
    import torch

DTYPE_NAMES = {"torch.bfloat16": "bf16", "torch.float16": "fp16", "torch.float32": "fp32"}


class VisionSession(Protocol):
    """RGB uint8 HxWx3 crops -> float32 (n, dim) unit rows."""

    label: str

    def embed(self, arrays: list[np.ndarray], dim: int) -> np.ndarray: ...

    def embed_pair(self, arrays: list[np.ndarray], dim: int) -> tuple[np.ndarray, np.ndarray]:
        """(text-aligned rows, anchor-head re-id rows); only sessions built with a head."""
        ...


def torch_label(dtype: Any) -> str:
    return "torch " + DTYPE_NAMES.get(str(dtype), str(dtype))


class TorchModel:
    """The transformers model with both towers, loaded on first use (once, whichever tower asks first)."""

    def __init__(self, ref: str, device: torch.device, gpu_precision: str) -> None:
        self.ref = ref
        self.device = device
        self.dtype = inference_dtype(device, gpu_precision)
        self._model: Any = None
        self._lock = threading.Lock()

    @property
    def model(self) -> Any:
        with self._lock:
            if self._model is None:
                self._model = self._load()
            return self._model

    @property
    def loaded(self) -> bool:
        return self._model is not None

    def _load(self) -> Any:
        from transformers import AutoModel

        # SDPA: fused attention kernels on GPUs (and the default where transformers supports it).
        model = from_pretrained(AutoModel.from_pretrained, self.ref, "model", attn_implementation="sdpa")
        for tower in ("get_image_features", "get_text_features"):
            if not callable(getattr(model, tower, None)):
                raise load_error(self.ref, "model", f"{type(model).__name__} lacks {tower}: it needs image and text towers")
        # Cast after loading: checkpoints are stored in various dtypes and the kwarg's name varies by version.
        return model.to(device=self.device, dtype=self.dtype).eval()

    def run(self, items: Sequence[Any], batch_size: int, dim: int, step: Callable[[Any, list[Any]], Any]) -> np.ndarray:
        """``step(model, batch)`` -> features, per batch, normalised into one float32 array."""
        import torch

        model = self.model
        out = np.empty((len(items), dim), dtype=np.float32)
        with torch.inference_mode():
            for start in range(0, len(items), batch_size):
                feats = step(model, list(items[start : start + batch_size])).float()
                feats = feats / feats.norm(dim=-1, keepdim=True).clamp_min(1e-12)
                out[start : start + len(feats)] = feats.cpu().numpy()
        return out


# The sub-processors are called directly: through the processor's __call__, class-level defaults
# (Siglip2Processor's patch_size=16, max_num_patches=256) override the image processor's saved configuration.
class TorchVision:
    """The image tower on PyTorch; on a GPU the crops are resized and normalised there. With an anchor head
    (camtrace.embedding.anchor_head) one pass of the tower gives both the text-aligned and the re-id vector."""

    def __init__(self, torch_model: TorchModel, image_processor: Any, batch_size: int, head: Any = None) -> None:
        self.torch_model = torch_model
        self.image_processor = image_processor
        self.batch_size = batch_size
        device = torch_model.device
        self.head = head.to(device) if head is not None else None
        self.pixel_transform: DevicePixelTransform | None = (
            DevicePixelTransform.from_processor(image_processor, device, torch_model.dtype) if device.type == "cuda" else None
        )

    @property
    def label(self) -> str:
        return torch_label(self.torch_model.dtype)

    def embed(self, arrays: list[np.ndarray], dim: int) -> np.ndarray:
        return self.torch_model.run(arrays, self.batch_size, dim, self._batch)

    def embed_pair(self, arrays: list[np.ndarray], dim: int) -> tuple[np.ndarray, np.ndarray]:
        """(text-aligned rows, re-id rows) of one pass; the head must be there."""
        import torch

        from camtrace.embedding.anchor_head import image_features, vision_tokens

        assert self.head is not None
        model, head = self.torch_model.model, self.head
        text = np.empty((len(arrays), dim), dtype=np.float32)
        reid = np.empty((len(arrays), head.config.width), dtype=np.float32)
        with torch.inference_mode():
            for start in range(0, len(arrays), self.batch_size):
                batch = arrays[start : start + self.batch_size]
                outputs, tokens, mask = vision_tokens(model, self._inputs(batch), head.config.layer)
                feats = image_features(model, outputs).float()
                text[start : start + len(batch)] = torch.nn.functional.normalize(feats, dim=-1).cpu().numpy()
                reid[start : start + len(batch)] = head(tokens.float(), mask).embedding.cpu().numpy()
        return text, reid

    def _inputs(self, arrays: list[np.ndarray]) -> dict[str, Any]:
        if self.pixel_transform is not None:
            return {"pixel_values": self.pixel_transform(arrays)}
        # channels_last stated explicitly: a 3-pixel-high crop would otherwise be read as channels-first.
        inputs = self.image_processor(arrays, return_tensors="pt", input_data_format="channels_last")
        return dict(inputs.to(device=self.torch_model.device, dtype=self.torch_model.dtype))

    def _batch(self, model: Any, arrays: list[np.ndarray]) -> Any:
        return pooled_output(model.get_image_features(**self._inputs(arrays)))


class OnnxVision:
    """An exported image tower (it normalises its output) on ONNX Runtime; exported with an anchor head, its second
    output is the head's re-id vector."""

    def __init__(self, session: Any, image_processor: Any, quantization: str, batch_size: int, reid_dim: int | None = None) -> None:
        self.session = session
        self.image_processor = image_processor
        self.quantization = quantization
        self.reid_dim = reid_dim
        # Dynamic int8 quantises activations with one scale per input tensor, i.e. per batch: one crop per
        # run keeps a crop's vector independent of its batch mates (local, distributed and backfill agree).
        self.batch_size = 1 if quantization == "int8" else batch_size

    @property
    def label(self) -> str:
        return f"onnx {self.quantization}"

    def embed(self, arrays: list[np.ndarray], dim: int) -> np.ndarray:
        return self._run(arrays, dim, 1)[0]

    def embed_pair(self, arrays: list[np.ndarray], dim: int) -> tuple[np.ndarray, np.ndarray]:
        """(text-aligned rows, re-id rows) of one run; the export must hold the head."""
        assert self.reid_dim is not None
        text, reid = self._run(arrays, dim, 2)
        return text, reid

    def _run(self, arrays: list[np.ndarray], dim: int, outputs: int) -> list[np.ndarray]:
        dims = (dim, self.reid_dim)[:outputs]
        out = [np.empty((len(arrays), size), dtype=np.float32) for size in dims]
        names = ["embedding", "reid"][:outputs]
        for start in range(0, len(arrays), self.batch_size):
            batch = arrays[start : start + self.batch_size]
            inputs = self.image_processor(batch, return_tensors="np", input_data_format="channels_last")
            pixels = np.ascontiguousarray(inputs["pixel_values"], dtype=np.float32)
            for target, rows in zip(out, self.session.run(names, {"pixel_values": pixels}), strict=True):
                target[start : start + len(batch)] = rows
        return out


class TextTower:
    """Descriptions -> unit rows on PyTorch (the model is shared with TorchVision on the PyTorch runtime)."""

    def __init__(
        self, torch_model: TorchModel, tokenizer: Any, text_kwargs: dict[str, Any], family: ModelFamily, batch_size: int
    ) -> None:
        self.torch_model = torch_model
        self.tokenizer = tokenizer
        self.text_kwargs = text_kwargs
        self.lowercase = family.lowercase_text
        self.batch_size = batch_size

    def embed(self, texts: Sequence[str], dim: int) -> np.ndarray:
        items = [text.lower() for text in texts] if self.lowercase else list(texts)
        return self.torch_model.run(items, self.batch_size, dim, self._batch)

    def _batch(self, model: Any, texts: list[str]) -> Any:
        inputs = self.tokenizer(texts, return_tensors="pt", **self.text_kwargs).to(self.torch_model.device)
        return pooled_output(model.get_text_features(**inputs))


def onnx_vision(
    ref: str,
    config: Any,
    version: str,
    image_processor: Any,
    *,
    quantization: str,
    device: torch.device,
    exports_dir: Path | None,
    cpu_threads: int,
    batch_size: int,
    head: Any = None,
) -> OnnxVision:
    """The image tower of ``ref`` on ONNX Runtime, exported (once per model version) into ``exports_dir``; with an
    anchor ``head`` the export has a second output, its re-id vector."""
    import onnxruntime as ort

    from camtrace.embedding.onnx_export import export_vision_tower
    from camtrace.exports import ExportSpec, ensure_export

    if exports_dir is None:
        raise ConfigError("the ONNX runtime needs a folder for its exports; set CAMTRACE_DATA_DIR")
    image_size = int(config.vision_config.image_size)
    spec = ExportSpec(
        name=f"vision-{quantization}",
        source_version=version,
        runtime=f"onnxruntime>={ort.__version__.split('.')[0]}",
        quantization=quantization,
        file_name="vision.onnx",
        options={
            "image_size": image_size,
            "output": "l2-normalised pooled image embedding",
            **({"reid": f"anchor head, layer {head.config.layer}"} if head is not None else {}),
        },
    )
    path = ensure_export(
        exports_dir,
        spec,
        lambda work: export_vision_tower(ref, image_size, work, quantization, head),
        f"the ONNX {quantization} export of the image encoder",
    )
    try:
        session = open_onnx_session(path, device, cpu_threads)
    except Exception as exc:
        raise ModelLoadError(
            f"cannot open the ONNX export {path} of {ref!r} ({first_line(exc)}); delete it to rebuild, "
            "or set CAMTRACE_RUNTIME=torch"
        ) from exc
    return OnnxVision(session, image_processor, quantization, batch_size, head.config.width if head is not None else None)
