"""What every model wrapper shares: the device, the runtime, lazy loading.

``InferenceModel`` is the one base of the embedding encoder and the person
detector: weights load once on first use (or on ``load()``), ``unload()``
frees them, and the runtime (PyTorch or ONNX Runtime) is picked here from
``CAMTRACE_RUNTIME`` and the device, so a model class never decides it alone.
"""

from __future__ import annotations

import threading
from abc import ABC, abstractmethod
from typing import TYPE_CHECKING, Any

from camtrace.enums import Precision, Runtime
from camtrace.errors import ConfigError

if TYPE_CHECKING:
    import torch

RUNTIMES = tuple(Runtime)


def resolve_device(device: str) -> torch.device:
    """``auto`` -> ``cuda`` when available, else ``cpu``; ``cuda``/``cuda:N``/``mps`` must exist."""
    import torch

    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device == "cpu":
        return torch.device("cpu")
    if device == "cuda" or (device.startswith("cuda:") and device[5:].isdigit()):
        if not torch.cuda.is_available():
            raise ConfigError(f"device {device!r} requested but CUDA is not available; set CAMTRACE_DEVICE=cpu or auto")
        index = int(device[5:]) if ":" in device else 0
        if index >= torch.cuda.device_count():
            raise ConfigError(
                f"device {device!r} requested but only {torch.cuda.device_count()} CUDA device(s) exist; fix CAMTRACE_DEVICE"
            )
        return torch.device(device)
    if device == "mps":
        if not torch.backends.mps.is_available():
            raise ConfigError("device 'mps' requested but it is not available; set CAMTRACE_DEVICE=cpu or auto")
        return torch.device("mps")
    raise ConfigError(f"unknown device {device!r}; CAMTRACE_DEVICE must be auto, cpu, cuda, cuda:N or mps")


GPU_PRECISIONS = tuple(Precision)


def inference_dtype(device: torch.device, precision: str = "auto") -> torch.dtype:
    """On a GPU: ``precision``, where ``auto`` is bf16 if supported (fp16 otherwise); float32 elsewhere."""
    import torch

    if precision not in GPU_PRECISIONS:
        raise ConfigError(f"unknown precision {precision!r}; CAMTRACE_GPU_PRECISION must be one of {', '.join(GPU_PRECISIONS)}")
    if device.type != "cuda":
        return torch.float32
    if precision == "auto":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    return {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}[precision]


def resolve_runtime(runtime: str, device: torch.device) -> str:
    """``auto`` -> ONNX Runtime on CPU (measured 2-3x PyTorch there), PyTorch on GPUs (bf16, batched)."""
    if runtime not in RUNTIMES:
        raise ConfigError(f"unknown runtime {runtime!r}; CAMTRACE_RUNTIME must be one of {', '.join(RUNTIMES)}")
    if runtime == "auto":
        return "onnx" if device.type == "cpu" else "torch"
    return runtime


def onnx_providers(device: torch.device) -> list[str]:
    """ONNX Runtime's CUDA provider where the device is a GPU and the installed build has it; CPU otherwise."""
    import onnxruntime as ort

    if device.type == "cuda" and "CUDAExecutionProvider" in ort.get_available_providers():
        return ["CUDAExecutionProvider", "CPUExecutionProvider"]
    return ["CPUExecutionProvider"]


def onnx_session_options(cpu_threads: int = 0) -> Any:
    """ONNX Runtime session options for camtrace's models: full graph optimisation, no spinning threads.

    ``cpu_threads`` is the intra-op thread count (0: ONNX Runtime's default, one per physical core).
    Spinning is off because the cores are shared: the detector, the encoder and video decoding take
    turns in one process, and a worker's other processes run beside it. Idle spinning threads held
    the cores after each run (benchmarks/bench_motion.py with one core busy: 5.1 -> 6.5 cameras;
    no change on an idle machine).
    """
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.intra_op_num_threads = max(0, int(cpu_threads))
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    options.add_session_config_entry("session.inter_op.allow_spinning", "0")
    return options


def open_onnx_session(path: str, device: torch.device, cpu_threads: int = 0) -> Any:
    """An ONNX Runtime session of ``path`` with camtrace's options and providers: the one way the encoder's and
    the detector's exports are opened."""
    import onnxruntime as ort

    return ort.InferenceSession(str(path), onnx_session_options(cpu_threads), providers=onnx_providers(device))


def limit_torch_threads(cpu_threads: int) -> None:
    """PyTorch's intra-op threads on the CPU (0 keeps its default, one per core)."""
    if cpu_threads > 0:
        import torch

        if torch.get_num_threads() != cpu_threads:
            torch.set_num_threads(cpu_threads)


# --------------------------------------------------------------------------
# Base class
# --------------------------------------------------------------------------
class InferenceModel(ABC):
    """A model loaded lazily, once, on first use; ``unload()`` frees it again."""

    def __init__(self, model: str, device: str = "auto", runtime: str = "torch", cpu_threads: int = 0) -> None:
        if runtime not in RUNTIMES:
            raise ConfigError(f"unknown runtime {runtime!r}; CAMTRACE_RUNTIME must be one of {', '.join(RUNTIMES)}")
        if cpu_threads < 0:
            raise ConfigError(f"CAMTRACE_CPU_THREADS must be 0 (one per core) or more, not {cpu_threads}")
        self.cpu_threads = cpu_threads
        self.model_name = str(model)
        self.device_setting = device
        self.runtime_setting = runtime
        self._device: torch.device | None = None
        self._loaded = False
        # Worker thread pools may hit the first request concurrently.
        self._lock = threading.RLock()

    @property
    def device(self) -> torch.device:
        if self._device is None:
            self._device = resolve_device(self.device_setting)
        return self._device

    @property
    def runtime(self) -> str:
        """``torch`` or ``onnx``: what ``runtime_setting`` means on this model's device."""
        return resolve_runtime(self.runtime_setting, self.device)

    @property
    def loaded(self) -> bool:
        return self._loaded

    def load(self) -> None:
        with self._lock:
            if not self._loaded:
                if self.device.type == "cpu":
                    limit_torch_threads(self.cpu_threads)
                self._load()
                self._loaded = True

    def unload(self) -> None:
        with self._lock:
            if not self._loaded:
                return
            self._unload()
            self._loaded = False
            if self._device is not None and self._device.type == "cuda":
                import torch

                torch.cuda.empty_cache()

    def _ensure_loaded(self) -> None:
        if not self._loaded:
            self.load()

    @abstractmethod
    def _load(self) -> None:
        """Read the weights onto ``self.device``; raise ModelLoadError on failure."""

    @abstractmethod
    def _unload(self) -> None:
        """Drop every reference to the weights."""
