"""Source frames decoded on demand from the stored video, with a person's box drawn."""

from __future__ import annotations

from collections.abc import Sequence

import cv2
import numpy as np

from camtrace.detection.sources import VideoSource
from camtrace.errors import SourceError

BOX_COLOUR = (0, 165, 255)  # orange (BGR): visible on most scenes


def read_frame(source: str, frame_index: int) -> np.ndarray:
    """Decode frame ``frame_index`` of a stored video file, or fail naming the file and the frame."""
    with VideoSource(source) as video:
        for frame in video.frames(video.fps, start_frame=int(frame_index), end_frame=int(frame_index) + 1):
            return frame.image
    raise SourceError(f"frame {frame_index} of {source!r} is past the end of the video; was the file replaced?")


def draw_box(image: np.ndarray, box: Sequence[float]) -> np.ndarray:
    """A copy of ``image`` with ``box`` (x1, y1, x2, y2 in its pixels) outlined."""
    out = image.copy()
    height, width = out.shape[:2]
    x1, y1, x2, y2 = (int(round(v)) for v in box)
    x1, x2 = max(0, min(x1, width - 1)), max(0, min(x2, width - 1))
    y1, y2 = max(0, min(y1, height - 1)), max(0, min(y2, height - 1))
    thickness = max(2, round(min(height, width) / 200))
    cv2.rectangle(out, (x1, y1), (x2, y2), BOX_COLOUR, thickness)
    return out


def encode_jpeg(image: np.ndarray, quality: int = 90) -> bytes:
    ok, data = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, int(quality)])
    if not ok:
        raise SourceError("the frame could not be encoded as JPEG")
    return data.tobytes()


def frame_with_box(source: str, frame_index: int, box: Sequence[float]) -> bytes:
    """The JPEG of one source frame with the person's box drawn."""
    return encode_jpeg(draw_box(read_frame(source, frame_index), box))
