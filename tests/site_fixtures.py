"""Synthetic sites for the tracking and trace tests: cameras along a corridor, walkers at walking speed.

Imported by the test modules that use them. Detections come from the ground truth with a detector's
faults added (misses, box jitter, confidences that vary and drop with occlusion, a few false boxes): a
stand-in for a trained person detector, which a test cannot train in its time.
"""

from __future__ import annotations

import collections
import json
from pathlib import Path

import numpy as np
import pytest

from camtrace.synthetic_site import SiteConfig, generate_site

WALKERS = SiteConfig(cameras=4, people=24, seconds=150.0, fps=10.0, seed=5)


@pytest.fixture(scope="session")
def walkers_site(tmp_path_factory):
    """4 cameras, 24 people at 1-2 m/s, look-alikes, groups and pillars, 150 s."""
    return generate_site(tmp_path_factory.mktemp("walkers"), WALKERS)


def truth_boxes(footage_root: Path) -> tuple[dict, dict[tuple[str, int], list[tuple[str, tuple, float]]]]:
    truth = json.loads((Path(footage_root) / "ground_truth.json").read_text())
    boxes: dict[tuple[str, int], list[tuple[str, tuple, float]]] = collections.defaultdict(list)
    for row in truth["boxes"]:
        boxes[(row["camera"], row["frame_index"])].append((row["identity"], tuple(row["box"]), row.get("visible", 1.0)))
    return truth, boxes


def faulty_detections(
    rows, rng: np.random.Generator, size: tuple[int, int], miss: float = 0.07, jitter: float = 0.04, false_rate: float = 0.02
) -> np.ndarray:
    """What a decent detector reports for ground-truth ``rows``: ~93% found, boxes off by a few per cent,
    confidences 0.3-0.9 (lower when partly hidden), now and then a box where nobody is."""
    out = []
    for _, (x1, y1, x2, y2), visible in rows:
        if rng.random() < miss:
            continue
        w, h = x2 - x1, y2 - y1
        dx1, dy1, dx2, dy2 = rng.normal(0, jitter, 4) * np.array([w, h, w, h])
        conf = float(np.clip(rng.uniform(0.35, 0.92) * (0.5 + 0.5 * visible), 0.05, 0.99))
        out.append([x1 + dx1, y1 + dy1, x2 + dx2, y2 + dy2, conf, 0.0])
    if rng.random() < false_rate:
        x, y = rng.uniform(0, size[0] - 60), rng.uniform(0, size[1] - 120)
        out.append([x, y, x + 50, y + 110, float(rng.uniform(0.3, 0.5)), 0.0])
    return np.asarray(out, np.float32).reshape(-1, 6)
