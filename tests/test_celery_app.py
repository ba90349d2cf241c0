"""The Celery app's configuration and the worker command line, as the settings make them."""

from __future__ import annotations

import pytest
from camtrace.workers.celery_app import QUEUES, make_celery, worker_argv
from click.testing import CliRunner

from camtrace.cli import cli
from camtrace.errors import ConfigError
from camtrace.settings import Settings


def settings(tmp_path, **fields) -> Settings:
    return Settings(data_dir=tmp_path, broker_url="redis://127.0.0.1:6390/0", **fields)


def test_each_queue_has_its_own_exchange_and_tasks_are_routed_by_name(tmp_path):
    app = make_celery(settings(tmp_path))
    queues = {queue.name: queue for queue in app.conf.task_queues}
    assert set(queues) == {"ingest", "detect", "embed", "train"}
    for name, queue in queues.items():
        assert queue.exchange.name == name and queue.exchange.type == "direct"
        assert queue.routing_key == name
    routes = app.conf.task_routes
    assert routes["camtrace.detect"] == {"queue": "detect", "routing_key": "detect"}
    assert routes["camtrace.embed"]["queue"] == "embed"
    assert routes["camtrace.train"]["queue"] == "train"


def test_reliability_settings_follow_the_settings(tmp_path):
    app = make_celery(settings(tmp_path, visibility_timeout=600))
    conf = app.conf
    assert conf.task_acks_late and conf.task_reject_on_worker_lost
    assert conf.worker_prefetch_multiplier == 1
    assert conf.task_publish_retry
    options = conf.broker_transport_options
    assert options["visibility_timeout"] == 600
    # Lost tasks are looked for every 10 s, not kombu's default of every 100 s.
    assert options["unacked_restore_interval"] * options["unacked_restore_throttle"] <= 10
    short = make_celery(settings(tmp_path, visibility_timeout=10)).conf.broker_transport_options
    assert short["unacked_restore_interval"] * short["unacked_restore_throttle"] <= 2


def test_retention_is_scheduled_only_when_a_limit_is_set(tmp_path):
    assert not make_celery(settings(tmp_path)).conf.beat_schedule
    scheduled = make_celery(settings(tmp_path, retention_days=30)).conf.beat_schedule
    assert scheduled["retention"]["task"] == "camtrace.retention"


def test_distributed_mode_without_a_broker_is_a_clear_error(tmp_path):
    with pytest.raises(ConfigError, match="CAMTRACE_BROKER_URL"):
        make_celery(Settings(data_dir=tmp_path))


def test_gpu_workers_use_a_pool_that_never_forks_and_cpu_workers_prefork(tmp_path):
    gpu = worker_argv(settings(tmp_path, device="cuda:1"), "embed")
    assert gpu[gpu.index("--pool") + 1] == "solo" and gpu[gpu.index("--concurrency") + 1] == "1"
    assert "--prefetch-multiplier" in gpu  # the batch gatherer needs several messages in hand
    detect_on_gpu = worker_argv(settings(tmp_path, device="cuda:0"), "detect")
    assert detect_on_gpu[detect_on_gpu.index("--pool") + 1] == "solo"
    cpu = worker_argv(settings(tmp_path, device="cpu"), "ingest, detect", concurrency=4)
    assert cpu[cpu.index("--pool") + 1] == "prefork"
    assert cpu[cpu.index("--queues") + 1] == "ingest,detect"
    assert cpu[cpu.index("--concurrency") + 1] == "4"
    assert cpu[cpu.index("--hostname") + 1] == "camtrace-ingest-detect@%h"
    threads = worker_argv(settings(tmp_path), "embed", pool="threads", name="gpu0@rack1")
    assert threads[threads.index("--pool") + 1] == "threads"
    assert threads[threads.index("--hostname") + 1] == "gpu0@rack1"


def test_an_unknown_queue_is_refused_with_the_valid_names(tmp_path):
    with pytest.raises(ConfigError, match="embd.*ingest, detect, embed, train"):
        worker_argv(settings(tmp_path), "embd")
    env = {"CAMTRACE_DATA_DIR": str(tmp_path), "CAMTRACE_BROKER_URL": "redis://127.0.0.1:6390/0"}
    result = CliRunner().invoke(cli, ["worker", "--queues", "detect,gpu"], env=env)
    assert result.exit_code == 2
    assert "unknown queue(s) gpu" in result.output
    assert set(QUEUES) == {"ingest", "detect", "embed", "train"}
