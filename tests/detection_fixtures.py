"""Fixtures and factories of the detection tests: small videos with known content, the tiny detector."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest


def cli_env(data_dir: Path, yolo: Path, siglip: Path) -> dict[str, str]:
    """CAMTRACE_* settings of a local pipeline on the tiny models (detector at 320 px, 4 s segments, CPU)."""
    return {
        "CAMTRACE_DATA_DIR": str(data_dir),
        "CAMTRACE_EMBED_MODEL": str(siglip),
        "CAMTRACE_DETECTOR_MODEL": str(yolo),
        "CAMTRACE_DETECTOR_CONF": "0.25",
        "CAMTRACE_DETECTOR_IMGSZ": "320",
        "CAMTRACE_DETECTOR_MAX_DET": "6",
        "CAMTRACE_SAMPLE_FPS": "5",
        "CAMTRACE_SEGMENT_SECONDS": "4",
        "CAMTRACE_DEVICE": "cpu",
    }


def write_video(path: Path, frames: int, fps: float = 10.0, size: tuple[int, int] = (160, 120), fourcc: str = "MJPG") -> Path:
    """A video whose frame i shows the number i as a grey level band and noise: frames are told apart by pixels."""
    rng = np.random.default_rng(frames)
    width, height = size
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*fourcc), fps, (width, height))
    assert writer.isOpened(), f"OpenCV cannot write {path}"
    for i in range(frames):
        image = rng.integers(0, 256, (height, width, 3), dtype=np.uint8)
        image[: height // 4] = (i * 7) % 256
        writer.write(image)
    writer.release()
    return path


@pytest.fixture
def avi_file(tmp_path: Path) -> Path:
    """A 60-frame, 10 fps MJPEG AVI (every frame a key frame, so truncation hits a known frame)."""
    return write_video(tmp_path / "clip.avi", 60)


@pytest.fixture(scope="session")
def tiny_detector(tiny_yolo_dir: Path):
    """The tiny YOLO loaded through PersonDetector, with the settings the pipeline tests use."""
    from camtrace.detection import PersonDetector

    detector = PersonDetector(str(tiny_yolo_dir), device="cpu", conf=0.25, imgsz=320, max_det=6, batch_size=4)
    detector.load()
    return detector


@pytest.fixture
def mjpeg_stream_url():
    """A live MJPEG-over-HTTP stream on localhost: 20 frames whose grey level is 10 x the frame number, then it ends."""
    from camera_fixtures import MjpegCamera

    camera = MjpegCamera(fps=None, frames_per_connection=20, draw=lambda i: np.full((120, 160, 3), i * 10, np.uint8))
    camera.start()
    yield camera.url
    camera.stop()
