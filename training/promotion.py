"""Promotion, re-index and rollback of registered embedding models (blue/green).

``promote`` checks that a registered model beats the active one on the
validation figure CAMTRACE_PROMOTE_METRIC by CAMTRACE_PROMOTE_MARGIN points
(or is forced), builds the model's own index by re-embedding every stored crop
(the crop store keeps each indexed crop's JPEG; the SQL detections list the
points and their payload), then switches the registry's active pointer (and,
on a Qdrant server, the alias) in one step. Searches keep using the old model
and its index until the switch, and each search takes one model's encoder
with that model's index (``Services.model()``), so vectors of two models are
never mixed. The old index stays, and ``rollback`` switches back to it.

A re-index is resumable: points already in the target index are skipped, so
a promotion interrupted half-way continues where it stopped. Batches are
embedded here, or handed as ``ReindexWork`` to a runner the caller passes
(``run_elsewhere``): the workers' shell passes one when a broker is
configured, which sends them as ``camtrace.reindex`` tasks to the embed
workers. This module sends nothing itself.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field

import cv2
import numpy as np
from tqdm import tqdm

from camtrace.enums import ModelStatus
from camtrace.errors import InputError, NotFoundError, StorageError
from camtrace.services import Services
from camtrace.storage import CropStore, Database, VectorIndex, open_index
from camtrace.storage.sql import Detection
from camtrace.training.registry import ModelEntry, ModelRegistry, metric_value
from camtrace.types import IndexPoint, PointPayload

log = logging.getLogger(__name__)

SITE_METRIC = "image_reid.map"  # what a site's held-out people (no captions) judge a model on
# Catch-up passes before the switch: each re-embeds what ingest added during the previous one.
MAX_CATCH_UP_PASSES = 5


class PromotionRefused(InputError):
    """The candidate does not beat the active model by the required margin."""


@dataclass
class Comparison:
    metric: str
    margin: float
    candidate: float | None
    baseline: float | None
    baseline_model: int | None  # registry id of the model compared with (None: none registered)
    passed: bool
    reason: str


@dataclass
class ReindexSummary:
    model_id: int | None  # None: the CAMTRACE_EMBED_MODEL model
    index_name: str
    points: int  # points the index holds for the SQL detections
    embedded: int  # points embedded by this run (the rest were there already)
    missing_crops: list[str] = field(default_factory=list)  # detections whose crop JPEG is gone
    removed: int = 0  # points whose detection retention deleted since the index was last in service
    seconds: float = 0.0


@dataclass(frozen=True)
class ReindexWork:
    """Points that model ``model_id`` (None: the configured one) must re-embed into its index, in batches:
    what a re-index asks a runner to do elsewhere (one ``camtrace.reindex`` task per batch)."""

    model_id: int | None
    batches: list[list[str]]  # point ids

    @property
    def points(self) -> int:
        return sum(len(batch) for batch in self.batches)


# Does the work elsewhere and returns the points embedded there, advancing the progress bar as they come in.
ReindexRunner = Callable[[ReindexWork, tqdm], int]


@dataclass
class PromotionResult:
    model_id: int
    previous_model_id: int | None
    index_name: str
    forced: bool
    comparison: Comparison
    reindex: ReindexSummary

    def as_dict(self) -> dict:
        return asdict(self)


# ---------------------------------------------------------------------------
# Comparing
# ---------------------------------------------------------------------------
def compare(
    candidate_id: int,
    mine: float | None,
    baseline_id: int | None,
    theirs: float | None,
    metric: str,
    margin: float,
    baseline_label: str | None = None,
) -> Comparison:
    """Does the candidate's figure beat the baseline's by ``margin`` points?"""
    other = baseline_label or f"model {baseline_id}"
    if mine is None or theirs is None:
        which = " and ".join(name for name, value in ((f"model {candidate_id}", mine), (other, theirs)) if value is None)
        return Comparison(
            metric,
            margin,
            mine,
            theirs,
            baseline_id,
            False,
            f"no {metric} for {which}; set CAMTRACE_VAL_DATASET to evaluate on a validation set",
        )
    passed = mine >= theirs + margin
    verdict = "beats" if passed else "does not beat"
    return Comparison(
        metric,
        margin,
        mine,
        theirs,
        baseline_id,
        passed,
        f"model {candidate_id} {verdict} {other} on {metric}: {mine:.2f} vs {theirs:.2f} (needs +{margin:g} points)",
    )


def baseline_model(services: Services) -> ModelEntry | None:
    """The registered model that serves now: the active one, else the entry whose weights
    CAMTRACE_EMBED_MODEL names (registered but never promoted)."""
    registry = services.registry
    active = registry.active()
    if active is not None:
        return active
    return registry.by_version(services.model().encoder.model_version)


def validation_spec(services: Services, candidate: ModelEntry) -> str | None:
    """The validation set both models are judged on: CAMTRACE_VAL_DATASET, else the one the
    candidate's stored results name, else its training run's val dataset."""
    datasets = candidate.datasets if isinstance(candidate.datasets, Mapping) else {}
    for spec in (services.settings.val_dataset, candidate.metrics.get("dataset"), datasets.get("val")):
        if isinstance(spec, str) and spec:
            return spec
    return None


def evaluate_on(services: Services, encoder, spec: str) -> dict:
    from camtrace.training.datasets import load_dataset
    from camtrace.training.evaluate import evaluate_model

    return evaluate_model(encoder, load_dataset(spec), batch_size=services.settings.embed_batch_size)


def figure(services: Services, entry: ModelEntry, metric: str, spec: str | None) -> float | None:
    """``entry``'s ``metric`` on the validation set ``spec``: the stored figure when it was measured
    there (or where is unknown), else evaluated now. Results of a model that had none are stored."""
    stored, measured_on = served_figure(entry.metrics, metric), entry.metrics.get("dataset")
    if stored is not None and (spec is None or measured_on in (None, spec)):
        return stored
    if spec is None:
        return None
    results = evaluate_on(services, services.encoder_for(entry), spec)
    if stored is None:
        services.registry.set_metrics(entry.id, {**entry.metrics, **results, "dataset": spec})
    return served_figure(results, metric)


def served_figure(metrics: Mapping | None, metric: str) -> float | None:
    """``metric`` as the model would serve it: a model with an anchor re-id head answers photo queries with the
    head's vectors, so its ``image_reid.*`` figures are those of the head (``image_reid_head.*``)."""
    section, _, name = metric.partition(".")
    if section == "image_reid" and isinstance(metrics, Mapping) and isinstance(metrics.get("image_reid_head"), Mapping):
        return metric_value(metrics, f"image_reid_head.{name}")
    return metric_value(metrics, metric)


def judge(services: Services, candidate: ModelEntry, baseline: ModelEntry | None) -> Comparison:
    """Compare the candidate with the model in service on CAMTRACE_PROMOTE_METRIC."""
    settings = services.settings
    metric, margin = settings.promote_metric, settings.promote_margin
    if "." not in metric:
        raise InputError(f"CAMTRACE_PROMOTE_METRIC {metric!r} must be section.metric, e.g. text_to_identity.top1")
    spec = validation_spec(services, candidate)
    if spec is not None and spec.startswith("site:") and not metric.startswith("image_reid."):
        # A site's held-out people have no captions: they judge re-id, never the text figure.
        metric = SITE_METRIC
    mine = figure(services, candidate, metric, spec)
    if baseline is not None:
        return compare(candidate.id, mine, baseline.id, figure(services, baseline, metric, spec), metric, margin)
    if spec is None:
        return Comparison(
            metric,
            margin,
            mine,
            None,
            None,
            True,
            "no registered model serves now and no validation set is known (CAMTRACE_VAL_DATASET): nothing to beat",
        )
    # The configured model serves and was never registered: measure it on the same set.
    theirs = served_figure(evaluate_on(services, services.encoder_for(None), spec), metric)
    return compare(candidate.id, mine, None, theirs, metric, margin, "the configured model (CAMTRACE_EMBED_MODEL)")


# ---------------------------------------------------------------------------
# Re-embedding
# ---------------------------------------------------------------------------
def reembed(
    encoder,
    index: VectorIndex,
    crops: CropStore,
    rows: Sequence[Detection],
    model_version: str,
    reid_index: VectorIndex | None = None,
) -> tuple[int, list[str]]:
    """Embed the stored crops of ``rows`` with ``encoder`` and upsert them into ``index`` (and, for a model with an
    anchor head, their re-id vectors into ``reid_index``, first).

    Payloads come from the SQL rows (the payload of DESIGN.md), with this
    model's version. Returns (points written, point ids whose crop is missing).
    """
    images, kept, missing = [], [], []
    for row in rows:
        try:
            data = crops.get(row.crop_key)
        except NotFoundError:
            missing.append(row.point_id)
            continue
        image = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
        if image is None:
            missing.append(row.point_id)
            continue
        images.append(cv2.cvtColor(image, cv2.COLOR_BGR2RGB))
        kept.append(row)
    if missing:
        log.warning("%d crop(s) missing from the crop store; their points cannot be re-embedded", len(missing))
    if not kept:
        return 0, missing
    reid_vectors = None
    if reid_index is not None:
        vectors, reid_vectors = encoder.encode_image_pair(images)
    else:
        vectors = encoder.encode_images(images)
    points = [
        IndexPoint(
            id=row.point_id,
            vector=vector,
            payload=PointPayload(
                row.camera_id,
                row.video_id,
                row.track_id,
                float(row.ts),
                int(row.frame_index),
                (float(row.x1), float(row.y1), float(row.x2), float(row.y2)),
                float(row.det_conf),
                row.crop_key,
                model_version,
            ).as_dict(),
        )
        for row, vector in zip(kept, vectors, strict=True)
    ]
    if reid_vectors is not None and reid_index is not None:
        reid_index.upsert([IndexPoint(id=p.id, vector=v, payload=p.payload) for p, v in zip(points, reid_vectors, strict=True)])
    index.upsert(points)
    return len(points), missing


def reid_index_of(services: Services, encoder) -> VectorIndex | None:
    """The re-id index (camtrace.storage.reid) of a model with an anchor head; None without one."""
    if not getattr(encoder, "has_reid_head", False):
        return None
    from camtrace.storage.reid import open_reid_index

    return open_reid_index(services.settings, encoder.model_version, encoder.reid_dim)


def missing_batches(db: Database, index: VectorIndex, batch_size: int) -> list[list[Detection]]:
    """The detections whose point the index lacks, in batches."""
    batches: list[list[Detection]] = []
    pending: list[Detection] = []
    with index.session():
        for page in db.detection_pages(max(batch_size, 500)):
            present = index.existing_ids([row.point_id for row in page])
            pending.extend(row for row in page if row.point_id not in present)
            while len(pending) >= batch_size:
                batches.append(pending[:batch_size])
                pending = pending[batch_size:]
    if pending:
        batches.append(pending)
    return batches


def remove_deleted_points(db: Database, index: VectorIndex) -> int:
    """Delete points whose SQL detection is gone (retention runs on the index in service only,
    so an index kept for rollback still holds them); returns how many."""
    known: set[str] = set()
    for page in db.detection_pages(5000):
        known.update(row.point_id for row in page)
    stale = sorted(index.point_ids() - known)
    for start in range(0, len(stale), 1000):
        index.delete(stale[start : start + 1000])
    return len(stale)


def open_model_index(services: Services, entry: ModelEntry | None, encoder=None):
    """(encoder, index) of a registered model (None: CAMTRACE_EMBED_MODEL); the index is created when missing."""
    if encoder is None:
        encoder = services.encoder_for(entry)
    encoder.load()
    return encoder, open_index(services.settings, encoder.model_version, encoder.dim)


def reindex(
    services: Services,
    entry: ModelEntry | None,
    *,
    progress: bool = True,
    in_service: bool = False,
    encoder=None,
    run_elsewhere: ReindexRunner | None = None,
) -> ReindexSummary:
    """Fill the index of ``entry``'s model (None: CAMTRACE_EMBED_MODEL) with every SQL detection's
    crop, embedded by that model. Repeats until a pass finds nothing missing (ingest may add
    points meanwhile). An index out of service also loses points without a detection (none
    is written there before its SQL row) and, when embedding here, stays open throughout
    (opening an Edge shard costs up to a second at 100k points); one ``in_service`` is opened
    per call, so searches in other processes wait for one batch at most. With ``run_elsewhere``
    each pass's batches go to it as one ``ReindexWork`` and other processes write, so the
    index is never held open here."""
    started = time.perf_counter()
    settings = services.settings
    encoder, index = open_model_index(services, entry, encoder)
    model_id = None if entry is None else entry.id
    summary = ReindexSummary(model_id, index.name, 0, 0)
    label = "configured model" if entry is None else f"model {entry.id}"
    bar = tqdm(unit="crop", desc=f"re-index {label}", disable=not progress)
    hold_open = contextlib.nullcontext() if in_service or run_elsewhere else index.session()
    try:
        with hold_open:
            for attempt in range(MAX_CATCH_UP_PASSES + 1):
                batches = _missing_with_crops(services, index, settings.reindex_batch_size, summary)
                if not batches:
                    break
                if attempt == MAX_CATCH_UP_PASSES:
                    # Never switch to an index that lacks points: searches would lose them.
                    raise StorageError(
                        f"re-index of {label}: {sum(len(b) for b in batches)} point(s) still missing after "
                        f"{MAX_CATCH_UP_PASSES} passes (ingest outpacing it, or failing batches: see "
                        "`camtrace jobs`); nothing was switched, run the promotion again"
                    )
                bar.total = (bar.total or 0) + sum(len(b) for b in batches)
                bar.refresh()
                if run_elsewhere is not None:
                    work = ReindexWork(model_id, [[row.point_id for row in batch] for batch in batches])
                    summary.embedded += run_elsewhere(work, bar)
                    continue
                _reembed_here(services, encoder, index, batches, summary, bar)
            if not in_service:
                summary.removed = _remove_deleted_here(services, encoder, index)
            summary.points = index.count()
    finally:
        bar.close()
    if entry is not None:
        services.registry.set_index(entry.id, index.name)
    summary.seconds = round(time.perf_counter() - started, 2)
    return summary


def _missing_with_crops(services: Services, index: VectorIndex, batch_size: int, summary: ReindexSummary) -> list:
    """Batches of the detections ``index`` lacks; a crop gone from the store (deleted by hand) can never be
    embedded: it is reported in ``summary.missing_crops`` and skipped."""
    batches = []
    for batch in missing_batches(services.db, index, batch_size):
        gone = [r.point_id for r in batch if r.point_id in summary.missing_crops or not services.crops.exists(r.crop_key)]
        summary.missing_crops.extend(p for p in gone if p not in summary.missing_crops)
        if kept := [r for r in batch if r.point_id not in gone]:
            batches.append(kept)
    return batches


def _remove_deleted_here(services: Services, encoder, index: VectorIndex) -> int:
    """``remove_deleted_points`` on the model's index, and on its re-id index where it has an anchor head."""
    reid_index = reid_index_of(services, encoder)
    if reid_index is not None:
        try:
            remove_deleted_points(services.db, reid_index)
        finally:
            reid_index.close()
    return remove_deleted_points(services.db, index)


def _reembed_here(
    services: Services, encoder, index: VectorIndex, batches: list[list[Detection]], summary: ReindexSummary, bar: tqdm
) -> None:
    """One catch-up pass embedded in this process (with the model's re-id index, where it has an anchor head)."""
    reid_index = reid_index_of(services, encoder)
    try:
        for batch in batches:
            with index.session():
                written, missing = reembed(encoder, index, services.crops, batch, encoder.model_version, reid_index)
            summary.embedded += written
            summary.missing_crops.extend(missing)
            bar.update(len(batch))
    finally:
        if reid_index is not None:
            reid_index.close()


def reindex_batch(services: Services, job_id: str, model_id: int | None, point_ids: Sequence[str], encoders: dict) -> int:
    """One ``camtrace.reindex`` task: re-embed these points with model ``model_id`` (None: the
    configured one) into its index. ``encoders`` keeps one encoder per model in the worker process."""
    entry = None if model_id is None else services.registry.get(model_id)
    encoder, index = open_model_index(services, entry, encoders.get(model_id))
    encoders[model_id] = encoder
    reid_index = reid_index_of(services, encoder)
    with index.session():
        present = index.existing_ids(list(point_ids))
        rows = [row for row in services.db.detections_by_ids(list(point_ids)) if row.point_id not in present]
        try:
            written, missing = reembed(encoder, index, services.crops, rows, encoder.model_version, reid_index)
        finally:
            if reid_index is not None:
                reid_index.close()
    # frames counts the crops that vanished since the batch was planned (a re-index has no frames).
    services.db.increment_job(job_id, segments_done=1, crops_indexed=written + len(present), frames=len(missing))
    return written


# ---------------------------------------------------------------------------
# Switching
# ---------------------------------------------------------------------------
def switch_to(services: Services, entry: ModelEntry, index_name: str) -> None:
    """Point the registry (and a server's alias) at ``entry``'s index: the atomic step."""
    services.registry.set_active(entry.id, index_name)
    if services.settings.qdrant_url:
        _, index = open_model_index(services, entry)
        index.activate()


def promote(
    services: Services,
    model_id: int | str,
    *,
    force: bool = False,
    progress: bool = True,
    run_elsewhere: ReindexRunner | None = None,
) -> PromotionResult:
    """Check, re-index (here, or through ``run_elsewhere``) and switch to a registered model (see the
    module docstring)."""
    settings = services.settings
    registry: ModelRegistry = services.registry
    candidate = registry.get(model_id)
    baseline = baseline_model(services)
    if baseline is not None and baseline.id == candidate.id:
        how = "active" if candidate.status == ModelStatus.ACTIVE else "the weights CAMTRACE_EMBED_MODEL names"
        raise InputError(f"model {candidate.id} is already the model in service ({how}); nothing to promote")
    comparison = judge(services, candidate, baseline)
    if not comparison.passed and not force:
        raise PromotionRefused(f"not promoted: {comparison.reason}; use --force to promote anyway")
    encoder = services.encoder_for(candidate)  # loaded once for both passes
    summary = reindex(services, candidate, progress=progress, encoder=encoder, run_elsewhere=run_elsewhere)
    switch_to(services, candidate, summary.index_name)
    # Processes still holding the old model write to its index until they re-read the
    # pointer; one more pass after that picks up what they wrote.
    if settings.model_refresh_seconds:
        time.sleep(settings.model_refresh_seconds + 1.0)
    late = reindex(
        services, registry.get(candidate.id), progress=False, in_service=True, encoder=encoder, run_elsewhere=run_elsewhere
    )
    summary.embedded += late.embedded
    summary.points = late.points
    summary.missing_crops.extend(p for p in late.missing_crops if p not in summary.missing_crops)
    return PromotionResult(
        model_id=candidate.id,
        previous_model_id=baseline.id if baseline is not None and baseline.status == ModelStatus.ACTIVE else None,
        index_name=summary.index_name,
        forced=force and not comparison.passed,
        comparison=comparison,
        reindex=summary,
    )


def rollback(services: Services, *, progress: bool = True, run_elsewhere: ReindexRunner | None = None) -> ModelEntry | None:
    """Switch back to the previously active model and its index (None: back to CAMTRACE_EMBED_MODEL).

    Crops ingested since the promotion are embedded into the restored index
    first, so nothing indexed meanwhile disappears from search.
    """
    registry = services.registry
    target = registry.rollback_target()
    # Before the switch: searches never miss a point.
    reindex(services, target, progress=progress, run_elsewhere=run_elsewhere)
    restored = registry.rollback()
    if services.settings.qdrant_url:
        open_model_index(services, restored)[1].activate()
    return restored
