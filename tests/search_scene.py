"""A hand-made scene for the re-id and trace tests: tracks whose vectors are built so that the
right answers are known, written into a real index (Qdrant Edge or the server class on the
client's in-memory mode), a real SQLite database and a real crop store.

One person (direction e0) walks past cameras A, B, C and D. Cosine similarities to them:
  A1 (seed)  camA   0-10 s   ~0.99     A2   camA  12-20 s  ~0.98 (the seed split at a segment boundary)
  B1         camB  40-50 s   ~0.98     B2   camB  52-58 s  ~0.97
  L1         camC   5-8 s     0.90 (a lookalike, seen while the seed is on camA)
  L2         camD  60-65 s    0.89 (nearer to L1, 0.99, than to the person)
  C1         camC  80-90 s    0.83 (the person, less clearly)
  Q          camD 120-130 s   0.79 (like C1, 0.96, more than like the seed)
  X          camB 200-210 s   0.10 (a stranger)
"""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
from qdrant_client import QdrantClient

from camtrace.services import EmbeddingModel, Services
from camtrace.settings import Settings
from camtrace.storage.edge import EdgeIndex
from camtrace.storage.index import VectorIndex
from camtrace.storage.server import ServerIndex
from camtrace.types import IndexPoint, point_id

DIM = 16
T0 = 1_760_000_000.0
CROPS_PER_TRACK = 3
AXES = np.eye(DIM, dtype=np.float32)


def unit(v: np.ndarray) -> np.ndarray:
    return (v / np.linalg.norm(v)).astype(np.float32)


def turn(base: np.ndarray, axis: int, angle: float) -> np.ndarray:
    """``base`` turned by ``angle`` radians towards ``AXES[axis]`` (orthogonal to it)."""
    return unit(np.cos(angle) * base + np.sin(angle) * AXES[axis])


PERSON = AXES[0]
C1_BASE = turn(PERSON, 2, 0.6)
L1_BASE = turn(PERSON, 4, 0.45)
# (track, camera, start s, end s, base direction, spread of its crops)
TRACKS = [
    ("A1", "camA", 0, 10, PERSON, 0.1),
    ("A2", "camA", 12, 20, turn(PERSON, 8, 0.08), 0.1),
    ("B1", "camB", 40, 50, turn(PERSON, 9, 0.12), 0.1),
    ("B2", "camB", 52, 58, turn(PERSON, 7, 0.2), 0.1),
    ("L1", "camC", 5, 8, L1_BASE, 0.05),
    ("L2", "camD", 60, 65, turn(L1_BASE, 5, 0.15), 0.05),
    ("C1", "camC", 80, 90, C1_BASE, 0.05),
    ("Q", "camD", 120, 130, turn(C1_BASE, 3, 0.3), 0.05),
    ("X", "camB", 200, 210, unit(AXES[6] + 0.1 * AXES[0]), 0.05),
]
CAMERAS = ("camA", "camB", "camC", "camD")


def crop_vectors(base: np.ndarray, spread: float) -> list[np.ndarray]:
    # Several views of one track: the base turned a little towards a different axis each.
    return [turn(base, 10 + k, spread) for k in range(CROPS_PER_TRACK)]


def crop_jpeg(seed: int) -> bytes:
    image = np.full((32, 16, 3), (seed * 37) % 255, np.uint8)
    return cv2.imencode(".jpg", image)[1].tobytes()


def build_scene(data_dir: Path, backend: str) -> Services:
    settings = Settings(data_dir=data_dir)
    services = Services(settings)
    if backend == "edge":
        index: VectorIndex = EdgeIndex(settings.index_dir, "hand-made", DIM)
    else:
        index = ServerIndex(QdrantClient(location=":memory:"), "hand-made", DIM)
    services.pin(EmbeddingModel(settings, encoder=None, index=index))  # known vectors: no encoder needed
    db = services.db
    points, tracks, detections = [], [], []
    for number, (track, camera, start, end, base, spread) in enumerate(TRACKS):
        video = f"{camera}-video"
        db.ensure_camera(camera)
        keys = []
        for k, vector in enumerate(crop_vectors(base, spread)):
            frame = number * 100 + k
            ts = T0 + start + (end - start) * k / (CROPS_PER_TRACK - 1)
            pid = point_id(video, frame, track)
            key = f"{camera}/{video}/{pid}.jpg"
            keys.append(key)
            services.crops.put(key, crop_jpeg(number * 10 + k))
            payload = {
                "camera_id": camera,
                "video_id": video,
                "track_id": track,
                "ts": ts,
                "frame_index": frame,
                "bbox": [1.0, 2.0, 17.0, 34.0],
                "det_conf": 0.9,
                "crop_key": key,
                "model_version": "hand-made",
            }
            points.append(IndexPoint(pid, vector, payload))
            detections.append(
                {
                    "point_id": pid,
                    "track_id": track,
                    "camera_id": camera,
                    "video_id": video,
                    "frame_index": frame,
                    "ts": ts,
                    "bbox": [1.0, 2.0, 17.0, 34.0],
                    "det_conf": 0.9,
                    "quality": 0.5 + 0.1 * k,
                    "crop_key": key,
                    "model_version": "hand-made",
                }
            )
        tracks.append(
            {
                "id": track,
                "camera_id": camera,
                "video_id": video,
                "segment_index": 0,
                "ts_start": T0 + start,
                "ts_end": T0 + end,
                "n_boxes": CROPS_PER_TRACK,
                "best_crop_key": keys[0],
            }
        )
    with index.session():
        index.ensure()
        index.upsert(points)
    db.upsert_tracks(tracks)
    db.upsert_detections(detections)
    return services


def expected_similarity(track: str, positives: list[str]) -> float:
    """A track's best crop against the best crop of the positive tracks (numpy, exact)."""
    by_name = {t[0]: crop_vectors(t[4], t[5]) for t in TRACKS}
    return max(float(a @ b) for a in by_name[track] for p in positives for b in by_name[p])


# Known identity evidence for the scene (too few tracks to learn any): people take 20 s from camA to camB,
# 22 s from camB to camC and 30 s from camC to camD (3 s spread); a track split on one camera resumes ~2 s
# later. Appearance: one person's tracks score about 0.9, two people's about 0.3.
LINKS = {("camA", "camB"): 20.0, ("camB", "camC"): 22.0, ("camC", "camD"): 30.0}
LINK_SPREAD = 3.0


def scene_evidence():
    from camtrace.search.evidence import BINS, CROSS, SAME, IdentityEvidence, _Appearance, _LinkStats

    centres = np.linspace(-1 + 1 / BINS, 1 - 1 / BINS, BINS)

    def bump(centre: float, spread: float, mass: float) -> np.ndarray:
        shape = np.exp(-0.5 * ((centres - centre) / spread) ** 2)
        return mass * shape / shape.sum()

    appearance = {
        domain: _Appearance(positive=bump(0.9, 0.08, 200.0), negative=bump(0.3, 0.2, 2000.0), pairs=2000.0, same=100.0)
        for domain in (SAME, CROSS)
    }
    links = {}
    for (a, b), transit in LINKS.items():
        links[f"{a}->{b}"] = _LinkStats.around(transit, LINK_SPREAD, 20.0, 100.0)
    for camera in CAMERAS:
        links[f"{camera}->{camera}"] = _LinkStats.around(2.0, 0.5, 20.0, 100.0)
    for a in CAMERAS:  # every other pair of cameras: seen often, never one person
        for b in CAMERAS:
            links.setdefault(f"{a}->{b}", _LinkStats(pairs=100.0))
    return IdentityEvidence(600.0, appearance, links, tracks=len(TRACKS))


def install_evidence(services: Services, evidence=None) -> None:
    """Store ``evidence`` (default: the scene's) as the learned evidence of the scene's vectors."""
    from camtrace.storage.evidence import EvidenceRepository

    repository = EvidenceRepository(services.db)
    evidence = evidence or scene_evidence()
    repository.save(services.index.model_version, evidence.to_dict(), repository.newest_feedback_at())
