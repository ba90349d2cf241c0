"""The `camtrace` command line: a thin shell over the stages."""

from __future__ import annotations

import json
import logging
import sys
from datetime import UTC, datetime
from pathlib import Path

import click

from camtrace import validation
from camtrace.enums import JobStatus, Role, TrainCrops, values
from camtrace.errors import CamtraceError
from camtrace.settings import Settings, load_settings, settings_markdown

DEMO_QUERY = "red top, blue trousers"


class CamtraceGroup(click.Group):
    """Turns camtrace's own errors into one line on stderr and a non-zero exit."""

    def invoke(self, ctx: click.Context):
        try:
            return super().invoke(ctx)
        except CamtraceError as exc:
            click.echo(f"error: {exc}", err=True)
            sys.exit(exc.exit_code)


def make_services(settings: Settings | None = None):
    from camtrace.services import Services

    settings = settings or load_settings()
    logging.basicConfig(level=settings.log_level, format="%(levelname)s %(name)s: %(message)s")
    return Services(settings)


def echo_rows(rows: list[dict], as_json: bool, line) -> None:
    """Rows as a JSON list, or one ``line(row)`` each."""
    if as_json:
        click.echo(json.dumps(rows, indent=2))
        return
    for row in rows:
        click.echo(line(row))


def camera_line(row: dict) -> str:
    return (
        f"{row['id']:<12} {row['status']:<8} last frame {row['last_frame'] or '-'}  "
        f"reconnects {row['reconnects']}  {row['url'] or '(files only)'}"
    )


def format_ts(ts: float) -> str:
    return datetime.fromtimestamp(ts, tz=UTC).astimezone().isoformat(timespec="seconds")


@click.group(cls=CamtraceGroup)
@click.version_option(package_name="camtrace")
def cli() -> None:
    """Find people in surveillance video by description or by photo."""


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
    from camtrace.workers.tasks import app

    app.worker_main(argv)


@cli.command()
def beat() -> None:
    """Run Celery beat: retention (CAMTRACE_RETENTION_DAYS) and other periodic work."""
    from camtrace.workers.tasks import app

    settings = load_settings()
    schedule = settings.resolved_data_dir / "celerybeat-schedule"
    app.Beat(loglevel=settings.log_level, schedule=str(schedule)).run()


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


cli.add_command(serve, "api")  # the command's earlier name


def access_store():
    from camtrace.storage.access import AccessStore

    return AccessStore(make_services().db)


def audited_cli(access, action: str, detail: dict, ids: list[str]):
    """User and token changes made at the command line are audited like those made over HTTP, in the same
    transaction as the change."""
    import getpass

    return access.audited(f"cli:{getpass.getuser()}", action, detail, ids, client="cli")


def read_password(from_stdin: bool) -> str:
    if from_stdin or not sys.stdin.isatty():
        return sys.stdin.readline().rstrip("\n")
    return click.prompt("password", hide_input=True, confirmation_prompt=True)


def expiry(expires: str | None, days: float | None) -> float | None:
    """--expires (ISO time or epoch seconds) or --days (from now) as epoch seconds; None: never."""
    import time

    from camtrace.errors import InputError

    if expires and days is not None:
        raise InputError("give --expires or --days, not both")
    if days is not None:
        if not 0 < days <= 36500:
            raise InputError("--days must be more than 0 and at most 36500")
        return time.time() + days * 86400
    return validation.moment(expires, "--expires")


def token_line(row: dict) -> str:
    expires = format_ts(row["expires_at"]) if row["expires_at"] else "never"
    return f"{row['id']}  {row['username']:<16} created {format_ts(row['created_at'])}  expires {expires}"


@cli.group()
def user() -> None:
    """Users of the HTTP API and the page: roles operator, investigator, admin."""


@user.command("add")
@click.argument("name")
@click.option("--role", type=click.Choice(values(Role)), required=True)
@click.option("--camera", "cameras", multiple=True, help="Limit the user to this camera (repeatable); default: all cameras.")
@click.option("--password-stdin", is_flag=True, help="Read a password for the page's login from stdin.")
@click.option("--token-expires", help="When the first API token stops working (ISO time); default: never.")
@click.option("--json", "as_json", is_flag=True, help="Print the user and the token as JSON.")
def user_add(name: str, role: str, cameras: tuple[str, ...], password_stdin: bool, token_expires: str | None,
             as_json: bool) -> None:
    """Create user NAME and print an API token (shown once: only its hash is stored)."""
    access = access_store()
    password = read_password(True) if password_stdin else None
    detail = {"username": name, "role": role, "cameras": list(cameras) or None}
    with audited_cli(access, "user_add", detail, [name]) as entry:
        token = access.add_user(name, role, list(cameras) or None, password,
                                token_expires_at=validation.moment(token_expires, "--token-expires"))
        entry.detail["token_id"] = token.id
    if as_json:
        click.echo(json.dumps({**access.get_user(name).as_dict(), "token": token.token, "token_id": token.id}))
    else:
        click.echo(f"user {name} ({role}) created; API token {token.id} (shown once): {token.token}")


@user.command("list")
@click.option("--json", "as_json", is_flag=True)
def user_list(as_json: bool) -> None:
    """List users with their role and cameras."""
    rows = [{**user.as_dict(), "created_at": created} for user, created in access_store().users()]
    echo_rows(rows, as_json, lambda r: f"{r['username']:<16} {r['role']:<13} {', '.join(r['cameras'] or ['all cameras'])}")


@user.command("remove")
@click.argument("name")
def user_remove(name: str) -> None:
    """Remove user NAME with its tokens and sessions (its audit rows stay)."""
    access = access_store()
    with audited_cli(access, "user_remove", {"username": name}, [name]):
        access.remove_user(name)
    click.echo(f"user {name} removed")


@user.command("passwd")
@click.argument("name")
def user_passwd(name: str) -> None:
    """Set NAME's password for the page (asked for, or read from stdin); ends its open sessions."""
    access = access_store()
    password = read_password(False)
    with audited_cli(access, "user_passwd", {"username": name}, [name]):
        access.set_password(name, password)
    click.echo(f"password of {name} set")


@cli.group()
def token() -> None:
    """API tokens (sent as 'Authorization: Bearer <token>'): create, list, revoke."""


@token.command("create")
@click.argument("name")
@click.option("--expires", help="When the token stops working (ISO time or epoch seconds); default: never.")
@click.option("--days", type=float, help="The token stops working this many days from now.")
@click.option("--json", "as_json", is_flag=True)
def token_create(name: str, expires: str | None, days: float | None, as_json: bool) -> None:
    """Create another API token for user NAME (shown once)."""
    access = access_store()
    expires_at = expiry(expires, days)
    with audited_cli(access, "token_create", {"username": name, "expires_at": expires_at}, [name]) as entry:
        new = access.create_token(name, expires_at)
        entry.detail["token_id"] = new.id
    click.echo(json.dumps(new.as_dict()) if as_json else new.token)


@token.command("list")
@click.argument("name")
@click.option("--json", "as_json", is_flag=True)
def token_list(name: str, as_json: bool) -> None:
    """User NAME's tokens: id, creation and expiry (the secrets are never shown again)."""
    echo_rows([info.as_dict() for info in access_store().tokens(name)], as_json, token_line)


@token.command("revoke")
@click.argument("token_id")
def token_revoke(token_id: str) -> None:
    """Revoke the token with id TOKEN_ID (`camtrace token list NAME` shows the ids) at once."""
    access = access_store()
    with audited_cli(access, "token_revoke", {"token_id": token_id}, [token_id]) as entry:
        revoked = access.revoke_token(token_id)
        entry.detail["username"] = revoked.username
    click.echo(f"token {token_id} of {revoked.username} revoked")


@cli.group(invoke_without_command=True)
@click.option("--user", "username", help="Only this user's actions.")
@click.option("--since", help="Only actions at or after this ISO time.")
@click.option("--until", help="Only actions at or before this ISO time.")
@click.option("--action", help="Only this action (search_text, track_view, login_failed ...).")
@click.option("--limit", default=100, show_default=True, type=int)
@click.option("--json", "as_json", is_flag=True)
@click.pass_context
def audit(ctx, username, since, until, action, limit, as_json) -> None:
    """The audit log, newest first: searches, views, re-id, traces, feedback, exports and logins.

    `camtrace audit verify` checks that no row was deleted, changed or inserted; `camtrace audit head`
    prints the newest row's hash to keep outside the database.
    """
    if ctx.invoked_subcommand is not None:
        return
    rows = access_store().audit_rows(
        username=username, since=validation.moment(since, "--since"), until=validation.moment(until, "--until"),
        action=action, limit=limit,
    )
    echo_rows(
        [row.as_dict() for row in rows],
        as_json,
        lambda r: f"{format_ts(r['ts'])}  {r['username'] or '-':<14} {r['action']:<14} {json.dumps(r['detail'])}"
        + (f"  -> {len(r['result_ids'])} ids" if r["result_ids"] else ""),
    )


@audit.command("head")
@click.option("--json", "as_json", is_flag=True)
def audit_head(as_json: bool) -> None:
    """The newest audit row's id and hash, as ID:HASH: keep it outside the database, and check the log
    against it later with `camtrace audit verify --anchor ID:HASH`."""
    row_id, row_hash = access_store().audit_head()
    click.echo(json.dumps({"id": row_id, "hash": row_hash}) if as_json else f"{row_id}:{row_hash}")


@audit.command("verify")
@click.option("--anchor", "anchors", multiple=True, help="An ID:HASH printed earlier by `camtrace audit head` (repeatable).")
@click.option("--json", "as_json", is_flag=True)
def audit_verify(anchors: tuple[str, ...], as_json: bool) -> None:
    """Walk the audit log's hash chain; exit 1 naming the first row that does not fit (deleted, changed or
    inserted behind camtrace's back)."""
    from camtrace.errors import InputError

    parsed = []
    for anchor in anchors:
        row_id, _, row_hash = anchor.partition(":")
        if not row_id.isdigit() or len(row_hash) != 64:
            raise InputError(f"--anchor {anchor!r} is not ID:HASH as `camtrace audit head` prints it")
        parsed.append((int(row_id), row_hash.lower()))
    report = access_store().verify_audit(parsed)
    if as_json:
        click.echo(json.dumps(report.as_dict(), indent=2))
    elif report.ok:
        click.echo(f"audit log intact: {report.rows} rows, head {report.last_id}:{report.last_hash}")
    else:
        click.echo(f"audit log tampered with at row {report.bad_row}: {report.problem}", err=True)
    sys.exit(0 if report.ok else 1)


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


def embedder_facts(model) -> dict:
    """The embedding model in service and what runs it here: the settings' runtime and precision, or PyTorch
    for a model ONNX cannot take (read from its config: no weights load)."""
    return {"model_version": model.encoder.model_version, "model_id": model.model_id,
            "embed_runtime": model.encoder.runtime_label}


def detector_facts(services) -> dict:
    """The detector's input size in use and where it comes from; the runtime setting and what it means here."""
    from camtrace.inference import resolve_device, resolve_runtime

    settings = services.settings
    facts = {"runtime": f"{settings.runtime} ({resolve_runtime(settings.runtime, resolve_device(settings.device))})"}
    if settings.detector_imgsz is not None:
        return {"detector_imgsz": settings.detector_imgsz, "detector_imgsz_from": "CAMTRACE_DETECTOR_IMGSZ", **facts}
    try:
        from camtrace.detection.detector import read_trained_imgsz

        size, source = read_trained_imgsz(settings.detector_model), "the weights' training size"
    except CamtraceError as exc:
        size, source = None, f"unknown: {exc}"
    return {"detector_imgsz": size, "detector_imgsz_from": source, **facts}


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
@click.option("--crops", type=click.Choice(values(TrainCrops)),
              help="Footage with ground truth (synthetic:): tight boxes, the boxes CAMTRACE_DETECTOR_MODEL finds, cut "
              "as the pipeline cuts what it embeds, or both (default: CAMTRACE_TRAIN_CROPS).")
@click.option("--head", type=click.Choice(["anchors"]),
              help="Train only a re-id head on the frozen model: anchors (SAGA-ReID: patch tokens of block "
              "CAMTRACE_ANCHOR_LAYER pooled around text anchors) for --epochs at --head-lr; saved with the model.")
@click.option("--checkpoint-every", type=int, default=200, show_default=True, help="Steps between checkpoints.")
@click.option("--resume", is_flag=True, help="Require a checkpoint in --out to resume from (resuming is automatic).")
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--workers", "num_workers", type=int, default=0, show_default=True, help="Data loader processes.")
@click.option("--no-register", is_flag=True, help="Do not add the trained model to the model registry.")
@click.option("--queue", is_flag=True, help="Send the run to the train worker (distributed mode) instead of training here.")
@click.option("--no-progress", is_flag=True, help="Hide the progress bars.")
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
def train_command(datasets, val, out_dir, base, head_epochs, epochs, lr, head_lr, batch_size, images_per_identity,
                  accumulate, smoothing, text_weight, image_weight, text_drop, no_augment, crops, head, checkpoint_every,
                  resume, seed, num_workers, no_register, queue, no_progress, as_json) -> None:
    """Fine-tune the embedding model on person datasets (heads first, then the whole model).

    Datasets: cuhk-pedes:, icfg-pedes:, rstpreid: (JSON), market1501: (folder), csv:, synthetic:
    (a `camtrace synth` folder), feedback: and site: (a camtrace data dir: its confirmed matches; its own
    footage without labels, to adapt the image tower to its cameras). The output is a checkpoint folder
    CAMTRACE_EMBED_MODEL can name.
    """
    from dataclasses import asdict

    from camtrace.training.evaluate import format_table
    from camtrace.training.trainer import TrainConfig, train

    settings = load_settings()
    logging.basicConfig(level=settings.log_level, format="%(levelname)s %(name)s: %(message)s")
    _refuse_queued_head(queue, head)
    if queue:  # the train worker trains, registers and (with CAMTRACE_AUTO_PROMOTE) promotes
        from camtrace.training.schedule import TrainRequest
        from camtrace.workers.jobs import submit_training

        task_id = submit_training(settings, TrainRequest(
            datasets=list(datasets), val=val, base=base, out_dir=str(out_dir.resolve()), epochs=epochs,
            head_epochs=head_epochs, lr=lr, head_lr=head_lr, batch_size=batch_size, seed=seed,
        ))
        click.echo(json.dumps({"task_id": task_id}) if as_json else f"queued training run {task_id}")
        return
    config = TrainConfig(
        datasets=list(datasets), out_dir=out_dir, val=val, base=base, head_epochs=head_epochs, epochs=epochs, lr=lr,
        head_lr=head_lr, batch_size=batch_size, images_per_identity=images_per_identity, accumulate=accumulate,
        smoothing=smoothing, text_weight=text_weight, image_weight=image_weight, text_drop=text_drop,
        augment=not no_augment, checkpoint_every=checkpoint_every, resume=True if resume else None, seed=seed,
        num_workers=num_workers, device=settings.device, text_max_length=settings.embed_text_max_length,
        crops=crops or settings.train_crops, head=head, anchor_layer=settings.anchor_layer,
        anchor_diversity=settings.anchor_diversity,
    )
    result = train(config, progress=not no_progress)
    model_id = None
    if not no_register:
        with make_services(settings) as services:
            model_id = services.registry.register(
                result.out_dir,
                parent=config.base or settings.embed_model,
                datasets={"train": list(config.datasets), "val": config.val},
                settings={k: str(v) if isinstance(v, Path) else v for k, v in asdict(config).items()},
                metrics={**(result.val_metrics or {}), **({"dataset": config.val} if config.val else {})},
            )
    summary = {"out_dir": str(result.out_dir), "steps": result.steps, "resumed_from": result.resumed_from,
               "model_id": model_id, "history": result.history, "val_metrics": result.val_metrics}
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


def _refuse_queued_head(queue: bool, head: str | None) -> None:
    if queue and head:
        from camtrace.errors import InputError

        raise InputError("--head trains here, not on the train worker; leave out --queue")


@cli.command("eval")
@click.option("--dataset", required=True, help="Evaluation data as KIND:PATH.")
@click.option("--model", help="Model folder or hub id (default: CAMTRACE_EMBED_MODEL with CAMTRACE_EMBED_PROCESSOR).")
@click.option("--batch-size", type=int, help="Images per forward pass (default: CAMTRACE_EMBED_BATCH_SIZE).")
@click.option("--raw-captions", is_flag=True,
              help="Query with the dataset's captions exactly as given, not normalised to comma-separated features.")
@click.option("--json", "as_json", is_flag=True, help="Print the figures as JSON.")
@click.option("--out", "out_file", type=click.Path(path_type=Path), help="Also write the figures as JSON to this file.")
@click.option("--no-progress", is_flag=True, help="Hide the progress bar.")
def eval_command(dataset: str, model: str | None, batch_size: int | None, raw_captions: bool, as_json: bool,
                 out_file: Path | None, no_progress: bool) -> None:
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
    record = {"dataset": dataset, "model": encoder.model_name, "model_version": encoder.model_version,
              "runtime": encoder.runtime_label, "captions": "raw" if raw_captions else "normalised", **figures}
    if out_file is not None:
        out_file.parent.mkdir(parents=True, exist_ok=True)
        out_file.write_text(json.dumps(record, indent=2))
    if as_json:
        click.echo(json.dumps(record, indent=2))
    else:
        click.echo(f"{dataset} with {record['model_version']} on {record['runtime']}, {record['captions']} captions\n"
                   f"{format_table(figures)}")


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
        result = promote(services, model_id, force=force, progress=not no_progress,
                         run_elsewhere=reindex_runner(services))
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


def print_summary(summary, as_json: bool) -> None:
    if as_json:
        click.echo(json.dumps(summary.as_dict(), indent=2))
        return
    click.echo(
        f"camera {summary.camera_id}: {summary.videos} video(s), {summary.segments} segment(s), "
        f"{summary.frames} frames, {summary.persons} person boxes, {summary.tracks} tracks, "
        f"{summary.crops} crops embedded in {summary.seconds:.1f} s (job {summary.job_id})"
    )
    for failure in summary.failed_segments:
        click.echo(f"failed segment {failure}", err=True)


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
@click.option("--min-probability", type=click.FloatRange(0.0, 1.0),
              help="Probability a candidate needs to be a path step (default CAMTRACE_TRACE_MIN_SCORE).")
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
        click.echo(f"{step.status:<11} {step.probability:>4.0%}  {step.camera_id:<12} {format_ts(step.ts_start)} .. "
                   f"{format_ts(step.ts_end)}  track {step.track_id}{transit}{flag}")


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
        click.echo(f"{row['camera_from']:>12} -> {row['camera_to']:<12} typical {row['transit_seconds']:7.1f} s  "
                   f"± {row['spread_seconds']:5.1f} s  from {row['evidence']:6.1f} passages")
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
    """Counts of cameras, videos, tracks and points; the embedding model in service and its runtime."""
    with make_services() as services:
        counts = dict(services.db.counts())
        model = services.model()
        counts["points"] = model.index.count()
        counts.update(embedder_facts(model))
        counts.update(detector_facts(services))
    if as_json:
        click.echo(json.dumps(counts, indent=2))
    else:
        for key, value in counts.items():
            click.echo(f"{key:<14} {'-' if value is None else value}")


@cli.command()
@click.argument("out_dir", type=click.Path(path_type=Path))
@click.option("--cameras", default=3, show_default=True)
@click.option("--identities", default=6, show_default=True)
@click.option("--seconds", default=12.0, show_default=True)
@click.option("--seed", default=0, show_default=True)
@click.option("--site", is_flag=True, help="A site: cameras along a corridor with consistent transit times, walkers at "
              "1-2 m/s, look-alikes, groups and pillars (give it minutes and dozens of people).")
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
        click.echo(f"CAMTRACE_{name.upper()}={'' if value is None else value}")


def main() -> None:
    cli(prog_name="camtrace")


if __name__ == "__main__":
    main()
