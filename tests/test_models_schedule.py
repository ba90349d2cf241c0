"""Scheduled training: the check beat triggers, a real (tiny) training run, and the train task on a real worker."""

from __future__ import annotations

import os
import time
from pathlib import Path

import cv2
import numpy as np
import pytest
from click.testing import CliRunner
from distributed_fixtures import Worker, camtrace_env, redis_server, settings_from, wait_for  # noqa: F401

from camtrace.cli import cli
from camtrace.embedding.anchor_head import HEAD_WEIGHTS
from camtrace.services import Services
from camtrace.settings import Settings
from camtrace.training.schedule import maybe_train, training_due
from camtrace.workers.celery_app import beat_schedule


def make_services(tmp_path: Path, siglip: Path, **extra) -> Services:
    return Services(
        Settings(
            data_dir=tmp_path / "data", embed_model=str(siglip), device="cpu", training_data_dir=tmp_path / "training", **extra
        )
    )


def add_dataset(root: Path, kind: str, name: str, target: Path | None = None, age: float = 0.0) -> str:
    """A dataset entry ``<root>/<kind>/<name>`` (a link to ``target`` or a folder with one file), ``age`` s old."""
    entry = root / kind / name
    entry.parent.mkdir(parents=True, exist_ok=True)
    if target is not None:
        entry.symlink_to(target, target_is_directory=True)
    else:
        entry.mkdir()
        (entry / "labels.csv").write_text("image,identity,camera,caption,split\n")
        stamp = time.time() - age
        for path in (entry / "labels.csv", entry):
            os.utime(path, (stamp, stamp))
    return f"{kind}:{entry}"


def test_no_new_data_means_no_training(tmp_path: Path, tiny_siglip_dir: Path) -> None:
    services = make_services(tmp_path, tiny_siglip_dir)
    (tmp_path / "training").mkdir()
    decision = training_due(services)
    assert not decision.due and "CAMTRACE_TRAINING_DATA_DIR" in decision.reason
    assert maybe_train(services) is None
    assert services.registry.list() == []
    # A folder that is no dataset kind is not training data.
    (tmp_path / "training" / "holiday-photos" / "a").mkdir(parents=True)
    assert not training_due(services).due


def test_new_datasets_train_and_register_a_model_then_the_count_starts_again(
    tmp_path: Path, tiny_siglip_dir: Path, footage
) -> None:
    # Tight ground-truth boxes: the detector's crops need a trained detector (tests/test_training_site.py).
    services = make_services(tmp_path, tiny_siglip_dir, train_min_new_feedback=3, train_crops="tight")
    spec = add_dataset(tmp_path / "training", "synthetic", "walks", target=footage.root)
    decision = training_due(services)
    assert decision.due and decision.new_datasets == [spec] and decision.new_feedback == 0

    outcome = maybe_train(services)
    assert outcome is not None and not outcome.promoted
    entry = services.registry.get(outcome.model_id)
    assert entry.folder == str(Path(outcome.out_dir).resolve()) and entry.parent == str(tiny_siglip_dir)
    assert entry.datasets == {"train": [spec], "val": None}
    assert entry.metric("text_to_identity.top1") is not None and entry.settings["base"] == str(tiny_siglip_dir)
    assert services.model().model_id is None  # registered, not promoted (CAMTRACE_AUTO_PROMOTE is off)

    # The same data again is not new; a dataset older than the model is not either.
    add_dataset(tmp_path / "training", "csv", "old-labels", age=3600)
    decision = training_due(services)
    assert not decision.due and "0/1 new dataset(s)" in decision.reason
    fresh = add_dataset(tmp_path / "training", "csv", "new-labels")
    assert training_due(services).new_datasets == [fresh]

    # Investigators' confirmed matches count too (newest verdict per pair), and join the training data.
    (tmp_path / "training" / "csv" / "new-labels" / "labels.csv").unlink()
    os.utime(tmp_path / "training" / "csv" / "new-labels", (0, 0))
    now = time.time()
    services.db.add_feedback("t1", "t2", "same", "ann", created_at=now)
    services.db.add_feedback("t1", "t3", "different", "ann", created_at=now)
    services.db.add_feedback("t1", "t3", "same", "ann", created_at=now)  # changed their mind: one pair
    services.db.add_feedback("t1", "t4", "different", "ann", created_at=now)
    services.db.add_feedback("t5", "t6", "same", "ann", created_at=now - 86400)  # older than the model
    decision = training_due(services)
    assert decision.new_feedback == 2 and not decision.due
    assert f"feedback:{services.settings.resolved_data_dir}" in decision.datasets
    services.db.add_feedback("t7", "t8", "same", "bob")
    decision = training_due(services)
    assert decision.due and "3 new confirmed match(es)" in decision.reason


def test_beat_schedules_the_check_only_when_an_interval_is_set() -> None:
    assert "train" not in beat_schedule(Settings())
    entry = beat_schedule(Settings(train_interval_seconds=900))["train"]
    assert entry == {"task": "camtrace.train", "schedule": 900.0}


@pytest.mark.slow
def test_queued_training_and_a_promotion_on_real_workers(
    tmp_path: Path,
    tiny_yolo_dir: Path,
    tiny_siglip_dir: Path,
    footage,
    redis_server,  # noqa: F811
) -> None:
    """One worker process for every queue: a distributed ingest, a training run queued with
    `camtrace train --queue`, then a promotion whose re-index runs as reindex tasks on the embed queue."""
    env = camtrace_env(tmp_path / "data", tiny_yolo_dir, tiny_siglip_dir, redis_server.url, CAMTRACE_MODEL_REFRESH_SECONDS="0")
    settings = settings_from(env)
    worker = Worker("ingest,detect,embed,train", env, tmp_path / "worker.log")
    runner = CliRunner()
    try:
        camera = sorted(footage.videos)[0]
        ingested = runner.invoke(
            cli, ["ingest", str(footage.videos[camera]), "--camera", camera, "--wait", "--no-progress"], env=env
        )
        assert ingested.exit_code == 0, ingested.output
        spec = f"synthetic:{footage.root}"
        queued = runner.invoke(
            cli,
            [
                "train",
                "--dataset",
                spec,
                "--out",
                str(tmp_path / "run"),
                "--queue",
                "--epochs",
                "1",
                "--head-epochs",
                "1",
                "--batch-size",
                "16",
            ],
            env=env,
        )
        assert queued.exit_code == 0 and "queued training run" in queued.output, queued.output
        services = Services(settings)
        entries = wait_for(services.registry.list, 180, "the trained model in the registry", interval=0.5)
        assert len(entries) == 1 and entries[0].datasets["train"] == [spec]
        trained = entries[0]
        assert trained.folder == str(tmp_path / "run") and trained.settings["epochs"] == 1 and trained.metrics

        promoted = runner.invoke(cli, ["models", "promote", str(trained.id), "--force", "--no-progress", "--json"], env=env)
        assert promoted.exit_code == 0, promoted.output
        detections = services.db.counts()["detections"]
        jobs = [job for job in services.db.list_jobs() if job.kind == "reindex"]
        assert [job.status for job in jobs] == ["done"] and jobs[0].crops_indexed == detections
        model = services.model()
        assert model.model_id == trained.id and model.index.count() == detections > 0
        # The workers embedded with the trained model: its vectors are what it makes of the stored crops.
        row = services.db.detection_pages(1).__next__()[0]
        stored = model.index.retrieve([row.point_id])[0]
        crop = cv2.cvtColor(cv2.imread(str(services.crops.path(row.crop_key))), cv2.COLOR_BGR2RGB)
        assert np.allclose(stored.vector, model.encoder.encode_images([crop])[0], atol=1e-4)
        assert stored.payload["model_version"] == model.encoder.model_version

        # An anchor re-id head trained on the worker too, on the frozen trained model, judged with and without it.
        head_run = [*("train", "--dataset", spec, "--base", trained.folder, "--out", str(tmp_path / "head")), "--queue"]
        queued = runner.invoke(cli, [*head_run, "--head", "anchors", "--epochs", "1", "--batch-size", "16"], env=env)
        assert queued.exit_code == 0 and "queued training run" in queued.output, queued.output
        wait_for(lambda: len(services.registry.list()) == 2, 180, "the model with its head in the registry", interval=0.5)
        with_head = next(entry for entry in services.registry.list() if entry.id != trained.id)
        assert with_head.settings["head"] == "anchors" and (tmp_path / "head" / HEAD_WEIGHTS).is_file()
        assert with_head.metrics["image_reid_head"]["map"] >= 0 and with_head.metrics["image_reid"]["map"] >= 0
        services.close()
    finally:
        worker.stop()
        print((tmp_path / "worker.log").read_text()[-3000:])
