"""The loss of the model card: a symmetric soft contrastive loss plus an image-to-image term.

Embeddings are L2-normalised and their cosine similarities multiplied by the
model's own logit scale (SigLIP and CLIP: ``model.logit_scale.exp()``). SigLIP
was pre-trained with a sigmoid loss; the model card fine-tunes with a softmax
contrastive loss over the same scale.

Image -> text: row i of ``scale * image @ text.T`` is a softmax over the batch's
texts; its target spreads ``1 - smoothing`` evenly over the texts of the same
identity (every one of them is a positive) and ``smoothing`` evenly over all
other texts. Text -> image is the same on the transposed matrix; the two are
averaged. Image -> image: each image against the batch's other images, the
positives being the other images of its identity (an identity sampler puts P
identities x K images in a batch); images without such a partner are left out,
so a batch without identity pairs gives zero.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

MAX_LOGIT_SCALE = 100.0


@dataclass
class LossParts:
    total: torch.Tensor
    image_text: torch.Tensor
    image_image: torch.Tensor


def soft_targets(positives: torch.Tensor, smoothing: float) -> torch.Tensor:
    """Rows: ``1 - smoothing`` over the positives, ``smoothing`` over the rest (all to the positives if none)."""
    positives = positives.float()
    n_pos = positives.sum(dim=1, keepdim=True).clamp_min(1.0)
    negatives = 1.0 - positives
    n_neg = negatives.sum(dim=1, keepdim=True)
    smooth = torch.where(n_neg > 0, torch.full_like(n_neg, smoothing), torch.zeros_like(n_neg))
    return (1.0 - smooth) * positives / n_pos + smooth * negatives / n_neg.clamp_min(1.0)


def _soft_cross_entropy(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    return -(targets * F.log_softmax(logits, dim=1)).sum(dim=1).mean()


def image_text_loss(
    image_emb: torch.Tensor,
    text_emb: torch.Tensor,
    image_ids: torch.Tensor,
    text_ids: torch.Tensor,
    logit_scale: torch.Tensor,
    smoothing: float = 0.1,
) -> torch.Tensor:
    """Symmetric soft contrastive loss between images and texts; same identity = positive."""
    image_emb = F.normalize(image_emb.float(), dim=-1)
    text_emb = F.normalize(text_emb.float(), dim=-1)
    logits = logit_scale.float().clamp(max=MAX_LOGIT_SCALE) * image_emb @ text_emb.T
    positives = image_ids[:, None] == text_ids[None, :]
    image_to_text = _soft_cross_entropy(logits, soft_targets(positives, smoothing))
    text_to_image = _soft_cross_entropy(logits.T, soft_targets(positives.T, smoothing))
    return (image_to_text + text_to_image) / 2


def image_image_loss(image_emb: torch.Tensor, image_ids: torch.Tensor, logit_scale: torch.Tensor) -> torch.Tensor:
    """Contrastive loss of each image against the others; positives: other images of its identity."""
    image_emb = F.normalize(image_emb.float(), dim=-1)
    logits = logit_scale.float().clamp(max=MAX_LOGIT_SCALE) * image_emb @ image_emb.T
    n = len(image_ids)
    eye = torch.eye(n, dtype=torch.bool, device=image_emb.device)
    positives = (image_ids[:, None] == image_ids[None, :]) & ~eye
    rows = positives.any(dim=1)
    if not rows.any():
        return logits.sum() * 0.0  # keeps the graph: backward works and adds nothing
    logits = logits.masked_fill(eye, float("-inf"))[rows]
    targets = positives[rows].float() / positives[rows].sum(dim=1, keepdim=True)
    log_probs = F.log_softmax(logits, dim=1).masked_fill(eye[rows], 0.0)  # -inf * 0 would be nan
    return -(targets * log_probs).sum(dim=1).mean()


class PersonContrastiveLoss(torch.nn.Module):
    """``text_weight * image_text + image_weight * image_image``."""

    def __init__(self, smoothing: float = 0.1, text_weight: float = 1.0, image_weight: float = 0.5) -> None:
        super().__init__()
        if not 0.0 <= smoothing < 1.0:
            raise ValueError(f"label smoothing must be in [0, 1), got {smoothing}")
        self.smoothing = smoothing
        self.text_weight = text_weight
        self.image_weight = image_weight

    def forward(
        self,
        image_emb: torch.Tensor,
        text_emb: torch.Tensor | None,
        image_ids: torch.Tensor,
        text_ids: torch.Tensor | None,
        logit_scale: torch.Tensor,
    ) -> LossParts:
        zero = image_emb.sum() * 0.0
        if text_emb is not None and len(text_emb) and self.text_weight:
            image_text = image_text_loss(image_emb, text_emb, image_ids, text_ids, logit_scale, self.smoothing)
        else:
            image_text = zero
        image_image = image_image_loss(image_emb, image_ids, logit_scale) if self.image_weight else zero
        total = self.text_weight * image_text + self.image_weight * image_image
        return LossParts(total, image_text, image_image)


def triplet_loss(features: torch.Tensor, labels: torch.Tensor, margin: float = 0.3) -> torch.Tensor:
    """Batch-hard triplet loss on L2-normalised features: each anchor's farthest positive against its nearest
    negative, ``max(0, d(a, p) - d(a, n) + margin)`` averaged over anchors that have both (else zero)."""
    features = F.normalize(features.float(), dim=-1)
    distances = torch.cdist(features, features)
    same = labels[:, None] == labels[None, :]
    eye = torch.eye(len(labels), dtype=torch.bool, device=features.device)
    positives, negatives = same & ~eye, ~same
    rows = positives.any(dim=1) & negatives.any(dim=1)
    if not rows.any():
        return features.sum() * 0.0
    hardest_positive = distances.masked_fill(~positives, float("-inf")).max(dim=1).values
    hardest_negative = distances.masked_fill(~negatives, float("inf")).min(dim=1).values
    return F.relu(hardest_positive - hardest_negative + margin)[rows].mean()
