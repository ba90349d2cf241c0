"""Synthetic footage: deterministic from the seed, identities shared across cameras, truthful ground truth."""

from __future__ import annotations

import collections
import json

import cv2
import numpy as np
import pytest

from camtrace.detection import VideoSource, sharpness
from camtrace.synthetic import COLOURS, GROUND_TRUTH_FILE, generate_footage


def decoded(path) -> list[np.ndarray]:
    capture = cv2.VideoCapture(str(path))
    frames = []
    while True:
        ok, image = capture.read()
        if not ok:
            break
        frames.append(image)
    capture.release()
    return frames


def small(out, seed):
    return generate_footage(out, cameras=2, identities=3, seconds=3.0, fps=10, size=(320, 240), seed=seed)


def test_same_seed_gives_identical_ground_truth_and_frames(tmp_path):
    a = small(tmp_path / "a", seed=3)
    b = small(tmp_path / "b", seed=3)
    assert (tmp_path / "a" / GROUND_TRUTH_FILE).read_text() == (tmp_path / "b" / GROUND_TRUTH_FILE).read_text()
    for camera in a.videos:
        frames_a, frames_b = decoded(a.videos[camera]), decoded(b.videos[camera])
        assert len(frames_a) == a.n_frames == 30
        assert all(np.array_equal(x, y) for x, y in zip(frames_a, frames_b))
    c = small(tmp_path / "c", seed=4)
    assert (tmp_path / "c" / GROUND_TRUTH_FILE).read_text() != (tmp_path / "a" / GROUND_TRUTH_FILE).read_text()
    assert not np.array_equal(decoded(c.videos["cam1"])[15], decoded(a.videos["cam1"])[15])


def test_identities_appear_on_more_than_one_camera(footage):
    assert len(footage.videos) == 3 and len(footage.identities) == 5
    for identity in footage.identities:
        cameras = footage.cameras_of(identity)
        assert len(cameras) >= 2, f"{identity} is seen on {cameras} only"
        visits = sorted((a for a in footage.appearances if a.identity == identity), key=lambda a: a.ts_start)
        assert all(x.ts_end < y.ts_start for x, y in zip(visits, visits[1:]))  # one place at a time


def test_ground_truth_file_matches_the_returned_footage(footage):
    truth = json.loads(footage.ground_truth_path.read_text())
    assert set(truth["cameras"]) == set(footage.videos)
    assert {k: v["description"] for k, v in truth["identities"].items()} == footage.descriptions
    for description in footage.descriptions.values():
        parts = description.split(", ")
        assert 2 <= len(parts) <= 3 and parts[0].endswith(" top")
        assert all(part.split()[0] in COLOURS for part in parts)
    assert len(truth["boxes"]) == len(footage.boxes)
    first = truth["boxes"][0]
    assert set(first) == {"camera", "frame_index", "ts", "identity", "box"}
    # One box per identity per frame of each appearance, with the frame's timestamp.
    expected = sum(a.frame_end - a.frame_start + 1 for a in footage.appearances)
    assert len(footage.boxes) == expected
    for b in footage.boxes[:50]:
        assert b.ts == pytest.approx(footage.start_ts[b.camera] + b.frame_index / footage.fps)


def test_boxes_are_inside_the_frame_and_people_move(footage):
    width, height = footage.size
    positions = collections.defaultdict(list)
    for b in footage.boxes:
        x1, y1, x2, y2 = b.box
        assert 0 <= x1 < x2 <= width and 0 <= y1 < y2 <= height
        assert y2 - y1 > 48  # tall enough to survive the default minimum crop height
        positions[(b.camera, b.identity)].append((x1 + x2) / 2)
    for xs in positions.values():
        assert max(xs) - min(xs) > 40  # walking, not standing


def test_pixels_match_the_description(footage):
    """The torso of each drawn figure has the identity's top colour; the crop is textured enough to keep."""
    frames_of = {camera: decoded(path) for camera, path in footage.videos.items()}
    checked = 0
    for b in footage.boxes:
        if b.frame_index % 5:
            continue
        camera, frames = b.camera, frames_of[b.camera]
        person = footage.identities[b.identity]
        x1, y1, x2, y2 = (int(v) for v in b.box)
        h = y2 - y1
        cx = (x1 + x2) // 2
        torso = frames[b.frame_index][y1 + int(0.3 * h) : y1 + int(0.45 * h), cx - 3 : cx + 4]
        others = [fb for fb in footage.boxes_in(camera, b.frame_index) if fb.identity != b.identity]
        if any(o.box[0] < x2 and x1 < o.box[2] and o.box[1] < y2 and y1 < o.box[3] for o in others):
            continue  # overlapping figures: the torso may be hidden
        assert np.abs(np.median(torso.reshape(-1, 3), axis=0) - COLOURS[person.top]).max() < 40, b
        assert sharpness(frames[b.frame_index][y1:y2, x1:x2]) > 15.0
        checked += 1
    assert checked >= 20


def test_video_source_reads_the_generated_files(footage):
    for camera, path in footage.videos.items():
        with VideoSource(str(path)) as source:
            assert source.info.frame_count == footage.n_frames
            assert source.info.start_ts == pytest.approx(footage.start_ts[camera])
            assert (source.info.width, source.info.height) == footage.size


def test_bad_arguments_are_rejected(tmp_path):
    with pytest.raises(ValueError, match="camera"):
        generate_footage(tmp_path, cameras=0)
    with pytest.raises(ValueError, match="too small"):
        generate_footage(tmp_path, size=(64, 48))
    with pytest.raises(ValueError, match="too few"):
        generate_footage(tmp_path, seconds=0.5)
