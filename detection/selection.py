"""Crop quality and per-track crop selection.

Only a few crops per track are embedded (K, ``CAMTRACE_CROPS_PER_TRACK``):
large, confident, sharp ones, spread over the time the person was seen, so a
search matches the person from more than one moment and pose. Tiny, blurred
and frame-cut crops are dropped before they cost any memory.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass

import cv2
import numpy as np

from camtrace.types import Box, Crop, Frame, TrackedBox

# Quality weights and saturation points: beyond these a crop is "big/sharp enough".
SIZE_FULL = 256.0  # px of height; the embedder resizes to 224, more pixels add nothing
SHARPNESS_HALF = 100.0  # variance of Laplacian that scores 0.5
W_SIZE, W_CONF, W_SHARP = 0.4, 0.35, 0.25
# First time-bucket width per track: finer than any sampling interval, so every sampled frame is a candidate
# until the track holds ``capacity`` of them; then the width doubles as often as needed.
INITIAL_BUCKET_S = 1 / 1024


def sharpness(crop: np.ndarray) -> float:
    """Variance of the Laplacian of the grey image: low for blurred or flat crops."""
    if crop.size == 0:
        return 0.0
    grey = cv2.cvtColor(crop, cv2.COLOR_BGR2GRAY) if crop.ndim == 3 else crop
    return float(cv2.Laplacian(grey, cv2.CV_64F).var())


def is_cut_off(box: Box, width: int, height: int, margin: float = 2) -> bool:
    """Whether the box touches the frame border (within ``margin`` px): the person continues outside the frame."""
    x1, y1, x2, y2 = box
    return x1 <= margin or y1 <= margin or x2 >= width - margin or y2 >= height - margin


def quality_score(height: float, conf: float, sharp: float) -> float:
    """Crop quality in [0, 1]: a weighted sum of size, detector confidence and sharpness, each saturating."""
    size_term = min(max(height, 0.0) / SIZE_FULL, 1.0)
    sharp_term = sharp / (sharp + SHARPNESS_HALF) if sharp > 0 else 0.0
    return W_SIZE * size_term + W_CONF * min(max(conf, 0.0), 1.0) + W_SHARP * sharp_term


def crop_box(image: np.ndarray, box: Box) -> np.ndarray:
    """A BGR copy of the box, clipped to the image (outward rounding keeps the whole person)."""
    height, width = image.shape[:2]
    x1, y1, x2, y2 = box
    left, top = max(0, int(math.floor(x1))), max(0, int(math.floor(y1)))
    right, bottom = min(width, int(math.ceil(x2))), min(height, int(math.ceil(y2)))
    return image[top:bottom, left:right].copy()


@dataclass
class Span:
    """When a track was seen in a segment: first and last timestamp and the number of boxes."""

    ts_start: float
    ts_end: float
    n_boxes: int


@dataclass
class _Candidate:
    frame_index: int
    ts: float
    box: Box
    conf: float
    quality: float
    image: np.ndarray

    def beats(self, other: _Candidate) -> bool:
        # Ties go to the earlier frame so that the result never depends on dict or arrival quirks.
        return (self.quality, -self.frame_index) > (other.quality, -other.frame_index)


class _TrackCandidates:
    """Best candidate per time bucket; when buckets exceed ``capacity`` they are merged pairwise (width doubles).

    Memory per track is therefore at most ``capacity`` crops however long the
    track is, and the survivors still cover the whole track in time.
    """

    def __init__(self, t0: float, capacity: int) -> None:
        self.t0 = t0
        self.capacity = capacity
        self.width = INITIAL_BUCKET_S
        self.buckets: dict[int, _Candidate] = {}

    def add(self, cand: _Candidate) -> None:
        key = int(math.floor((cand.ts - self.t0) / self.width))
        held = self.buckets.get(key)
        if held is None or cand.beats(held):
            self.buckets[key] = cand
        while len(self.buckets) > self.capacity:
            self.width *= 2
            merged: dict[int, _Candidate] = {}
            for old_key, held in self.buckets.items():
                new_key = old_key // 2  # floor(x / 2w) == floor(floor(x / w) / 2)
                if new_key not in merged or held.beats(merged[new_key]):
                    merged[new_key] = held
            self.buckets = merged

    def candidates(self) -> list[_Candidate]:
        return [self.buckets[key] for key in sorted(self.buckets)]


class CropSelector:
    """Collects one segment's tracked boxes and picks the K best crops per track, spread over its time."""

    def __init__(self, k: int, min_height: int, min_sharpness: float, edge_margin: float = 2) -> None:
        if k < 1:
            raise ValueError("k must be at least 1")
        self.k = k
        self.min_height = min_height
        self.min_sharpness = min_sharpness
        self.edge_margin = edge_margin
        self.capacity = max(4 * k, 8)  # candidates held per track
        self._spans: dict[int, Span] = {}
        self._tracks: dict[int, _TrackCandidates] = {}
        self.dropped = {"small": 0, "cut_off": 0, "blurred": 0}

    @property
    def spans(self) -> dict[int, Span]:
        """Every track seen so far, by local id, including tracks none of whose crops was usable."""
        return self._spans

    def held_crops(self) -> int:
        """Crops held in memory right now (bounded by tracks x capacity)."""
        return sum(len(t.buckets) for t in self._tracks.values())

    def add(self, frame: Frame, boxes: list[TrackedBox]) -> None:
        height, width = frame.image.shape[:2]
        for tb in boxes:
            span = self._spans.get(tb.local_track_id)
            if span is None:
                self._spans[tb.local_track_id] = Span(tb.ts, tb.ts, 1)
            else:
                span.ts_start = min(span.ts_start, tb.ts)
                span.ts_end = max(span.ts_end, tb.ts)
                span.n_boxes += 1

            x1, y1, x2, y2 = tb.box
            if y2 - y1 < self.min_height:
                self.dropped["small"] += 1
                continue
            if is_cut_off(tb.box, width, height, self.edge_margin):
                self.dropped["cut_off"] += 1
                continue
            image = crop_box(frame.image, tb.box)
            sharp = sharpness(image)
            if image.size == 0 or sharp < self.min_sharpness:
                self.dropped["blurred"] += 1
                continue
            cand = _Candidate(frame.index, tb.ts, tb.box, tb.conf, quality_score(y2 - y1, tb.conf, sharp), image)
            track = self._tracks.get(tb.local_track_id)
            if track is None:
                track = self._tracks[tb.local_track_id] = _TrackCandidates(tb.ts, self.capacity)
            track.add(cand)

    def regroup(self, final_ids: Mapping[int, int]) -> None:
        """Keep the tracks named in ``final_ids`` under the id each maps to (a duplicate's crops and time join
        its track's); tracks not named are dropped."""
        spans, tracks = self._spans, self._tracks
        self._spans, self._tracks = {}, {}
        for local_id in sorted(spans):
            target = final_ids.get(local_id)
            if target is None:
                continue
            span = spans[local_id]
            held = self._spans.get(target)
            if held is None:
                self._spans[target] = Span(span.ts_start, span.ts_end, span.n_boxes)
            else:
                held.ts_start, held.ts_end = min(held.ts_start, span.ts_start), max(held.ts_end, span.ts_end)
                held.n_boxes += span.n_boxes
            if local_id in tracks:
                into = self._tracks.get(target)
                if into is None:
                    into = self._tracks[target] = _TrackCandidates(tracks[local_id].t0, self.capacity)
                for cand in tracks[local_id].candidates():
                    into.add(cand)

    def select(self, track_id_for: Callable[[int], str]) -> list[Crop]:
        """Up to K crops per track, best first: the best of each of K equal parts of the track's time, then the
        best of the rest. Tracks come in order of local id."""
        crops: list[Crop] = []
        for local_id in sorted(self._tracks):
            chosen = self._pick(self._tracks[local_id].candidates(), self._spans[local_id])
            track_id = track_id_for(local_id)
            for c in chosen:
                crops.append(Crop(track_id, c.frame_index, c.ts, c.box, c.conf, c.quality, c.image))
        return crops

    def _pick(self, candidates: list[_Candidate], span: Span) -> list[_Candidate]:
        k = self.k
        length = span.ts_end - span.ts_start
        parts: dict[int, _Candidate] = {}
        for cand in candidates:
            part = 0 if length <= 0 else min(k - 1, int((cand.ts - span.ts_start) / length * k))
            if part not in parts or cand.beats(parts[part]):
                parts[part] = cand
        chosen = list(parts.values())
        rest = [c for c in candidates if all(c is not p for p in chosen)]
        rest.sort(key=lambda c: (-c.quality, c.frame_index))
        chosen.extend(rest[: max(0, k - len(chosen))])
        chosen.sort(key=lambda c: (-c.quality, c.frame_index))
        return chosen
