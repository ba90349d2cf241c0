"""The image tower as an ONNX file: exported once per model version (and quantization) into the exports dir."""

from __future__ import annotations

import contextlib
import copy
import logging
from pathlib import Path
from typing import Any

from camtrace.embedding.families import pooled_output
from camtrace.embedding.weights import from_pretrained


def export_vision_tower(ref: str, image_size: int, work: Path, quantization: str, head: Any = None) -> Path:
    """Export the vision tower (pixels -> L2-normalised pooled embedding, dynamic batch) to ONNX in ``work``; with
    an anchor ``head`` (camtrace.embedding.anchor_head) its unit re-id vector is a second output, ``reid``."""
    import torch
    from onnxruntime.quantization import QuantType, quantize_dynamic
    from transformers import AutoModel

    from camtrace.embedding.anchor_head import image_features, vision_tokens

    model = from_pretrained(AutoModel.from_pretrained, ref, "model", attn_implementation="eager")
    model = model.to(device="cpu", dtype=torch.float32).eval()

    class VisionEmbedding(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.model = model

        def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
            feats = pooled_output(self.model.get_image_features(pixel_values=pixel_values))
            return feats / feats.norm(dim=-1, keepdim=True).clamp_min(1e-12)

    class VisionWithHead(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.model = model
            self.head = copy.deepcopy(head).to(device="cpu", dtype=torch.float32).eval()

        def forward(self, pixel_values: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
            outputs, tokens, _ = vision_tokens(self.model, {"pixel_values": pixel_values}, self.head.config.layer)
            feats = image_features(self.model, outputs)
            return feats / feats.norm(dim=-1, keepdim=True).clamp_min(1e-12), self.head(tokens).embedding

    fp32 = work / "vision-fp32.onnx"
    with torch.inference_mode():
        # The TorchScript exporter: one self-contained file, and a dynamic batch axis by name.
        outputs = ["embedding"] if head is None else ["embedding", "reid"]
        torch.onnx.export(
            (VisionEmbedding() if head is None else VisionWithHead()).eval(),
            (torch.zeros(2, 3, image_size, image_size),),
            str(fp32),
            input_names=["pixel_values"],
            output_names=outputs,
            dynamic_axes={"pixel_values": {0: "batch"}, **{name: {0: "batch"} for name in outputs}},
            opset_version=17,
            dynamo=False,
        )
    if quantization == "fp32":
        return fp32
    int8 = work / "vision-int8.onnx"
    with _quiet_quantization_advice():
        # 7-bit weights: CPUs without VNNI (AVX2 only) saturate in ONNX Runtime's u8 x s8 products; with 8 bits the
        # anchor head's vectors fell to cosine 0.987 of fp32 on an AVX2-only EPYC, with 7 above 0.99.
        quantize_dynamic(str(fp32), str(int8), weight_type=QuantType.QInt8, reduce_range=True)
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
