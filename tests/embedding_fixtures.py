"""Fixtures of the embedding tests: tiny checkpoints of the other families and synthetic crops."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from camtrace.synthetic import person_crops


@pytest.fixture(scope="session")
def tiny_clip_dir(session_dir: Path) -> Path:
    from camtrace.embedding.tiny_model import build_tiny_clip

    return build_tiny_clip(session_dir / "tiny-clip")


@pytest.fixture(scope="session")
def tiny_siglip2_dir(session_dir: Path) -> Path:
    from camtrace.embedding.tiny_model import build_tiny_siglip2

    return build_tiny_siglip2(session_dir / "tiny-siglip2")


def make_crops(count: int, seed: int = 0) -> list[np.ndarray]:
    """Person-shaped RGB crops of varied sizes, 40-200 px high (tiny widths included)."""
    return person_crops(count, seed)
