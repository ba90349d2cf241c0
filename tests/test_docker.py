"""The deployment files are written and checked here, not run (no container engine on CI)."""

from __future__ import annotations

from pathlib import Path

import yaml
from click.testing import CliRunner

from camtrace.cli import cli

DOCKER = Path(__file__).resolve().parents[1] / "docker"


def compose() -> dict:
    return yaml.safe_load((DOCKER / "compose.yaml").read_text())


def test_compose_has_every_part_of_a_deployment():
    services = compose()["services"]
    assert {"redis", "qdrant", "postgres", "api", "cpu-worker", "gpu-worker", "beat", "cameras"} <= set(services)
    assert services["api"]["ports"] == ["8000:8000"] and services["api"]["command"][0] == "api"


def test_gpu_workers_scale_out_one_gpu_each():
    gpu = compose()["services"]["gpu-worker"]
    devices = gpu["deploy"]["resources"]["reservations"]["devices"]
    assert devices == [{"driver": "nvidia", "count": 1, "capabilities": ["gpu"]}]
    # --scale needs replicas without a fixed name or host port.
    assert "container_name" not in gpu and "ports" not in gpu
    assert gpu["command"][:3] == ["worker", "--queues", "embed"]


def test_services_point_at_the_servers_of_the_compose_file():
    services = compose()["services"]
    env = services["gpu-worker"]["environment"]
    assert env["CAMTRACE_BROKER_URL"].startswith("redis://redis:")
    assert env["CAMTRACE_QDRANT_URL"].startswith("http://qdrant:")
    assert env["CAMTRACE_DATABASE_URL"].startswith("postgresql+psycopg://")
    for name, service in services.items():
        for key in service.get("environment", {}) if isinstance(service.get("environment"), dict) else {}:
            if key.startswith("CAMTRACE_"):
                from camtrace.settings import Settings

                assert key[len("CAMTRACE_") :].lower() in Settings.model_fields, f"{name}: unknown setting {key}"


def test_every_command_in_compose_is_a_real_cli_command():
    runner = CliRunner()
    for name, service in compose()["services"].items():
        command = service.get("command")
        if not service.get("build") or not command:
            continue
        result = runner.invoke(cli, [*command[: 2 if command[0] == "camera" else 1], "--help"])
        assert result.exit_code == 0, f"{name}: {command} -> {result.output}"


def test_dockerfiles_install_the_package_and_run_the_cli():
    for dockerfile in ("Dockerfile", "Dockerfile.cuda"):
        text = (DOCKER / dockerfile).read_text()
        assert "pip install ." in text
        assert 'ENTRYPOINT ["camtrace"]' in text
        for folder in ("camtrace", "detection", "embedding", "storage", "workers", "training", "api"):
            assert f"COPY {folder} {folder}" in text


def test_kubernetes_workers_scale_on_the_length_of_their_queue():
    from camtrace.settings import Settings
    from camtrace.workers.celery_app import QUEUES

    documents = list(yaml.safe_load_all((DOCKER / "k8s" / "workers.yaml").read_text()))
    deployments = {doc["metadata"]["name"]: doc for doc in documents if doc["kind"] == "Deployment"}
    scalers = [doc for doc in documents if doc["kind"] == "ScaledObject"]
    assert set(deployments) == {"camtrace-gpu-worker", "camtrace-cpu-worker"}
    runner = CliRunner()
    consumed = {}
    for name, deployment in deployments.items():
        (container,) = deployment["spec"]["template"]["spec"]["containers"]
        args = container["args"]
        assert runner.invoke(cli, [args[0], "--help"]).exit_code == 0
        consumed[name] = set(args[args.index("--queues") + 1].split(","))
        for variable in container.get("env", []):
            if variable["name"].startswith("CAMTRACE_"):
                assert variable["name"][len("CAMTRACE_") :].lower() in Settings.model_fields
    gpu = deployments["camtrace-gpu-worker"]["spec"]["template"]["spec"]["containers"][0]
    assert gpu["resources"]["limits"]["nvidia.com/gpu"] == 1 and "cuda:0" in gpu["args"]
    assert len(scalers) == 2
    for scaler in scalers:
        target = scaler["spec"]["scaleTargetRef"]["name"]
        (trigger,) = scaler["spec"]["triggers"]
        assert trigger["type"] == "redis" and trigger["metadata"]["listName"] in QUEUES
        assert trigger["metadata"]["listName"] in consumed[target]  # it scales on a queue it consumes
        # camtrace refuses unknown CAMTRACE_ variables, so KEDA's address must not be one.
        assert not trigger["metadata"]["addressFromEnv"].startswith("CAMTRACE_")
