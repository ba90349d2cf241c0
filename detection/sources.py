"""Video sources: files, folders of files, and RTSP/HTTP streams, decoded with OpenCV (FFmpeg).

Sampling is decided by the ABSOLUTE frame index: frame ``i`` is kept iff it is
the first frame of its sample bucket ``floor(i * sample_fps / fps)``. A
segment read on its own (after a seek) therefore yields exactly the frames a
full pass yields for the same range, so segments can be processed by
different workers in any order.

Timestamps are ``start_ts + i / fps`` where ``start_ts`` is, in this order:
the start given by the caller, the file's modification time (taken as the
moment the recording started), or, for live streams, the time the stream was
opened.
"""

from __future__ import annotations

import hashlib
import logging
import math
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import cv2
import numpy as np

from camtrace.errors import SourceError
from camtrace.types import Frame
from camtrace.validation import mask_secrets

log = logging.getLogger(__name__)

VIDEO_SUFFIXES = frozenset(
    {".mp4", ".m4v", ".mov", ".avi", ".mkv", ".webm", ".mpg", ".mpeg", ".ts", ".mts", ".m2ts", ".wmv", ".flv", ".3gp"}
)
STREAM_SCHEMES = frozenset({"rtsp", "rtsps", "rtmp", "http", "https"})
DEFAULT_FPS = 25.0  # used when a stream or file does not report a usable frame rate
HASH_CHUNK = 1 << 20  # video ids hash the size plus the first and last MiB: cheap and content-based


def is_stream_uri(source: str) -> bool:
    return urlparse(source).scheme.lower() in STREAM_SCHEMES


def absolute_source(source: str) -> str:
    """A file or folder as an absolute path with symlinks resolved (a stream URL as it is): what is stored,
    so that a process started in another folder finds the same file."""
    return source if is_stream_uri(source) else str(Path(source).expanduser().resolve())


def expand_source(source: str) -> list[str]:
    """The videos a source names.

    A file -> [file]; a folder -> its video files, sorted by name (not recursive, hidden files skipped);
    an rtsp/rtmp/http(s) URL -> [url]. Paths come back absolute (symlinks not followed: the caller
    resolves them, and checks where they lead when that matters).
    """
    if is_stream_uri(source):
        return [source]
    path = Path(source).expanduser().absolute()
    if path.is_file():
        return [str(path)]
    if path.is_dir():
        videos = sorted(
            str(p) for p in path.iterdir() if p.is_file() and not p.name.startswith(".") and p.suffix.lower() in VIDEO_SUFFIXES
        )
        if not videos:
            raise SourceError(
                f"no video files in folder {source!r} (looked for {', '.join(sorted(VIDEO_SUFFIXES))}); "
                "name a folder that holds recordings, a video file or a stream URL"
            )
        return videos
    raise SourceError(f"video source {source!r} does not exist; give a video file, a folder of videos or an rtsp/http URL")


@dataclass(frozen=True)
class SegmentSpec:
    """A range of frames ``[start_frame, end_frame)``; ``end_frame`` is None for a live stream (open-ended)."""

    index: int
    start_frame: int
    end_frame: int | None


@dataclass(frozen=True)
class VideoInfo:
    uri: str
    fps: float
    frame_count: int | None  # None for live streams
    width: int
    height: int
    start_ts: float

    @property
    def duration(self) -> float | None:
        return None if self.frame_count is None else self.frame_count / self.fps


def is_sampled(index: int, fps: float, sample_fps: float) -> bool:
    """Whether absolute frame ``index`` is the first frame of its sample bucket."""
    if sample_fps >= fps:
        return True
    if index == 0:
        return True
    # A small epsilon keeps exact ratios (e.g. 5 of 10 fps) from landing a hair below an integer.
    ratio = sample_fps / fps
    return math.floor(index * ratio + 1e-9) != math.floor((index - 1) * ratio + 1e-9)


def _looks_like_text(path: Path) -> bool:
    """Video containers start with binary headers (NUL bytes, sizes); text files do not."""
    with path.open("rb") as fh:
        head = fh.read(4096)
    if b"\0" in head:
        return False
    try:
        head.decode("utf-8")
    except UnicodeDecodeError as exc:
        return exc.start > len(head) - 4  # only a multi-byte character cut off at the end of the sample
    return True


class VideoSource:
    """One video file or stream, opened with OpenCV's FFmpeg backend.

    Opening fails with a ``SourceError`` naming the input when it cannot be
    opened, holds no frames, or its first frame cannot be decoded. Iterate
    with one ``frames()`` at a time: all of them share one decoder.
    """

    def __init__(self, uri: str, start_ts: float | None = None, open_timeout_s: float = 10.0) -> None:
        self.uri = str(uri)
        self.label = mask_secrets(self.uri)  # what messages and logs name: a stream's credentials masked
        self.is_stream = is_stream_uri(self.uri)
        self._open_timeout_ms = int(open_timeout_s * 1000)
        self._video_id: str | None = None
        self._cap: cv2.VideoCapture | None = None
        self._pending_first = None  # the probed first frame, yielded by the first frames() from frame 0
        self._next_index = 0
        if not self.is_stream:
            path = Path(self.uri)
            if not path.is_file():
                raise SourceError(f"video file {self.label!r} does not exist or is not a file")
            if path.stat().st_size == 0:
                raise SourceError(f"video file {self.label!r} is empty (0 bytes); re-export or re-copy the recording")
            if _looks_like_text(path):
                # FFmpeg's "tty" demuxer would happily render a text file as ANSI art frames.
                raise SourceError(f"{self.label!r} is a text file, not a video; point the source at video files")
        self._cap = self._open()
        ok, first = self._cap.read()
        self._next_index = 1
        if not ok or first is None:
            self.close()
            raise SourceError(
                f"no decodable frame in {self.label!r}: the file is corrupt, truncated or not a video"
                if not self.is_stream
                else f"stream {self.label!r} opened but delivered no frame; check the camera and the URL"
            )
        fps = float(self._cap.get(cv2.CAP_PROP_FPS) or 0.0)
        if not math.isfinite(fps) or fps <= 0 or fps > 1000:
            log.warning("%s reports no usable frame rate (%r); assuming %s fps", self.label, fps, DEFAULT_FPS)
            fps = DEFAULT_FPS
        frame_count: int | None = None
        if not self.is_stream or int(self._cap.get(cv2.CAP_PROP_FRAME_COUNT) or 0) > 0:
            frame_count = int(self._cap.get(cv2.CAP_PROP_FRAME_COUNT) or 0)
            if frame_count <= 0:
                frame_count = self._count_frames()
        if self._next_index == 1:  # the decoder stands after the probed frame (counting frames rewinds it)
            # Keep that frame for ``frames()``: a live stream cannot seek back, and seeking back to frame 0
            # of a one-frame file lands past its end (a camera segment cut short by a drop).
            self._pending_first, self._next_index = first, 0
        if start_ts is None:
            start_ts = time.time() if self.is_stream else Path(self.uri).stat().st_mtime
        self.info = VideoInfo(
            uri=self.uri,
            fps=fps,
            frame_count=frame_count,
            width=int(first.shape[1]),
            height=int(first.shape[0]),
            start_ts=float(start_ts),
        )

    # Opening -------------------------------------------------------------------------------------------
    def _open(self) -> cv2.VideoCapture:
        # FFmpeg only: other backends would treat e.g. "img_%d.jpg" as an image sequence.
        timeout = self._open_timeout_ms
        params = [cv2.CAP_PROP_OPEN_TIMEOUT_MSEC, timeout, cv2.CAP_PROP_READ_TIMEOUT_MSEC, timeout]
        cap = cv2.VideoCapture(self.uri, cv2.CAP_FFMPEG, params)
        if not cap.isOpened():
            cap.release()
            if self.is_stream:
                raise SourceError(
                    f"cannot open stream {self.label!r} (gave up after at most {timeout / 1000:g} s); "
                    "check the URL, credentials and that the camera is reachable"
                )
            raise SourceError(f"cannot open {self.label!r} as a video: the file is corrupt or not a video format FFmpeg reads")
        return cap

    def _count_frames(self) -> int:
        """Count frames by grabbing them, for containers without a frame count; rewinds afterwards."""
        assert self._cap is not None
        self._cap.set(cv2.CAP_PROP_POS_FRAMES, 0)
        count = 0
        while self._cap.grab():
            count += 1
        self._cap.set(cv2.CAP_PROP_POS_FRAMES, 0)
        self._next_index = 0
        return count

    # Identity and layout -----------------------------------------------------------------------------
    @property
    def fps(self) -> float:
        return self.info.fps

    @property
    def is_live(self) -> bool:
        """A stream without a frame count: it can be read once, forwards, and has no end."""
        return self.info.frame_count is None

    @property
    def video_id(self) -> str:
        """Deterministic id: the same file content gives the same id wherever it is stored or whichever camera it is."""
        if self._video_id is None:
            digest = hashlib.sha1()
            if self.is_stream:
                digest.update(f"stream:{self.uri}@{self.info.start_ts:.3f}".encode())
            else:
                path = Path(self.uri)
                size = path.stat().st_size
                digest.update(f"file:{size}:".encode())
                with path.open("rb") as fh:
                    digest.update(fh.read(HASH_CHUNK))
                    if size > HASH_CHUNK:
                        fh.seek(max(HASH_CHUNK, size - HASH_CHUNK))
                        digest.update(fh.read(HASH_CHUNK))
            self._video_id = digest.hexdigest()[:20]
        return self._video_id

    def segments(self, segment_seconds: float) -> list[SegmentSpec]:
        """Cut the video into segments of ``segment_seconds`` (the last may be shorter).

        A live stream is a single open-ended segment ``SegmentSpec(0, 0, None)``.
        """
        if segment_seconds <= 0:
            raise ValueError("segment_seconds must be positive")
        if self.info.frame_count is None:
            return [SegmentSpec(0, 0, None)]
        per = max(1, int(round(segment_seconds * self.info.fps)))
        total = self.info.frame_count
        return [SegmentSpec(k, start, min(start + per, total)) for k, start in enumerate(range(0, total, per))]

    def timestamp(self, frame_index: int) -> float:
        return self.info.start_ts + frame_index / self.info.fps

    # Decoding -------------------------------------------------------------------------------------------
    def end_tolerance(self) -> int:
        """Frames at the end that may be missing without an error: container frame counts are often a little off."""
        return max(5, int(round(self.info.fps)))

    def frames(self, sample_fps: float, start_frame: int = 0, end_frame: int | None = None) -> Iterator[Frame]:
        """Decode frames ``[start_frame, end_frame)`` keeping those sampled at ``sample_fps`` (by absolute index).

        A frame that cannot be decoded raises ``SourceError`` naming the file and
        the frame, unless it lies within ``end_tolerance()`` frames of the
        reported end (metadata often overstates the count by a few frames). A
        live stream that stops delivering frames also raises: its supervisor
        should restart it.
        """
        if sample_fps <= 0:
            raise ValueError("sample_fps must be positive")
        if self._cap is None:
            raise SourceError(f"video source {self.label!r} is closed")
        cap = self._cap
        fps = self.info.fps
        count = self.info.frame_count
        if count is not None and end_frame is not None:
            end_frame = min(end_frame, count)
        index = self._seek(start_frame)
        while end_frame is None or index < end_frame:
            keep = is_sampled(index, fps, sample_fps)
            ok, image = self._read(cap, index, keep)
            if not ok:
                self._next_index = -1  # decoder state unknown: seek before the next read
                self._check_end(index, count)
                return
            self._next_index = index + 1
            if keep:
                yield Frame(index=index, ts=self.info.start_ts + index / fps, image=image)
            index += 1

    def _read(self, cap: Any, index: int, keep: bool) -> tuple[bool, np.ndarray | None]:
        """Frame ``index``: decoded when kept, only grabbed (cheap) when not; (False, None) when none came."""
        if self._pending_first is not None and index == 0:
            image, self._pending_first = self._pending_first, None
            return True, image
        if not cap.grab():
            return False, None
        return cap.retrieve() if keep else (True, None)

    def _check_end(self, index: int, count: int | None) -> None:
        """No frame ``index``: the end of a file (within its tolerance), else SourceError saying what broke."""
        if count is not None and index >= count - self.end_tolerance():
            if index < count:
                log.info("%s ended at frame %d of %d reported", self.label, index, count)
            return
        if count is None:
            raise SourceError(f"stream {self.label!r} stopped delivering frames after frame {index - 1}")
        raise SourceError(
            f"cannot decode frame {index} of {self.label!r} ({count} frames reported): "
            "the file is corrupt or truncated; re-copy it or skip this file"
        )

    def _seek(self, start_frame: int) -> int:
        """Position the decoder at ``start_frame``; live streams skip forward by reading."""
        if start_frame < 0:
            raise ValueError("start_frame must be >= 0")
        assert self._cap is not None
        if start_frame == self._next_index:
            return start_frame
        if self.info.frame_count is not None:
            self._cap.set(cv2.CAP_PROP_POS_FRAMES, start_frame)
            self._pending_first = None
            self._next_index = start_frame
            return start_frame
        if self._next_index < 0:
            raise SourceError(f"stream {self.label!r} has stopped delivering frames; open it again")
        if start_frame < self._next_index:
            raise SourceError(f"live stream {self.label!r} cannot go back to frame {start_frame}")
        index = self._next_index
        if self._pending_first is not None:  # frame 0 is buffered, not in the decoder
            self._pending_first = None
            index = 1
        while index < start_frame:
            if not self._cap.grab():
                raise SourceError(f"stream {self.label!r} stopped delivering frames after frame {index - 1}")
            index += 1
        self._next_index = index
        return index

    # Lifetime -------------------------------------------------------------------------------------------
    def close(self) -> None:
        if self._cap is not None:
            self._cap.release()
            self._cap = None

    def __enter__(self) -> VideoSource:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"VideoSource({self.label!r})"
