"""Per-segment tracking with Ultralytics' trackers (ByteTrack by default).

A tracker keeps per-stream state, so there is one ``SegmentTracker`` per
segment (or live stream) and it is never shared. Ids restart at 1 in each
tracker; ``make_track_id`` makes them unique across segments.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Iterator
from typing import TYPE_CHECKING

import numpy as np

from camtrace.errors import ConfigError
from camtrace.types import Frame, TrackedBox

if TYPE_CHECKING:
    from camtrace.detection.detector import PersonDetector
    from camtrace.detection.motion import MotionGate

_NO_DETECTIONS = np.zeros((0, 6), np.float32)

TRACKER_SETTING = "CAMTRACE_TRACKER"
REFERENCE_FPS = 30.0  # tracker yaml files count ``track_buffer`` in frames of a 30 fps video


def load_tracker_config(tracker_cfg: str):
    """Read a tracker yaml (a name shipped with Ultralytics, e.g. ``bytetrack.yaml``, or a path)."""
    from ultralytics.trackers.track import TRACKER_MAP
    from ultralytics.utils import YAML, IterableSimpleNamespace
    from ultralytics.utils.checks import check_yaml

    try:
        cfg = IterableSimpleNamespace(**YAML.load(check_yaml(tracker_cfg)))
    except Exception as exc:
        raise ConfigError(
            f"cannot read tracker config {tracker_cfg!r} ({exc}); set {TRACKER_SETTING} to bytetrack.yaml, "
            "botsort.yaml or a path to a tracker yaml"
        ) from None
    kind = getattr(cfg, "tracker_type", None)
    if kind not in TRACKER_MAP:
        raise ConfigError(
            f"tracker config {tracker_cfg!r} has tracker_type {kind!r}; supported: {', '.join(sorted(TRACKER_MAP))}"
        )
    if getattr(cfg, "with_reid", False):
        # Re-id inside the tracker needs the detector's feature maps or another model download.
        raise ConfigError(
            f"tracker config {tracker_cfg!r} enables with_reid; set with_reid: False (re-id is the search's job)"
        )
    return cfg


class SegmentTracker:
    """Assigns track ids to one segment's detections, frame after frame, in frame order."""

    def __init__(self, tracker_cfg: str = "bytetrack.yaml", frame_rate: float = REFERENCE_FPS) -> None:
        from ultralytics.trackers.track import TRACKER_MAP

        if frame_rate <= 0:
            raise ValueError("frame_rate must be positive")
        cfg = load_tracker_config(tracker_cfg)
        cfg.device = "cpu"
        # Keep a lost track for the same TIME whatever the sampling rate (the yaml's value assumes 30 fps).
        cfg.track_buffer = max(1, math.ceil(cfg.track_buffer * frame_rate / REFERENCE_FPS))
        self.config = tracker_cfg
        self.frame_rate = frame_rate
        self._tracker = TRACKER_MAP[cfg.tracker_type](args=cfg)
        self._last_index: int | None = None

    def update(self, frame: Frame, detections: np.ndarray) -> list[TrackedBox]:
        """Feed one frame's ``(n, 6)`` detections ``[x1, y1, x2, y2, conf, cls]``; returns the tracked boxes.

        Boxes and confidences are the detector's own (not the Kalman-smoothed
        box), so crops cut from them match what the detector saw.
        """
        from ultralytics.engine.results import Boxes

        if self._last_index is not None and frame.index <= self._last_index:
            raise ValueError(f"frames must arrive in order: got frame {frame.index} after {self._last_index}")
        self._last_index = frame.index
        dets = np.asarray(detections, dtype=np.float32).reshape(-1, 6)
        height, width = frame.image.shape[:2]
        tracks = self._tracker.update(Boxes(dets, (height, width)), frame.image)
        out: list[TrackedBox] = []
        for row in np.asarray(tracks).reshape(-1, 8):
            det = dets[int(row[7])]
            box = (
                float(np.clip(det[0], 0, width)),
                float(np.clip(det[1], 0, height)),
                float(np.clip(det[2], 0, width)),
                float(np.clip(det[3], 0, height)),
            )
            out.append(TrackedBox(frame.index, frame.ts, box, float(det[4]), int(row[4])))
        out.sort(key=lambda b: b.local_track_id)
        return out

    @property
    def has_live_tracks(self) -> bool:
        """Whether any track is being followed or still waits to be found again (tracked or lost)."""
        return bool(self._tracker.tracked_stracks or self._tracker.lost_stracks)


def track_frames(
    detector: PersonDetector, frames: Iterable[Frame], tracker: SegmentTracker, gate: MotionGate | None = None
) -> Iterator[tuple[Frame, list[TrackedBox]]]:
    """Detect in batches of ``detector.batch_size`` frames and feed the tracker in frame order.

    With a motion ``gate``, frames with no motion seen while the tracker holds
    no track skip the detector (the tracker still gets the frame, empty).
    """
    batch: list[tuple[Frame, bool]] = []
    for frame in frames:
        batch.append((frame, gate.moved(frame.image) if gate is not None else True))
        if len(batch) >= detector.batch_size:
            yield from _flush(detector, batch, tracker, gate)
            batch = []
    if batch:
        yield from _flush(detector, batch, tracker, gate)


def _flush(
    detector: PersonDetector, batch: list[tuple[Frame, bool]], tracker: SegmentTracker, gate: MotionGate | None
) -> Iterator[tuple[Frame, list[TrackedBox]]]:
    # Frames before the batch's first motion skip when no track is alive: empty updates create no track, so
    # none comes alive before that frame. From it on the whole rest is detected, in one batched call.
    first = 0
    if gate is not None and not tracker.has_live_tracks:
        first = next((i for i, (_, moved) in enumerate(batch) if moved), len(batch))
    for frame, _ in batch[:first]:
        yield frame, tracker.update(frame, _NO_DETECTIONS)
    detections = detector.detect([frame.image for frame, _ in batch[first:]])
    if gate is not None:
        gate.frames += len(batch)
        gate.detected += len(batch) - first
    for (frame, _), dets in zip(batch[first:], detections):
        yield frame, tracker.update(frame, dets)
