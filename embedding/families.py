"""Image-text model families: what differs between SigLIP, SigLIP2 and CLIP once transformers' Auto classes
have loaded them. A family is looked up by ``config.model_type``; supporting another family means registering
one more ``ModelFamily``."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from camtrace.embedding.weights import from_pretrained, load_error

if TYPE_CHECKING:
    import torch


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


def config_and_family(ref: str) -> tuple[Any, ModelFamily]:
    """The model's config.json and its family: no weights are read."""
    from transformers import AutoConfig

    config = from_pretrained(AutoConfig.from_pretrained, ref, "model")
    family = MODEL_FAMILIES.get(getattr(config, "model_type", ""))
    if family is None:
        raise load_error(
            ref,
            "model",
            f"model type {getattr(config, 'model_type', None)!r} is not an image-text family camtrace knows "
            f"(supported: {', '.join(sorted(MODEL_FAMILIES))})",
        )
    return config, family


def pooled_output(output: Any) -> torch.Tensor:
    """transformers 5 returns an output object; older versions a tensor."""
    pooled = getattr(output, "pooler_output", None)
    if pooled is not None:
        return pooled
    if isinstance(output, tuple):
        return output[1] if len(output) > 1 else output[0]
    return output
