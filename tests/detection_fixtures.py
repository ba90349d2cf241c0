"""Fixtures and factories of the detection tests: small videos with known content, the tiny detector."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest


def write_video(
    path: Path, frames: int, fps: float = 10.0, size: tuple[int, int] = (160, 120), fourcc: str = "MJPG"
) -> Path:
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
    import http.server
    import socketserver
    import threading

    class Handler(http.server.BaseHTTPRequestHandler):
        def log_message(self, *args) -> None:
            pass

        def do_GET(self) -> None:
            self.send_response(200)
            self.send_header("Content-Type", "multipart/x-mixed-replace; boundary=frame")
            self.end_headers()
            try:
                for i in range(20):
                    ok, jpeg = cv2.imencode(".jpg", np.full((120, 160, 3), i * 10, np.uint8))
                    head = b"--frame\r\nContent-Type: image/jpeg\r\nContent-Length: %d\r\n\r\n" % len(jpeg)
                    self.wfile.write(head + jpeg.tobytes() + b"\r\n")
            except (BrokenPipeError, ConnectionResetError):
                pass  # the reader stopped early: that is what a closed source does

    server = socketserver.ThreadingTCPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/live.mjpg"
    server.shutdown()
    server.server_close()
