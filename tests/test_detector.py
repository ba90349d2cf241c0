"""Person detector (loaded from the tiny YOLO through the same code as real weights) and per-segment tracking."""

from __future__ import annotations

import collections
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
from detection_fixtures import tiny_detector  # noqa: F401

from camtrace.detection import PersonDetector, SegmentTracker, VideoSource, resolve_weights, track_frames
from camtrace.errors import ConfigError, ModelLoadError
from camtrace.settings import Settings
from camtrace.types import Frame


def footage_frames(footage, camera: str, count: int, sample_fps: float = 10.0) -> list[Frame]:
    with VideoSource(str(footage.videos[camera])) as source:
        return list(source.frames(sample_fps, 0, count))


# Loading -------------------------------------------------------------------------------------------------


def test_tiny_model_loads_lazily_from_its_folder_and_finds_boxes(tiny_yolo_dir, footage):
    detector = PersonDetector(str(tiny_yolo_dir), conf=0.25, imgsz=320, max_det=6, batch_size=4)
    assert not detector.loaded
    frames = footage_frames(footage, "cam1", 10)
    results = detector.detect([f.image for f in frames])
    assert detector.loaded
    assert len(results) == len(frames)
    for dets in results:
        assert dets.dtype == np.float32 and dets.ndim == 2 and dets.shape[1] == 6
        assert 1 <= len(dets) <= 6
        assert np.all(dets[:, 5] == 0)  # person class only
        assert np.all(dets[:, 4] >= 0.25)
        assert np.all((dets[:, [0, 2]] >= 0) & (dets[:, [0, 2]] <= 640))  # source pixels, not model pixels
        assert np.all((dets[:, [1, 3]] >= 0) & (dets[:, [1, 3]] <= 360))
        assert np.all(dets[:, 2] > dets[:, 0]) and np.all(dets[:, 3] > dets[:, 1])


def test_batching_does_not_change_detections(tiny_detector, footage):
    images = [f.image for f in footage_frames(footage, "cam2", 9)]
    batched = tiny_detector.detect(images)  # batch_size 4: batches of 4, 4, 1
    single = [tiny_detector.detect([image])[0] for image in images]
    for a, b in zip(batched, single):
        assert a.shape == b.shape
        np.testing.assert_allclose(a, b, atol=1e-2)
    assert tiny_detector.detect([]) == []


def test_detector_from_settings_uses_the_settings(tiny_yolo_dir, tmp_path):
    settings = Settings(
        data_dir=tmp_path,
        detector_model=str(tiny_yolo_dir),
        detector_conf=0.4,
        detector_imgsz=320,
        detector_max_det=7,
        detector_batch_size=3,
        device="cpu",
    )
    detector = PersonDetector.from_settings(settings)
    fields = (detector.weights, detector.conf, detector.imgsz, detector.max_det, detector.batch_size, str(detector.device))
    assert fields == (str(tiny_yolo_dir), 0.4, 320, 7, 3, "cpu")
    image = np.full((240, 320, 3), 127, np.uint8)
    assert all(np.all(d[:, 4] >= 0.4) for d in detector.detect([image, image]))


def test_weights_folder_prefers_model_pt_then_best_pt_then_a_single_file(tmp_path):
    folder = tmp_path / "weights"
    folder.mkdir()
    (folder / "other.pt").write_bytes(b"x")
    assert resolve_weights(str(folder)) == str(folder / "other.pt")
    (folder / "best.pt").write_bytes(b"x")
    assert resolve_weights(str(folder)) == str(folder / "best.pt")
    (folder / "model.pt").write_bytes(b"x")
    assert resolve_weights(str(folder)) == str(folder / "model.pt")
    assert resolve_weights("yolo11n.pt") == "yolo11n.pt"  # a hub name is passed on as it is


def test_ambiguous_or_empty_weights_folder_is_a_model_load_error(tmp_path):
    folder = tmp_path / "weights"
    folder.mkdir()
    with pytest.raises(ModelLoadError, match="found: none") as err:
        resolve_weights(str(folder))
    assert "CAMTRACE_DETECTOR_MODEL" in str(err.value)
    (folder / "a.pt").write_bytes(b"x")
    (folder / "b.pt").write_bytes(b"x")
    with pytest.raises(ModelLoadError, match="a.pt, b.pt"):
        resolve_weights(str(folder))


def _run_isolated(code: str, cwd: Path, timeout: float) -> subprocess.CompletedProcess:
    env = dict(os.environ, YOLO_OFFLINE="1", YOLO_AUTOINSTALL="False", YOLO_CONFIG_DIR=str(cwd / "yolo-config"))
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)], cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout
    )


def test_missing_weights_path_fails_before_ultralytics_is_even_imported(tmp_path):
    missing = tmp_path / "models" / "person.pt"
    proc = _run_isolated(
        f"""
        import sys
        from camtrace.detection import PersonDetector
        from camtrace.errors import ModelLoadError
        try:
            PersonDetector({str(missing)!r}).load()
        except ModelLoadError as exc:
            print(exc)
        print("ultralytics imported:", "ultralytics" in sys.modules)
        """,
        tmp_path,
        timeout=60,
    )
    assert proc.returncode == 0, proc.stderr
    assert str(missing) in proc.stdout and "CAMTRACE_DETECTOR_MODEL" in proc.stdout
    assert "ultralytics imported: False" in proc.stdout  # so no download could have been attempted


def test_unknown_hub_name_offline_is_a_model_load_error_not_a_hang(tmp_path):
    proc = _run_isolated(
        """
        from camtrace.detection import PersonDetector
        from camtrace.errors import ModelLoadError
        try:
            PersonDetector("yolo11n.pt").load()
        except ModelLoadError as exc:
            print("ModelLoadError:", exc)
        """,
        tmp_path,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    assert "ModelLoadError:" in proc.stdout
    assert "'yolo11n.pt'" in proc.stdout and "CAMTRACE_DETECTOR_MODEL" in proc.stdout
    assert "Traceback" not in proc.stderr
    assert not (tmp_path / "yolo11n.pt").exists()


def test_a_file_that_is_not_weights_is_a_model_load_error(tmp_path):
    bogus = tmp_path / "model.pt"
    bogus.write_bytes(b"these are not weights")
    with pytest.raises(ModelLoadError) as err:
        PersonDetector(str(tmp_path)).load()
    assert str(bogus) in str(err.value)
    assert "CAMTRACE_DETECTOR_MODEL" in str(err.value)


# Tracking ------------------------------------------------------------------------------------------------


def moving_boxes(frame_index: int) -> np.ndarray:
    """Two people walking towards each other's side: one rightwards, one leftwards, 6 px per frame."""
    x_a = 20 + 6 * frame_index
    x_b = 260 - 6 * frame_index
    return np.array(
        [[x_a, 40, x_a + 40, 140, 0.9, 0], [x_b, 60, x_b + 40, 160, 0.85, 0]],
        dtype=np.float32,
    )


def blank(index: int, fps: float = 10.0) -> Frame:
    return Frame(index=index, ts=index / fps, image=np.zeros((240, 320, 3), np.uint8))


def run_tracker(tracker: SegmentTracker, indices) -> dict[int, list[int]]:
    """For each frame: the track id of box A (rightwards) then box B, found by position."""
    ids = {}
    for i in indices:
        tracked = tracker.update(blank(i), moving_boxes(i))
        by_x = {round(b.box[0]): b.local_track_id for b in tracked}
        ids[i] = [by_x.get(round(20 + 6 * i)), by_x.get(round(260 - 6 * i))]
    return ids


def test_tracker_keeps_ids_on_moving_boxes(session_dir):
    tracker = SegmentTracker("bytetrack.yaml", frame_rate=10.0)
    ids = run_tracker(tracker, range(15))
    first = ids[0]
    assert first[0] is not None and first[1] is not None and first[0] != first[1]
    assert all(pair == first for pair in ids.values()), ids
    # The tracker hands back the detector's own boxes and confidences.
    out = tracker.update(blank(15), moving_boxes(15))
    assert sorted((b.box, round(b.conf, 2)) for b in out) == sorted(
        (tuple(float(v) for v in row[:4]), round(float(row[4]), 2)) for row in moving_boxes(15)
    )


def test_a_new_tracker_per_segment_restarts_ids(session_dir):
    first = SegmentTracker("bytetrack.yaml", frame_rate=10.0)
    a = run_tracker(first, range(5))
    second = SegmentTracker("bytetrack.yaml", frame_rate=10.0)
    b = run_tracker(second, range(5))
    assert sorted(a[4]) == sorted(b[4]) == [1, 2]
    # The first tracker's state is untouched by the second one.
    later = first.update(blank(5), moving_boxes(5))
    assert sorted(t.local_track_id for t in later) == [1, 2]


def test_tracker_rejects_frames_out_of_order_and_bad_configs(session_dir, tmp_path):
    tracker = SegmentTracker(frame_rate=5.0)
    tracker.update(blank(4), moving_boxes(4))
    with pytest.raises(ValueError, match="order"):
        tracker.update(blank(3), moving_boxes(3))
    with pytest.raises(ConfigError, match="no-such-tracker.yaml"):
        SegmentTracker("no-such-tracker.yaml", frame_rate=5.0)
    odd = tmp_path / "odd.yaml"
    odd.write_text("tracker_type: kalmanless\n")
    with pytest.raises(ConfigError, match="kalmanless"):
        SegmentTracker(str(odd), frame_rate=5.0)


def test_lost_tracks_are_forgotten_after_the_same_time_at_any_sample_rate(session_dir):
    # bytetrack.yaml keeps a lost track 30 frames at 30 fps, i.e. 1 s: 5 frames at 5 fps.
    def reappears_with_same_id(gap_frames: int) -> bool:
        tracker = SegmentTracker("bytetrack.yaml", frame_rate=5.0)
        box = np.array([[100, 50, 140, 150, 0.9, 0]], np.float32)
        before = [tracker.update(blank(i, 5.0), box) for i in range(3)][-1][0].local_track_id
        for i in range(3, 3 + gap_frames):
            tracker.update(blank(i, 5.0), np.zeros((0, 6), np.float32))
        after = [tracker.update(blank(i, 5.0), box) for i in range(3 + gap_frames, 6 + gap_frames)][-1]
        return after[0].local_track_id == before

    assert reappears_with_same_id(3)
    assert not reappears_with_same_id(12)


def test_track_frames_on_footage_gives_stable_ids(tiny_detector, footage):
    with VideoSource(str(footage.videos["cam1"])) as source:
        frames = list(source.frames(5.0))
    tracker = SegmentTracker("bytetrack.yaml", frame_rate=5.0)
    out = list(track_frames(tiny_detector, frames, tracker))
    assert [f.index for f, _ in out] == [f.index for f in frames]  # every frame, in order
    lengths = collections.Counter(b.local_track_id for _, boxes in out for b in boxes)
    assert sum(len(boxes) for _, boxes in out) >= len(frames)  # about a box per frame at least
    assert max(lengths.values()) >= 10, lengths  # some identity held over 10 sampled frames (2 s)
    # Same input, fresh tracker: the same ids (nothing global leaks between trackers).
    again = list(track_frames(tiny_detector, frames, SegmentTracker("bytetrack.yaml", frame_rate=5.0)))
    assert [[(b.local_track_id, b.box) for b in boxes] for _, boxes in again] == [
        [(b.local_track_id, b.box) for b in boxes] for _, boxes in out
    ]


def test_detecting_leaves_the_process_pytorch_threads_alone(tiny_yolo_dir, footage, torch_threads_restored):
    import torch

    torch.set_num_threads(2)  # what an embedder or a training run in the same process was given
    detector = PersonDetector(str(tiny_yolo_dir), device="cpu", runtime="torch")
    with VideoSource(str(footage.videos["cam1"])) as source:
        frames = [frame.image for frame in source.frames(5.0)][:4]
    detector.detect(frames)  # Ultralytics' predictor sets cores - 1 threads as it starts on a CPU
    assert torch.get_num_threads() == 2
