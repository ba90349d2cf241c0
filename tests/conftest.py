"""Shared fixtures: tiny models built once per run, synthetic footage, a fresh data dir.

Nothing here touches the network: the tiny SigLIP and YOLO models are random,
saved to folders and loaded through the same code as real weights.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

# Ultralytics must stay offline and keep its config out of the home folder;
# set before any test imports it.
_RUN_DIR = Path(os.environ.setdefault("CAMTRACE_TEST_RUN_DIR", "/tmp/camtrace-tests"))
os.environ.setdefault("YOLO_OFFLINE", "1")
os.environ.setdefault("YOLO_AUTOINSTALL", "False")
os.environ.setdefault("YOLO_VERBOSE", "False")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.pop("CAMTRACE_TEST_RUN_DIR", None)  # not a setting: keep unknown-variable checks meaningful


@pytest.fixture(scope="session")
def session_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("camtrace-session")
    os.environ["YOLO_CONFIG_DIR"] = str(path / "ultralytics")
    return path


@pytest.fixture(scope="session")
def tiny_yolo_dir(session_dir: Path) -> Path:
    from camtrace.detection.tiny_model import build_tiny_yolo

    return build_tiny_yolo(session_dir / "tiny-yolo")


@pytest.fixture(scope="session")
def tiny_siglip_dir(session_dir: Path) -> Path:
    from camtrace.embedding.tiny_model import build_tiny_siglip

    return build_tiny_siglip(session_dir / "tiny-siglip")


@pytest.fixture(scope="session")
def footage(session_dir: Path):
    """Three cameras of synthetic people with ground truth (deterministic)."""
    from camtrace.synthetic import generate_footage

    return generate_footage(session_dir / "footage", cameras=3, identities=5, seconds=8.0, fps=10, seed=7)


@pytest.fixture
def torch_threads_restored():
    """PyTorch's thread count is per process (CAMTRACE_CPU_THREADS sets it, and so does Ultralytics on a
    CPU: cores - 1): a test that changes it gives the other tests theirs back."""
    import torch

    threads = torch.get_num_threads()
    yield
    torch.set_num_threads(threads)
