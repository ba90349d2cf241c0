"""Fixtures of the training tests: a small person model that can learn, and footage with many people."""

from __future__ import annotations

import math
from pathlib import Path

import pytest


def build_learnable_siglip(folder: Path) -> Path:
    """A small random SigLIP (hidden 64, text padded to 16 tokens) with SigLIP's initial logit scale, log(10).

    The stock tiny model's random logit scale (about 1) makes a softmax over the batch nearly uniform,
    so a few CPU epochs would teach it little; real checkpoints start far higher.
    """
    import torch
    from transformers import AutoModel

    from camtrace.embedding.tiny_model import build_random_siglip

    build_random_siglip(
        folder, hidden_size=64, num_layers=2, num_heads=2, intermediate_size=128, image_size=32, patch_size=8, max_length=16
    )
    model = AutoModel.from_pretrained(folder)
    with torch.no_grad():
        model.logit_scale.fill_(math.log(10.0))
    model.save_pretrained(folder)
    return folder


@pytest.fixture(scope="session")
def learnable_siglip_dir(session_dir: Path) -> Path:
    return build_learnable_siglip(session_dir / "learnable-siglip")


@pytest.fixture(scope="session")
def crowd_footage(session_dir: Path):
    """100 people over 4 cameras, each seen on 2: 60 train, 20 val and 20 held-out test identities."""
    from camtrace.synthetic import generate_footage

    return generate_footage(session_dir / "crowd", cameras=4, identities=100, seconds=20, fps=3, seed=3)
