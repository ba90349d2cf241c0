"""camtrace.detection: video sources, person detector, tracker, crop quality and selection.

Importing this package does not import torch or Ultralytics; the detector and
tracker load them on first use.
"""

from camtrace.detection.detector import PersonDetector, resolve_weights
from camtrace.detection.motion import MotionGate
from camtrace.detection.selection import CropSelector, Span, crop_box, is_cut_off, quality_score, sharpness
from camtrace.detection.sources import (
    SegmentSpec,
    VideoInfo,
    VideoSource,
    absolute_source,
    expand_source,
    is_sampled,
    is_stream_uri,
)
from camtrace.detection.tracking import (
    MotionTracker,
    SegmentTracker,
    Tracker,
    load_tracker_config,
    make_tracker,
    track_frames,
)

__all__ = [
    "CropSelector",
    "MotionGate",
    "MotionTracker",
    "PersonDetector",
    "SegmentSpec",
    "SegmentTracker",
    "Span",
    "Tracker",
    "VideoInfo",
    "VideoSource",
    "crop_box",
    "absolute_source",
    "expand_source",
    "is_cut_off",
    "is_sampled",
    "is_stream_uri",
    "load_tracker_config",
    "make_tracker",
    "quality_score",
    "resolve_weights",
    "sharpness",
    "track_frames",
]
