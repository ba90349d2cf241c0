"""Ingest and the distributed shell: ingest, jobs, workers, beat, the query service, cameras, retention, status."""

from __future__ import annotations

import json
import sys

import click

from camtrace import validation
from camtrace.cli.base import (
    audited_cli,
    camera_line,
    cli,
    detector_facts,
    echo_rows,
    embedder_facts,
    make_services,
    print_summary,
)
from camtrace.enums import JobStatus
from camtrace.errors import CamtraceError
from camtrace.settings import load_settings


@cli.command()
@click.argument("source")
@click.option("--camera", required=True, help="Camera name the footage belongs to.")
@click.option("--start", help="Start time of the recording (ISO 8601); default: the file's modification time.")
@click.option("--wait", is_flag=True, help="Distributed mode: follow the job with a progress bar until it ends.")
@click.option("--no-progress", is_flag=True, help="Hide the progress bar.")
@click.option("--json", "as_json", is_flag=True, help="Print the summary as JSON.")
def ingest(source: str, camera: str, start: str | None, wait: bool, no_progress: bool, as_json: bool) -> None:
    """Detect, track, embed and index every person in SOURCE (a file, a folder or a stream URL).

    With CAMTRACE_BROKER_URL set the work is queued for the workers and the job
    id is printed (or followed with --wait); otherwise it runs here.
    """
    from camtrace.search import parse_time

    validation.camera_id(camera)
    start_ts = parse_time(start, "--start")
    with make_services() as services:
        if services.settings.broker_url:
            from camtrace.workers.jobs import follow_job, submit_ingest

            job_id = submit_ingest(services, source, camera, start_ts, patient=False)
            if not wait:
                click.echo(json.dumps({"job_id": job_id}) if as_json else f"queued job {job_id}")
                return
            job = follow_job(services.db, job_id, progress=not no_progress)
            print_job(job, as_json)
            if job.status != JobStatus.DONE or job.segments_failed:
                sys.exit(1)
            return
        from camtrace.workers.local import ingest_local

        summary = ingest_local(services, source, camera, start_ts, progress=not no_progress)
    print_summary(summary, as_json)
    if summary.failed_segments:
        sys.exit(1)


def print_job(job, as_json: bool) -> None:
    from camtrace.workers.jobs import job_dict

    if as_json:
        click.echo(json.dumps(job_dict(job), indent=2))
        return
    click.echo(
        f"job {job.id} {job.status}: {job.segments_done}/{job.segments_total} segments done, "
        f"{job.segments_failed} failed, {job.crops_indexed} crops indexed"
    )
    if job.error:
        click.echo(f"errors: {job.error}", err=True)


@cli.command()
@click.option("--limit", default=20, show_default=True)
@click.option("--json", "as_json", is_flag=True)
def jobs(limit: int, as_json: bool) -> None:
    """List recent jobs with their progress."""
    from camtrace.workers.jobs import job_rows

    with make_services() as services:
        rows = job_rows(services.db, limit)
    echo_rows(
        rows,
        as_json,
        lambda row: (
            f"{row['id']}  {row['status']:<10} {row['camera_id'] or '-':<12} "
            f"{row['segments_done']}/{row['segments_total']} segments, {row['segments_failed']} failed, "
            f"{row['crops_indexed']} crops  {row['source']}"
        ),
    )


@cli.command()
@click.option("--queues", default="ingest,detect,embed", show_default=True, help="Comma-separated queues to consume.")
@click.option("--device", help="Device for this worker's models (cpu, cuda:0, ...); overrides CAMTRACE_DEVICE.")
@click.option("--pool", type=click.Choice(["prefork", "solo", "threads"]), help="Default: solo for embed/GPU, prefork otherwise.")
@click.option("--concurrency", type=int, help="Processes (prefork) or threads; default 1 for solo.")
@click.option("--name", help="Worker node name (default camtrace-<queues>@host).")
def worker(queues: str, device: str | None, pool: str | None, concurrency: int | None, name: str | None) -> None:
    """Run a Celery worker. GPU workers: one process per GPU, `--queues embed --device cuda:N`."""
    import os
    import tempfile

    from camtrace.workers.celery_app import QUEUES, model_threads, worker_argv, worker_pool

    if device:
        os.environ["CAMTRACE_DEVICE"] = device
    settings = load_settings()
    argv = worker_argv(settings, queues, pool=pool, concurrency=concurrency, name=name)
    # The forked processes read their settings from the environment.
    os.environ["CAMTRACE_CPU_THREADS"] = str(model_threads(settings, worker_pool(settings, queues, pool), concurrency))
    if settings.metrics_port:
        os.environ.setdefault("PROMETHEUS_MULTIPROC_DIR", tempfile.mkdtemp(prefix="camtrace-metrics-"))
        from camtrace.workers import metrics

        metrics.serve(settings.metrics_port, settings.broker_url, QUEUES)
    from camtrace.workers.tasks import create_app

    # Read again: the app's settings (and so every process's) carry the thread count set above.
    create_app(load_settings()).worker_main(argv)


@cli.command()
def beat() -> None:
    """Run Celery beat: retention (CAMTRACE_RETENTION_DAYS) and other periodic work."""
    from camtrace.workers.tasks import create_app

    settings = load_settings()
    schedule = settings.resolved_data_dir / "celerybeat-schedule"
    create_app(settings).Beat(loglevel=settings.log_level, schedule=str(schedule)).run()


@cli.command()
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on (0.0.0.0: every interface).")
@click.option("--port", default=8000, show_default=True, type=int)
def serve(host: str, port: int) -> None:
    """Serve the operators' page and the HTTP API (/api/...); every data endpoint needs credentials."""
    import uvicorn

    from camtrace.api.app import create_app

    settings = load_settings()
    app = create_app(settings)
    if app.state.access.user_count() == 0:
        click.echo(
            "no users yet: create the first admin with `camtrace user add admin --role admin --password-stdin` "
            "(prints an API token; the password is for the page)",
            err=True,
        )
    # The app reads X-Forwarded-For itself, from CAMTRACE_TRUSTED_PROXIES only (uvicorn would trust 127.0.0.1).
    uvicorn.run(app, host=host, port=port, log_level=settings.log_level.lower(), proxy_headers=False)


@cli.command()
@click.option("--days", type=float, help="Keep this many days (default: CAMTRACE_RETENTION_DAYS).")
def retention(days: float | None) -> None:
    """Delete points, SQL rows, crops and recorded segments older than the retention limit, now.

    Beat runs the same every hour when CAMTRACE_RETENTION_DAYS is set.
    """
    import time

    from camtrace.errors import ConfigError
    from camtrace.workers.jobs import apply_retention

    with make_services() as services:
        days = days if days is not None else services.settings.retention_days
        if not days or days <= 0:
            raise ConfigError("no retention limit: pass --days N or set CAMTRACE_RETENTION_DAYS")
        deleted = apply_retention(services, time.time() - days * 86400)
    click.echo(f"deleted {deleted} point(s) older than {days:g} day(s)")


@cli.command()
@click.option("--json", "as_json", is_flag=True)
def status(as_json: bool) -> None:
    """Queues (depth), workers and cameras at a glance; the embedding model in service and its runtime."""
    from camtrace.workers.ops import cluster_status

    with make_services() as services:
        report = cluster_status(services)
        try:
            report.update(embedder_facts(services.model()))
        except CamtraceError as exc:  # the status of the rest is still worth showing
            report.update(model_version=None, model_id=None, embed_runtime=f"unknown: {exc}")
        report.update(detector_facts(services))
    broker_down = 1 if report.get("broker_error") else 0  # monitoring scripts see the outage in the exit code
    if as_json:
        click.echo(json.dumps(report, indent=2))
        sys.exit(broker_down)
    if report["mode"] == "local":
        click.echo("mode: local (CAMTRACE_BROKER_URL unset: no queues or workers)")
    elif report["broker_error"]:
        click.echo(f"broker: {report['broker_error']}", err=True)
    else:
        click.echo(f"broker: {report['broker']}")
        for queue, depth in report["queues"].items():
            click.echo(f"queue {queue:<8} {depth} waiting")
        for worker_name, queues in report["workers"].items():
            click.echo(f"worker {worker_name}: {', '.join(queues)}")
        if not report["workers"]:
            click.echo("no workers answered")
    for camera in report["cameras"]:
        click.echo(f"camera {camera_line(camera)}")
    which = "CAMTRACE_EMBED_MODEL" if report["model_id"] is None else f"registry model {report['model_id']}"
    click.echo(f"embedder {report['model_version'] or '?'} ({which}): {report['embed_runtime']}")
    click.echo(f"detector input {report['detector_imgsz']} px ({report['detector_imgsz_from']}), runtime {report['runtime']}")
    sys.exit(broker_down)


@cli.group()
def camera() -> None:
    """Add, list and remove live cameras."""


@camera.command("add")
@click.argument("name")
@click.argument("url")
def camera_add(name: str, url: str) -> None:
    """Add (or re-point) camera NAME reading from URL (rtsp://, http://...)."""
    from camtrace.storage.access import AccessStore

    validation.camera_id(name)
    with make_services() as services:
        access = AccessStore(services.db)
        with audited_cli(access, "camera_add", {"id": name, "url": validation.mask_secrets(url)}, [name]):
            services.db.ensure_camera(name, url=url)
    click.echo(f"camera {name} -> {validation.mask_secrets(url)}")


@camera.command("list")
@click.option("--json", "as_json", is_flag=True)
def camera_list(as_json: bool) -> None:
    """List cameras with their status."""
    from camtrace.workers.ops import camera_rows

    with make_services() as services:
        rows = camera_rows(services.db)
    echo_rows(rows, as_json, camera_line)


@camera.command("remove")
@click.argument("name")
def camera_remove(name: str) -> None:
    """Remove camera NAME's stream (its indexed footage stays searchable)."""
    with make_services() as services:
        services.db.remove_camera_url(name)
    click.echo(f"camera {name} removed")


@camera.command("run")
@click.option("--camera", "names", multiple=True, help="Only these cameras (default: all with a URL).")
@click.option("--seconds", type=float, help="Stop after this long (default: run until interrupted).")
def camera_run(names: tuple[str, ...], seconds: float | None) -> None:
    """Record every camera with a URL, cut segments and send them for ingest; reconnects on drops."""
    from camtrace.workers.ops import CameraFleet

    with make_services() as services:
        CameraFleet(services, names).run(seconds)


cli.add_command(serve, "api")  # the command's earlier name
