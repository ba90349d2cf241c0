"""A live camera served by the tests: an HTTP MJPEG stream that can drop and come back."""

from __future__ import annotations

import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import cv2
import numpy as np
import pytest

BOUNDARY = b"camtraceframe"


class MjpegCamera:
    """Serves ``/stream.mjpg`` as multipart/x-mixed-replace JPEG frames at ``fps``, paced in real time.

    ``drop(seconds)`` closes every open stream and answers 503 until the time is up,
    the way an IP camera behaves when it reboots.
    """

    def __init__(self, fps: float = 10.0, size: tuple[int, int] = (160, 120)) -> None:
        self.fps = fps
        self.size = size
        self.down_until = 0.0
        self.generation = 0  # bumped on drop: open streams notice and end
        self.connections = 0
        self.frames_sent = 0
        camera = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args) -> None:  # keep test output clean
                pass

            def do_GET(self) -> None:
                if self.path != "/stream.mjpg":
                    self.send_error(404)
                    return
                if time.monotonic() < camera.down_until:
                    self.send_error(503, "camera rebooting")
                    return
                camera.connections += 1
                generation = camera.generation
                self.send_response(200)
                self.send_header("Content-Type", f"multipart/x-mixed-replace;boundary={BOUNDARY.decode()}")
                self.send_header("Cache-Control", "no-cache")
                self.end_headers()
                try:
                    while generation == camera.generation and not camera.closed:
                        jpeg = camera.frame_jpeg()
                        self.wfile.write(
                            b"--" + BOUNDARY + b"\r\nContent-Type: image/jpeg\r\n"
                            + f"Content-Length: {len(jpeg)}\r\n\r\n".encode() + jpeg + b"\r\n"
                        )
                        self.wfile.flush()
                        camera.frames_sent += 1
                        time.sleep(1.0 / camera.fps)
                except (BrokenPipeError, ConnectionResetError):
                    pass

        self.closed = False
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}/stream.mjpg"

    def frame_jpeg(self) -> bytes:
        """A person-sized block moving across a grey scene; each frame differs."""
        width, height = self.size
        image = np.full((height, width, 3), 90, np.uint8)
        x = (self.frames_sent * 4) % (width - 30)
        cv2.rectangle(image, (x, 30), (x + 24, 100), (40, 40, 200), -1)
        ok, data = cv2.imencode(".jpg", image)
        assert ok
        return data.tobytes()

    def start(self) -> None:
        self.thread.start()

    def drop(self, seconds: float) -> None:
        self.down_until = time.monotonic() + seconds
        self.generation += 1

    def stop(self) -> None:
        self.closed = True
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def mjpeg_camera():
    camera = MjpegCamera()
    camera.start()
    yield camera
    camera.stop()
