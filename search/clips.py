"""A video clip of a track: the stored source from a few seconds before the person appears to a few seconds after,
as WebM (VP8, which every browser plays), with the person's box drawn on the frames where it was detected.

Clips are cut on first request and kept in ``<data dir>/clips`` (named by the track and the source file's size and
modification time, so a replaced file gets a new clip); a clip is written to a temporary name and renamed, so a
reader never sees half a file.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
from pathlib import Path

import cv2

from camtrace.detection.sources import VideoSource
from camtrace.errors import NotFoundError, SourceError
from camtrace.search.frames import draw_box

MARGIN_SECONDS = 3.0  # before the first and after the last sighting
MAX_CLIP_SECONDS = 300.0
MAX_WIDTH = 960  # larger sources are scaled down
CLIP_FOURCC = "VP80"
CLIP_MEDIA_TYPE = "video/webm"


def clip_path(clips_dir: Path, track_id: str, source: Path) -> Path:
    stat = source.stat()
    key = hashlib.sha256(f"{track_id}\0{source}\0{stat.st_size}\0{stat.st_mtime_ns}".encode()).hexdigest()[:32]
    return clips_dir / f"{key}.webm"


def track_clip(db, clips_dir: Path, track, margin: float = MARGIN_SECONDS) -> Path:
    """The clip file of ``track`` (a Track row), cut now unless cached."""
    video = db.get_video(track.video_id)
    source = Path(video.source)
    if not source.is_file():
        raise NotFoundError(
            f"the video of track {track.id!r} is gone from where it was ingested (moved, or deleted by retention); "
            "its crops and frames on record remain, but no clip can be cut",
            public=f"the video of track {track.id!r} is no longer stored; no clip can be cut",
        )
    path = clip_path(clips_dir, track.id, source)
    if path.is_file():
        return path
    detections = db.track_detections(track.id)
    if not detections:
        raise NotFoundError(f"track {track.id!r} has no stored sightings left (retention removed them)")
    fps = float(video.fps) or 25.0
    boxes = {d.frame_index: (d.x1, d.y1, d.x2, d.y2) for d in detections}
    first = max(0, min(boxes) - int(margin * fps))
    last = min(max(boxes) + int(margin * fps), first + int(MAX_CLIP_SECONDS * fps))
    clips_dir.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(suffix=".webm", dir=clips_dir)
    os.close(handle)
    writer = None
    try:
        with VideoSource(str(source)) as opened:
            for frame in opened.frames(opened.fps, start_frame=first, end_frame=last + 1):
                image = frame.image
                box = boxes.get(frame.index)
                if box is not None:
                    image = draw_box(image, box)
                height, width = image.shape[:2]
                if width > MAX_WIDTH:
                    height, width = round(height * MAX_WIDTH / width) // 2 * 2, MAX_WIDTH
                    image = cv2.resize(image, (width, height), interpolation=cv2.INTER_AREA)
                if writer is None:
                    writer = cv2.VideoWriter(temporary, cv2.VideoWriter_fourcc(*CLIP_FOURCC), fps, (width, height))
                    if not writer.isOpened():
                        raise SourceError("this OpenCV cannot write WebM (VP8): install opencv-python with FFmpeg")
                writer.write(image)
        if writer is None:
            raise SourceError(f"no frame of track {track.id!r} could be read from its video; was the file replaced?")
        writer.release()
        writer = None
        os.replace(temporary, path)
    finally:
        if writer is not None:
            writer.release()
        if os.path.exists(temporary):
            os.remove(temporary)
    return path
