"""Crop quality and per-track selection, on hand-made frames and boxes."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from camtrace.detection import CropSelector, crop_box, is_cut_off, quality_score, sharpness
from camtrace.types import Frame, TrackedBox

WIDTH, HEIGHT = 320, 240


def textured_frame(index: int, fps: float = 5.0, seed: int = 0) -> Frame:
    image = np.random.default_rng(seed).integers(0, 256, (HEIGHT, WIDTH, 3), dtype=np.uint8)
    return Frame(index=index, ts=100.0 + index / fps, image=image)


def box(frame: Frame, track: int, xyxy, conf: float = 0.8) -> TrackedBox:
    return TrackedBox(frame.index, frame.ts, tuple(float(v) for v in xyxy), conf, track)


def track_id(local: int) -> str:
    return f"vid:0:{local}"


def test_sharpness_is_high_for_texture_and_low_for_blur_or_flat():
    noise = np.random.default_rng(1).integers(0, 256, (100, 60, 3), dtype=np.uint8)
    blurred = cv2.GaussianBlur(noise, (0, 0), 4)
    flat = np.full((100, 60, 3), 128, np.uint8)
    assert sharpness(noise) > 1000
    assert sharpness(blurred) < sharpness(noise) / 50
    assert sharpness(flat) == 0.0
    assert sharpness(noise[:, :, 0]) > 1000  # grey input works too
    assert sharpness(noise[:0]) == 0.0


def test_is_cut_off_at_each_border():
    assert not is_cut_off((10, 10, 100, 200), WIDTH, HEIGHT, margin=2)
    assert is_cut_off((0, 10, 100, 200), WIDTH, HEIGHT, margin=2)
    assert is_cut_off((10, 1.5, 100, 200), WIDTH, HEIGHT, margin=2)
    assert is_cut_off((10, 10, 319, 200), WIDTH, HEIGHT, margin=2)
    assert is_cut_off((10, 10, 100, 240), WIDTH, HEIGHT, margin=2)
    assert not is_cut_off((10, 10, 100, 237), WIDTH, HEIGHT, margin=2)


def test_quality_grows_with_size_confidence_and_sharpness():
    base = quality_score(100, 0.6, 50)
    assert quality_score(150, 0.6, 50) > base
    assert quality_score(100, 0.8, 50) > base
    assert quality_score(100, 0.6, 200) > base
    assert quality_score(400, 0.6, 50) == quality_score(800, 0.6, 50)  # size saturates
    assert 0.0 <= quality_score(0, 0.0, 0.0) <= quality_score(1000, 1.0, 1e6) <= 1.0


def test_crop_box_is_a_clipped_copy():
    frame = textured_frame(0)
    crop = crop_box(frame.image, (-5.0, 10.2, 40.0, 300.0))
    assert crop.shape == (HEIGHT - 10, 40, 3)
    assert np.array_equal(crop, frame.image[10:, :40])
    crop[:] = 0
    assert frame.image[10:, :40].any()  # the frame is untouched


def test_tiny_blurred_and_cut_off_crops_are_dropped_but_their_tracks_are_counted():
    frame = textured_frame(0)
    frame.image[20:140, 200:250] = cv2.GaussianBlur(frame.image[20:140, 200:250], (0, 0), 6)
    selector = CropSelector(k=2, min_height=48, min_sharpness=50.0)
    selector.add(
        frame,
        [
            box(frame, 1, (20, 20, 60, 120)),  # good
            box(frame, 2, (100, 20, 120, 50)),  # 30 px tall: too small
            box(frame, 3, (200, 20, 250, 140)),  # blurred
            box(frame, 4, (0, 20, 40, 120)),  # touches the left border
            box(frame, 5, (270, 130, 320, 240)),  # touches right and bottom
        ],
    )
    crops = selector.select(track_id)
    assert [c.track_id for c in crops] == ["vid:0:1"]
    assert selector.dropped == {"small": 1, "cut_off": 2, "blurred": 1}
    assert sorted(selector.spans) == [1, 2, 3, 4, 5]
    assert all(span.n_boxes == 1 for span in selector.spans.values())
    crop = crops[0]
    assert crop.image.shape == (100, 40, 3)
    assert np.array_equal(crop.image, frame.image[20:120, 20:60])
    assert (crop.frame_index, crop.ts, crop.box, crop.det_conf) == (0, frame.ts, (20.0, 20.0, 60.0, 120.0), 0.8)


def test_k_crops_per_track_spread_over_the_track_not_bunched_at_the_best_moment():
    # Confidence rises all along the track, so the best K would all come from its end.
    selector = CropSelector(k=4, min_height=48, min_sharpness=10.0)
    n = 40
    for i in range(n):
        frame = textured_frame(i, seed=i)
        selector.add(frame, [box(frame, 7, (50, 40, 90, 160), conf=0.3 + 0.6 * i / n)])
    crops = selector.select(track_id)
    assert len(crops) == 4
    quarters = sorted(int((c.frame_index) / (n / 4)) for c in crops)
    assert quarters == [0, 1, 2, 3]
    assert [c.quality for c in crops] == sorted((c.quality for c in crops), reverse=True)  # best first
    span = selector.spans[7]
    assert (span.ts_start, span.ts_end, span.n_boxes) == (100.0, 100.0 + (n - 1) / 5.0, n)


def test_parts_without_usable_crops_are_filled_by_the_best_of_the_rest():
    selector = CropSelector(k=3, min_height=48, min_sharpness=10.0)
    for i in range(30):
        frame = textured_frame(i, seed=i)
        usable = i < 10  # only the first third of the track has big enough boxes
        xyxy = (50, 40, 90, 160) if usable else (50, 40, 90, 70)
        selector.add(frame, [box(frame, 1, xyxy, conf=0.5 + 0.01 * i)])
    crops = selector.select(track_id)
    assert len(crops) == 3
    assert all(c.frame_index < 10 for c in crops)
    assert crops[0].frame_index == 9  # the most confident usable one first
    assert selector.spans[1].n_boxes == 30


def test_fewer_candidates_than_k_returns_them_all_and_several_tracks_stay_apart():
    selector = CropSelector(k=4, min_height=48, min_sharpness=10.0)
    for i in range(2):
        frame = textured_frame(i, seed=i)
        selector.add(frame, [box(frame, 2, (10, 10, 60, 110)), box(frame, 1, (100, 10, 150, 110))])
    crops = selector.select(track_id)
    assert [c.track_id for c in crops] == ["vid:0:1", "vid:0:1", "vid:0:2", "vid:0:2"]


def test_regrouping_folds_duplicates_into_their_track_and_drops_noise():
    selector = CropSelector(k=4, min_height=48, min_sharpness=10.0)
    for i in range(4):
        frame = textured_frame(i, seed=i)
        boxes = [box(frame, 1, (10, 10, 60, 110)), box(frame, 3, (200, 10, 250, 110))]
        if i >= 2:
            boxes.append(box(frame, 2, (12, 12, 40, 108)))  # the same person as track 1, seen twice
        selector.add(frame, boxes)
    selector.regroup({1: 1, 2: 1})  # track 3 was noise
    assert set(selector.spans) == {1}
    span = selector.spans[1]
    assert (span.ts_start, span.ts_end, span.n_boxes) == (100.0, 100.6, 6)
    crops = selector.select(track_id)
    assert {c.track_id for c in crops} == {"vid:0:1"} and len(crops) == 4


def test_memory_stays_bounded_on_a_very_long_track_and_still_covers_it():
    selector = CropSelector(k=4, min_height=48, min_sharpness=10.0)
    frame0 = textured_frame(0)
    n = 3000  # ten minutes at 5 fps
    peak = 0
    for i in range(n):
        frame = Frame(index=i, ts=100.0 + i / 5.0, image=frame0.image)
        selector.add(frame, [box(frame, 1, (50, 40, 90, 160), conf=0.5 + 0.4 * ((i * 37) % 101) / 101)])
        peak = max(peak, selector.held_crops())
    assert peak <= selector.capacity
    crops = selector.select(track_id)
    assert len(crops) == 4
    assert sorted(int(c.frame_index / (n / 4)) for c in crops) == [0, 1, 2, 3]
    assert selector.spans[1].n_boxes == n


def test_selection_is_deterministic_and_independent_of_box_order():
    def run(reverse: bool):
        selector = CropSelector(k=2, min_height=48, min_sharpness=10.0)
        for i in range(12):
            frame = textured_frame(i, seed=i % 3)  # repeated frames: equal qualities must tie-break the same way
            boxes = [box(frame, 1, (10, 10, 60, 110)), box(frame, 2, (100, 10, 150, 110))]
            selector.add(frame, boxes[::-1] if reverse else boxes)
        return [(c.track_id, c.frame_index, c.quality) for c in selector.select(track_id)]

    assert run(False) == run(True)


def test_invalid_k_is_rejected():
    with pytest.raises(ValueError):
        CropSelector(k=0, min_height=48, min_sharpness=10.0)
