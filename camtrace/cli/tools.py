"""Getting started: synthetic footage, the demo, tiny models, preparing weights, the settings."""

from __future__ import annotations

from pathlib import Path

import click

from camtrace import validation
from camtrace.cli.base import (
    DEMO_QUERY,
    cli,
    make_services,
    print_summary,
)
from camtrace.settings import load_settings, settings_markdown


@cli.command()
@click.argument("out_dir", type=click.Path(path_type=Path))
@click.option("--cameras", default=3, show_default=True)
@click.option("--identities", default=6, show_default=True)
@click.option("--seconds", default=12.0, show_default=True)
@click.option("--seed", default=0, show_default=True)
@click.option(
    "--site",
    is_flag=True,
    help="A site: cameras along a corridor with consistent transit times, walkers at "
    "1-2 m/s, look-alikes, groups and pillars (give it minutes and dozens of people).",
)
def synth(out_dir: Path, cameras: int, identities: int, seconds: float, seed: int, site: bool) -> None:
    """Write synthetic footage (one video per camera) with ground truth, deterministic from SEED."""
    from camtrace.synthetic import generate_footage

    if site:
        from camtrace.synthetic_site import SiteConfig, generate_site

        footage = generate_site(out_dir, SiteConfig(cameras=cameras, people=identities, seconds=seconds, seed=seed))
    else:
        footage = generate_footage(out_dir, cameras=cameras, identities=identities, seconds=seconds, seed=seed)
    for camera_id, path in footage.videos.items():
        click.echo(f"{camera_id}: {path}")
    click.echo(f"ground truth: {out_dir / 'ground_truth.json'}")


@cli.command()
@click.option("--seed", default=0, show_default=True)
def demo(seed: int) -> None:
    """The main job on embedded defaults: synthetic footage from 3 cameras -> index -> a text search."""
    from camtrace.search import SearchService
    from camtrace.synthetic import generate_footage
    from camtrace.workers.local import ingest_local

    with make_services() as services:
        # Load the models first: without weights the demo stops before writing anything.
        services.detector.load()
        services.encoder.load()
        footage = generate_footage(services.settings.resolved_data_dir / "demo-footage", seed=seed)
        for camera_id, path in footage.videos.items():
            summary = ingest_local(services, str(path), camera_id, footage.start_ts[camera_id])
            print_summary(summary, as_json=False)
        service = SearchService(services)
        click.echo(f'\nsearch "{DEMO_QUERY}":')
        for rank, result in enumerate(service.by_text(DEMO_QUERY, limit=5), 1):
            click.echo(f"{rank:>3}. {result.score:.3f}  {result.camera_id:<10} track {result.track_id}  {result.crop}")


@cli.command("tiny-models")
@click.argument("out_dir", type=click.Path(path_type=Path))
def tiny_models(out_dir: Path) -> None:
    """Build tiny random detector and embedder folders (for trying camtrace without downloads)."""
    from camtrace.detection.tiny_model import build_tiny_yolo
    from camtrace.embedding.tiny_model import build_tiny_siglip

    detector = build_tiny_yolo(out_dir / "detector")
    embedder = build_tiny_siglip(out_dir / "embedder")
    click.echo(f"export CAMTRACE_DETECTOR_MODEL={detector.resolve()}")
    click.echo(f"export CAMTRACE_EMBED_MODEL={embedder.resolve()}")


@cli.command()
def prepare() -> None:
    """Load both models once: fetch weights and build the runtime's exports, before workers start.

    Workers would otherwise build the exports in their first task (once, under a lock).
    """
    with make_services() as services:
        detector, encoder = services.detector, services.encoder
        detector.load()
        encoder.load()
        click.echo(f"detector {detector.weights}: {detector.runtime_label} at {detector.imgsz} px")
        click.echo(f"embedder {encoder.model_version}: {encoder.runtime_label}, dim {encoder.dim}")


@cli.command("settings")
@click.option("--markdown", is_flag=True, help="Print the README's settings table.")
def show_settings(markdown: bool) -> None:
    """Show every setting with its current value."""
    if markdown:
        click.echo(settings_markdown())
        return
    for name, value in load_settings().model_dump().items():
        if name == "webhook_secret" and value:
            value = "***"  # a secret is never shown
        elif isinstance(value, str):
            value = validation.mask_secrets(value)
        click.echo(f"CAMTRACE_{name.upper()}={'' if value is None else value}")
