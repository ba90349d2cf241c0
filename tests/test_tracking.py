"""Tracking walkers at the sampling rate camtrace runs at: one track per walk across a view."""

from __future__ import annotations

import collections

import numpy as np
import pytest
from quality_eval import GroundTruth, crossing_figures
from site_fixtures import faulty_detections, truth_boxes, walkers_site  # noqa: F401

from camtrace.detection import MotionTracker, SegmentTracker, make_tracker
from camtrace.detection.tracking import MotionTrackerConfig
from camtrace.settings import load_settings
from camtrace.types import Frame

FPS = 5.0  # CAMTRACE_SAMPLE_FPS's default


def blank(index: int, fps: float = FPS, size: tuple[int, int] = (640, 360)) -> Frame:
    return Frame(index=index, ts=index / fps, image=np.zeros((size[1], size[0], 3), np.uint8))


def track_site(root, tracker_name: str, sample_fps: float = FPS, seed: int = 0) -> dict:
    """Feed every camera's sampled frames' detections to a fresh tracker; the kept tracks as the
    pipeline would store them (at least one box neither cut by the border nor too small for a crop)."""
    truth, boxes = truth_boxes(root)
    width, height = truth["size"]
    rng = np.random.default_rng(seed)
    step = truth["fps"] / sample_fps
    tracks: dict[str, list] = {}
    for camera in truth["cameras"]:
        tracker = make_tracker(tracker_name, frame_rate=sample_fps)
        seen = collections.defaultdict(list)
        indices = sorted({int(round(k * step)) for k in range(int(truth["n_frames"] / step) + 1)} - {truth["n_frames"]})
        for index in indices:
            frame = Frame(index, index / truth["fps"], np.zeros((height, width, 3), np.uint8))
            for box in tracker.update(frame, faulty_detections(boxes.get((camera, index), []), rng, (width, height))):
                seen[box.local_track_id].append((camera, index, box.box))
        kept = collections.defaultdict(list)
        for local_id, final in tracker.final_ids().items():
            kept[final] += seen[local_id]
        for local_id, rows in kept.items():
            if any(b[3] - b[1] >= 48 and b[0] > 2 and b[2] < width - 2 for _, _, b in rows):
                tracks[f"{camera}:{local_id}"] = rows
    return crossing_figures(tracks, GroundTruth.from_json(root / "ground_truth.json"))


def test_the_default_tracker_keeps_every_walker_as_one_track_at_5_fps(walkers_site):
    assert load_settings().tracker == "motion" and load_settings().sample_fps == FPS
    figures = track_site(walkers_site.root, "motion")
    assert figures["crossings"] >= 60
    assert figures["found_pct"] >= 95.0, figures
    assert figures["tracks_per_crossing"] <= 1.2, figures
    assert figures["false_tracks"] <= 0.05 * figures["crossings"], figures
    # Tuned for 30 fps video, ByteTrack splits the same walkers (the reason it is no longer the default).
    bytetrack = track_site(walkers_site.root, "bytetrack.yaml")
    assert bytetrack["tracks_per_crossing"] > figures["tracks_per_crossing"] + 0.3, (bytetrack, figures)


@pytest.mark.parametrize("sample_fps", [2.5, 10.0])
def test_the_motion_tracker_holds_at_other_sampling_rates(walkers_site, sample_fps):
    figures = track_site(walkers_site.root, "motion", sample_fps)
    assert figures["found_pct"] >= 95.0 and figures["tracks_per_crossing"] <= 1.2, figures


def walker(index: int, speed_px: float, x0: float = 40.0, y: float = 120.0, height: float = 150.0) -> list[float]:
    x = x0 + speed_px * index
    return [x, y, x + 0.42 * height, y + height, 0.8, 0.0]


def test_a_walker_moving_half_their_width_per_frame_keeps_one_id():
    def frames(tracker) -> list[list]:
        tracker.update(blank(0), np.zeros((0, 6), np.float32))  # the walker comes in after the first frame
        out = []
        for i in range(1, 13):
            box = walker(i, 32.0)
            box[4] = 0.5  # a typical detector confidence
            out.append(tracker.update(blank(i), np.array([box])))
        return out

    motion = MotionTracker()
    assert {box.local_track_id for boxes in frames(motion) for box in boxes} == {1}
    assert motion.final_ids() == {1: 1}
    # ByteTrack at the same rate never starts a track: IoU between frames 0.34, fused with the 0.5
    # confidence 0.17, under its 0.2 match threshold.
    assert sum(len(boxes) for boxes in frames(SegmentTracker("bytetrack.yaml", frame_rate=FPS))) == 0


def test_two_walkers_crossing_each_other_keep_their_ids():
    tracker = MotionTracker()
    seen = collections.defaultdict(set)
    for i in range(16):
        right, left = walker(i, 30.0, x0=40, y=110), walker(i, -30.0, x0=500, y=140, height=160)
        for box in tracker.update(blank(i), np.array([right, left], np.float32)):
            seen["right" if abs(box.box[0] - right[0]) < 1 else "left"].add(box.local_track_id)
    assert len(seen["right"]) == len(seen["left"]) == 1 and seen["right"] != seen["left"], seen


def test_every_box_comes_out_from_the_first_frame_and_single_boxes_are_kept_when_confident():
    tracker = MotionTracker()
    first = tracker.update(blank(0), np.array([walker(0, 30.0), [500, 40, 560, 180, 0.9, 0], [300, 10, 330, 80, 0.4, 0]]))
    assert sorted(b.local_track_id for b in first) == [1, 2, 3]  # no frame of warm-up
    tracker.update(blank(1), np.array([walker(1, 30.0)]))
    # The walker (two boxes) and the confident single box stay; the weak single box was noise.
    assert tracker.final_ids() == {1: 1, 2: 2}
    # Boxes and confidences are the detector's own.
    assert first[0].box == tuple(float(v) for v in walker(0, 30.0)[:4]) and first[0].conf == pytest.approx(0.8)


def test_weak_detections_only_continue_tracks():
    tracker = MotionTracker()
    assert tracker.update(blank(0), np.array([[100, 50, 160, 200, 0.2, 0]])) == []  # too weak to start a track
    tracker.update(blank(1), np.array([walker(1, 30.0, x0=100, y=50)]))
    weak = walker(2, 30.0, x0=100, y=50)
    weak[4] = 0.2  # partly hidden: the detector is unsure, the track goes on
    assert [b.local_track_id for b in tracker.update(blank(2), np.array([weak]))] == [1]


def test_a_track_ends_when_its_walker_leaves_the_view_or_after_the_lost_time():
    config = MotionTrackerConfig()
    tracker = MotionTracker(config)
    for i in range(4):  # walking right, out of a 640 px view
        tracker.update(blank(i), np.array([walker(i, 60.0, x0=460)]))
    assert tracker.has_live_tracks
    for i in range(4, 8):
        tracker.update(blank(i), np.zeros((0, 6), np.float32))
    assert not tracker.has_live_tracks  # predicted beyond the border: gone, not waiting
    # Someone entering at the same edge walking left is a new person, not the one who left.
    entering = [600, 120, 640, 270, 0.8, 0]
    assert [b.local_track_id for b in tracker.update(blank(8), np.array([entering]))] == [2]

    # A person standing still and unseen is kept for lost_seconds, whatever the sampling rate.
    for fps in (2.5, 5.0, 10.0):
        still = MotionTracker(config)
        box = np.array([[300, 100, 360, 250, 0.8, 0]])
        for i in range(3):
            still.update(blank(i, fps), box)
        gap = int(config.lost_seconds * fps)
        for i in range(3, 3 + gap):
            still.update(blank(i, fps), np.zeros((0, 6), np.float32))
        assert still.has_live_tracks
        still.update(blank(4 + gap, fps), np.zeros((0, 6), np.float32))
        assert not still.has_live_tracks


def test_one_person_seen_as_two_boxes_is_one_track():
    tracker = MotionTracker()
    for i in range(10):
        whole = walker(i, 30.0, x0=60)
        x1, y1, x2, y2 = whole[:4]
        # A pillar splits the walker: the detector reports the left part as well as the whole (or only parts).
        left = [x1, y1 + 2, (x1 + x2) / 2 - 6, y2 - 1, 0.5, 0.0]
        right = [(x1 + x2) / 2 + 6, y1 + 1, x2, y2, 0.45, 0.0]
        boxes = [whole, left] if i < 6 else [left, right]
        tracker.update(blank(i), np.array(boxes, np.float32))
    # Someone else walks beside them all along, a body width apart: two people, two tracks.
    other = MotionTracker()
    for i in range(10):
        first = walker(i, 30.0, x0=60)
        second = walker(i, 30.0, x0=60 + 0.55 * 150)
        other.update(blank(i), np.array([first, second], np.float32))
    final = tracker.final_ids()
    assert len(set(final.values())) == 1, final  # every track folded into one
    assert len(set(other.final_ids().values())) == 2


def test_frames_must_come_in_order():
    tracker = MotionTracker()
    tracker.update(blank(4), np.zeros((0, 6), np.float32))
    with pytest.raises(ValueError, match="order"):
        tracker.update(blank(3), np.zeros((0, 6), np.float32))
