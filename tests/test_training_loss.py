"""The model card's loss: symmetric soft contrastive image-text term plus an image-image term."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from camtrace.synthetic import person_crops
from camtrace.training.losses import PersonContrastiveLoss, image_image_loss, image_text_loss, soft_targets


def _embeddings(n: int, dim: int = 8, seed: int = 0):
    generator = torch.Generator().manual_seed(seed)
    return torch.randn(n, dim, generator=generator), torch.randn(n, dim, generator=generator)


def test_without_smoothing_and_pairs_it_is_the_plain_symmetric_contrastive_loss():
    images, texts = _embeddings(6)
    ids = torch.arange(6)
    scale = torch.tensor(7.5)
    loss = PersonContrastiveLoss(smoothing=0.0, text_weight=1.0, image_weight=0.0)(images, texts, ids, ids, scale)
    logits = scale * F.normalize(images, dim=-1) @ F.normalize(texts, dim=-1).T
    expected = (F.cross_entropy(logits, ids) + F.cross_entropy(logits.T, ids)) / 2
    assert torch.allclose(loss.total, expected, atol=1e-6)
    assert torch.allclose(loss.image_text, expected, atol=1e-6)


def test_smoothing_and_identity_positives_change_the_targets():
    ids = torch.tensor([0, 0, 1, 2])
    targets = soft_targets(ids[:, None] == ids[None, :], 0.1)
    assert torch.allclose(targets.sum(dim=1), torch.ones(4))
    assert torch.allclose(targets[0], torch.tensor([0.45, 0.45, 0.05, 0.05]))  # two positives share 0.9
    assert torch.allclose(targets[2], torch.tensor([0.1 / 3, 0.1 / 3, 0.9, 0.1 / 3]))

    images, texts = _embeddings(4)
    scale = torch.tensor(5.0)
    distinct = image_text_loss(images, texts, torch.arange(4), torch.arange(4), scale, smoothing=0.0)
    shared = image_text_loss(images, texts, ids, ids, scale, smoothing=0.0)
    smoothed = image_text_loss(images, texts, torch.arange(4), torch.arange(4), scale, smoothing=0.1)
    assert not torch.isclose(distinct, shared) and not torch.isclose(distinct, smoothed)


def test_image_image_term_is_zero_without_identity_pairs_and_positive_with_them():
    images, _ = _embeddings(5)
    images.requires_grad_(True)
    alone = image_image_loss(images, torch.arange(5), torch.tensor(10.0))
    assert alone.item() == 0.0
    alone.backward()  # still part of the graph
    paired = image_image_loss(images, torch.tensor([0, 0, 1, 1, 2]), torch.tensor(10.0))
    assert paired.item() > 0.0 and torch.isfinite(paired)
    # pulling the pair together lowers it
    closer = images.detach().clone()
    closer[1] = closer[0] + 0.01
    closer[3] = closer[2] + 0.01
    assert image_image_loss(closer, torch.tensor([0, 0, 1, 1, 2]), torch.tensor(10.0)) < paired


def test_gradients_reach_both_towers_of_a_real_siglip(tiny_siglip_dir):
    from transformers import AutoModel, AutoProcessor

    model = AutoModel.from_pretrained(tiny_siglip_dir)
    processor = AutoProcessor.from_pretrained(tiny_siglip_dir)
    crops = [np.ascontiguousarray(c) for c in person_crops(4, seed=3)]
    pixels = processor.image_processor(crops, return_tensors="pt", input_data_format="channels_last")
    tokens = processor.tokenizer(
        ["red top", "blue top", "red top", "black bag"], return_tensors="pt", padding="max_length", max_length=16
    )
    image_emb = model.get_image_features(**pixels).pooler_output
    text_emb = model.get_text_features(**tokens).pooler_output
    ids = torch.tensor([0, 1, 0, 2])
    loss = PersonContrastiveLoss()(image_emb, text_emb, ids, ids, model.logit_scale.exp())
    loss.total.backward()
    grads = {name: p.grad for name, p in model.named_parameters()}
    for tower in ("vision_model.", "text_model.", "logit_scale"):
        reached = [g for name, g in grads.items() if name.startswith(tower) and g is not None and g.abs().sum() > 0]
        assert reached, f"no gradient reached {tower}"
    assert loss.image_image.item() > 0  # images 0 and 2 share an identity


def test_bad_smoothing_is_refused():
    with pytest.raises(ValueError, match="smoothing"):
        PersonContrastiveLoss(smoothing=1.0)
