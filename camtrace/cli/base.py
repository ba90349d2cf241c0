"""What every command group of the `camtrace` command line shares: the group, services, row printing."""

from __future__ import annotations

import json
import logging
import sys
from datetime import UTC, datetime

import click

from camtrace.errors import CamtraceError
from camtrace.settings import Settings, load_settings

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


def access_store():
    from camtrace.storage.access import AccessStore

    return AccessStore(make_services().db)


def audited_cli(access, action: str, detail: dict, ids: list[str]):
    """User and token changes made at the command line are audited like those made over HTTP, in the same
    transaction as the change."""
    import getpass

    return access.audited(f"cli:{getpass.getuser()}", action, detail, ids, client="cli")


def embedder_facts(model) -> dict:
    """The embedding model in service and what runs it here: the settings' runtime and precision, or PyTorch
    for a model ONNX cannot take (read from its config: no weights load)."""
    return {"model_version": model.encoder.model_version, "model_id": model.model_id, "embed_runtime": model.encoder.runtime_label}


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


@click.group(cls=CamtraceGroup)
@click.version_option(package_name="camtrace")
def cli() -> None:
    """Find people in surveillance video by description or by photo."""
