"""Motion gating: the detector runs only where something moves or a track is alive.

Frigate's main CPU saver, done per sampled frame: a small grey copy of the
frame (64x36, blurred) is compared with a running background; the share of
pixels that changed by more than ``PIXEL_DELTA`` grey levels is the motion.
A frame with no motion while the tracker holds no track (tracked or lost) has
nothing new to find, so it skips the detector and the tracker gets an empty
update for it, which keeps lost-track bookkeeping right.

One ``MotionGate`` per segment, like the tracker: a segment processed alone
starts from the same state as in a full pass, so both give the same result.
"""

from __future__ import annotations

import cv2
import numpy as np

SMALL_SIZE = (64, 36)  # width, height: enough for a person at surveillance distance, cheap to compare
PIXEL_DELTA = 20  # grey levels: above compression noise and flicker
BACKGROUND_RATE = 0.1  # weight of the newest frame in the running background


class MotionGate:
    """Says per frame whether anything moved; counts the frames it saw and let through."""

    def __init__(self, threshold: float = 0.003, size: tuple[int, int] = SMALL_SIZE) -> None:
        if not 0.0 <= threshold <= 1.0:
            raise ValueError("the motion threshold is a share of pixels, between 0 and 1")
        self.threshold = threshold
        self.size = size
        self._background: np.ndarray | None = None
        self.frames = 0
        self.detected = 0

    def moved(self, image_bgr: np.ndarray) -> bool:
        """Update the background with this frame; True if the share of changed pixels exceeds the threshold."""
        small = cv2.resize(image_bgr, self.size, interpolation=cv2.INTER_AREA)
        grey = cv2.GaussianBlur(cv2.cvtColor(small, cv2.COLOR_BGR2GRAY), (3, 3), 0).astype(np.float32)
        if self._background is None:  # the first frame of a segment: nothing to compare with, so look
            self._background = grey
            return True
        changed = float(np.mean(np.abs(grey - self._background) > PIXEL_DELTA))
        cv2.accumulateWeighted(grey, self._background, BACKGROUND_RATE)
        return changed > self.threshold

    @property
    def skipped(self) -> int:
        return self.frames - self.detected
