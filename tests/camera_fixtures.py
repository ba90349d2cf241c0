"""A live camera served by the tests: an HTTP MJPEG stream that can drop and come back."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
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

    def __init__(
        self,
        fps: float | None = 10.0,
        size: tuple[int, int] = (160, 120),
        frames_per_connection: int | None = None,
        draw: Callable[[int], np.ndarray] | None = None,
    ) -> None:
        self.fps = fps  # None: as fast as the reader takes them
        self.size = size
        self.frames_per_connection = frames_per_connection  # then the stream ends, like a closed source
        self.draw = draw or self.moving_block
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
                    sent = 0
                    while generation == camera.generation and not camera.closed:
                        if camera.frames_per_connection is not None and sent >= camera.frames_per_connection:
                            break
                        _, jpeg = cv2.imencode(".jpg", camera.draw(sent))
                        jpeg = jpeg.tobytes()
                        self.wfile.write(
                            b"--"
                            + BOUNDARY
                            + b"\r\nContent-Type: image/jpeg\r\n"
                            + f"Content-Length: {len(jpeg)}\r\n\r\n".encode()
                            + jpeg
                            + b"\r\n"
                        )
                        self.wfile.flush()
                        camera.frames_sent += 1
                        sent += 1
                        if camera.fps:
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

    def moving_block(self, _: int) -> np.ndarray:
        """A person-sized block moving across a grey scene; each frame differs."""
        width, height = self.size
        image = np.full((height, width, 3), 90, np.uint8)
        x = (self.frames_sent * 4) % (width - 30)
        cv2.rectangle(image, (x, 30), (x + 24, 100), (40, 40, 200), -1)
        return image

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
