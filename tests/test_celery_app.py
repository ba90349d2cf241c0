"""The Celery app's configuration, its tasks and the worker command line, as the settings make them."""

from __future__ import annotations

import pytest
from celery_batches import Batches
from click.testing import CliRunner
from distributed_fixtures import broker  # noqa: F401

from camtrace.cli import cli
from camtrace.errors import ConfigError
from camtrace.settings import Settings, load_settings
from camtrace.workers.celery_app import QUEUES, TASK_ROUTES, make_celery, model_threads, worker_argv
from camtrace.workers.tasks import backoff, create_app


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
    assert settings(tmp_path).broker_kind == "redis"
    options = conf.broker_transport_options
    assert options["visibility_timeout"] == 600
    # Lost tasks are looked for every 10 s, not kombu's default of every 100 s.
    assert options["unacked_restore_interval"] * options["unacked_restore_throttle"] <= 10
    short = make_celery(settings(tmp_path, segment_seconds=1, visibility_timeout=45)).conf.broker_transport_options
    assert short["unacked_restore_interval"] * short["unacked_restore_throttle"] <= 45 / 5


def test_redis_redelivers_just_above_the_task_time_limit_derived_from_the_segment_length(tmp_path):
    derived = settings(tmp_path, segment_seconds=60)
    assert derived.visibility_timeout is None
    # A segment task may take 3 segment lengths + 30 s; Celery kills it 10 s later; Redis redelivers 20 s after that.
    assert (derived.task_time_limit, derived.task_hard_time_limit, derived.effective_visibility_timeout) == (210, 220, 240)
    options = make_celery(derived).conf.broker_transport_options
    assert options["visibility_timeout"] == 240 and options["unacked_restore_interval"] == 10
    short = settings(tmp_path, segment_seconds=4)
    assert short.effective_visibility_timeout == 72 < 3600


def test_segment_tasks_carry_the_derived_time_limits(tmp_path):
    worker = settings(tmp_path, segment_seconds=4)
    tasks = create_app(worker).tasks
    detect, ingest, embed = tasks["camtrace.detect"], tasks["camtrace.ingest"], tasks["camtrace.embed"]
    assert (detect.soft_time_limit, detect.time_limit) == (42, 52)
    assert ingest.time_limit == 52 < worker.effective_visibility_timeout == 72
    assert backoff(worker, 10) == 72 / 3  # a delayed retry stays well inside the visibility timeout
    assert embed.time_limit is None  # batches are not segment tasks; training is not bounded either
    assert tasks["camtrace.train"].time_limit is None


def test_the_factory_puts_every_task_on_its_app_with_the_given_settings(tmp_path):
    app = create_app(settings(tmp_path, segment_seconds=4, embed_batch_size=64, embed_gather_seconds=0.5))
    assert app.camtrace_settings.segment_seconds == 4
    camtrace_tasks = {name: task for name, task in app.tasks.items() if name.startswith("camtrace.")}
    stages = {"ingest", "detect", "embed", "train", "reindex"}
    periodic = {"retention", "learn_evidence", "maintain_index", "deliver_alerts"}
    assert set(camtrace_tasks) == set(TASK_ROUTES) == {f"camtrace.{name}" for name in stages | periodic}
    embed = camtrace_tasks["camtrace.embed"]
    assert isinstance(embed, Batches) and (embed.flush_every, embed.flush_interval) == (8, 0.5)
    assert [name for name, task in camtrace_tasks.items() if not task.acks_late] == ["camtrace.train"]
    retries = {name: camtrace_tasks[name].max_retries for name in ("camtrace.ingest", "camtrace.detect", "camtrace.reindex")}
    assert retries == dict.fromkeys(retries, 20) and camtrace_tasks["camtrace.maintain_index"].max_retries == 0
    # Each app holds its own tasks: another built from other settings has other limits, a sender's app none.
    other = create_app(settings(tmp_path, segment_seconds=60)).tasks["camtrace.detect"]
    assert (other.soft_time_limit, camtrace_tasks["camtrace.detect"].soft_time_limit) == (210, 42)
    assert not [name for name in make_celery(settings(tmp_path)).tasks if name.startswith("camtrace.")]


# Settings refuse this environment: a module that read them at import would fail to import. (Celery's own
# fallback app, "default", may appear: the count is of camtrace's apps.)
UNREADABLE = {"CAMTRACE_SEGMENT_SECONDS": "not-a-number", "CAMTRACE_BROKER_URL": "kafka://127.0.0.1:9092"}
IMPORT_EVERYTHING = """
import gc, importlib, pkgutil, celery, camtrace.workers
for module in pkgutil.iter_modules(camtrace.workers.__path__):
    importlib.import_module(f"camtrace.workers.{module.name}")
import camtrace.cli, camtrace.workers.tasks
print(len([thing for thing in gc.get_objects() if isinstance(thing, celery.Celery) and thing.main == "camtrace"]))
"""


def test_importing_the_tasks_and_the_command_line_builds_no_app_and_reads_no_settings(tmp_path, monkeypatch):
    import os
    import subprocess
    import sys

    env = {name: value for name, value in os.environ.items() if not name.startswith("CAMTRACE_")}
    env.update(UNREADABLE, CAMTRACE_DATA_DIR=str(tmp_path))
    done = subprocess.run([sys.executable, "-c", IMPORT_EVERYTHING], env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.split()[-1] == "0"
    for name, value in UNREADABLE.items():  # the environment does stop whatever reads the settings
        monkeypatch.setenv(name, value)
    with pytest.raises((ConfigError, ValueError)):
        load_settings()


def test_a_visibility_timeout_below_the_task_time_limit_is_refused_naming_both(tmp_path, monkeypatch):
    assert settings(tmp_path, segment_seconds=4, visibility_timeout=53).effective_visibility_timeout == 53
    monkeypatch.setenv("CAMTRACE_SEGMENT_SECONDS", "4")
    monkeypatch.setenv("CAMTRACE_VISIBILITY_TIMEOUT", "52")
    with pytest.raises(ConfigError, match="CAMTRACE_VISIBILITY_TIMEOUT=52 must exceed the task time limit of 52 s"):
        load_settings()
    monkeypatch.setenv("CAMTRACE_BROKER_URL", "kafka://127.0.0.1:9092")
    monkeypatch.delenv("CAMTRACE_VISIBILITY_TIMEOUT")
    with pytest.raises(ConfigError, match="CAMTRACE_BROKER_URL.*amqp://"):
        load_settings()


def test_rabbitmq_uses_quorum_queues_publisher_confirms_and_no_result_backend(tmp_path):
    rabbit = Settings(data_dir=tmp_path, broker_url="amqp://guest:guest@127.0.0.1:5672//")
    assert rabbit.broker_kind == "rabbitmq"
    app = make_celery(rabbit)
    conf = app.conf
    for queue in conf.task_queues:
        assert queue.queue_arguments == {"x-queue-type": "quorum"}
        # Not direct: Celery's native delayed delivery carries countdown retries only through other exchanges.
        assert queue.exchange.type == "topic" and queue.routing_key == queue.name
    assert conf.broker_transport_options == {"confirm_publish": True}
    assert conf.worker_detect_quorum_queues and conf.task_acks_late and conf.worker_prefetch_multiplier == 1
    assert "visibility_timeout" not in conf.broker_transport_options
    assert app.backend.__class__.__name__ == "DisabledBackend"
    classic = make_celery(Settings(data_dir=tmp_path, broker_url="amqp://h//", rabbitmq_queue_type="classic"))
    assert {queue.queue_arguments["x-queue-type"] for queue in classic.conf.task_queues} == {"classic"}
    # The embed worker's prefetch holds more messages than one batch gathers, on either broker.
    argv = worker_argv(rabbit, "embed")
    assert int(argv[argv.index("--prefetch-multiplier") + 1]) >= create_app(rabbit).tasks["camtrace.embed"].flush_every


def test_retention_is_scheduled_only_when_a_limit_is_set_and_the_evidence_always(tmp_path):
    default = make_celery(settings(tmp_path)).conf.beat_schedule
    assert set(default) == {"learn_evidence", "maintain_index"}  # the embedded index is maintained off the hot path
    assert default["learn_evidence"] == {"task": "camtrace.learn_evidence", "schedule": 900.0}
    assert default["maintain_index"] == {"task": "camtrace.maintain_index", "schedule": 60.0}
    server = make_celery(settings(tmp_path, qdrant_url="http://qdrant:6333")).conf.beat_schedule
    assert "maintain_index" not in server  # a Qdrant server indexes by itself
    scheduled = make_celery(settings(tmp_path, retention_days=30, evidence_learn_minutes=5)).conf.beat_schedule
    assert scheduled["retention"]["task"] == "camtrace.retention" and scheduled["learn_evidence"]["schedule"] == 300.0


def test_alert_deliveries_are_retried_by_beat_only_when_a_target_is_set(tmp_path):
    assert "deliver_alerts" not in make_celery(settings(tmp_path)).conf.beat_schedule
    mqtt = make_celery(settings(tmp_path, mqtt_url="mqtt://127.0.0.1:1883", alert_delivery_seconds=5)).conf.beat_schedule
    assert mqtt["deliver_alerts"] == {"task": "camtrace.deliver_alerts", "schedule": 5.0}
    hooks = settings(tmp_path, webhook_urls="https://hooks.example/a", webhook_secret="s" * 32)
    assert "deliver_alerts" in make_celery(hooks).conf.beat_schedule
    with pytest.raises(ValueError, match="CAMTRACE_WEBHOOK_SECRET"):  # webhooks are sent signed only
        settings(tmp_path, webhook_urls="https://hooks.example/a")
    with pytest.raises(ValueError, match="MQTT URL"):
        settings(tmp_path, mqtt_url="http://broker:1883")


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


def test_a_prefork_worker_shares_its_cores_among_its_processes(tmp_path, monkeypatch):
    monkeypatch.setattr("os.cpu_count", lambda: 8)
    cpu = settings(tmp_path, device="cpu")
    assert model_threads(cpu, "prefork") == 1  # Celery's default: one process per core, one thread each
    assert model_threads(cpu, "prefork", concurrency=2) == 4
    assert model_threads(cpu, "prefork", concurrency=16) == 1
    assert model_threads(cpu, "solo") == 0  # one process: the runtimes' own default, a thread per core
    assert model_threads(settings(tmp_path, device="cpu", cpu_threads=3), "prefork") == 3  # the setting wins


def test_an_unknown_queue_is_refused_with_the_valid_names(tmp_path):
    with pytest.raises(ConfigError, match="embd.*ingest, detect, embed, train"):
        worker_argv(settings(tmp_path), "embd")
    env = {"CAMTRACE_DATA_DIR": str(tmp_path), "CAMTRACE_BROKER_URL": "redis://127.0.0.1:6390/0"}
    result = CliRunner().invoke(cli, ["worker", "--queues", "detect,gpu"], env=env)
    assert result.exit_code == 2
    assert "unknown queue(s) gpu" in result.output
    assert set(QUEUES) == {"ingest", "detect", "embed", "train"}


@pytest.mark.parametrize("broker", ["redis", "rabbitmq"], indirect=True)
def test_queue_depth_counts_the_messages_waiting_on_either_broker(broker, tmp_path):
    from camtrace.workers.celery_app import declare_queues
    from camtrace.workers.ops import queue_depths

    app = make_celery(Settings(data_dir=tmp_path, broker_url=broker.url))
    declare_queues(app)
    for number in range(3):
        app.send_task("camtrace.detect", kwargs={"ref": {"number": number}}, ignore_result=True)
    app.send_task("camtrace.embed", kwargs={}, ignore_result=True)
    assert queue_depths(broker.url, QUEUES) == {"ingest": 0, "detect": 3, "embed": 1, "train": 0}
    assert queue_depths(broker.url, ("never-declared", "detect")) == {"never-declared": 0, "detect": 3}
