"""Training, evaluation and the model registry."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import click

from camtrace.cli.base import (
    cli,
    echo_rows,
    make_services,
)
from camtrace.enums import TrainCrops, values
from camtrace.settings import load_settings


@cli.command("train")
@click.option("--dataset", "datasets", multiple=True, required=True, help="Training data as KIND:PATH (repeatable).")
@click.option("--val", help="Validation data as KIND:PATH (default: the val split of the training data).")
@click.option("--out", "out_dir", required=True, type=click.Path(path_type=Path), help="Folder for the trained model.")
@click.option("--base", help="Model to start from (default: CAMTRACE_EMBED_MODEL).")
@click.option("--head-epochs", type=int, default=2, show_default=True, help="Epochs training only the heads.")
@click.option("--epochs", type=int, default=10, show_default=True, help="Epochs training the whole model, after the heads.")
@click.option("--lr", type=float, default=5e-6, show_default=True, help="Learning rate of the whole-model stage.")
@click.option("--head-lr", type=float, default=1e-4, show_default=True, help="Learning rate of the heads stage.")
@click.option("--batch-size", type=int, default=64, show_default=True, help="Images per batch (P identities x K images).")
@click.option("--images-per-identity", type=int, default=4, show_default=True, help="K: images of one identity per batch.")
@click.option("--accumulate", type=int, default=1, show_default=True, help="Batches per optimizer step.")
@click.option("--smoothing", type=float, default=0.1, show_default=True, help="Label smoothing of the contrastive loss.")
@click.option("--text-weight", type=float, default=1.0, show_default=True, help="Weight of the image-text loss.")
@click.option("--image-weight", type=float, default=0.5, show_default=True, help="Weight of the image-image loss.")
@click.option("--text-drop", type=float, default=0.2, show_default=True, help="Chance of dropping each caption feature.")
@click.option("--no-augment", is_flag=True, help="Train without image augmentation and caption feature dropout.")
@click.option(
    "--crops",
    type=click.Choice(values(TrainCrops)),
    help="Footage with ground truth (synthetic:): tight boxes, the boxes CAMTRACE_DETECTOR_MODEL finds, cut "
    "as the pipeline cuts what it embeds, or both (default: CAMTRACE_TRAIN_CROPS).",
)
@click.option(
    "--head",
    type=click.Choice(["anchors"]),
    help="Train only a re-id head on the frozen model: anchors (SAGA-ReID: patch tokens of block "
    "CAMTRACE_ANCHOR_LAYER pooled around text anchors) for --epochs at --head-lr; saved with the model.",
)
@click.option("--checkpoint-every", type=int, default=200, show_default=True, help="Steps between checkpoints.")
@click.option("--resume", is_flag=True, help="Require a checkpoint in --out to resume from (resuming is automatic).")
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--workers", "num_workers", type=int, default=0, show_default=True, help="Data loader processes.")
@click.option("--no-register", is_flag=True, help="Do not add the trained model to the model registry.")
@click.option(
    "--freeze-text/--train-text",
    "freeze_text",
    default=None,
    help="Keep the text tower as it is (default: frozen when adapting to a site: dataset or when no dataset has "
    "captions, trained otherwise).",
)
@click.option("--queue", is_flag=True, help="Send the run to the train worker (distributed mode) instead of training here.")
@click.option("--no-progress", is_flag=True, help="Hide the progress bars.")
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
def train_command(datasets, no_augment, resume, crops, no_register, queue, no_progress, as_json, **options) -> None:
    """Fine-tune the embedding model on person datasets (heads first, then the whole model).

    Datasets: cuhk-pedes:, icfg-pedes:, rstpreid: (JSON), market1501: (folder), csv:, synthetic:
    (a `camtrace synth` folder), feedback: and site: (a camtrace data dir: its confirmed matches; its own
    footage without labels, to adapt the image tower to its cameras). The output is a checkpoint folder
    CAMTRACE_EMBED_MODEL can name.
    """

    from camtrace.training.trainer import TrainConfig, train

    settings = load_settings()
    logging.basicConfig(level=settings.log_level, format="%(levelname)s %(name)s: %(message)s")
    options["out_dir"] = options["out_dir"].resolve()
    if queue:  # the train worker trains, registers and (with CAMTRACE_AUTO_PROMOTE) promotes
        from camtrace.training.schedule import TrainRequest
        from camtrace.workers.jobs import submit_training

        asked = {name: options[name] for name in TrainRequest.model_fields if name in options}
        task_id = submit_training(
            settings, TrainRequest(**{**asked, "datasets": list(datasets), "out_dir": str(options["out_dir"])})
        )
        click.echo(json.dumps({"task_id": task_id}) if as_json else f"queued training run {task_id}")
        return
    # Options are named as the config's fields; the rest comes from the settings.
    config = TrainConfig(
        datasets=list(datasets),
        augment=not no_augment,
        resume=True if resume else None,
        crops=crops or settings.train_crops,
        device=settings.device,
        text_max_length=settings.embed_text_max_length,
        anchor_layer=settings.anchor_layer,
        anchor_diversity=settings.anchor_diversity,
        **options,
    )
    result = train(config, progress=not no_progress)
    model_id = None if no_register else _register(settings, config, result)
    _report(result, model_id, as_json, no_progress)


def _register(settings, config, result) -> int:
    """The trained model in the registry, with what it was trained on and its validation figures."""
    from dataclasses import asdict

    with make_services(settings) as services:
        return services.registry.register(
            result.out_dir,
            parent=config.base or settings.embed_model,
            datasets={"train": list(config.datasets), "val": config.val},
            settings={k: str(v) if isinstance(v, Path) else v for k, v in asdict(config).items()},
            metrics={**(result.val_metrics or {}), **({"dataset": config.val} if config.val else {})},
        )


def _report(result, model_id: int | None, as_json: bool, no_progress: bool) -> None:
    from camtrace.training.evaluate import format_table

    summary = {
        "out_dir": str(result.out_dir),
        "steps": result.steps,
        "resumed_from": result.resumed_from,
        "model_id": model_id,
        "history": result.history,
        "val_metrics": result.val_metrics,
    }
    if as_json:
        click.echo(json.dumps(summary, indent=2))
        return
    if no_progress:  # the progress bars already wrote one line per epoch
        for entry in result.history:
            click.echo(f"epoch {entry['epoch']:>3} ({entry['stage']}): loss {entry['loss']:.4f}")
    if result.val_metrics:
        click.echo(format_table(result.val_metrics))
    registered = f"; registered as model {model_id}" if model_id is not None else ""
    click.echo(f"trained {result.steps} steps -> {result.out_dir}{registered}")


@cli.command("eval")
@click.option("--dataset", required=True, help="Evaluation data as KIND:PATH.")
@click.option("--model", help="Model folder or hub id (default: CAMTRACE_EMBED_MODEL with CAMTRACE_EMBED_PROCESSOR).")
@click.option("--batch-size", type=int, help="Images per forward pass (default: CAMTRACE_EMBED_BATCH_SIZE).")
@click.option(
    "--raw-captions",
    is_flag=True,
    help="Query with the dataset's captions exactly as given, not normalised to comma-separated features.",
)
@click.option("--json", "as_json", is_flag=True, help="Print the figures as JSON.")
@click.option("--out", "out_file", type=click.Path(path_type=Path), help="Also write the figures as JSON to this file.")
@click.option("--no-progress", is_flag=True, help="Hide the progress bar.")
def eval_command(
    dataset: str,
    model: str | None,
    batch_size: int | None,
    raw_captions: bool,
    as_json: bool,
    out_file: Path | None,
    no_progress: bool,
) -> None:
    """Text -> identity (Top-1/5/10, MRR, CMC AUC@20) and image re-id (Top-1/5/10, mAP) figures, in percent.

    Text -> identity queries are every caption of every image of the split, a caption shared by several
    images counted once per image (the model card's count). Captions are normalised to comma-separated
    visual features ("A man wearing a grey hoodie." -> "man, grey hoodie"), as in training, unless
    --raw-captions. The model runs on the runtime and precision the settings choose.
    """
    from camtrace.embedding.encoder import ImageTextEncoder
    from camtrace.training.datasets import load_dataset
    from camtrace.training.evaluate import evaluate_model, format_table

    settings = load_settings()
    data = load_dataset(dataset, raw_captions=raw_captions)
    encoder = ImageTextEncoder.from_settings(settings, model)
    figures = evaluate_model(encoder, data, batch_size=batch_size or settings.embed_batch_size, progress=not no_progress)
    record = {
        "dataset": dataset,
        "model": encoder.model_name,
        "model_version": encoder.model_version,
        "runtime": encoder.runtime_label,
        "captions": "raw" if raw_captions else "normalised",
        **figures,
    }
    if out_file is not None:
        out_file.parent.mkdir(parents=True, exist_ok=True)
        out_file.write_text(json.dumps(record, indent=2))
    if as_json:
        click.echo(json.dumps(record, indent=2))
    else:
        click.echo(
            f"{dataset} with {record['model_version']} on {record['runtime']}, {record['captions']} captions\n"
            f"{format_table(figures)}"
        )


@cli.group()
def models() -> None:
    """The model registry: trained models, promotion (re-index and switch) and rollback."""


def model_line(row: dict) -> str:
    from camtrace.training.registry import metric_value

    metric = load_settings().promote_metric
    value = metric_value(row["metrics"], metric)
    shown = "-" if value is None else f"{value:.1f}"
    return (
        f"{row['id']:>4}  {row['status']:<10} {metric} {shown:>5}  {row['model_version']}  "
        f"index {row['index_name'] or '-'}  {row['folder']}"
    )


@models.command("list")
@click.option("--json", "as_json", is_flag=True, help="Print as JSON.")
def models_list(as_json: bool) -> None:
    """Registered models, oldest first, with status, validation figure and index."""
    with make_services() as services:
        entries = services.registry.list()
    echo_rows([entry.as_dict() for entry in entries], as_json, model_line)


@models.command("promote")
@click.argument("model_id", type=int)
@click.option("--force", is_flag=True, help="Promote even if it does not beat the active model.")
@click.option("--no-progress", is_flag=True, help="Hide the progress bar.")
@click.option("--json", "as_json", is_flag=True, help="Print the outcome as JSON.")
def models_promote(model_id: int, force: bool, no_progress: bool, as_json: bool) -> None:
    """Re-index with model MODEL_ID and switch to it, if it beats the active model by CAMTRACE_PROMOTE_MARGIN."""
    from camtrace.training.promotion import promote
    from camtrace.workers.jobs import reindex_runner

    with make_services() as services:
        result = promote(services, model_id, force=force, progress=not no_progress, run_elsewhere=reindex_runner(services))
    if as_json:
        click.echo(json.dumps(result.as_dict(), indent=2))
        return
    click.echo(result.comparison.reason + (" (forced)" if result.forced else ""))
    click.echo(
        f"model {result.model_id} active: index {result.index_name} holds {result.reindex.points} points "
        f"({result.reindex.embedded} embedded in {result.reindex.seconds:.1f} s)"
    )
    if result.reindex.missing_crops:
        click.echo(f"{len(result.reindex.missing_crops)} crop(s) missing from the crop store were not re-indexed", err=True)


@models.command("rollback")
@click.option("--no-progress", is_flag=True, help="Hide the progress bar.")
def models_rollback(no_progress: bool) -> None:
    """Switch back to the previously active model and its index."""
    from camtrace.training.promotion import rollback
    from camtrace.workers.jobs import reindex_runner

    with make_services() as services:
        restored = rollback(services, progress=not no_progress, run_elsewhere=reindex_runner(services))
    if restored is None:
        click.echo(f"no registered model active: {services.settings.embed_model} (CAMTRACE_EMBED_MODEL) serves again")
    else:
        click.echo(f"model {restored.id} active again: index {restored.index_name}")
