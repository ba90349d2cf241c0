"""What travels between tasks: small JSON messages, never frames, typed and validated where a task takes them.

A detect task sends the selected crops of a segment as JPEG (base64) in parts
of at most ``crops_per_message`` crops; each part carries the spans of the
tracks whose crops it holds, so every part can be written on its own.
"""

from __future__ import annotations

import base64
import binascii

from pydantic import BaseModel, ConfigDict, Field

from camtrace.types import Crop
from camtrace.workers.pipeline import SegmentResult, TrackSpan, crop_jpeg


class Message(BaseModel):
    """A task's argument: validated when the task takes it, so a malformed one fails at the door, by field."""

    model_config = ConfigDict(frozen=True, extra="forbid")


class SegmentRef(Message):
    """Names a segment of a source: enough for any worker to decode it itself."""

    job_id: str
    uri: str
    camera_id: str
    video_id: str
    start_ts: float
    index: int = Field(ge=0)
    start_frame: int = Field(ge=0)
    end_frame: int = Field(ge=0)

    @property
    def segment_id(self) -> str:
        return f"{self.video_id}:{self.index}"

    def as_dict(self) -> dict:
        return self.model_dump()


class TrackSpanMessage(Message):
    track_id: str
    ts_start: float
    ts_end: float
    n_boxes: int = Field(ge=0)


class CropMessage(Message):
    track_id: str
    frame_index: int = Field(ge=0)
    ts: float
    box: tuple[float, float, float, float]
    det_conf: float
    quality: float
    jpeg: str  # base64 of the crop's JPEG: the bytes that are stored and embedded

    def jpeg_bytes(self) -> bytes:
        try:
            return base64.b64decode(self.jpeg, validate=True)
        except binascii.Error as exc:
            raise ValueError(f"crop of track {self.track_id} frame {self.frame_index}: jpeg is not base64 ({exc})") from exc


class EmbedPart(Message):
    """Part of a segment's crops for the embed queue, with the spans of the tracks they belong to."""

    camera_id: str
    video_id: str
    segment_index: int = Field(ge=0)
    tracks: list[TrackSpanMessage]
    crops: list[CropMessage]


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
    return EmbedPart(
        camera_id=part.camera_id,
        video_id=part.video_id,
        segment_index=part.segment_index,
        tracks=[TrackSpanMessage(**span.__dict__) for span in part.tracks],
        crops=[
            CropMessage(
                track_id=crop.track_id,
                frame_index=crop.frame_index,
                ts=crop.ts,
                box=crop.box,
                det_conf=crop.det_conf,
                quality=crop.quality,
                jpeg=base64.b64encode(crop_jpeg(crop)).decode("ascii"),
            )
            for crop in part.crops
        ],
    ).model_dump()


def part_from_message(message: dict) -> SegmentResult:
    """The part an embed message carries; ValueError (pydantic's ValidationError) names a malformed field."""
    received = EmbedPart.model_validate(message)
    part = SegmentResult(received.camera_id, received.video_id, received.segment_index)
    part.tracks = [TrackSpan(**span.model_dump()) for span in received.tracks]
    part.crops = [
        Crop(
            track_id=crop.track_id,
            frame_index=crop.frame_index,
            ts=crop.ts,
            box=crop.box,
            det_conf=crop.det_conf,
            quality=crop.quality,
            image=None,
            jpeg=crop.jpeg_bytes(),
        )  # image: decoded from the JPEG when embedded
        for crop in received.crops
    ]
    return part
