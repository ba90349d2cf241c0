"""The embedded vector index: layout migration, maintenance, the host's owner process."""

from __future__ import annotations

import contextlib
from pathlib import Path

import click

from camtrace.cli.base import (
    cli,
    echo_rows,
)
from camtrace.settings import Settings, load_settings


@cli.group("index")
def index_group() -> None:
    """The embedded vector index (Qdrant Edge): its layout and its maintenance."""


def embedded_index_dir(settings: Settings) -> Path:
    from camtrace.errors import InputError

    if settings.qdrant_url:
        raise InputError(
            "CAMTRACE_QDRANT_URL is set: the Qdrant server indexes its collections itself and they are created "
            "compact; these commands work on the embedded index (unset CAMTRACE_QDRANT_URL to reach it)"
        )
    return settings.index_dir


@index_group.command("migrate")
@click.option(
    "--layout", type=click.Choice(["compact", "exact"]), default=None, help="Target layout; default CAMTRACE_INDEX_LAYOUT."
)
@click.option("--no-progress", is_flag=True, help="Hide the progress bars.")
def index_migrate(layout: str | None, no_progress: bool) -> None:
    """Move every shard of the embedded index to a layout: copy each point and payload into a new shard,
    verify the counts, then swap; on failure the old shard stays. Other processes wait for the index meanwhile."""
    from tqdm import tqdm

    from camtrace.storage.edge import edge_shards

    settings = load_settings()
    layout = layout or settings.index_layout
    shards = edge_shards(embedded_index_dir(settings))
    if not shards:
        click.echo(f"no shards under {settings.index_dir}: nothing to migrate")
    for shard in shards:
        if shard.layout == layout:
            click.echo(f"{shard.name}: already {layout}")
            continue
        bar = tqdm(unit="point", desc=f"{shard.name} -> {layout}", disable=no_progress)

        def advance(done: int, total: int, bar=bar) -> None:
            bar.total = total
            bar.update(done - bar.n)

        try:
            copied = shard.migrate(layout, progress=advance)
        finally:
            bar.close()
            shard.close()
        click.echo(f"{shard.name}: {copied} points now in the {layout} layout")


@index_group.command("serve")
def index_serve() -> None:
    """Own the embedded index on this host: keep its shards open and answer the other processes' calls on a
    Unix socket in the index dir (they use it on their own), maintaining the shards when idle. Stop with Ctrl-C
    or SIGTERM."""
    import signal
    import threading

    from camtrace.storage.owner import IndexOwner

    settings = load_settings()
    owner = IndexOwner(embedded_index_dir(settings), layout=settings.index_layout, maintain_seconds=settings.index_maintain_seconds)
    # shutdown() waits for the serving loop, which runs in this (the main) thread: ask from another.
    signal.signal(signal.SIGTERM, lambda *_: threading.Thread(target=owner.shutdown, daemon=True).start())
    click.echo(f"owning the index in {settings.index_dir} on {owner.path}", err=True)
    with contextlib.suppress(KeyboardInterrupt):
        owner.serve_forever()


@index_group.command("maintain")
@click.option("--json", "as_json", is_flag=True, help="Print as JSON.")
def index_maintain(as_json: bool) -> None:
    """Index the points written since the last maintenance, one bounded step per shard (beat does this on its own)."""
    from camtrace.storage.edge import edge_shards

    settings = load_settings()
    rows = []
    for shard in edge_shards(embedded_index_dir(settings)):
        try:
            done = shard.maintain()
        finally:
            shard.close()
        rows.append(
            {
                "shard": shard.name,
                "layout": done.layout,
                "points": done.points,
                "newly_indexed": done.newly_indexed,
                "unindexed": done.unindexed,
                "segments": done.segments,
                "seconds": round(done.seconds, 2),
            }
        )
    echo_rows(
        rows,
        as_json,
        lambda r: (
            f"{r['shard']}: {r['layout']}, {r['points']} points, {r['newly_indexed']} newly indexed in "
            f"{r['seconds']} s, {r['unindexed']} not yet indexed, {r['segments']} segments"
        ),
    )
