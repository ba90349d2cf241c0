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
import shutil
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from camtrace.errors import ConfigError, ModelLoadError
from camtrace.inference import InferenceModel

if TYPE_CHECKING:
    from camtrace.settings import Settings

log = logging.getLogger(__name__)

PERSON_CLASS = 0
PREFERRED_WEIGHT_NAMES = ("model.pt", "best.pt")
SETTING = "CAMTRACE_DETECTOR_MODEL"
DEFAULT_IMGSZ = 640  # Ultralytics' default: what a checkpoint without recorded train args was trained at


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
    return "/" in value or os.sep in value or value.startswith(("~", ".")) or Path(value).is_absolute() or not value.endswith(".pt")


class PersonDetector(InferenceModel):
    """Batched YOLO person detection: ``detect(images)`` -> one ``(n, 6)`` array per image.

    The input size is the one the weights were trained at (the checkpoint's
    ``train_args.imgsz``, Ultralytics' convention) unless ``imgsz`` is given. On
    the ONNX runtime the weights are exported once per model version and input
    size with Ultralytics' own exporter (dynamic batch) into ``exports_dir``.
    """

    def __init__(
        self,
        weights: str,
        device: str = "cpu",
        conf: float = 0.35,
        imgsz: int | None = None,
        max_det: int = 100,
        batch_size: int = 16,
        runtime: str = "torch",
        exports_dir: str | os.PathLike[str] | None = None,
        cpu_threads: int = 0,
    ) -> None:
        super().__init__(str(weights), device, runtime, cpu_threads)
        self.weights = str(weights)
        self.conf = conf
        self.imgsz_setting = imgsz
        self.max_det = max_det
        self.batch_size = batch_size
        self.exports_dir = Path(exports_dir) if exports_dir is not None else None
        self._model: Any = None
        self._imgsz: int | None = None

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
            runtime=settings.runtime,
            exports_dir=settings.exports_dir,
            cpu_threads=settings.cpu_threads,
        )

    @property
    def half(self) -> bool:
        return self.device.type == "cuda"

    @property
    def imgsz(self) -> int:
        """The input size in use: the setting, else the size the weights were trained at (loads them)."""
        self._ensure_loaded()
        assert self._imgsz is not None
        return self._imgsz

    @property
    def runtime_label(self) -> str:
        self._ensure_loaded()
        return "onnx fp32" if self.runtime == "onnx" else ("torch fp16" if self.half else "torch fp32")

    def _load(self) -> None:
        path = resolve_weights(self.weights)  # raises before Ultralytics can try a download for a missing path
        model = self._open(path)
        if getattr(model, "task", "detect") != "detect":
            raise ModelLoadError(
                f"detector weights {self.weights!r} are a {model.task!r} model; {SETTING} must name a detection model"
            )
        names = getattr(model, "names", {}) or {}
        if names and str(names.get(PERSON_CLASS, "")).lower() != "person":
            log.warning("class 0 of %s is %r, not 'person'; detections of class 0 are used", self.weights, names.get(0))
        self._imgsz = int(self.imgsz_setting or trained_imgsz(model))
        if self.runtime == "onnx":
            export = self._onnx_export(path, self._imgsz)
            model = self._open(export, task="detect")
            if self.device.type == "cpu":
                self._use_own_session_options(model, export)
        else:
            try:
                model.to(self.device)
            except Exception as exc:
                raise ModelLoadError(f"cannot move detector {self.weights!r} to device {self.device}: {exc}") from exc
        self._model = model

    def _use_own_session_options(self, model: Any, export: str) -> None:
        """Run Ultralytics' ONNX backend on a session with camtrace's options (threads, no spinning).

        Ultralytics owns the detector's runtime (its backends, letterbox and NMS: a runtime of camtrace's own
        would rewrite them), but opens its session without options when the predictor is first set up and
        offers no way to pass them; one warm-up prediction sets it up, then the session is swapped for one
        opened as the encoder's are (camtrace.inference.open_onnx_session).
        """
        from camtrace.inference import open_onnx_session

        model.predict(np.zeros((32, 32, 3), np.uint8), imgsz=self._imgsz, device="cpu", verbose=False)
        backend = getattr(getattr(getattr(model, "predictor", None), "model", None), "backend", None)
        if getattr(backend, "session", None) is None:
            log.warning("Ultralytics' ONNX backend has no session where expected; it keeps its default options")
            return
        backend.session = open_onnx_session(export, self.device, self.cpu_threads)

    def _open(self, path: str, task: str | None = None) -> Any:
        os.environ.setdefault("YOLO_OFFLINE", "1")
        os.environ.setdefault("YOLO_AUTOINSTALL", "False")
        try:
            from ultralytics import YOLO

            return YOLO(path, task=task)
        except Exception as exc:  # download failures, corrupt files and foreign pickles all end here
            named = repr(self.weights) if path == self.weights else f"{path!r} (from {self.weights!r})"
            raise ModelLoadError(
                f"cannot load detector weights {named} ({type(exc).__name__}: {_first_line(exc)}); "
                f"set {SETTING} to a local Ultralytics .pt file or a folder holding one"
            ) from exc

    def _onnx_export(self, path: str, imgsz: int) -> str:
        """Ultralytics' ONNX export of ``path`` at ``imgsz`` with a dynamic batch, built once per version and size."""
        import ultralytics

        from camtrace.exports import ExportSpec, ensure_export, sha256_of

        if self.exports_dir is None:
            raise ConfigError("the ONNX runtime needs a folder for its exports; set CAMTRACE_DATA_DIR")
        weights = Path(path)
        digest = sha256_of(weights)[:12]  # the detector's model version: its weight file's content
        spec = ExportSpec(
            name=f"detector-{imgsz}",
            source_version=f"{weights.stem}@{digest}",
            runtime="onnxruntime",
            quantization="fp32",
            file_name="detector.onnx",
            options={"imgsz": imgsz, "dynamic": True, "ultralytics": ultralytics.__version__.split(".")[0]},
        )

        def build(work: Path) -> Path:
            source = work / "detector.pt"
            shutil.copyfile(weights, source)
            from ultralytics import YOLO

            exported = YOLO(str(source)).export(
                format="onnx", imgsz=imgsz, dynamic=True, simplify=False, device="cpu", verbose=False
            )
            return Path(exported)

        return str(ensure_export(self.exports_dir, spec, build, f"the ONNX export of the detector at {imgsz} px"))

    def _unload(self) -> None:
        self._model = None
        self._imgsz = None

    def detect(self, images: Sequence[np.ndarray]) -> list[np.ndarray]:
        """Person boxes per BGR image: float32 ``[x1, y1, x2, y2, conf, cls]`` rows in source pixels."""
        if len(images) == 0:
            return []
        import torch

        self._ensure_loaded()
        # Ultralytics sets the process's PyTorch threads to cores - 1 when its predictor starts on a CPU: on 2 cores
        # that left every other model of the process (the embedder, training) on one thread.
        threads = torch.get_num_threads()
        out: list[np.ndarray] = []
        for start in range(0, len(images), self.batch_size):
            batch = list(images[start : start + self.batch_size])
            results = self._model.predict(
                batch,
                conf=self.conf,
                imgsz=self._imgsz,
                max_det=self.max_det,
                classes=[PERSON_CLASS],
                device=str(self.device),
                quantize=16 if self.half and self.runtime == "torch" else None,  # fp16 on CUDA, fp32 elsewhere
                verbose=False,
            )
            for result in results:
                data = result.boxes.data.detach().float().cpu().numpy().reshape(-1, result.boxes.data.shape[-1])
                out.append(np.ascontiguousarray(data[:, :6], dtype=np.float32))
        if torch.get_num_threads() != threads:
            torch.set_num_threads(threads)
        return out

    def __repr__(self) -> str:
        return f"PersonDetector({self.weights!r}, device={self.device_setting!r}, runtime={self.runtime_setting!r})"


def read_trained_imgsz(weights: str) -> int:
    """The input size the detector weights ``weights`` were trained at, read from the checkpoint (no export)."""
    detector = PersonDetector(weights, device="cpu")
    return trained_imgsz(detector._open(resolve_weights(weights)))


def trained_imgsz(model: Any) -> int:
    """The input size an Ultralytics model was trained at (its checkpoint's train args), 640 when unrecorded."""
    ckpt = getattr(model, "ckpt", None) or {}
    train_args = ckpt.get("train_args") if isinstance(ckpt, dict) else None
    for source in (train_args or {}, getattr(model, "overrides", None) or {}):
        size = source.get("imgsz")
        if isinstance(size, (list, tuple)) and size:
            size = max(size)
        if isinstance(size, int) and size > 0:
            return size
    return DEFAULT_IMGSZ


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else "no message"
