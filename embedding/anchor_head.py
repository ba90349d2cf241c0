"""An anchor-guided aggregation head for occlusion-robust person re-identification (SAGA-ReID).

The text-aligned image vector of SigLIP pools every patch with one attention probe: a crop half hidden behind a
pillar or another person pools the occluder as much as the person. The head reads the patch tokens of an
intermediate block of the vision tower (``vision_model(..., output_hidden_states=True).hidden_states[layer]``,
before the final norm) and pools them around anchors:

- text anchors: short prompts about body parts and carried items, embedded once by the model's own (frozen) text
  tower and kept as a buffer; each prompt brings a few learnable context tokens, and all are projected to the
  vision width;
- image anchors: a few per image, from an MLP over the mean patch token;
- two pre-norm cross-attention blocks in which the patch tokens attend to the anchors;
- each token weighted by its strongest anchor attention (each anchor's softmax over the tokens), the weighted sum
  through a BatchNorm, L2-normalised.

It is trained with the backbone frozen (``camtrace train --head anchors``) and saved next to the checkpoint as
``anchor_head.safetensors`` + ``anchor_head.json``; the encoder picks it up when both are there.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from camtrace.errors import ModelLoadError

HEAD_WEIGHTS = "anchor_head.safetensors"
HEAD_CONFIG = "anchor_head.json"
HEAD_KIND = "saga-reid"

# Body parts and carried items: what stays visible, in part, when a person is partly hidden.
ANCHOR_PROMPTS: tuple[str, ...] = (
    "the color of the upper-body clothing",
    "the color of the lower-body clothing",
    "the shoes of a person",
    "the head and hair of a person",
    "the bag or backpack carried by a person",
)


@dataclass
class AnchorHeadConfig:
    """Sizes of a head; ``width`` is the vision tower's hidden size, ``text_dim`` the text embedding's size."""

    width: int
    text_dim: int
    layer: int = -2
    prompts: list[str] = field(default_factory=lambda: list(ANCHOR_PROMPTS))
    context_tokens: int = 2
    image_anchors: int = 2
    blocks: int = 2
    heads: int = 0  # 0: as many as the width allows, at most 8, each at least 8 wide
    kind: str = HEAD_KIND

    def attention_heads(self) -> int:
        if self.heads:
            return self.heads
        return next(h for h in (8, 4, 2, 1) if self.width % h == 0 and self.width // h >= min(8, self.width))

    @property
    def anchors(self) -> int:
        return len(self.prompts) * (1 + self.context_tokens) + self.image_anchors


class CrossAttentionBlock(nn.Module):
    """Pre-norm: tokens + attention(norm(tokens) -> norm(anchors)), then + MLP(norm(tokens)).

    The attention is written out (no ``nn.MultiheadAttention``): its fused inference path does not export to ONNX."""

    def __init__(self, width: int, heads: int) -> None:
        super().__init__()
        self.heads = heads
        self.norm_tokens = nn.LayerNorm(width)
        self.norm_anchors = nn.LayerNorm(width)
        self.query = nn.Linear(width, width)
        self.key_value = nn.Linear(width, 2 * width)
        self.out = nn.Linear(width, width)
        self.norm_mlp = nn.LayerNorm(width)
        self.mlp = nn.Sequential(nn.Linear(width, 2 * width), nn.GELU(), nn.Linear(2 * width, width))

    def _split(self, x: torch.Tensor) -> torch.Tensor:
        batch, length, width = x.shape
        return x.reshape(batch, length, self.heads, width // self.heads).transpose(1, 2)

    def forward(self, tokens: torch.Tensor, anchors: torch.Tensor) -> torch.Tensor:
        query = self._split(self.query(self.norm_tokens(tokens)))
        key, value = (self._split(part) for part in self.key_value(self.norm_anchors(anchors)).chunk(2, dim=-1))
        weights = (query @ key.transpose(-1, -2) / query.shape[-1] ** 0.5).softmax(dim=-1)
        attended = (weights @ value).transpose(1, 2).reshape(tokens.shape)
        tokens = tokens + self.out(attended)
        return tokens + self.mlp(self.norm_mlp(tokens))


@dataclass
class HeadOutput:
    """``embedding``: unit rows (what is indexed); ``feature``: the pooled vector before the BatchNorm (what a
    triplet loss compares); ``normed``: after it (what an identity classifier reads); ``attention``: each anchor's
    weights over the tokens (batch, anchors, tokens)."""

    embedding: torch.Tensor
    feature: torch.Tensor
    normed: torch.Tensor
    attention: torch.Tensor


class AnchorHead(nn.Module):
    """Patch tokens (batch, tokens, width) -> unit re-id vectors (batch, width)."""

    def __init__(self, config: AnchorHeadConfig, text_anchors: torch.Tensor | None = None) -> None:
        super().__init__()
        self.config = config
        width, prompts = config.width, len(config.prompts)
        if text_anchors is None:
            text_anchors = torch.zeros(prompts, config.text_dim)
        if tuple(text_anchors.shape) != (prompts, config.text_dim):
            raise ValueError(f"text anchors of shape {tuple(text_anchors.shape)}; expected ({prompts}, {config.text_dim})")
        self.register_buffer("text_anchors", text_anchors.detach().float().clone())
        self.context = nn.Parameter(torch.randn(prompts, config.context_tokens, width) * 0.02)
        self.project = nn.Linear(config.text_dim, width)
        self.image_anchor_mlp = nn.Sequential(
            nn.LayerNorm(width), nn.Linear(width, width), nn.GELU(), nn.Linear(width, config.image_anchors * width)
        )
        heads = config.attention_heads()
        self.blocks = nn.ModuleList(CrossAttentionBlock(width, heads) for _ in range(config.blocks))
        self.norm_score = nn.LayerNorm(width)
        self.score_query = nn.Linear(width, width)
        self.score_key = nn.Linear(width, width)
        self.bottleneck = nn.BatchNorm1d(width)
        self.bottleneck.bias.requires_grad_(False)  # BNNeck: no shift, the classifier and the index see one space

    def anchors(self, tokens: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
        """(batch, anchors, width): the projected text anchors with their context tokens, then the image anchors."""
        batch, width = tokens.shape[0], self.config.width
        text = self.project(self.text_anchors)[:, None, :]  # (prompts, 1, width)
        per_prompt = torch.cat([text, text + self.context], dim=1).reshape(1, -1, width).expand(batch, -1, -1)
        mean = _masked_mean(tokens, mask)
        own = self.image_anchor_mlp(mean).reshape(batch, self.config.image_anchors, width)
        return torch.cat([per_prompt, own], dim=1)

    def forward(self, tokens: torch.Tensor, mask: torch.Tensor | None = None) -> HeadOutput:
        """``mask`` (batch, tokens), true where a token is a real patch (SigLIP2 pads its patch sequences)."""
        anchors = self.anchors(tokens, mask)
        for block in self.blocks:
            tokens = block(tokens, anchors)
        keys = self.score_key(self.norm_score(tokens))
        queries = self.score_query(self.norm_score(anchors))
        scores = queries @ keys.transpose(1, 2) / keys.shape[-1] ** 0.5  # (batch, anchors, tokens)
        if mask is not None:
            scores = scores.masked_fill(~mask[:, None, :].bool(), float("-inf"))
        attention = scores.softmax(dim=-1)
        weights = attention.max(dim=1).values  # each token: its strongest anchor's attention
        weights = weights / weights.sum(dim=1, keepdim=True).clamp_min(1e-12)
        feature = (weights[:, :, None] * tokens).sum(dim=1)
        normed = self.bottleneck(feature)
        return HeadOutput(F.normalize(normed, dim=-1), feature, normed, attention)

    def diversity_loss(self, attention: torch.Tensor) -> torch.Tensor:
        """Mean squared cosine between different anchors' attention maps: 0 when every anchor looks elsewhere."""
        maps = F.normalize(attention, dim=-1)
        gram = maps @ maps.transpose(1, 2)
        off = ~torch.eye(gram.shape[-1], dtype=torch.bool, device=gram.device)
        return gram[:, off].pow(2).mean()

    # -- files -----------------------------------------------------------------
    def save(self, folder: Path) -> None:
        """``anchor_head.safetensors`` and ``anchor_head.json`` into ``folder`` (next to the checkpoint)."""
        from safetensors.torch import save_file

        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        state = {name: tensor.detach().cpu().contiguous() for name, tensor in self.state_dict().items()}
        save_file(state, str(folder / HEAD_WEIGHTS))
        (folder / HEAD_CONFIG).write_text(json.dumps(asdict(self.config), indent=1), encoding="utf-8")


def _masked_mean(tokens: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
    if mask is None:
        return tokens.mean(dim=1)
    weights = mask.to(tokens.dtype)[:, :, None]
    return (tokens * weights).sum(dim=1) / weights.sum(dim=1).clamp_min(1.0)


def has_anchor_head(folder: str | Path) -> bool:
    """Whether a model folder holds a head (both files); a hub id or a plain checkpoint does not."""
    path = Path(folder).expanduser()
    return path.is_dir() and (path / HEAD_CONFIG).is_file() and (path / HEAD_WEIGHTS).is_file()


def read_head_config(folder: str | Path) -> AnchorHeadConfig:
    """The head's sizes from ``anchor_head.json``: no weights are read."""
    file = Path(folder).expanduser() / HEAD_CONFIG
    try:
        values = json.loads(file.read_text(encoding="utf-8"))
        config = AnchorHeadConfig(**values)
    except (OSError, json.JSONDecodeError, TypeError) as exc:
        raise ModelLoadError(
            f"cannot read the anchor head's settings {file} ({type(exc).__name__}: {exc}); "
            f"retrain it with `camtrace train --head anchors` or delete {HEAD_CONFIG} and {HEAD_WEIGHTS}"
        ) from exc
    if config.kind != HEAD_KIND:
        raise ModelLoadError(f"{file} describes a {config.kind!r} head; camtrace knows {HEAD_KIND!r}")
    return config


def load_anchor_head(folder: str | Path) -> AnchorHead:
    """The head saved in ``folder``, in eval mode on the CPU, float32."""
    from safetensors.torch import load_file

    config = read_head_config(folder)
    head = AnchorHead(config)
    file = Path(folder).expanduser() / HEAD_WEIGHTS
    try:
        head.load_state_dict(load_file(str(file)))
    except Exception as exc:  # safetensors and torch raise several types for a bad or mismatched file
        raise ModelLoadError(
            f"cannot load the anchor head {file} ({type(exc).__name__}: {str(exc).splitlines()[0]}); "
            f"its sizes must match {HEAD_CONFIG}: retrain with `camtrace train --head anchors`"
        ) from exc
    return head.eval()


def prompt_embeddings(model: Any, tokenizer: Any, prompts: list[str], text_kwargs: dict, lowercase: bool) -> torch.Tensor:
    """The prompts through the model's own text tower, L2-normalised, as float32 on the CPU (no gradients)."""
    from camtrace.embedding.families import pooled_output

    texts = [p.lower() for p in prompts] if lowercase else list(prompts)
    device = next(model.parameters()).device
    inputs = tokenizer(texts, return_tensors="pt", **text_kwargs).to(device)
    with torch.no_grad():
        feats = pooled_output(model.get_text_features(**inputs)).float()
    return F.normalize(feats, dim=-1).cpu()


def build_anchor_head(
    model: Any, tokenizer: Any, text_kwargs: dict, lowercase: bool, *, layer: int = -2, seed: int = 0, **sizes: Any
) -> AnchorHead:
    """A new head sized from ``model``'s vision config, its text anchors from ``model``'s text tower."""
    vision = model.config.vision_config
    layers = int(vision.num_hidden_layers)
    if not -layers <= layer <= layers or layer == 0:
        raise ValueError(f"anchor layer {layer} is outside the vision tower's blocks (1..{layers} or -{layers}..-1)")
    prompts = list(sizes.pop("prompts", ANCHOR_PROMPTS))
    anchors = prompt_embeddings(model, tokenizer, prompts, text_kwargs, lowercase)
    config = AnchorHeadConfig(width=int(vision.hidden_size), text_dim=int(anchors.shape[1]), layer=layer, prompts=prompts, **sizes)
    torch.manual_seed(seed)
    return AnchorHead(config, anchors)


def vision_tokens(model: Any, inputs: dict, layer: int) -> tuple[Any, torch.Tensor, torch.Tensor | None]:
    """One pass of the vision tower: (its pooled output, the patch tokens of block ``layer``, their mask).

    ``layer`` indexes ``hidden_states`` (0: the patch embeddings, 1..N: the blocks; negative from the end), whose
    entries are taken before the tower's final norm."""
    import inspect

    inputs = dict(inputs)
    mask = inputs.get("pixel_attention_mask")
    # SigLIP2 (NaFlex) pads patch sequences; its vision model takes the mask as pixel_attention_mask (transformers 5)
    # or attention_mask (its inner transformer, older versions).
    if mask is not None and "pixel_attention_mask" not in inspect.signature(model.vision_model.forward).parameters:
        inputs["attention_mask"] = inputs.pop("pixel_attention_mask")
    outputs = model.vision_model(**inputs, output_hidden_states=True)
    tokens = outputs.hidden_states[layer]
    return outputs, tokens, (mask.bool() if mask is not None else None)


def image_features(model: Any, outputs: Any) -> torch.Tensor:
    """The text-aligned image vector from a ``vision_model`` pass: what ``get_image_features`` returns (SigLIP: the
    pooled output; CLIP: its visual projection)."""
    projection = getattr(model, "visual_projection", None)
    pooled = outputs.pooler_output
    return projection(pooled) if projection is not None else pooled
