"""All configuration in one place: environment variables prefixed ``CAMTRACE_``.

Every field has an embedded default so that nothing needs a server: no broker
means local mode, no Qdrant URL means Qdrant Edge in the data dir, no database
URL means SQLite in the data dir. The README's settings table is generated from
this class (``camtrace settings --markdown``).
"""

from __future__ import annotations

import os
from functools import cached_property
from pathlib import Path
from typing import Literal

from pydantic import Field, ValidationError, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from camtrace.errors import ConfigError

ENV_PREFIX = "CAMTRACE_"


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix=ENV_PREFIX, extra="forbid", frozen=True)

    data_dir: Path = Field(Path("./data"), description="Folder for the embedded index, SQLite database and crops.")
    embed_model: str = Field(
        "MarketaJu/siglip2-person-description-reid",
        description="Embedding model: a hub id or a local SigLIP/SigLIP2/CLIP checkpoint folder.",
    )
    embed_processor: str | None = Field(
        "google/siglip2-base-patch16-224",
        description="Processor (tokenizer + image transform): hub id or folder; empty means the model folder's own.",
    )
    embed_batch_size: int = Field(64, ge=1, description="Crops per forward pass of the embedding model.")
    embed_text_max_length: int = Field(64, ge=8, description="Text queries are padded/truncated to this many tokens.")
    detector_model: str = Field(
        "yolo11n.pt", description="Ultralytics person detector: a weights file, a folder holding one, or a known name."
    )
    detector_conf: float = Field(0.35, ge=0.0, le=1.0, description="Minimum person confidence.")
    detector_imgsz: int | None = Field(
        None, ge=32, description="Detector input size in pixels; unset uses the size the weights were trained at."
    )
    detector_batch_size: int = Field(16, ge=1, description="Frames per detector forward pass.")
    detector_max_det: int = Field(100, ge=1, description="Maximum persons per frame.")
    tracker: str = Field("bytetrack.yaml", description="Ultralytics tracker config (a yaml name or path); ByteTrack by default.")
    crops_per_track: int = Field(4, ge=1, description="K: best crops kept and embedded per track.")
    min_crop_height: int = Field(48, ge=1, description="Crops shorter than this (pixels) are dropped.")
    min_crop_sharpness: float = Field(
        15.0, ge=0.0, description="Crops whose variance of Laplacian is below this are dropped as blurred."
    )
    device: str = Field("auto", description="Compute device: auto, cpu, cuda or cuda:N.")
    runtime: Literal["auto", "torch", "onnx"] = Field(
        "auto", description="Model runtime: auto (ONNX Runtime on CPU, PyTorch on CUDA), torch or onnx."
    )
    onnx_quantize: Literal["auto", "int8", "fp32"] = Field(
        "auto",
        description="Embedder weights on ONNX Runtime: int8 (dynamic quantisation), fp32, or auto (int8: measured "
        "within 0.5 points of fp32 retrieval).",
    )
    gpu_precision: Literal["auto", "bf16", "fp16", "fp32"] = Field(
        "auto", description="Embedder precision on a GPU: auto (bf16, fp16 where bf16 is missing), bf16, fp16 or fp32."
    )
    motion_gating: bool = Field(
        True, description="Skip the detector on sampled frames with no motion and no live track."
    )
    motion_threshold: float = Field(
        0.003, ge=0.0, le=1.0, description="Share of a frame's pixels that must change to count as motion."
    )
    sample_fps: float = Field(5.0, gt=0.0, description="Frames per second sampled from each video.")
    segment_seconds: float = Field(60.0, gt=0.0, description="Length of a segment: the unit of tracking and of work.")
    qdrant_url: str | None = Field(None, description="Qdrant server URL; unset uses embedded Qdrant Edge in the data dir.")
    qdrant_api_key: str | None = Field(None, description="API key for the Qdrant server.")
    collection: str = Field("camtrace", description="Name of the vector collection (server: the alias queries use).")
    database_url: str | None = Field(None, description="SQLAlchemy URL; unset uses SQLite in the data dir.")
    broker_url: str | None = Field(None, description="Celery broker URL (redis://...); unset runs in local mode.")
    result_backend: str | None = Field(None, description="Celery result backend; unset uses the broker URL.")
    visibility_timeout: int = Field(
        3600, ge=5, description="Seconds before an unacknowledged task is redelivered; must exceed the longest task."
    )
    task_max_attempts: int = Field(
        4, ge=1, description="Poison-message limit: a segment that fails this many deliveries is marked failed."
    )
    embed_gather_seconds: float = Field(
        0.5, gt=0.0, description="An embed worker waits at most this long to fill a batch from several messages."
    )
    crops_per_message: int = Field(64, ge=1, description="Crops carried by one embed message.")
    retention_days: float | None = Field(
        None, gt=0.0, description="Delete points, SQL rows and crops older than this (beat); unset keeps all."
    )
    metrics_port: int | None = Field(None, description="Port for a worker's Prometheus metrics; unset: no endpoint.")
    camera_backoff_max: float = Field(60.0, gt=0.0, description="Longest wait between camera reconnect attempts (s).")
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = Field("WARNING", description="Logging level.")

    @field_validator("embed_processor", "qdrant_url", "qdrant_api_key", "database_url", "broker_url", "result_backend",
        "retention_days", "metrics_port", "detector_imgsz", mode="before")
    @classmethod
    def _empty_is_unset(cls, value: object) -> object:
        return None if value == "" else value

    @field_validator("device")
    @classmethod
    def _check_device(cls, value: str) -> str:
        if value in ("auto", "cpu", "cuda", "mps") or (value.startswith("cuda:") and value[5:].isdigit()):
            return value
        raise ValueError("must be auto, cpu, cuda, cuda:N or mps")

    # Derived locations -------------------------------------------------------
    @cached_property
    def resolved_data_dir(self) -> Path:
        path = self.data_dir.expanduser().resolve()
        path.mkdir(parents=True, exist_ok=True)
        return path

    @property
    def index_dir(self) -> Path:
        return self.resolved_data_dir / "index"

    @property
    def crops_dir(self) -> Path:
        return self.resolved_data_dir / "crops"

    @property
    def recordings_dir(self) -> Path:
        """Segment files cut from live cameras (retention deletes them with their footage)."""
        return self.resolved_data_dir / "segments"

    @property
    def sql_url(self) -> str:
        return self.database_url or f"sqlite:///{self.resolved_data_dir / 'camtrace.db'}"

    @property
    def exports_dir(self) -> Path:
        """Models converted for another runtime, one folder per source model version."""
        return self.resolved_data_dir / "exports"

    @property
    def yolo_config_dir(self) -> Path:
        return self.resolved_data_dir / "ultralytics"

    def effective_embed_processor(self) -> str | None:
        """The processor to load; None means the model's own.

        A local model folder that ships its own processor (processor_config.json
        or preprocessor_config.json) uses it unless CAMTRACE_EMBED_PROCESSOR was
        set explicitly.
        """
        if "embed_processor" in self.model_fields_set:
            return self.embed_processor
        model_dir = Path(self.embed_model).expanduser()
        if model_dir.is_dir() and any(
            (model_dir / name).is_file() for name in ("processor_config.json", "preprocessor_config.json")
        ):
            return None
        return self.embed_processor

    def torch_device(self) -> str:
        """The device string torch understands, resolving ``auto``."""
        if self.device != "auto":
            return self.device
        import torch

        return "cuda" if torch.cuda.is_available() else "cpu"


def unknown_env_variables(environ: dict[str, str] | None = None) -> list[str]:
    """``CAMTRACE_*`` variables that name no setting (pydantic ignores them silently)."""
    environ = os.environ if environ is None else environ
    known = {ENV_PREFIX + name.upper() for name in Settings.model_fields}
    return sorted(key for key in environ if key.upper().startswith(ENV_PREFIX) and key.upper() not in known)


def load_settings(**overrides: object) -> Settings:
    """Read settings from the environment, failing loudly on typos and bad values."""
    unknown = unknown_env_variables()
    if unknown:
        raise ConfigError(
            f"unknown setting(s) {', '.join(unknown)}; valid ones are listed by `camtrace settings`"
        )
    try:
        return Settings(**overrides)
    except ValidationError as exc:
        problems = "; ".join(
            f"{ENV_PREFIX}{'.'.join(str(p) for p in err['loc']).upper()}: {err['msg']}" for err in exc.errors()
        )
        raise ConfigError(f"invalid settings: {problems}") from None


def prepare_ultralytics_env(settings: Settings) -> None:
    """Keep Ultralytics offline and its config inside the data dir (set before importing it)."""
    os.environ.setdefault("YOLO_OFFLINE", "1")
    os.environ.setdefault("YOLO_AUTOINSTALL", "False")
    os.environ.setdefault("YOLO_VERBOSE", "False")
    settings.yolo_config_dir.mkdir(parents=True, exist_ok=True)
    os.environ.setdefault("YOLO_CONFIG_DIR", str(settings.yolo_config_dir))


def settings_markdown() -> str:
    """The README's settings table, generated from the class."""
    rows = ["| variable | default | description |", "|---|---|---|"]
    for name, field in Settings.model_fields.items():
        default = field.default
        shown = "unset" if default is None else f"`{default}`"
        rows.append(f"| `{ENV_PREFIX}{name.upper()}` | {shown} | {field.description} |")
    return "\n".join(rows)
