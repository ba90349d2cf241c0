"""Watchlists, alerts and cases."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import click

from camtrace.cli.base import (
    access_store,
    audited_cli,
    cli,
    echo_rows,
    format_ts,
    make_services,
)
from camtrace.enums import AlertStatus, values


@cli.group()
def watch() -> None:
    """The watchlist: people (from a track) and descriptions that raise alerts when a new track matches."""


def watch_line(row: dict) -> str:
    what = f"person of track {row['track_id']}" if row["kind"] == "person" else f"description {row['text']!r}"
    bar = (
        f"p >= {row['min_probability']}"
        if row["min_probability"] is not None
        else f"score >= {row['min_score']}"
        if row["min_score"] is not None
        else "p >= CAMTRACE_TRACE_MIN_SCORE"
    )
    cameras = ", ".join(row["cameras"]) if row["cameras"] is not None else "all cameras"
    note = f"  note: {row['note']}" if row["note"] else ""
    return f"{row['id']:>4}  {what}  [{cameras}; {bar}] by {row['username']}{note}"


@watch.command("add")
@click.option("--track", "track_id", help="Watch for this track's person (and the tracks confirmed as them).")
@click.option("--text", help="Watch for people matching this description.")
@click.option("--camera", "cameras", multiple=True, help="Alert on this camera only (repeatable); default: all.")
@click.option("--since", help="Alert on sightings from this time on (ISO time).")
@click.option("--until", help="Alert on sightings up to this time (ISO time).")
@click.option("--min-probability", type=float, help="A person's bar (default CAMTRACE_TRACE_MIN_SCORE).")
@click.option("--min-score", type=float, help="A description's similarity bar (default: calibrated on the site).")
@click.option("--note", default="", help="Why the entry is there.")
@click.option("--json", "as_json", is_flag=True)
def watch_add(track_id, text, cameras, since, until, min_probability, min_score, note, as_json) -> None:
    """Add a watchlist entry: --track ID (a person) or --text "..." (a description)."""
    import getpass

    from camtrace.search import parse_time
    from camtrace.search.watch import WatchService

    services = make_services()
    access = access_store()
    detail = {
        "track_id": track_id,
        "text": text,
        "cameras": list(cameras) or None,
        "since": since,
        "until": until,
        "min_probability": min_probability,
        "min_score": min_score,
        "note": note,
    }
    try:
        with audited_cli(access, "watch_add", detail, []) as record:
            entry = WatchService(services).add(
                username=f"cli:{getpass.getuser()}",
                track_id=track_id,
                text=text,
                cameras=list(cameras) or None,
                since=parse_time(since, "--since"),
                until=parse_time(until, "--until"),
                min_probability=min_probability,
                min_score=min_score,
                note=note,
            )
            record.result_ids.append(str(entry.id))
    finally:
        services.close()
    if as_json:
        click.echo(json.dumps(entry.as_dict()))
    else:
        click.echo(f"watch entry {entry.id} added: {watch_line(entry.as_dict())}")


@watch.command("list")
@click.option("--json", "as_json", is_flag=True)
def watch_list(as_json: bool) -> None:
    """List the watchlist entries."""
    from camtrace.storage.watchlists import WatchStore

    echo_rows([e.as_dict() for e in WatchStore(make_services().db).entries()], as_json, watch_line)


@watch.command("remove")
@click.argument("entry_id", type=int)
def watch_remove(entry_id: int) -> None:
    """Remove watchlist entry ENTRY_ID (its alerts stay)."""
    from camtrace.storage.watchlists import WatchStore

    store = WatchStore(make_services().db)
    with audited_cli(access_store(), "watch_remove", {"entry_id": entry_id}, [str(entry_id)]):
        store.remove_entry(entry_id)
    click.echo(f"watch entry {entry_id} removed")


@cli.group()
def alerts() -> None:
    """Watchlist alerts: list them, send those waiting for MQTT or a webhook."""


@alerts.command("list")
@click.option("--status", type=click.Choice(values(AlertStatus)))
@click.option("--limit", default=50, show_default=True, type=click.IntRange(1, 1000))
@click.option("--json", "as_json", is_flag=True)
def alerts_list(status: str | None, limit: int, as_json: bool) -> None:
    """The newest alerts with what their deliveries did."""
    from camtrace.storage.watchlists import WatchStore

    store = WatchStore(make_services().db)
    rows = []
    for alert in store.alerts(status=status, limit=limit):
        deliveries = [
            {k: d.as_dict()[k] for k in ("label", "status", "attempts", "last_error")} for d in store.deliveries(alert.id)
        ]
        rows.append({**alert.as_dict(), "deliveries": deliveries})
    echo_rows(
        rows,
        as_json,
        lambda r: (
            f"{r['id']:>5}  entry {r['entry_id']:<4} {r['camera_id']:<12} {format_ts(r['ts'])}  track {r['track_id']}  "
            + (f"p={r['probability']:.2f}" if r["probability"] is not None else f"score={r['score']:.3f}")
            + f"  {r['status']}  "
            + ", ".join(f"{d['label']}: {d['status']}" for d in r["deliveries"])
        ),
    )


@alerts.command("deliver")
@click.option("--json", "as_json", is_flag=True)
def alerts_deliver(as_json: bool) -> None:
    """Send the alert deliveries that are due now (beat does this every CAMTRACE_ALERT_DELIVERY_SECONDS)."""
    from camtrace.notify import AlertSender
    from camtrace.storage.watchlists import WatchStore

    services = make_services()
    report = AlertSender(services.settings, WatchStore(services.db)).deliver()
    if as_json:
        click.echo(json.dumps(report.as_dict()))
    else:
        click.echo(f"{report.delivered} delivered, {report.retrying} to retry, {report.failed} given up")


@cli.group()
def case() -> None:
    """Cases: tracks and notes of an investigation, exported as an archive whose files can be verified."""


def case_line(row: dict) -> str:
    tracks = sum(1 for i in row["items"] if i["kind"] == "track")
    notes = len(row["items"]) - tracks
    return f"{row['id']:>4}  {row['title']}  ({tracks} tracks, {notes} notes; by {row['username']})"


def cli_user() -> str:
    import getpass

    return f"cli:{getpass.getuser()}"


@case.command("create")
@click.argument("title")
@click.option("--json", "as_json", is_flag=True)
def case_create(title: str, as_json: bool) -> None:
    """Open a case called TITLE."""
    from camtrace.storage.cases import CaseStore

    services = make_services()
    with audited_cli(access_store(), "case_create", {"title": title}, []) as record:
        made = CaseStore(services.db).create(title, cli_user())
        record.result_ids.append(str(made.id))
    click.echo(json.dumps(made.as_dict()) if as_json else f"case {made.id} created: {made.title}")


@case.command("add-track")
@click.argument("case_id", type=int)
@click.argument("track_id")
@click.option("--note", default="", help="Why the track belongs to the case.")
def case_add_track(case_id: int, track_id: str, note: str) -> None:
    """Add TRACK_ID to case CASE_ID."""
    from camtrace.search.cases import CaseService

    services = make_services()
    with audited_cli(access_store(), "case_add_track", {"case_id": case_id, "note": note}, [track_id]):
        CaseService(services).add_track(case_id, track_id, cli_user(), note)
    click.echo(f"track {track_id} added to case {case_id}")


@case.command("note")
@click.argument("case_id", type=int)
@click.argument("text")
def case_note(case_id: int, text: str) -> None:
    """Add a note to case CASE_ID."""
    from camtrace.search.cases import CaseService

    services = make_services()
    with audited_cli(access_store(), "case_note", {"case_id": case_id}, [str(case_id)]):
        CaseService(services).add_note(case_id, text, cli_user())
    click.echo(f"note added to case {case_id}")


@case.command("list")
@click.option("--json", "as_json", is_flag=True)
def case_list(as_json: bool) -> None:
    """List the cases."""
    from camtrace.storage.cases import CaseStore

    echo_rows([c.as_dict() for c in CaseStore(make_services().db).cases()], as_json, case_line)


@case.command("export")
@click.argument("case_id", type=int)
@click.option("--out", "out", type=click.Path(dir_okay=False), help="Archive to write; default case-ID.zip here.")
@click.option("--no-clips", is_flag=True, help="Leave the tracks' video clips out.")
@click.option("--json", "as_json", is_flag=True)
def case_export(case_id: int, out: str | None, no_clips: bool, as_json: bool) -> None:
    """Write case CASE_ID as a ZIP archive with a manifest of every file's SHA-256 (keep the printed hash)."""

    from camtrace.search.cases import CaseService

    services = make_services()
    target = Path(out or f"case-{case_id}.zip")
    with audited_cli(access_store(), "case_export", {"case_id": case_id, "file": target.name}, [str(case_id)]) as rec:
        report = CaseService(services).export(case_id, target, clips=not no_clips)
        rec.detail["manifest_sha256"] = report.manifest_sha256
    if as_json:
        click.echo(json.dumps(report.as_dict()))
        return
    click.echo(
        f"case {case_id} written to {report.path}: {report.files} files; manifest SHA-256 "
        f"{report.manifest_sha256} (keep it apart from the archive)"
    )
    for line in report.missing_clips:
        click.echo(f"no clip for track {line}", err=True)


@case.command("verify")
@click.argument("archive", type=click.Path(exists=True, dir_okay=False))
@click.option("--manifest-sha256", help="The hash printed at export (default: the one inside the archive).")
@click.option("--json", "as_json", is_flag=True)
def case_verify(archive: str, manifest_sha256: str | None, as_json: bool) -> None:
    """Check every file of a case archive against its manifest; exit 1 naming each file that does not match."""

    from camtrace.search.cases import verify

    report = verify(Path(archive), manifest_sha256)
    if as_json:
        click.echo(json.dumps(report.as_dict()))
    elif report.ok:
        click.echo(f"{archive}: all {report.files} files match the manifest")
    else:
        for problem in report.problems:
            click.echo(problem)
    if not report.ok:
        sys.exit(1)
