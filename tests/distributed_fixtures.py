"""Real services for the distributed tests: a broker of the test's own and `camtrace worker` processes.

The broker is a Redis server started for the test, or a vhost of its own on the
machine's RabbitMQ server (127.0.0.1:5672, guest/guest; `scripts/test` starts it).
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Callable
from pathlib import Path

import pytest

from camtrace.settings import Settings


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_for(predicate: Callable[[], object], timeout: float, what: str, interval: float = 0.2):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")


class RedisServer:
    """A Redis of the test's own (append-only file on, so a restart keeps the queues)."""

    kind = "redis"

    def __init__(self, folder: Path) -> None:
        binary = shutil.which("redis-server")
        if binary is None:
            raise RuntimeError("redis-server is not installed: apt-get install redis-server (scripts/test does)")
        self.binary = binary
        self.folder = folder
        self.folder.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        self.process: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        self.process = subprocess.Popen(
            [
                self.binary,
                "--port",
                str(self.port),
                "--bind",
                "127.0.0.1",
                "--dir",
                str(self.folder),
                "--appendonly",
                "yes",
                "--appendfsync",
                "always",
                "--save",
                "",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        wait_for(self.answers, 15, f"redis on port {self.port}")

    def answers(self) -> bool:
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=0.5) as sock:
                sock.sendall(b"PING\r\n")
                return sock.recv(16).startswith(b"+PONG")
        except OSError:
            return False

    def stop(self) -> None:
        if self.process is not None:
            self.process.terminate()  # SIGTERM: Redis flushes its append-only file and exits
            self.process.wait(timeout=15)
            self.process = None


class RabbitVhost:
    """A vhost of the test's own on the shared RabbitMQ server; the server itself is never stopped.

    ``stop`` is an outage as the test's processes see it: the guest user loses
    its permissions on the vhost, so every new connection is refused, and the
    vhost's open connections are closed by the server. ``start`` gives the
    permissions back; the workers' and producers' reconnect loops get in again.
    """

    kind = "rabbitmq"
    host, port = "127.0.0.1", 5672

    def __init__(self) -> None:
        if shutil.which("rabbitmqctl") is None:
            raise RuntimeError("rabbitmq-server is not installed: apt-get install rabbitmq-server (scripts/test does)")
        if not port_answers(self.host, self.port):
            raise RuntimeError("RabbitMQ does not answer on 127.0.0.1:5672: run `rabbitmq-server -detached` (scripts/test does)")
        self.name = f"camtrace-test-{uuid.uuid4().hex[:12]}"

    @property
    def url(self) -> str:
        return f"amqp://guest:guest@{self.host}:{self.port}/{self.name}"

    def create(self) -> None:
        rabbitmqctl("add_vhost", self.name)
        self.start()

    def start(self) -> None:
        rabbitmqctl("set_permissions", "-p", self.name, "guest", ".*", ".*", ".*")

    def stop(self) -> None:
        rabbitmqctl("clear_permissions", "-p", self.name, "guest")
        rabbitmqctl("close_all_connections", "-p", self.name, "camtrace test: broker outage")

    def delete(self) -> None:
        rabbitmqctl("delete_vhost", self.name)


def rabbitmqctl(*args: str) -> None:
    subprocess.run(["rabbitmqctl", "-q", *args], check=True, capture_output=True, timeout=120)


def port_answers(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=1):
            return True
    except OSError:
        return False


class Worker:
    """One `camtrace worker` process group."""

    def __init__(self, queues: str, env: dict[str, str], log: Path, *extra: str) -> None:
        self.log = log
        self.process = subprocess.Popen(
            [sys.executable, "-m", "camtrace.cli", "worker", "--queues", queues, *extra],
            env=env,
            stdout=open(log, "ab"),
            stderr=subprocess.STDOUT,
            start_new_session=True,  # its own process group: SIGKILL reaches the pool children too
        )

    def kill(self) -> None:
        os.killpg(self.process.pid, signal.SIGKILL)
        self.process.wait(timeout=15)

    def stop(self) -> None:
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.kill()


def camtrace_env(data_dir: Path, yolo: Path, siglip: Path, broker_url: str | None = None, **extra: str) -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CAMTRACE_")}
    env.update(
        CAMTRACE_DATA_DIR=str(data_dir),
        CAMTRACE_EMBED_MODEL=str(siglip),
        CAMTRACE_DETECTOR_MODEL=str(yolo),
        CAMTRACE_DETECTOR_CONF="0.25",
        CAMTRACE_DETECTOR_IMGSZ="320",
        CAMTRACE_DETECTOR_MAX_DET="6",
        CAMTRACE_SAMPLE_FPS="5",
        CAMTRACE_SEGMENT_SECONDS="4",
        CAMTRACE_DEVICE="cpu",
        CAMTRACE_EMBED_GATHER_SECONDS="0.3",
        CAMTRACE_LOG_LEVEL="INFO",
        HF_HUB_OFFLINE="1",
        YOLO_OFFLINE="1",
        YOLO_CONFIG_DIR=str(data_dir / "ultralytics"),
    )
    if broker_url:
        env["CAMTRACE_BROKER_URL"] = broker_url
    env.update(extra)
    return env


def settings_from(env: dict) -> Settings:
    """The Settings object a process started with ``env`` would load."""
    return Settings(**{k[len("CAMTRACE_") :].lower(): v for k, v in env.items() if k.startswith("CAMTRACE_")})


def wait_jobs(env: dict, job_ids: list[str], timeout: float = 240, interval: float = 0.5):
    """Wait until every job has ended; returns their rows."""
    from camtrace.storage import Database
    from camtrace.workers.jobs import TERMINAL, current_job

    db = Database(settings_from(env).sql_url)

    def finished():
        jobs = [current_job(db, job_id) for job_id in job_ids]
        return jobs if all(job.status in TERMINAL for job in jobs) else None

    try:
        return wait_for(finished, timeout, f"jobs {job_ids}", interval=interval)
    finally:
        db.close()


def run_cli(env: dict, *args: str, timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "camtrace.cli", *args], env=env, capture_output=True, text=True, timeout=timeout)


@pytest.fixture
def redis_server(tmp_path: Path):
    server = RedisServer(tmp_path / "redis")
    server.start()
    yield server
    server.stop()


@pytest.fixture
def broker(request, tmp_path: Path):
    """Redis, or with ``@pytest.mark.parametrize("broker", ["redis", "rabbitmq"], indirect=True)`` either broker.

    Both have ``url``, ``kind``, and ``stop``/``start`` for an outage.
    """
    if getattr(request, "param", "redis") == "rabbitmq":
        vhost = RabbitVhost()
        vhost.create()
        yield vhost
        vhost.delete()
    else:
        server = RedisServer(tmp_path / "redis")
        server.start()
        yield server
        server.stop()
