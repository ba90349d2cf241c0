"""Randomly initialised image-text checkpoints built locally, for tests and benchmarks.

Each builder writes an ordinary checkpoint folder (``config.json``,
``model.safetensors``, ``tokenizer.json``, ``processor_config.json``) with the
real model and processor classes, so ``ImageTextEncoder(folder, None)`` loads
it exactly as it loads downloaded weights. Nothing is downloaded: the tokenizer
is a word-level vocabulary built with the ``tokenizers`` library.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import Any

PAD, EOS, UNK = "<pad>", "</s>", "<unk>"

# Words of person descriptions ("woman, red coat, black backpack").
DEFAULT_VOCAB: tuple[str, ...] = (
    # people
    "man",
    "woman",
    "person",
    "boy",
    "girl",
    "child",
    "adult",
    "young",
    "old",
    "elderly",
    # colours
    "black",
    "white",
    "grey",
    "gray",
    "red",
    "blue",
    "navy",
    "green",
    "yellow",
    "orange",
    "purple",
    "pink",
    "brown",
    "beige",
    "khaki",
    "dark",
    "light",
    # clothing
    "top",
    "shirt",
    "t",
    "tshirt",
    "blouse",
    "sweater",
    "hoodie",
    "jacket",
    "coat",
    "vest",
    "dress",
    "trousers",
    "pants",
    "jeans",
    "skirt",
    "shorts",
    "leggings",
    "suit",
    "uniform",
    "sleeves",
    "sleeve",
    "long",
    "short",
    "shoes",
    "sneakers",
    "boots",
    "sandals",
    # carried and worn
    "backpack",
    "bag",
    "handbag",
    "suitcase",
    "umbrella",
    "hat",
    "cap",
    "helmet",
    "glasses",
    "sunglasses",
    "scarf",
    "mask",
    "hair",
    "bicycle",
    "phone",
    # glue words
    "a",
    "an",
    "the",
    "with",
    "and",
    "in",
    "on",
    "wearing",
    "carrying",
    "holding",
    "walking",
    "riding",
    "of",
    "is",
    "has",
    "no",
    # punctuation (descriptions are comma separated)
    ",",
    ".",
    "-",
    "/",
)


def build_tokenizer(vocab_words: Iterable[str] | None = None, max_length: int = 64) -> Any:
    """A lower-casing word-level tokenizer that appends ``</s>``, wrapped as a transformers tokenizer."""
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    vocab: dict[str, int] = {PAD: 0, EOS: 1, UNK: 2}
    for word in DEFAULT_VOCAB if vocab_words is None else vocab_words:
        vocab.setdefault(str(word).lower(), len(vocab))
    tok = Tokenizer(models.WordLevel(vocab, unk_token=UNK))
    tok.normalizer = normalizers.Sequence([normalizers.NFKC(), normalizers.Lowercase()])
    # Words and punctuation runs become separate tokens: "man, grey" -> man , grey
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    # The text tower pools the end of the sequence, as SigLIP's sticky EOS does.
    tok.post_processor = processors.TemplateProcessing(single=f"$A {EOS}", special_tokens=[(EOS, vocab[EOS])])
    return PreTrainedTokenizerFast(
        tokenizer_object=tok,
        pad_token=PAD,
        eos_token=EOS,
        unk_token=UNK,
        model_max_length=max_length,
        padding_side="right",
    )


def _tower_sizes(hidden: int, layers: int, heads: int, intermediate: int) -> dict[str, int]:
    return {
        "hidden_size": hidden,
        "num_hidden_layers": layers,
        "num_attention_heads": heads,
        "intermediate_size": intermediate,
    }


def _text_config(tokenizer: Any, sizes: dict[str, int], max_length: int, **extra: Any) -> dict[str, Any]:
    """A text tower of ``sizes`` over the local tokenizer: its vocabulary and special token ids."""
    return {
        **sizes,
        "vocab_size": len(tokenizer),
        "max_position_embeddings": max_length,
        "pad_token_id": tokenizer.pad_token_id,
        "eos_token_id": tokenizer.eos_token_id,
        "bos_token_id": None,
        **extra,
    }


def _save_random(folder: Path, model_class: Any, config: Any, processor: Any, seed: int) -> Path:
    """Build ``model_class(config)`` with seeded random weights and save it with its processor."""
    import torch

    folder = Path(folder)
    torch.manual_seed(seed)
    model = model_class(config).eval()
    folder.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(folder)
    processor.save_pretrained(folder)
    return folder


def build_random_siglip(
    folder: Path,
    *,
    hidden_size: int,
    num_layers: int,
    num_heads: int,
    intermediate_size: int,
    image_size: int,
    patch_size: int,
    vocab_words: Iterable[str] | None = None,
    max_length: int = 64,
    seed: int = 0,
) -> Path:
    """A randomly initialised ``SiglipModel`` + ``SiglipProcessor`` of the given sizes, saved to ``folder``."""
    from transformers import SiglipConfig, SiglipImageProcessor, SiglipModel, SiglipProcessor

    tokenizer = build_tokenizer(vocab_words, max_length)
    sizes = _tower_sizes(hidden_size, num_layers, num_heads, intermediate_size)
    config = SiglipConfig(
        text_config=_text_config(tokenizer, sizes, max_length, projection_size=hidden_size),
        vision_config={**sizes, "image_size": image_size, "patch_size": patch_size},
    )
    # As siglip2-base-patch16-224's processor: squash to a square, scale to [-1, 1].
    image_processor = SiglipImageProcessor(
        size={"height": image_size, "width": image_size}, image_mean=[0.5] * 3, image_std=[0.5] * 3
    )
    processor = SiglipProcessor(image_processor=image_processor, tokenizer=tokenizer)
    return _save_random(folder, SiglipModel, config, processor, seed)


def build_tiny_siglip(folder: Path, vocab_words: Iterable[str] | None = None, *, seed: int = 0) -> Path:
    """A tiny random SigLIP checkpoint: hidden 32, 2 layers, 32x32 images, 8x8 patches; loads in milliseconds."""
    return build_random_siglip(
        folder,
        hidden_size=32,
        num_layers=2,
        num_heads=2,
        intermediate_size=64,
        image_size=32,
        patch_size=8,
        vocab_words=vocab_words,
        seed=seed,
    )


def build_base_like_siglip(folder: Path, *, seed: int = 0) -> Path:
    """Random weights with the tower sizes of siglip2-base-patch16-224 (realistic compute, no download).

    Only the text vocabulary is small (the word list instead of Gemma's 256k
    tokens): it changes the size of an embedding lookup, not the compute.
    """
    return build_random_siglip(
        folder,
        hidden_size=768,
        num_layers=12,
        num_heads=12,
        intermediate_size=3072,
        image_size=224,
        patch_size=16,
        seed=seed,
    )


def build_tiny_siglip2(folder: Path, vocab_words: Iterable[str] | None = None, *, seed: int = 0) -> Path:
    """A tiny random ``Siglip2Model`` (NaFlex: variable aspect ratio, at most 16 patches of 8x8)."""
    from transformers import Siglip2Config, Siglip2ImageProcessor, Siglip2Model, Siglip2Processor

    tokenizer = build_tokenizer(vocab_words)
    sizes = _tower_sizes(32, 2, 2, 64)
    config = Siglip2Config(
        text_config=_text_config(tokenizer, sizes, 64, projection_size=32),
        vision_config={**sizes, "patch_size": 8, "num_patches": 16},
    )
    image_processor = Siglip2ImageProcessor(patch_size=8, max_num_patches=16)
    processor = Siglip2Processor(image_processor=image_processor, tokenizer=tokenizer)
    return _save_random(folder, Siglip2Model, config, processor, seed)


def build_tiny_clip(folder: Path, vocab_words: Iterable[str] | None = None, *, seed: int = 0) -> Path:
    """A tiny random ``CLIPModel`` + ``CLIPProcessor`` (projection dim 16)."""
    from transformers import CLIPConfig, CLIPImageProcessor, CLIPModel, CLIPProcessor

    tokenizer = build_tokenizer(vocab_words)
    sizes = _tower_sizes(32, 2, 2, 64)
    config = CLIPConfig(
        # CLIP pools at the first eos_token_id (any id but the legacy 2): the tokenizer's own.
        text_config=_text_config(tokenizer, sizes, 64),
        vision_config={**sizes, "image_size": 32, "patch_size": 8},
        projection_dim=16,
    )
    image_processor = CLIPImageProcessor(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32})
    processor = CLIPProcessor(image_processor=image_processor, tokenizer=tokenizer)
    return _save_random(folder, CLIPModel, config, processor, seed)
