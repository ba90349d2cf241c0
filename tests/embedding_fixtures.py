"""Fixtures of the embedding tests: tiny checkpoints of the other families and synthetic crops."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest


@pytest.fixture(scope="session")
def tiny_clip_dir(session_dir: Path) -> Path:
    from camtrace.embedding.tiny_model import build_tiny_clip

    return build_tiny_clip(session_dir / "tiny-clip")


@pytest.fixture(scope="session")
def tiny_siglip2_dir(session_dir: Path) -> Path:
    from camtrace.embedding.tiny_model import build_tiny_siglip2

    return build_tiny_siglip2(session_dir / "tiny-siglip2")


def make_crops(count: int, seed: int = 0) -> list[np.ndarray]:
    """Person-shaped RGB crops of varied sizes: a coloured torso and legs on a noisy background."""
    rng = np.random.default_rng(seed)
    crops = []
    for _ in range(count):
        h = int(rng.integers(40, 200))
        w = max(3, int(h * rng.uniform(0.3, 0.6)))
        crop = rng.integers(0, 60, (h, w, 3), dtype=np.uint8)
        crop[h // 5 : h // 2, w // 5 : 4 * w // 5] = rng.integers(0, 256, 3, dtype=np.uint8)
        crop[h // 2 :, w // 4 : 3 * w // 4] = rng.integers(0, 256, 3, dtype=np.uint8)
        crops.append(crop)
    return crops
