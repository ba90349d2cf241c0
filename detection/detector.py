"""Person detector: an Ultralytics YOLO model, loaded lazily once per worker process.

``weights`` may be a ``.pt`` file, a folder holding one (``model.pt`` or
``best.pt`` preferred), or a known Ultralytics name such as ``yolo11n.pt``
that Ultralytics downloads on first use. A value that looks like a path but
does not exist fails before any download is attempted.

One detector per process; it keeps no per-stream state (tracking lives in
``SegmentTracker``), so any number of segments may pass through it in turn.
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from camtrace.errors import ModelLoadError

if TYPE_CHECKING:
    from camtrace.settings import Settings

log = logging.getLogger(__name__)

PERSON_CLASS = 0
PREFERRED_WEIGHT_NAMES = ("model.pt", "best.pt")
SETTING = "CAMTRACE_DETECTOR_MODEL"


def resolve_weights(weights: str) -> str:
    """The weights file to load: an existing file, the single/preferred .pt in a folder, or a hub name as given."""
    path = Path(weights).expanduser()
    if path.is_dir():
        for name in PREFERRED_WEIGHT_NAMES:
            if (path / name).is_file():
                return str(path / name)
        candidates = sorted(p for p in path.glob("*.pt") if p.is_file())
        if len(candidates) == 1:
            return str(candidates[0])
        found = ", ".join(p.name for p in candidates) or "none"
        raise ModelLoadError(
            f"detector folder {weights!r} must hold model.pt, best.pt or exactly one .pt file (found: {found}); "
            f"set {SETTING} to the weights file itself"
        )
    if path.is_file():
        return str(path)
    if _looks_like_path(weights):
        raise ModelLoadError(
            f"detector weights {weights!r} do not exist; set {SETTING} to an existing .pt file or a folder holding one"
        )
    return weights


def _looks_like_path(value: str) -> bool:
    # A bare file name (``yolo11n.pt``) is a hub name; anything with a folder part is meant as a local path.
    return (
        "/" in value
        or os.sep in value
        or value.startswith(("~", "."))
        or Path(value).is_absolute()
        or not value.endswith(".pt")
    )


class PersonDetector:
    """Batched YOLO person detection: ``detect(images)`` -> one ``(n, 6)`` array per image."""

    def __init__(
        self,
        weights: str,
        device: str = "cpu",
        conf: float = 0.35,
        imgsz: int = 640,
        max_det: int = 100,
        batch_size: int = 16,
    ) -> None:
        self.weights = str(weights)
        self.device = device
        self.conf = conf
        self.imgsz = imgsz
        self.max_det = max_det
        self.batch_size = batch_size
        self._model: Any = None
        self._lock = threading.Lock()

    @classmethod
    def from_settings(cls, settings: Settings) -> PersonDetector:
        from camtrace.settings import prepare_ultralytics_env

        prepare_ultralytics_env(settings)
        return cls(
            settings.detector_model,
            device=settings.torch_device(),
            conf=settings.detector_conf,
            imgsz=settings.detector_imgsz,
            max_det=settings.detector_max_det,
            batch_size=settings.detector_batch_size,
        )

    @property
    def loaded(self) -> bool:
        return self._model is not None

    @property
    def half(self) -> bool:
        return self.device.startswith("cuda")

    def load(self) -> None:
        """Load the weights now (otherwise done on the first ``detect``); errors are ``ModelLoadError``."""
        with self._lock:
            if self._model is None:
                self._model = self._load()

    def _load(self) -> Any:
        path = resolve_weights(self.weights)  # raises before Ultralytics can try a download for a missing path
        os.environ.setdefault("YOLO_OFFLINE", "1")
        os.environ.setdefault("YOLO_AUTOINSTALL", "False")
        try:
            from ultralytics import YOLO

            model = YOLO(path)
        except Exception as exc:  # download failures, corrupt files and foreign pickles all end here
            named = repr(self.weights) if path == self.weights else f"{path!r} (from {self.weights!r})"
            raise ModelLoadError(
                f"cannot load detector weights {named} ({type(exc).__name__}: {_first_line(exc)}); "
                f"set {SETTING} to a local Ultralytics .pt file or a folder holding one"
            ) from exc
        if getattr(model, "task", "detect") != "detect":
            raise ModelLoadError(
                f"detector weights {self.weights!r} are a {model.task!r} model; {SETTING} must name a detection model"
            )
        names = getattr(model, "names", {}) or {}
        if names and str(names.get(PERSON_CLASS, "")).lower() != "person":
            log.warning("class 0 of %s is %r, not 'person'; detections of class 0 are used", self.weights, names.get(0))
        try:
            model.to(self.device)
        except Exception as exc:
            raise ModelLoadError(f"cannot move detector {self.weights!r} to device {self.device!r}: {exc}") from exc
        return model

    def unload(self) -> None:
        with self._lock:
            self._model = None

    def detect(self, images: Sequence[np.ndarray]) -> list[np.ndarray]:
        """Person boxes per BGR image: float32 ``[x1, y1, x2, y2, conf, cls]`` rows in source pixels."""
        if len(images) == 0:
            return []
        self.load()
        out: list[np.ndarray] = []
        for start in range(0, len(images), self.batch_size):
            batch = list(images[start : start + self.batch_size])
            results = self._model.predict(
                batch,
                conf=self.conf,
                imgsz=self.imgsz,
                max_det=self.max_det,
                classes=[PERSON_CLASS],
                device=self.device,
                quantize=16 if self.half else None,  # fp16 on CUDA, fp32 elsewhere
                verbose=False,
            )
            for result in results:
                data = result.boxes.data.detach().float().cpu().numpy().reshape(-1, result.boxes.data.shape[-1])
                out.append(np.ascontiguousarray(data[:, :6], dtype=np.float32))
        return out

    def __repr__(self) -> str:
        return f"PersonDetector({self.weights!r}, device={self.device!r})"


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else "no message"
