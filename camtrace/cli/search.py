"""Searching: text and photo search, traces, camera links, counts."""

from __future__ import annotations

import json

import click

from camtrace.cli.base import (
    cli,
    detector_facts,
    embedder_facts,
    format_ts,
    make_services,
)


@cli.command()
@click.argument("text", required=False)
@click.option("--image", "image_path", type=click.Path(), help="Search with a photo instead of a description.")
@click.option("--no-detect", is_flag=True, help="The photo is already a person crop: do not detect first.")
@click.option("--camera", "cameras", multiple=True, help="Only these cameras (repeatable).")
@click.option("--since", help="Only sightings at or after this ISO time.")
@click.option("--until", help="Only sightings at or before this ISO time.")
@click.option("--limit", default=10, show_default=True, type=int, help="Number of tracks to return.")
@click.option("--json", "as_json", is_flag=True, help="Print results as JSON.")
def search(text, image_path, no_detect, cameras, since, until, limit, as_json) -> None:
    """Find the tracks that best match TEXT (or --image PHOTO): one row per track, best first."""
    from camtrace.errors import InputError
    from camtrace.search import SearchService, read_photo

    if bool(text) == bool(image_path):
        raise InputError("give either a description or --image PHOTO (one of them)")
    with make_services() as services:
        service = SearchService(services)
        search_filter = service.make_filter(cameras, since, until)
        if image_path:
            photo = read_photo(image_path, max_pixels=services.settings.max_upload_pixels)
            results = service.by_image(photo, search_filter, limit, detect=not no_detect)
        else:
            results = service.by_text(text, search_filter, limit)
    if as_json:
        click.echo(json.dumps([result.as_dict() for result in results], indent=2))
        return
    if not results:
        click.echo("no matches")
    for rank, result in enumerate(results, 1):
        click.echo(
            f"{rank:>3}. {result.score:.3f}  {result.camera_id:<12} {format_ts(result.ts_start)} .. "
            f"{format_ts(result.ts_end)}  track {result.track_id}\n     {result.crop}"
        )


@cli.command("trace")
@click.argument("track_id")
@click.option(
    "--min-probability",
    type=click.FloatRange(0.0, 1.0),
    help="Probability a candidate needs to be a path step (default CAMTRACE_TRACE_MIN_SCORE).",
)
@click.option("--alternatives", is_flag=True, help="Also list the candidates off the path.")
@click.option("--json", "as_json", is_flag=True, help="Print the trace as JSON.")
def trace_command(track_id: str, min_probability: float | None, alternatives: bool, as_json: bool) -> None:
    """The path of TRACK_ID's person across cameras: one line per step, with its probability and transit."""
    from camtrace.search import SearchService

    with make_services() as services:
        found = SearchService(services).trace(track_id, min_probability=min_probability)
    if as_json:
        click.echo(json.dumps(found.as_dict(), indent=2))
        return
    for step in found.steps if alternatives else found.path:
        transit = "" if step.transit_seconds is None else f"  +{step.transit_seconds:.1f} s"
        if step.expected_transit_seconds is not None:
            transit += f" (usually {step.expected_transit_seconds:.1f} ± {step.transit_spread_seconds:.1f} s)"
        flag = "  IMPLAUSIBLE: seen while the path is elsewhere" if step.implausible else ""
        click.echo(
            f"{step.status:<11} {step.probability:>4.0%}  {step.camera_id:<12} {format_ts(step.ts_start)} .. "
            f"{format_ts(step.ts_end)}  track {step.track_id}{transit}{flag}"
        )


@cli.group("links", invoke_without_command=True)
@click.option("--json", "as_json", is_flag=True, help="Print the links as JSON.")
@click.pass_context
def links(ctx: click.Context, as_json: bool) -> None:
    """The camera links learned from the footage: which cameras people pass between, typical transit, spread,
    evidence. `camtrace links learn` relearns them (and the same-person calibration) now."""
    if ctx.invoked_subcommand is not None:
        return
    from camtrace.search import SearchService

    with make_services() as services:
        evidence = SearchService(services).evidence.current()
    print_links(evidence, as_json)


def print_links(evidence, as_json: bool) -> None:
    rows = [vars(link) for link in evidence.links()]
    if as_json:
        click.echo(json.dumps({"links": rows, "tracks": evidence.tracks, "verdicts": evidence.verdicts}, indent=2))
        return
    if not rows:
        click.echo(f"no camera links learned from {evidence.tracks} tracks yet")
    for row in rows:
        click.echo(
            f"{row['camera_from']:>12} -> {row['camera_to']:<12} typical {row['transit_seconds']:7.1f} s  "
            f"± {row['spread_seconds']:5.1f} s  from {row['evidence']:6.1f} passages"
        )
    click.echo(f"learned from {evidence.tracks} tracks and {evidence.verdicts} verdicts")


@links.command("learn")
@click.option("--json", "as_json", is_flag=True, help="Print the links as JSON.")
def links_learn(as_json: bool) -> None:
    """Relearn the camera links and the same-person calibration from the most recent tracks now."""
    from camtrace.search import SearchService

    with make_services() as services:
        search = SearchService(services)
        search.evidence.learn(progress=lambda message: click.echo(message, err=True))
        evidence = search.evidence.current()
    print_links(evidence, as_json)


@cli.command()
@click.option("--json", "as_json", is_flag=True, help="Print as JSON.")
def stats(as_json: bool) -> None:
    """Counts of cameras, videos, tracks and points (indexed and not yet); the embedding model and its runtime."""
    with make_services() as services:
        counts = dict(services.db.counts())
        model = services.model()
        counts["points"] = model.index.count()
        counts.update(model.index.facts())
        counts.update(embedder_facts(model))
        counts.update(detector_facts(services))
    if as_json:
        click.echo(json.dumps(counts, indent=2))
    else:
        for key, value in counts.items():
            click.echo(f"{key:<14} {'-' if value is None else value}")
