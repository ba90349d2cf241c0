"""All configuration in one place: environment variables prefixed ``CAMTRACE_``.

Every field has an embedded default so that nothing needs a server: no broker
means local mode, no Qdrant URL means Qdrant Edge in the data dir, no database
URL means SQLite in the data dir. The README's settings table is generated from
this class (``camtrace settings --markdown``).
"""

from __future__ import annotations

import ipaddress
import math
import os
from functools import cached_property
from pathlib import Path
from typing import Literal

from pydantic import Field, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from camtrace.enums import OnnxQuantization, Precision, Runtime, TrainCrops
from camtrace.errors import ConfigError

ENV_PREFIX = "CAMTRACE_"

# Broker URL schemes by broker: kombu's Redis transport and its AMQP (RabbitMQ) transport.
BROKER_SCHEMES = {"redis": "redis", "rediss": "redis", "sentinel": "redis", "amqp": "rabbitmq", "amqps": "rabbitmq",
                  "pyamqp": "rabbitmq"}
# A segment task may take this many times the segment's own length (a CPU worker that keeps up with
# real time does it in well under one), plus this many seconds to load the models on a worker's first task.
TASK_TIME_SEGMENTS = 3
MODEL_LOAD_SECONDS = 30
HARD_LIMIT_GRACE_SECONDS = 10  # after the soft limit, before the worker process is killed
VISIBILITY_MARGIN_SECONDS = 20  # the derived visibility timeout is this far above the hard limit


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
    tracker: str = Field(
        "motion",
        description="Tracker: motion (camtrace's, built for sampled frames: keeps walkers at 2-5 fps), or an "
        "Ultralytics tracker yaml (bytetrack.yaml, botsort.yaml or a path).",
    )
    crops_per_track: int = Field(4, ge=1, description="K: best crops kept and embedded per track.")
    min_crop_height: int = Field(48, ge=1, description="Crops shorter than this (pixels) are dropped.")
    min_crop_sharpness: float = Field(
        15.0, ge=0.0, description="Crops whose variance of Laplacian is below this are dropped as blurred."
    )
    device: str = Field("auto", description="Compute device: auto, cpu, cuda or cuda:N.")
    runtime: Runtime = Field(
        Runtime.AUTO, description="Model runtime: auto (ONNX Runtime on CPU, PyTorch on CUDA), torch or onnx."
    )
    onnx_quantize: OnnxQuantization = Field(
        OnnxQuantization.AUTO,
        description="Embedder weights on ONNX Runtime: int8 (dynamic quantisation), fp32, or auto (int8: measured "
        "within 0.5 points of fp32 retrieval).",
    )
    cpu_threads: int = Field(
        0,
        ge=0,
        description="Threads per process for the models on a CPU (ONNX Runtime intra-op, PyTorch); 0: one per core, "
        "or the cores shared out among a prefork worker's processes.",
    )
    gpu_precision: Precision = Field(
        Precision.AUTO, description="Embedder precision on a GPU: auto (bf16, fp16 where bf16 is missing), bf16, fp16 or fp32."
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
    search_max_results: int = Field(
        200, ge=1, le=10_000, description="Largest page (limit) a search, re-id or trace may ask for."
    )
    trace_min_score: float = Field(
        0.3, gt=0.0, lt=1.0,
        description="Probability of being the same person (appearance, cameras and transit) a candidate needs to "
        "be a step of a trace's path (overridable per call); the others are offered as alternatives. 0.3: about "
        "half the best F1 a trace reaches, the threshold that maximises F1 for calibrated probabilities.",
    )
    link_window_seconds: float = Field(
        600.0, gt=0.0,
        description="Tracks at most this far apart in time are compared when learning camera links and calibration.",
    )
    evidence_tracks: int = Field(
        20_000, ge=10, description="The most recent tracks the same-person calibration and camera links learn from."
    )
    evidence_learn_minutes: float = Field(
        15.0, gt=0.0, description="Beat relearns the calibration and camera links this often when new tracks arrived."
    )
    database_url: str | None = Field(None, description="SQLAlchemy URL; unset uses SQLite in the data dir.")
    broker_url: str | None = Field(
        None, description="Celery broker URL: redis://... or amqp://... (RabbitMQ); unset runs in local mode."
    )
    result_backend: str | None = Field(
        None, description="Celery result backend; unset uses a Redis broker's URL, none with RabbitMQ (no task reads results)."
    )
    visibility_timeout: int | None = Field(
        None,
        ge=5,
        description="Redis broker: seconds before a task whose worker died is delivered again; unset: 3 x "
        "CAMTRACE_SEGMENT_SECONDS + 60 (240 s for 60 s segments). Must exceed the hard task time limit, 3 x segment + 40 s.",
    )
    rabbitmq_queue_type: Literal["quorum", "classic"] = Field(
        "quorum", description="RabbitMQ broker: queue type; quorum (replicated, RabbitMQ 3.8+) or classic."
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
    model_refresh_seconds: float = Field(
        5.0, ge=0.0, description="Long-running services re-read the active model from the registry this often (s)."
    )
    train_crops: TrainCrops = Field(
        TrainCrops.BOTH,
        description="Training on footage with ground truth: its tight boxes, the detector's boxes cut as the pipeline "
        "cuts what it embeds, or both (the model then learns what it will be asked to match).",
    )
    anchor_layer: int = Field(-2, description="Vision block whose patch tokens `camtrace train --head anchors` builds "
                              "its head on (hidden_states: 1..N from the first, -1 the last; before the final norm).")
    anchor_diversity: float = Field(0.1, ge=0.0, description="Weight of the anchor head's diversity term in its training.")
    site_adapt_min_tracks: int = Field(
        0, ge=0,
        description="Scheduled training adapts the model to this site's own footage (site: dataset, no labels) once "
        "this many tracks arrived since the newest model; 0: never.",
    )
    promote_metric: str = Field(
        "text_to_identity.top1",
        description="Validation figure a new model must improve to be promoted: text_to_identity.<m> or image_reid.<m>.",
    )
    promote_margin: float = Field(
        1.0, description="Points by which a new model must beat the active one on CAMTRACE_PROMOTE_METRIC."
    )
    val_dataset: str | None = Field(
        None, description="Validation dataset (KIND:PATH) for scheduled training and for promotion checks."
    )
    reindex_batch_size: int = Field(256, ge=1, description="Crops per re-index batch (one embed task in distributed mode).")
    training_data_dir: Path | None = Field(
        None, description="Training datasets, one sub-folder per kind (market1501/, csv/, ...); new ones trigger training."
    )
    train_interval_seconds: float | None = Field(
        None, gt=0.0, description="How often beat checks for new training data (s); unset: no scheduled training."
    )
    train_min_new_datasets: int = Field(
        1, ge=1, description="New dataset entries (newer than the last registered model) that start a training run."
    )
    train_min_new_feedback: int = Field(
        200, ge=1, description="New confirmed re-id matches (feedback) that start a training run."
    )
    auto_promote: bool = Field(False, description="Promote a model trained by the schedule when it beats the active one.")
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = Field("WARNING", description="Logging level.")
    ingest_roots: str = Field(
        "", description="Comma-separated folders the HTTP API may ingest from (POST /api/jobs); empty disables HTTP ingest."
    )
    max_upload_mb: int = Field(20, ge=1, description="Largest photo the HTTP API accepts for a photo search (MiB).")
    max_upload_pixels: int = Field(
        40_000_000, ge=1, le=178_000_000,  # Pillow's own bomb guard refuses more than ~179 million anyway
        description="Most pixels (width x height, read from the header before decoding) a searched photo may have; "
        "the default takes an 8K frame.",
    )
    trusted_proxies: str = Field(
        "", description="Comma-separated addresses or networks of reverse proxies whose X-Forwarded-For names the "
        "client; empty: the header is ignored and the connecting address counts.",
    )
    index_keep_open_seconds: float = Field(
        2.0, ge=0.0, description="The query service keeps the embedded index open this long after a search, so the next "
        "skips loading it; released at once when another process waits for it (0: close after every call).",
    )

    @field_validator("embed_processor", "qdrant_url", "qdrant_api_key", "database_url", "broker_url", "result_backend",
        "retention_days", "metrics_port", "val_dataset", "training_data_dir", "train_interval_seconds",
        "detector_imgsz", mode="before")
    @classmethod
    def _empty_is_unset(cls, value: object) -> object:
        return None if value == "" else value

    @field_validator("broker_url")
    @classmethod
    def _check_broker_url(cls, value: str | None) -> str | None:
        if value is not None and value.split("://", 1)[0].split("+")[0].lower() not in BROKER_SCHEMES:
            raise ValueError("must be a Redis (redis://host:6379/0) or RabbitMQ (amqp://user:password@host:5672/vhost) URL")
        return value

    @model_validator(mode="after")
    def _visibility_exceeds_the_task_time_limit(self) -> Settings:
        if self.visibility_timeout is not None and self.visibility_timeout <= self.task_hard_time_limit:
            raise ValueError(
                f"CAMTRACE_VISIBILITY_TIMEOUT={self.visibility_timeout} must exceed the task time limit of "
                f"{self.task_hard_time_limit} s (from CAMTRACE_SEGMENT_SECONDS={self.segment_seconds:g}), or a running "
                "task would be delivered a second time: raise it, or leave it unset to derive it"
            )
        return self

    @field_validator("trusted_proxies")
    @classmethod
    def _check_trusted_proxies(cls, value: str) -> str:
        for part in value.split(","):
            if part.strip():
                try:
                    ipaddress.ip_network(part.strip(), strict=False)
                except ValueError:
                    raise ValueError(f"'{part.strip()}' is not an IP address or network such as 10.0.0.0/8") from None
        return value

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

    # Derived task bounds ------------------------------------------------------
    @property
    def broker_kind(self) -> Literal["redis", "rabbitmq"] | None:
        """Which broker CAMTRACE_BROKER_URL names; None in local mode."""
        if not self.broker_url:
            return None
        return BROKER_SCHEMES[self.broker_url.split("://", 1)[0].split("+")[0].lower()]  # type: ignore[return-value]

    @property
    def task_time_limit(self) -> int:
        """Seconds a segment task may run before it stops and hands its segment back (the soft limit)."""
        return math.ceil(TASK_TIME_SEGMENTS * self.segment_seconds + MODEL_LOAD_SECONDS)

    @property
    def task_hard_time_limit(self) -> int:
        """Seconds after which a prefork worker kills a segment task that ignored the soft limit."""
        return self.task_time_limit + HARD_LIMIT_GRACE_SECONDS

    @property
    def effective_visibility_timeout(self) -> int:
        """Redis: seconds until a task whose worker died is delivered again (just above the longest task)."""
        if self.visibility_timeout is not None:
            return self.visibility_timeout
        return self.task_hard_time_limit + VISIBILITY_MARGIN_SECONDS

    def trusted_proxy_networks(self) -> list[ipaddress.IPv4Network | ipaddress.IPv6Network]:
        """CAMTRACE_TRUSTED_PROXIES as networks (a single address is a /32 or /128)."""
        return [ipaddress.ip_network(part.strip(), strict=False) for part in self.trusted_proxies.split(",") if part.strip()]

    def ingest_root_paths(self) -> list[Path]:
        """CAMTRACE_INGEST_ROOTS as resolved folders (symlinks and .. followed)."""
        return [Path(part.strip()).expanduser().resolve() for part in self.ingest_roots.split(",") if part.strip()]

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
            (f"{ENV_PREFIX}{'.'.join(str(p) for p in err['loc']).upper()}: " if err["loc"] else "") + err["msg"]
            for err in exc.errors()
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
