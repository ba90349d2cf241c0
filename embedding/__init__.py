"""camtrace.embedding: SigLIP/SigLIP2/CLIP image and text encoders, model loading and versions."""

from camtrace.embedding.encoder import (
    MODEL_FAMILIES,
    ImageTextEncoder,
    InferenceModel,
    ModelFamily,
    register_family,
    resolve_device,
)

__all__ = [
    "MODEL_FAMILIES",
    "ImageTextEncoder",
    "InferenceModel",
    "ModelFamily",
    "register_family",
    "resolve_device",
]
