"""A running query service over an index built from synthetic footage, and users of every role.

The footage (conftest ``footage``: three cameras) is ingested once per
session with the CLI into a session data dir; users are created with the
CLI (``camtrace user add ... --json``) so their tokens come the way an admin
gets them. The service is the real app under uvicorn in a thread, spoken to
over HTTP with httpx.
"""

from __future__ import annotations

import json
import shutil
import threading
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import httpx
import pytest
from click.testing import CliRunner
from distributed_fixtures import camtrace_env, free_port, settings_from

PASSWORD = "correct horse battery"
# Test modules import these fixtures, which makes one fixture per module: the
# index and the service are built once per run all the same, kept here.
_SHARED: dict[str, object] = {}


def iso(ts: float) -> str:
    return datetime.fromtimestamp(ts, tz=UTC).isoformat()


def run_cli(env: dict, *args: str, stdin: str | None = None) -> str:
    from camtrace.cli import cli

    result = CliRunner().invoke(cli, list(args), env=env, input=stdin, catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return result.stdout


def data_copy(api: ApiService, folder: Path) -> Path:
    """A throwaway copy of the session's data dir, for tests that change users, cameras or counters."""
    copy = folder / "data"
    shutil.copytree(api.services.settings.resolved_data_dir, copy, ignore=shutil.ignore_patterns("*.lock"))
    return copy


@dataclass
class ApiService:
    """The service's address, its settings and a token per test user."""

    url: str
    env: dict
    app: object
    cameras: list[str]
    tokens: dict[str, str] = field(default_factory=dict)

    def client(self, user: str | None = None, **kwargs) -> httpx.Client:
        headers = {"Authorization": f"Bearer {self.tokens[user]}"} if user else {}
        return httpx.Client(base_url=self.url, headers=headers, timeout=60, **kwargs)

    @property
    def services(self):
        return self.app.state.services

    @property
    def access(self):
        return self.app.state.access


class ThreadedServer:
    """uvicorn serving an app in a thread of the test process."""

    def __init__(self, app, port: int) -> None:
        import uvicorn

        # As `camtrace serve` runs it: the app alone decides whose X-Forwarded-For counts.
        self.server = uvicorn.Server(
            uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", lifespan="on", proxy_headers=False)
        )
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    def __enter__(self):
        self.thread.start()
        deadline = time.monotonic() + 30
        while not self.server.started:
            assert time.monotonic() < deadline and self.thread.is_alive(), "uvicorn did not start"
            time.sleep(0.05)
        return self

    def __exit__(self, *exc) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=20)


@pytest.fixture(scope="session")
def api_env(session_dir: Path, tiny_yolo_dir, tiny_siglip_dir, footage) -> dict:
    """A data dir holding the footage of every camera, indexed by `camtrace ingest`, and the test users."""
    if "env" in _SHARED:
        return _SHARED["env"]
    ingest_root = session_dir / "api-ingest-root"
    ingest_root.mkdir()
    env = camtrace_env(
        session_dir / "api-data",
        tiny_yolo_dir,
        tiny_siglip_dir,
        CAMTRACE_INGEST_ROOTS=str(ingest_root),
        CAMTRACE_MAX_UPLOAD_MB="1",
        CAMTRACE_LOG_LEVEL="WARNING",
    )
    for camera, path in sorted(footage.videos.items()):
        run_cli(env, "ingest", str(path), "--camera", camera, "--start", iso(footage.start_ts[camera]), "--no-progress")
    _SHARED["env"] = env
    return env


@pytest.fixture(scope="session")
def api(request, api_env: dict, footage) -> ApiService:
    from camtrace.api.app import create_app

    if "api" in _SHARED:
        return _SHARED["api"]

    cameras = sorted(footage.videos)
    env = api_env
    tokens = {}
    for name, role, limit in (
        ("admin", "admin", []),
        ("investigator", "investigator", []),
        ("operator", "operator", []),
        ("restricted", "investigator", [cameras[0]]),
    ):
        limit_args = [arg for camera in limit for arg in ("--camera", camera)]
        out = run_cli(env, "user", "add", name, "--role", role, *limit_args, "--password-stdin", "--json", stdin=PASSWORD + "\n")
        tokens[name] = json.loads(out)["token"]
    app = create_app(settings_from(env))
    port = free_port()
    server = ThreadedServer(app, port).__enter__()
    request.config.add_cleanup(server.__exit__)
    _SHARED["api"] = ApiService(f"http://127.0.0.1:{port}", env, app, cameras, tokens)
    return _SHARED["api"]
