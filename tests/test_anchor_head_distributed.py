"""Distributed mode with an anchor-head model: workers write both indexes, vector for vector as local mode does."""

from __future__ import annotations

import json
import shutil
from datetime import UTC, datetime

import numpy as np
from distributed_fixtures import Worker, broker, camtrace_env, run_cli, settings_from  # noqa: F401

from camtrace.services import Services
from camtrace.workers.local import ingest_local


def _both(env: dict) -> tuple[dict, dict]:
    services = Services(settings_from({k: v for k, v in env.items() if k != "CAMTRACE_BROKER_URL"}))
    try:
        model = services.model()
        ids = sorted(model.index.point_ids())
        main = {p.id: np.asarray(p.vector) for p in model.index.retrieve(ids)}
        reid = {p.id: np.asarray(p.vector) for p in model.reid_index.retrieve(ids)}
        return main, reid
    finally:
        services.close()


def test_workers_write_both_vectors_as_local_mode(tmp_path, broker, tiny_yolo_dir, tiny_siglip_dir, footage):  # noqa: F811
    from camtrace.embedding.anchor_head import build_anchor_head
    from camtrace.training.trainer import load_base

    folder = tmp_path / "tiny-siglip-anchors"
    shutil.copytree(tiny_siglip_dir, folder)
    loaded = load_base(str(folder), None, 64)
    build_anchor_head(loaded.model, loaded.processor.tokenizer, loaded.text_kwargs, loaded.lowercase, seed=3).eval().save(folder)
    camera, path = next(iter(footage.videos.items()))
    start = footage.start_ts[camera]

    env = camtrace_env(tmp_path / "data", tiny_yolo_dir, folder, broker.url)
    assert run_cli(env, "prepare").returncode == 0
    workers = [Worker("ingest,detect", env, tmp_path / "detect.log"), Worker("embed", env, tmp_path / "embed.log")]
    try:
        done = run_cli(
            env,
            "ingest",
            str(path),
            "--camera",
            camera,
            "--start",
            datetime.fromtimestamp(start, tz=UTC).isoformat(),
            "--wait",
            "--json",
        )
    finally:
        for worker in workers:
            worker.stop()
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["status"] == "done"

    local_env = camtrace_env(tmp_path / "local", tiny_yolo_dir, folder)
    services = Services(settings_from(local_env))
    try:
        ingest_local(services, str(path), camera, start, progress=False)
    finally:
        services.close()
    (main, reid), (local_main, local_reid) = _both(env), _both(local_env)
    assert len(main) > 0 and main.keys() == reid.keys() == local_main.keys() == local_reid.keys()
    for pid in main:
        np.testing.assert_allclose(main[pid], local_main[pid], atol=1e-5)
        np.testing.assert_allclose(reid[pid], local_reid[pid], atol=1e-5)
        assert abs(float(main[pid] @ reid[pid])) < 0.999  # two different vectors, not one stored twice
