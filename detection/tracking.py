"""Per-segment tracking: camtrace's motion tracker by default, or one of Ultralytics' trackers.

A tracker keeps per-stream state, so there is one tracker per segment (or live
stream) and it is never shared. Ids restart at 1 in each tracker;
``make_track_id`` makes them unique across segments.

``MotionTracker`` (``CAMTRACE_TRACKER=motion``, the default) is built for the
sampled frames camtrace tracks on: at 5 fps a walker moves a third to a half
of their own width between two frames, where the IoU association of trackers
tuned for 30 fps video (ByteTrack's ``bytetrack.yaml``) fails to start or
continue a track. It associates by the distance between a detection and the
track's predicted position, in units of the person's height, gated by how
far a person can move in the time since the track was last seen (so the gate
follows the sampling interval, not a frame count); velocity comes from the
track's own observations (OC-SORT's observation-centric momentum), and
confident and weak detections are matched in two rounds as in ByteTrack.
Every box is returned with its track id from the first frame on; at the
segment's end (``final_ids``) a track seen only once is kept only when its
detection was confident, and a track that only duplicated another (one person
seen as two boxes) is folded into it.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Protocol

import numpy as np

from camtrace.errors import ConfigError
from camtrace.types import Frame, TrackedBox

if TYPE_CHECKING:
    from camtrace.detection.detector import PersonDetector
    from camtrace.detection.motion import MotionGate

_NO_DETECTIONS = np.zeros((0, 6), np.float32)

TRACKER_SETTING = "CAMTRACE_TRACKER"
MOTION_TRACKER = "motion"
GATED = 1e6  # the cost of a pair outside the gate in the assignment
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
        raise ConfigError(f"tracker config {tracker_cfg!r} has tracker_type {kind!r}; supported: {', '.join(sorted(TRACKER_MAP))}")
    if getattr(cfg, "with_reid", False):
        # Re-id inside the tracker needs the detector's feature maps or another model download.
        raise ConfigError(f"tracker config {tracker_cfg!r} enables with_reid; set with_reid: False (re-id is the search's job)")
    return cfg


class Tracker(Protocol):
    """What the pipeline needs of a per-segment tracker."""

    def update(self, frame: Frame, detections: np.ndarray) -> list[TrackedBox]:
        """Feed one frame's ``(n, 6)`` detections ``[x1, y1, x2, y2, conf, cls]``; returns the tracked boxes."""
        ...

    @property
    def has_live_tracks(self) -> bool:
        """Whether any track is followed or still waits to be found again."""
        ...

    def final_ids(self) -> dict[int, int]:
        """Once the segment is over: each track worth keeping -> the id it is kept under (its own, or the
        track it duplicated); tracks left out were noise."""
        ...


def make_tracker(name: str = MOTION_TRACKER, frame_rate: float = 5.0) -> Tracker:
    """The tracker ``CAMTRACE_TRACKER`` names: ``motion`` (camtrace's), or an Ultralytics yaml (name or path)."""
    if frame_rate <= 0:
        raise ValueError("frame_rate must be positive")
    if name == MOTION_TRACKER:
        return MotionTracker()
    return SegmentTracker(name, frame_rate)


# camtrace's motion tracker --------------------------------------------------------------------------------


@dataclass(frozen=True)
class MotionTrackerConfig:
    """Thresholds of ``MotionTracker``; distances and speeds are in person heights (scale-free)."""

    high_conf: float = 0.35  # detections matched in the first round, and the only ones that start tracks
    low_conf: float = 0.1  # weaker detections only continue tracks (ByteTrack's second round); below: ignored
    keep_single_conf: float = 0.6  # a track seen once is kept when its detection was at least this confident
    max_speed: float = 1.6  # heights per second a track without a velocity may move (~2.7 m/s for 1.7 m)
    max_accel: float = 1.2  # heights per second the prediction of a moving track may be off, per second
    jitter: float = 0.2  # heights a detection's centre may wander between frames (box noise, pose)
    max_scale_change: float = 1.45  # a detection this much taller or shorter than the track is someone else
    lost_seconds: float = 2.0  # a track not seen for this long is over
    direction_weight: float = 0.3  # cost of moving against the track's own direction (OC-SORT's momentum)
    velocity_window: int = 3  # observations back over which a track's velocity is measured


@dataclass(frozen=True)
class _Observation:
    """Where a detection puts a person: the centre of their whole body (completed where the frame border cuts
    the box, from its inner edge and the person's width), their height, and whether the box was cut."""

    ts: float
    centre: np.ndarray  # x, y in pixels
    height: float
    width: float  # the whole body's width (estimated where cut)
    cut: bool


def _observe(ts: float, det: np.ndarray, frame_width: int, full_width: float | None) -> _Observation:
    x1, y1, x2, y2 = (float(v) for v in det[:4])
    height, width = y2 - y1, x2 - x1
    whole = max(width, full_width if full_width is not None else DEFAULT_ASPECT * height)
    left_cut, right_cut = x1 <= BORDER_PX, x2 >= frame_width - BORDER_PX
    if left_cut and not right_cut:
        centre_x = x2 - whole / 2  # the inner (right) edge is the person's own
    elif right_cut and not left_cut:
        centre_x = x1 + whole / 2
    else:
        centre_x = (x1 + x2) / 2
    return _Observation(ts, np.array([centre_x, (y1 + y2) / 2]), height, whole, left_cut or right_cut)


# A detection lying this much inside a box that continues a track is part of that person (the detector saw them
# twice, or split by a pillar): it starts no track of its own.
CONTAINED_SHARE = 0.8
# Two tracks are one person when, in this share of the frames both were seen, one box lies at least half inside
# the other or both are parts side by side: top and bottom within PART_LEVEL of the person's height, together no
# wider than PART_WIDTH heights (a walker is ~0.45-0.55 heights wide; two people side by side ~1). People who
# cross or walk together overlap in a few of their common frames only.
DUPLICATE_SHARE = 0.8
OVERLAP_SHARE = 0.5
PART_LEVEL = 0.1
PART_WIDTH = 0.75


def _duplicates(small: _MotionTrack, large: _MotionTrack) -> bool:
    """Whether ``small`` is ``large``'s person seen twice: in at least DUPLICATE_SHARE of the frames both were
    seen (two at least), ``small``'s box lies inside ``large``'s, or beside it at the same height as a part of
    one person would (the two boxes' union no wider than a person)."""
    common = [index for index in small.boxes if index in large.boxes]
    if len(common) < 2:
        return False
    alike = 0
    for index in common:
        a, b = np.asarray(small.boxes[index]), np.asarray(large.boxes[index])
        height = max(b[3] - b[1], 1e-6)
        level = abs(a[1] - b[1]) <= PART_LEVEL * height and abs(a[3] - b[3]) <= PART_LEVEL * height
        union_width = max(a[2], b[2]) - min(a[0], b[0])
        if _inside(a, b) >= OVERLAP_SHARE or (level and union_width <= PART_WIDTH * height):
            alike += 1
    return alike >= DUPLICATE_SHARE * len(common)


def _inside(box: np.ndarray, other: np.ndarray) -> float:
    """The share of ``box``'s area that lies inside ``other``."""
    area = float((box[2] - box[0]) * (box[3] - box[1]))
    width = min(box[2], other[2]) - max(box[0], other[0])
    height = min(box[3], other[3]) - max(box[1], other[1])
    return float(max(0.0, width) * max(0.0, height)) / area if area > 0 else 0.0


DEFAULT_ASPECT = 0.42  # width / height of a standing person's box, until a track has measured its own
BORDER_PX = 2.0  # a box this close to the left or right border is cut by it


@dataclass
class _MotionTrack:
    id: int
    observations: list[_Observation] = field(default_factory=list)
    hits: int = 0
    max_conf: float = 0.0
    boxes: dict[int, tuple[float, float, float, float]] = field(default_factory=dict)  # frame index -> box

    @property
    def last(self) -> _Observation:
        return self.observations[-1]

    @property
    def full_width(self) -> float | None:
        """The person's width from the latest box the border did not cut (None before one was seen)."""
        return next((o.width for o in reversed(self.observations) if not o.cut), None)

    def velocity(self, window: int) -> np.ndarray | None:
        """Pixels per second from the last observations (None with one observation)."""
        if len(self.observations) < 2:
            return None
        first = self.observations[max(0, len(self.observations) - 1 - window)]
        dt = self.last.ts - first.ts
        return None if dt <= 0 else (self.last.centre - first.centre) / dt

    def predicted_centre(self, ts: float, window: int) -> np.ndarray:
        velocity = self.velocity(window)
        return self.last.centre if velocity is None else self.last.centre + velocity * (ts - self.last.ts)

    def add(self, observation: _Observation, conf: float) -> None:
        self.observations.append(observation)
        del self.observations[:-8]  # a short history is all the velocity needs
        self.hits += 1
        self.max_conf = max(self.max_conf, conf)


class MotionTracker:
    """Assigns track ids to one segment's detections, frame after frame, in frame order (see the module doc)."""

    def __init__(self, config: MotionTrackerConfig | None = None) -> None:
        self.config = config or MotionTrackerConfig()
        self._tracks: list[_MotionTrack] = []
        self._all: dict[int, _MotionTrack] = {}
        self._next_id = 1
        self._last_index: int | None = None
        self._previous_ts: float | None = None

    def update(self, frame: Frame, detections: np.ndarray) -> list[TrackedBox]:
        """Boxes and confidences are the detector's own; every box gets a track id at once."""
        if self._last_index is not None and frame.index <= self._last_index:
            raise ValueError(f"frames must arrive in order: got frame {frame.index} after {self._last_index}")
        self._last_index = frame.index
        cfg = self.config
        dets = np.asarray(detections, dtype=np.float32).reshape(-1, 6)
        height, width = frame.image.shape[:2]
        self._tracks = [t for t in self._tracks if self._alive(t, frame.ts, width)]
        valid = (dets[:, 2] > dets[:, 0]) & (dets[:, 3] > dets[:, 1]) & (dets[:, 4] >= cfg.low_conf)
        strong = [int(i) for i in np.flatnonzero(valid) if dets[i, 4] >= cfg.high_conf]
        weak = [int(i) for i in np.flatnonzero(valid) if dets[i, 4] < cfg.high_conf]

        # Round 1: confident detections against every live track; round 2: weak ones against the tracks seen
        # in the previous frame (a person partly hidden now), as ByteTrack does.
        assigned: dict[int, int] = {}  # detection -> track index
        free = list(range(len(self._tracks)))
        for candidates, tracks in ((strong, free), (weak, None)):
            if tracks is None:
                tracks = [k for k in free if self._tracks[k].last.ts == self._previous_ts]
            matches = self._match(frame.ts, dets, candidates, tracks, width)
            assigned.update(matches)
            free = [k for k in free if k not in matches.values()]

        out: list[TrackedBox] = []
        for i, k in assigned.items():
            track = self._tracks[k]
            track.add(_observe(frame.ts, dets[i], width, track.full_width), float(dets[i, 4]))
            out.append(self._boxed(frame, dets[i], track.id, width, height))
            track.boxes[frame.index] = out[-1].box
        # New tracks, largest box first; a box lying inside one that continues or starts a track is that person.
        taken = [dets[i] for i in assigned]
        unmatched = sorted(
            (i for i in strong if i not in assigned), key=lambda i: -float((dets[i, 2] - dets[i, 0]) * (dets[i, 3] - dets[i, 1]))
        )
        for i in unmatched:
            if not any(_inside(dets[i], box) >= CONTAINED_SHARE for box in taken):
                taken.append(dets[i])
                track = _MotionTrack(self._next_id)
                self._next_id += 1
                track.add(_observe(frame.ts, dets[i], width, None), float(dets[i, 4]))
                self._tracks.append(track)
                self._all[track.id] = track
                out.append(self._boxed(frame, dets[i], track.id, width, height))
                track.boxes[frame.index] = out[-1].box
        out.sort(key=lambda b: b.local_track_id)
        self._previous_ts = frame.ts
        return out

    def _alive(self, track: _MotionTrack, ts: float, frame_width: int) -> bool:
        """A track is over when unseen for too long, or when its person has walked out of the view."""
        if ts - track.last.ts > self.config.lost_seconds:
            return False
        x = float(track.predicted_centre(ts, self.config.velocity_window)[0])
        half = track.last.width / 2
        return -half <= x <= frame_width + half

    def _match(self, ts: float, dets: np.ndarray, candidates: list[int], tracks: list[int], width: int) -> dict[int, int]:
        """Minimum-cost assignment of detections to tracks inside the gates: detection -> track index."""
        import lap

        if not candidates or not tracks:
            return {}
        cost = np.full((len(candidates), len(tracks)), np.inf)
        for b, k in enumerate(tracks):
            track = self._tracks[k]
            for a, i in enumerate(candidates):
                cost[a, b] = self._cost(track, _observe(ts, dets[i], width, track.full_width))
        finite = np.isfinite(cost)
        if not finite.any():
            return {}
        # Pairs outside the gate cost more than leaving both unmatched, so they never pair.
        _, row_to_col, _ = lap.lapjv(np.where(finite, cost, GATED), extend_cost=True, cost_limit=GATED / 2)
        return {candidates[a]: tracks[b] for a, b in enumerate(row_to_col) if b >= 0 and finite[a, b]}

    def _cost(self, track: _MotionTrack, seen: _Observation) -> float:
        """How far the detection is from where the track should be, as a share of how far it may be;
        inf outside the gate."""
        cfg = self.config
        last = track.last
        dt = max(seen.ts - last.ts, 1e-3)
        scale = max(seen.height, last.height) / max(min(seen.height, last.height), 1e-6)
        # A box cut by the border may show only an arm or a shoulder: its height says little.
        if scale > (cfg.max_scale_change**2 if seen.cut or last.cut else cfg.max_scale_change):
            return math.inf
        size = (seen.height + last.height) / 2
        velocity = track.velocity(cfg.velocity_window)
        if velocity is None:
            predicted, radius = last.centre, cfg.jitter + cfg.max_speed * dt
        else:
            predicted, radius = last.centre + velocity * dt, cfg.jitter + cfg.max_accel * dt
        offset = float(np.linalg.norm(seen.centre - predicted)) / size
        if offset > radius:
            return math.inf
        cost = offset / radius + 0.5 * min(1.0, math.log(scale) / math.log(cfg.max_scale_change))
        if velocity is not None:
            step = seen.centre - last.centre
            moved, speed = float(np.linalg.norm(step)), float(np.linalg.norm(velocity))
            if moved > cfg.jitter * size and speed > 0:
                cosine = float(step @ velocity) / (moved * speed)
                cost += cfg.direction_weight * (1.0 - cosine) / 2.0
        return cost

    @staticmethod
    def _boxed(frame: Frame, det: np.ndarray, track_id: int, width: int, height: int) -> TrackedBox:
        box = (
            float(np.clip(det[0], 0, width)),
            float(np.clip(det[1], 0, height)),
            float(np.clip(det[2], 0, width)),
            float(np.clip(det[3], 0, height)),
        )
        return TrackedBox(frame.index, frame.ts, box, float(det[4]), track_id)

    @property
    def has_live_tracks(self) -> bool:
        return bool(self._tracks)

    def final_ids(self) -> dict[int, int]:
        """Tracks seen at least twice, or once confidently; a track that duplicated another (the detector saw
        one person as two boxes: nested, or side by side where a pillar cut them) is kept under that one's id."""
        cfg = self.config
        kept = {tid: t for tid, t in self._all.items() if t.hits >= 2 or t.max_conf >= cfg.keep_single_conf}
        ids = {tid: tid for tid in kept}
        # Longer tracks first: a duplicate joins the track it sat on, never the other way round.
        order = sorted(kept.values(), key=lambda t: (-len(t.boxes), t.id))
        for position, track in enumerate(order):
            if ids[track.id] != track.id:
                continue
            for other in order[position + 1 :]:
                if ids[other.id] == other.id and _duplicates(other, track):
                    ids[other.id] = track.id
        return ids


# Ultralytics' trackers ---------------------------------------------------------------------------------------


class SegmentTracker:
    """Ultralytics' ByteTrack or BoT-SORT on one segment: only boxes of activated tracks come out."""

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
        self._seen: set[int] = set()

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
        self._seen.update(b.local_track_id for b in out)
        return out

    @property
    def has_live_tracks(self) -> bool:
        """Whether any track is being followed or still waits to be found again (tracked or lost)."""
        return bool(self._tracker.tracked_stracks or self._tracker.lost_stracks)

    def final_ids(self) -> dict[int, int]:
        return {track_id: track_id for track_id in self._seen}


def track_frames(
    detector: PersonDetector, frames: Iterable[Frame], tracker: Tracker, gate: MotionGate | None = None
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
    detector: PersonDetector, batch: list[tuple[Frame, bool]], tracker: Tracker, gate: MotionGate | None
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
