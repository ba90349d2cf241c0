"""camtrace's fixed sets, named once: settings, SQL, API schemas and click choices all use these.

Each is a ``StrEnum``: a member equals its string (``Role.ADMIN == "admin"``), so rows, JSON bodies and
environment variables keep their plain words.
"""

from __future__ import annotations

from enum import StrEnum


class Role(StrEnum):
    """What a user may do; each role may do what the ones before it may."""

    OPERATOR = "operator"
    INVESTIGATOR = "investigator"
    ADMIN = "admin"


class Verdict(StrEnum):
    """An investigator's judgement of two tracks."""

    SAME = "same"
    DIFFERENT = "different"


class JobStatus(StrEnum):
    QUEUED = "queued"
    RUNNING = "running"
    DONE = "done"
    FAILED = "failed"
    SUPERSEDED = "superseded"  # a newer ingest of the same source took every segment


TERMINAL_JOB_STATUSES = (JobStatus.DONE, JobStatus.FAILED, JobStatus.SUPERSEDED)


class SegmentStatus(StrEnum):
    PENDING = "pending"
    DONE = "done"
    FAILED = "failed"


class TraceStatus(StrEnum):
    """A trace step: the seed and confirmed tracks are certain, candidates are on the path, the rest alternatives."""

    SEED = "seed"
    CONFIRMED = "confirmed"
    CANDIDATE = "candidate"
    ALTERNATIVE = "alternative"


class ModelStatus(StrEnum):
    REGISTERED = "registered"
    ACTIVE = "active"
    RETIRED = "retired"


class Runtime(StrEnum):
    AUTO = "auto"  # ONNX Runtime on CPU, PyTorch on CUDA
    TORCH = "torch"
    ONNX = "onnx"


class Precision(StrEnum):
    """The embedder's number format on a GPU."""

    AUTO = "auto"  # bf16, fp16 where bf16 is missing
    BF16 = "bf16"
    FP16 = "fp16"
    FP32 = "fp32"


class OnnxQuantization(StrEnum):
    AUTO = "auto"  # int8
    INT8 = "int8"
    FP32 = "fp32"


class TrainCrops(StrEnum):
    """What training cuts from footage with ground truth."""

    TIGHT = "tight"
    DETECTOR = "detector"
    BOTH = "both"


def values(enum: type[StrEnum]) -> list[str]:
    """The members' strings, in order (click choices, error messages)."""
    return [member.value for member in enum]


class WatchKind(StrEnum):
    """What a watchlist entry looks out for."""

    PERSON = "person"  # a track and the tracks confirmed as the same person
    DESCRIPTION = "description"  # a text


class AlertStatus(StrEnum):
    NEW = "new"
    ACKNOWLEDGED = "acknowledged"
    DISMISSED = "dismissed"  # for a person: also the verdict "different" on the pair


class AlertAction(StrEnum):
    """What a user does with an alert; each leaves the alert in the status of the same name."""

    ACKNOWLEDGE = "acknowledge"
    DISMISS = "dismiss"


class DeliveryStatus(StrEnum):
    PENDING = "pending"  # to be tried (again) at its next_at
    DELIVERED = "delivered"
    FAILED = "failed"  # given up after CAMTRACE_ALERT_DELIVERY_ATTEMPTS


class CaseItemKind(StrEnum):
    TRACK = "track"
    NOTE = "note"
