"""What travels between tasks: small JSON messages, never frames.

A detect task sends the selected crops of a segment as JPEG (base64) in parts
of at most ``crops_per_message`` crops; each part carries the spans of the
tracks whose crops it holds, so every part can be written on its own.
"""

from __future__ import annotations

import base64
from dataclasses import dataclass

from camtrace.workers.pipeline import SegmentResult, TrackSpan, crop_jpeg

from camtrace.types import Crop


@dataclass(frozen=True)
class SegmentRef:
    """Names a segment of a source: enough for any worker to decode it itself."""

    job_id: str
    uri: str
    camera_id: str
    video_id: str
    start_ts: float
    index: int
    start_frame: int
    end_frame: int

    @property
    def segment_id(self) -> str:
        return f"{self.video_id}:{self.index}"

    def as_dict(self) -> dict:
        return dict(self.__dict__)


def split_into_parts(result: SegmentResult, crops_per_message: int) -> list[SegmentResult]:
    """Cut a segment's crops into parts, never splitting one track across two parts."""
    by_track: dict[str, list[Crop]] = {}
    for crop in result.crops:
        by_track.setdefault(crop.track_id, []).append(crop)
    spans = {span.track_id: span for span in result.tracks}
    parts: list[SegmentResult] = []
    current: SegmentResult | None = None
    for track_id in sorted(by_track):
        crops = by_track[track_id]
        if current is None or (current.crops and len(current.crops) + len(crops) > crops_per_message):
            current = SegmentResult(result.camera_id, result.video_id, result.segment_index)
            parts.append(current)
        current.crops.extend(crops)
        current.tracks.append(spans[track_id])
    return parts


def part_to_message(part: SegmentResult) -> dict:
    return {
        "camera_id": part.camera_id,
        "video_id": part.video_id,
        "segment_index": part.segment_index,
        "tracks": [span.__dict__ for span in part.tracks],
        "crops": [
            {
                "track_id": crop.track_id,
                "frame_index": crop.frame_index,
                "ts": crop.ts,
                "box": list(crop.box),
                "det_conf": crop.det_conf,
                "quality": crop.quality,
                "jpeg": base64.b64encode(crop_jpeg(crop)).decode("ascii"),
            }
            for crop in part.crops
        ],
    }


def part_from_message(message: dict) -> SegmentResult:
    part = SegmentResult(message["camera_id"], message["video_id"], int(message["segment_index"]))
    part.tracks = [TrackSpan(**span) for span in message["tracks"]]
    part.crops = [
        Crop(
            track_id=crop["track_id"],
            frame_index=int(crop["frame_index"]),
            ts=float(crop["ts"]),
            box=tuple(float(v) for v in crop["box"]),
            det_conf=float(crop["det_conf"]),
            quality=float(crop["quality"]),
            image=None,  # decoded from the JPEG when embedded
            jpeg=base64.b64decode(crop["jpeg"]),
        )
        for crop in message["crops"]
    ]
    return part
