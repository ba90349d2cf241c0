"""The settings' fields by concern, each group a small class; ``camtrace.settings.Settings`` combines them with
the validators and derived values that span groups. Environment variables are ``CAMTRACE_<FIELD>``."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field
from pydantic_settings import BaseSettings

from camtrace.enums import OnnxQuantization, Precision, Runtime, TrainCrops


class StorageSettings(BaseSettings):
    """Where data lives: the data dir, the vector index (embedded or a Qdrant server), the SQL database, retention."""

    data_dir: Path = Field(Path("./data"), description="Folder for the embedded index, SQLite database and crops.")
    qdrant_url: str | None = Field(None, description="Qdrant server URL; unset uses embedded Qdrant Edge in the data dir.")
    qdrant_api_key: str | None = Field(None, description="API key for the Qdrant server.")
    collection: str = Field("camtrace", description="Name of the vector collection (server: the alias queries use).")
    index_keep_open_seconds: float = Field(
        2.0,
        ge=0.0,
        description="The query service keeps the embedded index open this long after a search, so the next "
        "skips loading it; released at once when another process waits for it (0: close after every call).",
    )
    index_layout: Literal["compact", "exact"] = Field(
        "compact",
        description="Layout of new embedded index shards: compact (originals on disk, an int8 copy in RAM "
        "searched through HNSW and rescored with the originals: a quarter of the memory) or exact (every vector in "
        "RAM, scanned). Existing shards keep theirs until `camtrace index migrate`; the server backend is always "
        "compact.",
    )
    index_maintain_seconds: float = Field(
        60.0,
        ge=0.0,
        description="Embedded index: beat indexes newly written points this often (s), and ingest "
        "between its batches; one step indexes one segment, seconds of work. 0: only by `camtrace index maintain`.",
    )

    database_url: str | None = Field(None, description="SQLAlchemy URL; unset uses SQLite in the data dir.")
    retention_days: float | None = Field(
        None, gt=0.0, description="Delete points, SQL rows and crops older than this (beat); unset keeps all."
    )


class ModelSettings(BaseSettings):
    """The detector and the embedding model, and what runs them (device, runtime, precision, threads)."""

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
    device: str = Field("auto", description="Compute device: auto, cpu, cuda or cuda:N.")
    runtime: Runtime = Field(Runtime.AUTO, description="Model runtime: auto (ONNX Runtime on CPU, PyTorch on CUDA), torch or onnx.")
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


class PipelineSettings(BaseSettings):
    """Cutting footage into people: sampling, segments, the tracker, crop selection, motion gating, cameras."""

    sample_fps: float = Field(5.0, gt=0.0, description="Frames per second sampled from each video.")
    segment_seconds: float = Field(60.0, gt=0.0, description="Length of a segment: the unit of tracking and of work.")
    live_segment_seconds: float = Field(
        5.0,
        gt=0.0,
        description="Live cameras are cut into files this long, each indexed (and checked against the "
        "watchlist) when it ends: a watchlist alert comes at most this long plus the file's processing after a "
        "person's first frame (the 10 s goal); longer files mean fewer, longer tracks.",
    )
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
    motion_gating: bool = Field(True, description="Skip the detector on sampled frames with no motion and no live track.")
    motion_threshold: float = Field(
        0.003, ge=0.0, le=1.0, description="Share of a frame's pixels that must change to count as motion."
    )
    camera_backoff_max: float = Field(60.0, gt=0.0, description="Longest wait between camera reconnect attempts (s).")


class SearchSettings(BaseSettings):
    """Answering queries: result pages, the same-person probability bar, camera links, model refresh."""

    search_max_results: int = Field(200, ge=1, le=10_000, description="Largest page (limit) a search, re-id or trace may ask for.")
    trace_min_score: float = Field(
        0.3,
        gt=0.0,
        lt=1.0,
        description="Probability of being the same person (appearance, cameras and transit) a candidate needs to "
        "be a step of a trace's path (overridable per call); the others are offered as alternatives. 0.3: about "
        "half the best F1 a trace reaches, the threshold that maximises F1 for calibrated probabilities.",
    )
    link_window_seconds: float = Field(
        600.0,
        gt=0.0,
        description="Tracks at most this far apart in time are compared when learning camera links and calibration.",
    )
    evidence_tracks: int = Field(
        20_000, ge=10, description="The most recent tracks the same-person calibration and camera links learn from."
    )
    evidence_learn_minutes: float = Field(
        15.0, gt=0.0, description="Beat relearns the calibration and camera links this often when new tracks arrived."
    )
    model_refresh_seconds: float = Field(
        5.0, ge=0.0, description="Long-running services re-read the active model from the registry this often (s)."
    )


class AlertSettings(BaseSettings):
    """Watchlist alerts and where they are delivered (MQTT, signed webhooks)."""

    watch_text_share: float = Field(
        0.02,
        gt=0.0,
        lt=1.0,
        description="A description on the watchlist alerts on a new track scoring like the best this share of the "
        "site's indexed tracks (its similarity bar is calibrated on them when the entry is made).",
    )
    alert_repeat_seconds: float = Field(
        120.0,
        ge=0.0,
        description="A watchlist entry alerts once for a person who stays on one camera: a match "
        "within this many seconds of the entry's last alert there raises none (0: every matching track alerts).",
    )
    mqtt_url: str | None = Field(
        None,
        description="MQTT broker for watchlist alerts: mqtt://[user:password@]host[:1883] or mqtts://...; unset: no MQTT.",
    )
    mqtt_topic: str = Field("camtrace/alerts", min_length=1, description="MQTT topic watchlist alerts are published to.")
    webhook_urls: str = Field(
        "",
        description="Comma-separated http(s) URLs each watchlist alert is POSTed to as JSON; empty: no webhooks.",
    )
    webhook_secret: str | None = Field(
        None,
        description="Key of the HMAC-SHA256 signature of each webhook body (header X-Camtrace-Signature: "
        "sha256=<hex>); unset: webhooks are not sent.",
    )
    alert_delivery_attempts: int = Field(
        12,
        ge=1,
        description="Tries of one alert delivery (MQTT or a webhook), with a growing wait between them "
        "(10 s doubling up to an hour), before it is logged as failed.",
    )
    alert_delivery_seconds: float = Field(
        15.0,
        gt=0.0,
        description="Beat retries pending alert deliveries this often (s).",
    )


class WorkerSettings(BaseSettings):
    """Distributed mode: the broker, task limits and messages, worker metrics."""

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
    metrics_port: int | None = Field(None, description="Port for a worker's Prometheus metrics; unset: no endpoint.")


class TrainingSettings(BaseSettings):
    """Training, evaluation, promotion and the training schedule."""

    train_crops: TrainCrops = Field(
        TrainCrops.BOTH,
        description="Training on footage with ground truth: its tight boxes, the detector's boxes cut as the pipeline "
        "cuts what it embeds, or both (the model then learns what it will be asked to match).",
    )
    anchor_layer: int = Field(
        -2,
        description="Vision block whose patch tokens `camtrace train --head anchors` builds "
        "its head on (hidden_states: 1..N from the first, -1 the last; before the final norm).",
    )
    anchor_diversity: float = Field(0.1, ge=0.0, description="Weight of the anchor head's diversity term in its training.")
    site_adapt_min_tracks: int = Field(
        0,
        ge=0,
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
    train_min_new_feedback: int = Field(200, ge=1, description="New confirmed re-id matches (feedback) that start a training run.")
    auto_promote: bool = Field(False, description="Promote a model trained by the schedule when it beats the active one.")


class ServiceSettings(BaseSettings):
    """The query service and the command line: ingest roots, upload limits, proxies, logging."""

    ingest_roots: str = Field(
        "", description="Comma-separated folders the HTTP API may ingest from (POST /api/jobs); empty disables HTTP ingest."
    )
    max_upload_mb: int = Field(20, ge=1, description="Largest photo the HTTP API accepts for a photo search (MiB).")
    max_upload_pixels: int = Field(
        40_000_000,
        ge=1,
        le=178_000_000,  # Pillow's own bomb guard refuses more than ~179 million anyway
        description="Most pixels (width x height, read from the header before decoding) a searched photo may have; "
        "the default takes an 8K frame.",
    )
    trusted_proxies: str = Field(
        "",
        description="Comma-separated addresses or networks of reverse proxies whose X-Forwarded-For names the "
        "client; empty: the header is ignored and the connecting address counts.",
    )
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = Field("WARNING", description="Logging level.")
