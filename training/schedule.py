"""Training runs on a schedule or on demand: decide, train, evaluate, register, maybe promote.

Plain functions; the ``camtrace.train`` Celery task (workers/tasks.py) is a
thin shell over them. What should run elsewhere comes out as typed values and
the workers' shell sends it: a ``TrainRequest`` (``camtrace train --queue``)
and a promotion's re-index batches (``ReindexWork``, through ``run_elsewhere``).
Beat sends that task every CAMTRACE_TRAIN_INTERVAL_SECONDS; the worker then
trains only when enough new labelled data has arrived since the newest
registered model:

- new datasets: entries under CAMTRACE_TRAINING_DATA_DIR, laid out as
  ``<kind>/<entry>`` (``market1501/Market-1501``, ``csv/labels.csv``,
  ``synthetic/batch-07``), modified after the newest model was registered;
- new confirmed matches: investigators' "same person" verdicts (the
  ``feedback`` table) given after it; while any exist, the ``feedback`` dataset
  of this data dir (their stored crops) joins the training data;
- new footage (with CAMTRACE_SITE_ADAPT_MIN_TRACKS): that many tracks seen since
  it; the ``site`` dataset of this data dir (its own tracks, no labels) joins the
  training data, and its held-out people judge the promotion unless
  CAMTRACE_VAL_DATASET names another set.

The check runs on the train worker rather than in beat, so a check queued
behind a running training sees that run's model and does not train again.
"""

from __future__ import annotations

import logging
import os
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Literal

from pydantic import BaseModel, ConfigDict

from camtrace.enums import Verdict
from camtrace.errors import ConfigError
from camtrace.services import Services

if TYPE_CHECKING:
    from camtrace.training.promotion import ReindexRunner

log = logging.getLogger(__name__)


class TrainRequest(BaseModel):
    """What a training run is asked to do: the body of a ``camtrace.train`` message."""

    model_config = ConfigDict(extra="forbid")

    datasets: list[str]
    val: str | None = None  # default: CAMTRACE_VAL_DATASET
    base: str | None = None  # default: the active model's folder, else CAMTRACE_EMBED_MODEL
    out_dir: str | None = None  # default: <data dir>/models/<time>
    epochs: int | None = None
    head_epochs: int | None = None
    lr: float | None = None
    head_lr: float | None = None
    batch_size: int | None = None
    seed: int | None = None
    head: Literal["anchors"] | None = None  # train only a re-id head on the frozen base (camtrace train --head)
    freeze_text: bool | None = None  # default: frozen only when no dataset has captions
    promote: bool | None = None  # default: CAMTRACE_AUTO_PROMOTE


@dataclass
class TrainingDecision:
    due: bool
    reason: str
    since: float | None  # when the newest model was registered (None: never)
    datasets: list[str] = field(default_factory=list)  # every dataset found (what a run trains on)
    new_datasets: list[str] = field(default_factory=list)
    new_feedback: int = 0
    new_tracks: int = 0
    val: str | None = None  # the validation set the run should use (None: CAMTRACE_VAL_DATASET)


@dataclass
class TrainingOutcome:
    model_id: int
    out_dir: str
    metrics: dict | None
    promoted: bool
    promotion_note: str | None


# ---------------------------------------------------------------------------
# Is there enough new data?
# ---------------------------------------------------------------------------
def dataset_entries(folder: Path) -> list[tuple[str, float]]:
    """(``KIND:PATH``, last modified) of every dataset under ``folder/<kind>/``.

    An entry's time is the newest of the entry and its direct children, so a
    file added to a dataset folder counts as new data. Folders that are no
    dataset kind are skipped with a warning.
    """
    from camtrace.training.datasets import KINDS

    if not folder.is_dir():
        raise ConfigError(f"CAMTRACE_TRAINING_DATA_DIR {folder} is not a folder; create it or unset the setting")
    found = []
    for kind_dir in sorted(p for p in folder.iterdir() if p.is_dir() and not p.name.startswith(".")):
        if kind_dir.name.lower() not in KINDS:
            log.warning("training data folder %s is not a dataset kind (%s); skipped", kind_dir, ", ".join(KINDS))
            continue
        for entry in sorted(p for p in kind_dir.iterdir() if not p.name.startswith(".")):
            stamps = [entry.stat().st_mtime]
            if entry.is_dir():
                with os.scandir(entry) as children:
                    stamps.extend(child.stat().st_mtime for child in children)
            found.append((f"{kind_dir.name.lower()}:{entry}", max(stamps)))
    return found


def training_due(services: Services) -> TrainingDecision:
    """Whether a scheduled run should train now, and on what."""
    settings = services.settings
    since = services.registry.last_created_at()
    entries = dataset_entries(Path(settings.training_data_dir)) if settings.training_data_dir else []
    datasets = [spec for spec, _ in entries]
    new = [spec for spec, stamp in entries if since is None or stamp > since]
    confirmed = services.db.feedback_pairs(verdict=Verdict.SAME)
    feedback = sum(1 for row in confirmed if since is None or row.created_at > since)
    if confirmed:  # the investigators' confirmed matches train with the rest
        datasets.append(f"feedback:{settings.resolved_data_dir}")
    tracks = services.db.tracks_since(since) if settings.site_adapt_min_tracks else 0
    site = f"site:{settings.resolved_data_dir}"
    decision = TrainingDecision(False, "", since, datasets, new, feedback, tracks)
    if settings.site_adapt_min_tracks and tracks >= settings.site_adapt_min_tracks:
        decision.datasets = [*datasets, site]
        decision.val = settings.val_dataset or site
        decision.due = True
        decision.reason = f"{tracks} new track(s) to adapt to (threshold {settings.site_adapt_min_tracks})"
        return decision
    if not datasets:
        decision.reason = "no training datasets (set CAMTRACE_TRAINING_DATA_DIR and put datasets under <kind>/)"
    elif len(new) >= settings.train_min_new_datasets:
        decision.due = True
        decision.reason = f"{len(new)} new dataset(s) (threshold {settings.train_min_new_datasets})"
    elif feedback >= settings.train_min_new_feedback:
        decision.due = True
        decision.reason = f"{feedback} new confirmed match(es) (threshold {settings.train_min_new_feedback})"
    else:
        decision.reason = (
            f"not enough new data: {len(new)}/{settings.train_min_new_datasets} new dataset(s), "
            f"{feedback} new confirmed match(es)"
            f"/{settings.train_min_new_feedback}"
        )
    return decision


# ---------------------------------------------------------------------------
# Training, registering, promoting
# ---------------------------------------------------------------------------
def train_config(services: Services, request: TrainRequest):
    """The TrainConfig of a request, with this deployment's defaults filled in."""
    from camtrace.training.trainer import TrainConfig

    settings = services.settings
    active = services.registry.active()
    base, processor = request.base, None
    if base is None:
        base, processor = (active.folder, active.processor) if active else (settings.embed_model, None)
    out_dir = request.out_dir or str(settings.resolved_data_dir / "models" / time.strftime("%Y%m%d-%H%M%S"))
    overrides = {
        name: value
        for name in ("epochs", "head_epochs", "lr", "head_lr", "batch_size", "seed", "freeze_text")
        if (value := getattr(request, name)) is not None
    }
    return TrainConfig(
        datasets=list(request.datasets),
        out_dir=Path(out_dir),
        val=request.val or settings.val_dataset,
        base=base,
        processor=processor,
        device=settings.device,
        text_max_length=settings.embed_text_max_length,
        crops=settings.train_crops,
        head=request.head,
        anchor_layer=settings.anchor_layer,
        anchor_diversity=settings.anchor_diversity,
        **overrides,
    )


def run_training(
    services: Services, request: TrainRequest, *, progress: bool = False, run_elsewhere: ReindexRunner | None = None
) -> TrainingOutcome:
    """Train, register the model with its validation results and, when allowed, promote it (its re-index
    here, or through ``run_elsewhere``)."""
    from camtrace.training.promotion import PromotionRefused, promote
    from camtrace.training.trainer import train

    config = train_config(services, request)
    active = services.registry.active()
    result = train(config, progress=progress)
    metrics = dict(result.val_metrics or {})
    if metrics and config.val:
        metrics["dataset"] = config.val
    settings_record = {k: str(v) if isinstance(v, Path) else v for k, v in asdict(config).items()}
    model_id = services.registry.register(
        result.out_dir,
        parent=active.id if active else config.base,
        datasets={"train": list(config.datasets), "val": config.val},
        settings=settings_record,
        metrics=metrics,
    )
    wants_promotion = services.settings.auto_promote if request.promote is None else request.promote
    promoted, note = False, None
    if wants_promotion:
        try:
            outcome = promote(services, model_id, progress=progress, run_elsewhere=run_elsewhere)
            promoted, note = True, outcome.comparison.reason
        except PromotionRefused as exc:
            note = str(exc)
    log.info("trained model %s in %s%s", model_id, result.out_dir, f" ({note})" if note else "")
    return TrainingOutcome(model_id, str(result.out_dir), metrics or None, promoted, note)


def maybe_train(
    services: Services, *, progress: bool = False, run_elsewhere: ReindexRunner | None = None
) -> TrainingOutcome | None:
    """The scheduled run: train on every dataset found when enough new data has arrived, else nothing."""
    decision = training_due(services)
    if not decision.due:
        log.info("no training: %s", decision.reason)
        return None
    log.info("training: %s", decision.reason)
    return run_training(
        services, TrainRequest(datasets=decision.datasets, val=decision.val), progress=progress, run_elsewhere=run_elsewhere
    )
