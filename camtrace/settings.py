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

from pydantic import ValidationError, field_validator, model_validator
from pydantic_settings import SettingsConfigDict

from camtrace.errors import ConfigError
from camtrace.setting_groups import (
    AlertSettings,
    ModelSettings,
    PipelineSettings,
    SearchSettings,
    ServiceSettings,
    StorageSettings,
    TrainingSettings,
    WorkerSettings,
)

ENV_PREFIX = "CAMTRACE_"

# Broker URL schemes by broker: kombu's Redis transport and its AMQP (RabbitMQ) transport.
BROKER_SCHEMES = {
    "redis": "redis",
    "rediss": "redis",
    "sentinel": "redis",
    "amqp": "rabbitmq",
    "amqps": "rabbitmq",
    "pyamqp": "rabbitmq",
}
# A segment task may take this many times the segment's own length (a CPU worker that keeps up with
# real time does it in well under one), plus this many seconds to load the models on a worker's first task.
TASK_TIME_SEGMENTS = 3
MODEL_LOAD_SECONDS = 30
HARD_LIMIT_GRACE_SECONDS = 10  # after the soft limit, before the worker process is killed
VISIBILITY_MARGIN_SECONDS = 20  # the derived visibility timeout is this far above the hard limit


# Fields are listed (and the README's table reads) from the last base to the first: storage first.
class Settings(
    ServiceSettings,
    TrainingSettings,
    WorkerSettings,
    AlertSettings,
    SearchSettings,
    PipelineSettings,
    ModelSettings,
    StorageSettings,
):
    """Every setting of camtrace: the groups' fields with the checks and derived values that span them."""

    model_config = SettingsConfigDict(env_prefix=ENV_PREFIX, extra="forbid", frozen=True)

    @field_validator(
        "embed_processor",
        "qdrant_url",
        "qdrant_api_key",
        "database_url",
        "broker_url",
        "result_backend",
        "retention_days",
        "metrics_port",
        "val_dataset",
        "training_data_dir",
        "train_interval_seconds",
        "detector_imgsz",
        "mqtt_url",
        "webhook_secret",
        mode="before",
    )
    @classmethod
    def _empty_is_unset(cls, value: object) -> object:
        return None if value == "" else value

    @field_validator("mqtt_url")
    @classmethod
    def _check_mqtt_url(cls, value: str | None) -> str | None:
        if value is not None and value.split("://", 1)[0].lower() not in ("mqtt", "mqtts"):
            raise ValueError("must be an MQTT URL such as mqtt://user:password@host:1883 (mqtts:// for TLS)")
        return value

    @field_validator("webhook_urls")
    @classmethod
    def _check_webhook_urls(cls, value: str) -> str:
        for part in value.split(","):
            if part.strip() and part.strip().split("://", 1)[0].lower() not in ("http", "https"):
                raise ValueError(f"'{part.strip()}' is not an http:// or https:// URL")
        return value

    @field_validator("broker_url")
    @classmethod
    def _check_broker_url(cls, value: str | None) -> str | None:
        if value is not None and value.split("://", 1)[0].split("+")[0].lower() not in BROKER_SCHEMES:
            raise ValueError("must be a Redis (redis://host:6379/0) or RabbitMQ (amqp://user:password@host:5672/vhost) URL")
        return value

    @model_validator(mode="after")
    def _webhooks_are_signed(self) -> Settings:
        if self.webhook_urls.strip() and not self.webhook_secret:
            raise ValueError(
                "CAMTRACE_WEBHOOK_URLS is set but CAMTRACE_WEBHOOK_SECRET is not: webhooks are sent signed "
                "only; set a long random secret (and give it to the receivers to check the signature)"
            )
        return self

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

    @property
    def live_segment_length(self) -> float:
        """Seconds of a live camera's segment file (CAMTRACE_LIVE_SEGMENT_SECONDS)."""
        return float(self.live_segment_seconds)

    def webhook_url_list(self) -> list[str]:
        """CAMTRACE_WEBHOOK_URLS as a list."""
        return [part.strip() for part in self.webhook_urls.split(",") if part.strip()]

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
        raise ConfigError(f"unknown setting(s) {', '.join(unknown)}; valid ones are listed by `camtrace settings`")
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
