"""Motion gating: idle frames skip the detector, tracks stay exactly what they are without gating."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from camtrace.detection import MotionGate, SegmentTracker, VideoSource, track_frames
from camtrace.settings import Settings
from camtrace.synthetic import FigureDetector, generate_footage
from camtrace.workers.pipeline import detect_segment

SAMPLE_FPS = 5.0


@pytest.fixture(scope="module")
def idle_footage(tmp_path_factory: pytest.TempPathFactory):
    """One camera: 4 s empty, walks for 6 s, 4 s empty."""
    out = tmp_path_factory.mktemp("idle-footage")
    return generate_footage(out, cameras=1, identities=3, seconds=6.0, fps=10, size=(320, 180), seed=4, idle_seconds=4.0)


def test_idle_stretches_are_empty_and_the_default_footage_is_unchanged(idle_footage, tmp_path):
    plain = generate_footage(tmp_path, cameras=1, identities=3, seconds=6.0, fps=10, size=(320, 180), seed=4)
    assert idle_footage.n_frames == plain.n_frames + 2 * 40
    shifted = [(a.identity, a.frame_start + 40, a.frame_end + 40) for a in plain.appearances]
    assert [(a.identity, a.frame_start, a.frame_end) for a in idle_footage.appearances] == shifted
    seen = {b.frame_index for b in idle_footage.boxes}
    assert min(seen) >= 40 and max(seen) < idle_footage.n_frames - 40


def run(footage, gate: MotionGate | None) -> tuple[list, FigureDetector]:
    detector = FigureDetector(footage.background("cam1"), batch_size=4)
    with VideoSource(str(footage.videos["cam1"])) as source:
        tracker = SegmentTracker("bytetrack.yaml", frame_rate=SAMPLE_FPS)
        rows = [
            (frame.index, box.local_track_id, box.box)
            for frame, boxes in track_frames(detector, source.frames(SAMPLE_FPS), tracker, gate)
            for box in boxes
        ]
    return rows, detector


def test_gating_skips_idle_frames_and_loses_no_track(idle_footage):
    ungated, all_frames = run(idle_footage, None)
    gate = MotionGate(threshold=0.003)
    gated, detector = run(idle_footage, gate)

    sampled = all_frames.frames
    assert gate.frames == sampled and detector.frames == gate.detected
    idle_sampled = 2 * 4 * SAMPLE_FPS  # two 4 s stretches at 5 fps
    # Most idle frames skip: not the first frame, nor ~1 s after a walk (a lost track keeps the detector on).
    assert gate.skipped >= 0.6 * idle_sampled
    assert len({track_id for _, track_id, _ in ungated}) >= 3
    assert gated == ungated  # every track, box and id as without gating


def test_a_moving_scene_is_never_gated():
    gate = MotionGate(threshold=0.003)
    rng = np.random.default_rng(0)
    scene = rng.integers(0, 255, (180, 320, 3), np.uint8)
    assert gate.moved(scene)  # the first frame always looks
    assert not gate.moved(scene.copy())
    moved = scene.copy()
    moved[60:140, 100:130] = 255  # a bright figure enters
    assert gate.moved(moved)


def test_the_pipeline_gates_by_setting_and_a_segment_alone_equals_its_place_in_the_full_pass(idle_footage, tmp_path: Path):
    detector = FigureDetector(idle_footage.background("cam1"), batch_size=4)
    results = {}
    for gating in (True, False):
        settings = Settings(data_dir=tmp_path, sample_fps=SAMPLE_FPS, segment_seconds=4.0, motion_gating=gating, min_crop_height=20)
        with VideoSource(str(idle_footage.videos["cam1"])) as source:
            segments = source.segments(settings.segment_seconds)
            results[gating] = [detect_segment(source, segment, "cam1", detector, settings) for segment in segments]
        with VideoSource(str(idle_footage.videos["cam1"])) as source:  # a segment in the middle, alone
            alone = detect_segment(source, segments[2], "cam1", detector, settings)
        assert [(c.track_id, c.frame_index, c.box) for c in alone.crops] == [
            (c.track_id, c.frame_index, c.box) for c in results[gating][2].crops
        ]
    gated, ungated = results[True], results[False]
    assert sum(r.frames_detected for r in gated) < sum(r.frames for r in gated)
    assert all(r.frames_detected == r.frames for r in ungated)
    assert [[(c.track_id, c.frame_index, c.box) for c in r.crops] for r in gated] == [
        [(c.track_id, c.frame_index, c.box) for c in r.crops] for r in ungated
    ]
    assert sum(len(r.crops) for r in gated) > 0
