"""Live cameras: keep each stream open, cut it into segment files, reconnect with backoff.

Frames never travel through the broker: the recorder writes each segment
(sampled frames only) to a file in the data dir and hands its path and start
time on; in distributed mode that becomes an ingest job, in local mode it is
ingested in-process.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import cv2

from camtrace.validation import mask_secrets

log = logging.getLogger(__name__)

OPEN_TIMEOUT_MS = 5000
READ_TIMEOUT_MS = 5000
STALL_SECONDS = 1.0  # a gap between frames this long ends the segment file (its frames are on a fixed clock)


@dataclass
class CameraStatus:
    camera_id: str
    status: str  # online | offline | stopped
    last_frame_at: float | None
    reconnects: int
    last_error: str | None


SegmentHandler = Callable[[str, Path, float], None]
StatusHandler = Callable[[CameraStatus], None]


class CameraRecorder:
    """One camera: read, sample, write segment files, and reconnect when the stream drops."""

    def __init__(
        self,
        camera_id: str,
        url: str,
        out_dir: Path,
        segment_seconds: float,
        sample_fps: float,
        on_segment: SegmentHandler,
        on_status: StatusHandler,
        backoff_max: float = 60.0,
        backoff_start: float = 1.0,
    ) -> None:
        self.camera_id = camera_id
        self.url = url
        self.out_dir = Path(out_dir) / camera_id
        self.segment_seconds = segment_seconds
        self.sample_interval = 1.0 / sample_fps
        self.sample_fps = sample_fps
        self.on_segment = on_segment
        self.on_status = on_status
        self.backoff_max = backoff_max
        self.backoff_start = backoff_start
        self.status = CameraStatus(camera_id, "offline", None, 0, None)
        self.segments_written = 0

    def run(self, stop: threading.Event) -> None:
        """Record until ``stop`` is set; every drop is followed by a reconnect with exponential backoff."""
        delay = self.backoff_start
        first = True
        while not stop.is_set():
            if not first:
                self.status.reconnects += 1
            first = False
            capture = self._open()
            if capture is None:
                self._report("offline", f"cannot open stream {mask_secrets(self.url)}")
                stop.wait(delay)
                delay = min(self.backoff_max, delay * 2)
                continue
            delay = self.backoff_start
            self._report("online", None)
            try:
                self._record(capture, stop)
            finally:
                capture.release()
            if not stop.is_set():
                self._report("offline", f"stream {mask_secrets(self.url)} stopped sending frames")
                stop.wait(delay)
        self._report("stopped", self.status.last_error)

    def _open(self) -> cv2.VideoCapture | None:
        capture = cv2.VideoCapture(
            self.url,
            cv2.CAP_FFMPEG,
            [cv2.CAP_PROP_OPEN_TIMEOUT_MSEC, OPEN_TIMEOUT_MS, cv2.CAP_PROP_READ_TIMEOUT_MSEC, READ_TIMEOUT_MS],
        )
        if not capture.isOpened():
            capture.release()
            return None
        return capture

    def _record(self, capture: cv2.VideoCapture, stop: threading.Event) -> None:
        """Sampled frames on a fixed grid from the segment's start: frame i of a file is the picture at start +
        i / sample_fps (a frame covering several grid slots is written for each), so the times of tracks and
        alerts are those of the camera, not drifting behind by the reads' jitter over a long segment."""
        writer: SegmentWriter | None = None
        next_sample = 0.0
        try:
            while not stop.is_set():
                ok, frame = capture.read()
                if not ok or frame is None:
                    return
                now = time.time()
                self.status.last_frame_at = now
                if writer is not None and now - next_sample > STALL_SECONDS:
                    self._finish(writer)  # the stream stalled: a new file starts at the true time
                    writer = None
                if writer is None:
                    writer = SegmentWriter(self.out_dir, self.camera_id, now, self.sample_fps, frame.shape)
                    next_sample = now
                if now < next_sample:
                    continue
                slots = 1 + int((now - next_sample) / self.sample_interval)
                for _ in range(slots):
                    writer.write(frame)
                next_sample += slots * self.sample_interval
                if now - writer.start_ts >= self.segment_seconds:
                    self._finish(writer)
                    writer = None
                    self._report("online", None)
        finally:
            if writer is not None:
                self._finish(writer)

    def _finish(self, writer: SegmentWriter) -> None:
        path = writer.close()
        if path is not None:
            self.segments_written += 1
            self.on_segment(self.camera_id, path, writer.start_ts)

    def _report(self, status: str, error: str | None) -> None:
        self.status.status = status
        if error is not None:
            self.status.last_error = error
        try:
            self.on_status(self.status)
        except Exception:  # a status write must never stop the recording
            log.exception("could not record status of camera %s", self.camera_id)


SEGMENT_STAMP = "%Y%m%dT%H%M%S.%f"


def segment_file_name(camera_id: str, start_ts: float) -> str:
    """``<camera>-<UTC start, ms>.mp4``: the name alone says whose segment it is and when it began."""
    seconds, millis = divmod(int(round(start_ts * 1000)), 1000)
    moment = datetime.fromtimestamp(seconds, tz=UTC).replace(microsecond=millis * 1000)
    return f"{camera_id}-{moment.strftime(SEGMENT_STAMP)[:-3]}.mp4"


def parse_segment_file_name(path: Path) -> tuple[str, float] | None:
    """(camera id, start time) of a finished segment file, or None for anything else."""
    if path.suffix != ".mp4" or path.name.endswith(".part.mp4"):
        return None
    camera_id, _, stamp = path.stem.rpartition("-")
    try:
        moment = datetime.strptime(stamp, SEGMENT_STAMP).replace(tzinfo=UTC)
    except ValueError:
        return None
    return (camera_id, moment.timestamp()) if camera_id else None


class SegmentWriter:
    """Writes sampled frames to a temporary file, renamed into place when complete."""

    def __init__(self, out_dir: Path, camera_id: str, start_ts: float, fps: float, shape: tuple[int, ...]) -> None:
        out_dir.mkdir(parents=True, exist_ok=True)
        self.start_ts = start_ts
        self.frames = 0
        self.path = out_dir / segment_file_name(camera_id, start_ts)
        self.tmp = self.path.with_name(self.path.stem + ".part.mp4")
        height, width = shape[:2]
        self.writer = cv2.VideoWriter(str(self.tmp), cv2.VideoWriter_fourcc(*"mp4v"), fps, (width, height))

    def write(self, frame) -> None:
        self.writer.write(frame)
        self.frames += 1

    def close(self) -> Path | None:
        self.writer.release()
        if self.frames == 0:
            self.tmp.unlink(missing_ok=True)
            return None
        self.tmp.replace(self.path)
        return self.path


def run_recorders(recorders: list[CameraRecorder], stop: threading.Event) -> list[threading.Thread]:
    threads = [
        threading.Thread(target=recorder.run, args=(stop,), name=f"camera-{recorder.camera_id}", daemon=True)
        for recorder in recorders
    ]
    for thread in threads:
        thread.start()
    return threads
