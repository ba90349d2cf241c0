"""Promotion, re-index and rollback of registered models on a real index built from synthetic footage.

The index is built once with the real pipeline (tiny YOLO, tiny SigLIP "A",
Qdrant Edge, SQLite, the crop store); each test works on a copy of it. Two
more tiny SigLIP models with other seeds play the newly trained models; their
validation results are given at registration, as a training run stores them.
"""

from __future__ import annotations

import json
import logging
import shutil
import threading
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from click.testing import CliRunner
from detection_fixtures import cli_env

from camtrace.cli import cli
from camtrace.embedding import ImageTextEncoder
from camtrace.embedding.sessions import TorchVision
from camtrace.embedding.tiny_model import build_tiny_siglip
from camtrace.exports import MANIFEST, folder_name
from camtrace.search import SearchService
from camtrace.services import Services
from camtrace.settings import Settings
from camtrace.storage import EdgeIndex
from camtrace.training.promotion import PromotionRefused, ReindexWork, judge, promote, reindex_batch, rollback
from camtrace.workers.jobs import apply_retention
from camtrace.workers.local import ingest_local

QUERY = "red top, blue trousers"


def settings_for(data_dir: Path, yolo: Path, siglip: Path) -> dict[str, str]:
    return cli_env(data_dir, yolo, siglip) | {
        # Every call re-reads the active model: a switch is seen at once.
        "CAMTRACE_MODEL_REFRESH_SECONDS": "0",
        "CAMTRACE_REINDEX_BATCH_SIZE": "16",
    }


def make_settings(env: dict[str, str]) -> Settings:
    return Settings(**{key.removeprefix("CAMTRACE_").lower(): value for key, value in env.items()})


@pytest.fixture(scope="module")
def indexed(tmp_path_factory, tiny_yolo_dir: Path, tiny_siglip_dir: Path, footage) -> Path:
    """A data dir holding two cameras' footage indexed with model A (CAMTRACE_EMBED_MODEL)."""
    data_dir = tmp_path_factory.mktemp("promotion") / "data"
    services = Services(make_settings(settings_for(data_dir, tiny_yolo_dir, tiny_siglip_dir)))
    for camera_id in sorted(footage.videos)[:2]:
        ingest_local(services, str(footage.videos[camera_id]), camera_id, footage.start_ts[camera_id], progress=False)
    assert services.index.count() > 20
    services.close()
    return data_dir


@pytest.fixture(scope="module")
def other_models(tmp_path_factory) -> tuple[Path, Path]:
    folder = tmp_path_factory.mktemp("candidates")
    return build_tiny_siglip(folder / "model-b", seed=1), build_tiny_siglip(folder / "model-c", seed=2)


@pytest.fixture
def env(indexed: Path, tmp_path: Path, tiny_yolo_dir: Path, tiny_siglip_dir: Path) -> dict[str, str]:
    data_dir = tmp_path / "data"
    shutil.copytree(indexed, data_dir)
    return settings_for(data_dir, tiny_yolo_dir, tiny_siglip_dir)


def top1(value: float) -> dict:
    return {"text_to_identity": {"top1": value, "top5": value + 20}, "image_reid": {"map": value}}


def snapshot(index) -> dict[str, np.ndarray]:
    """Every point id of an index with its vector."""
    points = {}
    with index.session():
        for point in index.retrieve(sorted(all_point_ids(index))):
            points[point.id] = point.vector
    return points


def all_point_ids(index) -> set[str]:
    import qdrant_edge as qe

    ids, offset = set(), None
    with index.session():
        while True:
            page, offset = index._shard.scroll(qe.ScrollRequest(offset=offset, limit=1000))
            ids.update(str(record.id) for record in page)
            if offset is None:
                return ids


def same_points(before: dict[str, np.ndarray], after: dict[str, np.ndarray]) -> bool:
    return before.keys() == after.keys() and all(np.allclose(before[k], after[k], atol=1e-6) for k in before)


def test_better_model_is_promoted_while_searches_go_on_and_rollback_restores(env, other_models) -> None:
    settings = make_settings(env)
    services = Services(settings)
    model_a = services.model()
    index_a = model_a.index
    detections = services.db.counts()["detections"]
    assert index_a.count() == detections
    before_a = snapshot(index_a)
    registry = services.registry
    a = registry.register(settings.embed_model, datasets=["synthetic:/data/a"], metrics=top1(20.0))
    b = registry.register(other_models[0], parent=a, datasets=["synthetic:/data/b"], metrics=top1(35.0))

    # An operator keeps searching from another process-like set of services during the promotion.
    searcher = Services(settings)
    seen_versions: list[str] = []
    failures: list[str] = []
    first_search = threading.Event()
    stop = threading.Event()

    def search_loop() -> None:
        search = SearchService(searcher)
        while not stop.is_set():
            try:
                model = searcher.model()
                hits = model.index.search(model.encoder.encode_texts([QUERY])[0], limit=5)
                versions = {hit.payload["model_version"] for hit in hits}
                if not hits or versions != {model.encoder.model_version}:
                    failures.append(f"{len(hits)} hits from {versions} for {model.encoder.model_version}")
                seen_versions.append(model.encoder.model_version)
                if not search.by_text(QUERY, limit=5):
                    failures.append("no results")
            except Exception as exc:  # reported below, with what failed
                failures.append(repr(exc))
            first_search.set()
            stop.wait(0.05)  # an operator's pace; leaves the cores to the re-index

    thread = threading.Thread(target=search_loop, daemon=True)
    thread.start()
    assert first_search.wait(60)
    result = promote(services, b, progress=False)
    after_switch = len(seen_versions)
    while len(seen_versions) < after_switch + 2 and thread.is_alive():
        stop.wait(0.05)
    stop.set()
    thread.join(60)

    assert failures == []
    version_a, version_b = model_a.encoder.model_version, registry.get(b).model_version
    assert seen_versions[0] == version_a and seen_versions[-1] == version_b
    # Each search saw one model; once B answered, A never answered again (one switch).
    assert seen_versions == sorted(seen_versions, key=lambda v: v == version_b)
    assert result.comparison.passed and not result.forced and result.comparison.baseline_model == a

    # The switch: one active model, named with its own index, holding every point once.
    assert [m.id for m in registry.list() if m.status == "active"] == [b]
    assert registry.active_pointer() == (b, result.index_name)
    index_b = services.model().index
    assert services.model().model_id == b and index_b.name == result.index_name != index_a.name
    assert index_b.count() == detections == result.reindex.points
    assert all_point_ids(index_b) == set(before_a)
    assert same_points(before_a, snapshot(EdgeIndex(settings.index_dir, version_a, index_a.dim)))
    before_b = snapshot(index_b)

    # A worse model is refused and nothing changes; --force (through the CLI) promotes it.
    c = registry.register(other_models[1], parent=b, metrics=top1(30.0))
    with pytest.raises(PromotionRefused, match=r"does not beat model .*30.00 vs 35.00"):
        promote(services, c, progress=False)
    assert registry.active().id == b and registry.get(c).index_name is None
    runner = CliRunner()
    refused = runner.invoke(cli, ["models", "promote", str(c)], env=env)
    assert refused.exit_code != 0 and "--force" in refused.output
    forced = runner.invoke(cli, ["models", "promote", str(c), "--force", "--no-progress"], env=env)
    assert forced.exit_code == 0, forced.output
    assert "(forced)" in forced.output and registry.active().id == c
    assert services.model().model_id == c

    # Rollback: B again with exactly its vectors, then the configured model A with its own.
    rolled = runner.invoke(cli, ["models", "rollback", "--no-progress"], env=env)
    assert rolled.exit_code == 0, rolled.output
    assert registry.active().id == b and registry.get(c).status == "registered"
    assert services.model().model_id == b
    assert same_points(before_b, snapshot(services.model().index))
    assert rollback(services, progress=False) is None
    assert registry.active() is None and services.model().model_id is None
    assert services.model().encoder.model_version == version_a
    assert same_points(before_a, snapshot(services.model().index))
    results = SearchService(services).by_text(QUERY, limit=3)
    assert results and all(Path(r.crop).is_file() for r in results)
    listing = runner.invoke(cli, ["models", "list", "--json"], env=env)
    assert [row["status"] for row in json.loads(listing.output)] == ["registered"] * 3
    searcher.close()
    services.close()


def test_a_rollback_brings_what_happened_since_the_promotion_into_the_old_index(env, other_models, footage) -> None:
    settings = make_settings(env)
    services = Services(settings)
    b = services.registry.register(other_models[0], metrics=top1(50.0))
    promote(services, b, progress=False)
    before = services.db.counts()["detections"]
    third = sorted(footage.videos)[2]
    ingest_local(services, str(footage.videos[third]), third, footage.start_ts[third], progress=False)
    after = services.db.counts()["detections"]
    assert after > before
    # New crops were embedded by B and written to B's index only.
    model_b = services.model()
    assert model_b.model_id == b and model_b.index.count() == after
    hits = model_b.index.search(model_b.encoder.encode_texts([QUERY])[0], limit=50)
    assert {hit.payload["model_version"] for hit in hits} == {model_b.encoder.model_version}
    # Retention runs on the index in service (B) and in SQL.
    first_ts = min(row.ts for page in services.db.detection_pages() for row in page)
    deleted = apply_retention(services, first_ts + 2.0)
    assert deleted > 0 and model_b.index.count() == after - deleted
    # Rolling back to A embeds the new crops with A and drops what retention deleted:
    # A's index answers for exactly the detections there are now.
    rollback(services, progress=False)
    model_a = services.model()
    detection_ids = {row.point_id for page in services.db.detection_pages() for row in page}
    assert model_a.model_id is None and len(detection_ids) == after - deleted
    assert all_point_ids(model_a.index) == detection_ids
    services.close()


def test_models_without_results_are_judged_on_the_validation_set(
    tmp_path: Path, tiny_yolo_dir: Path, tiny_siglip_dir: Path, other_models, footage
) -> None:
    spec = f"synthetic:{footage.root}"
    env = settings_for(tmp_path / "data", tiny_yolo_dir, tiny_siglip_dir)
    services = Services(make_settings({**env, "CAMTRACE_VAL_DATASET": spec, "CAMTRACE_PROMOTE_MARGIN": "100"}))
    b = services.registry.register(other_models[0])
    # Nothing registered serves: B is measured against the configured model on the same set.
    with pytest.raises(PromotionRefused, match=r"model \d+ does not beat the configured model .* on text_to_identity"):
        promote(services, b, progress=False)
    stored = services.registry.get(b)
    assert stored.metrics["dataset"] == spec and stored.metric("text_to_identity.top1") is not None
    assert stored.index_name is None and services.registry.active() is None
    services.close()


def stored_and_crop(services: Services, model, camera_id: str) -> list[tuple[np.ndarray, np.ndarray]]:
    """(vector in the index, crop image) of every point of one camera."""
    rows = [row for page in services.db.detection_pages() for row in page if row.camera_id == camera_id]
    stored = {point.id: point.vector for point in model.index.retrieve([row.point_id for row in rows])}
    return [
        (stored[row.point_id], cv2.cvtColor(cv2.imread(str(services.crops.path(row.crop_key))), cv2.COLOR_BGR2RGB)) for row in rows
    ]


def test_a_promoted_model_runs_on_the_runtime_and_precision_the_settings_choose(
    env, other_models, footage, caplog, torch_threads_restored
) -> None:
    settings = make_settings(env)  # a CPU site on the default runtime: ONNX Runtime, int8 embedder
    services = Services(settings)
    b = services.registry.register(other_models[0], metrics=top1(50.0))
    promote(services, b, progress=False)
    entry = services.registry.get(b)
    versions = settings.exports_dir / folder_name(entry.model_version)
    manifest = versions / "vision-int8" / MANIFEST
    assert manifest.is_file()  # the promotion's re-index built B's export
    built_at = manifest.stat().st_mtime_ns
    services.close()

    # The next ingest, by a process that starts after the switch, embeds with B on ONNX int8 and reuses the export.
    caplog.set_level(logging.WARNING, logger="camtrace.exports")
    caplog.clear()
    ingester = Services(settings)
    third = sorted(footage.videos)[2]
    ingest_local(ingester, str(footage.videos[third]), third, footage.start_ts[third], progress=False)
    model = ingester.model()
    assert model.model_id == b and model.encoder.runtime_label == "onnx int8"
    assert model.encoder.vision.session is not None
    assert manifest.stat().st_mtime_ns == built_at and sorted(p.name for p in versions.iterdir() if p.is_dir()) == ["vision-int8"]
    assert not [r for r in caplog.records if "building" in r.getMessage()]
    # The vectors written are B's int8 ones, not what PyTorch fp32 makes of the same crops.
    pairs = stored_and_crop(ingester, model, third)
    assert len(pairs) > 3
    crops = [crop for _, crop in pairs]
    stored = np.stack([vector for vector, _ in pairs])
    np.testing.assert_allclose(stored, model.encoder.encode_images(crops), atol=1e-5)
    on_torch = ImageTextEncoder(other_models[0], None, device="cpu", runtime="torch")
    assert np.abs(stored - on_torch.encode_images(crops)).max() > 1e-3
    ingester.close()

    # stats and status name the model in service and what runs it.
    runner = CliRunner()
    for command in ("stats", "status"):
        shown = runner.invoke(cli, [command, "--json"], env=env)
        assert shown.exit_code == 0, shown.output
        facts = json.loads(shown.output)
        assert (facts["model_id"], facts["model_version"], facts["embed_runtime"]) == (b, entry.model_version, "onnx int8")
    text = runner.invoke(cli, ["status"], env=env)
    assert f"embedder {entry.model_version} (registry model {b}): onnx int8" in text.output
    assert sorted(p.name for p in versions.iterdir() if p.is_dir()) == ["vision-int8"]  # reporting built nothing

    # Other settings, other runtime and precision for the same registered model.
    for changed, label in (
        ({"CAMTRACE_RUNTIME": "torch"}, "torch fp32"),
        ({"CAMTRACE_ONNX_QUANTIZE": "fp32", "CAMTRACE_CPU_THREADS": "1"}, "onnx fp32"),
    ):
        other = Services(make_settings({**env, **changed}))
        encoder = other.model().encoder
        assert other.model().model_id == b and encoder.runtime_label == label
        encoder.load()
        assert encoder.runtime_label == label
        if label == "onnx fp32":
            assert encoder.vision.session.get_session_options().intra_op_num_threads == 1
            assert (versions / "vision-fp32" / MANIFEST).is_file()
        else:
            assert isinstance(encoder.vision, TorchVision) and encoder.vision.torch_model.loaded
        on_gpu = make_settings({**env, **changed, "CAMTRACE_GPU_PRECISION": "fp16"})
        assert Services(on_gpu).encoder_for(entry).gpu_precision == "fp16"
        other.close()


def test_a_promotion_hands_its_batches_to_the_runner_it_is_given(env, other_models) -> None:
    """The stage says what to re-embed (typed ReindexWork); whoever runs it (the embed workers, here this
    process doing what a reindex task does) writes the index the stage then switches to."""
    services = Services(make_settings(env))
    b = services.registry.register(other_models[0], metrics=top1(50.0))
    job = services.db.create_job("reindex", "model:test")
    handed: list[ReindexWork] = []
    encoders: dict = {}

    def run_here(work: ReindexWork, bar) -> int:
        handed.append(work)
        written = sum(reindex_batch(services, job.id, work.model_id, batch, encoders) for batch in work.batches)
        bar.update(written)
        return written

    result = promote(services, b, progress=False, run_elsewhere=run_here)
    detections = {row.point_id for page in services.db.detection_pages() for row in page}
    assert [work.model_id for work in handed] == [b]  # one pass found everything; the late pass nothing
    assert all(0 < len(batch) <= 16 for batch in handed[0].batches)  # CAMTRACE_REINDEX_BATCH_SIZE
    assert sorted(p for batch in handed[0].batches for p in batch) == sorted(detections)
    assert result.reindex.embedded == handed[0].points == len(detections)
    model = services.model()
    assert model.model_id == b and all_point_ids(model.index) == detections
    assert services.db.get_job(job.id).segments_done == len(handed[0].batches)
    services.close()


@pytest.mark.parametrize(("head_map", "passes"), [(60.0, True), (45.0, False)])
def test_a_model_with_a_re_id_head_is_judged_on_the_head_s_re_id(
    tmp_path: Path, tiny_yolo_dir: Path, tiny_siglip_dir: Path, other_models, head_map: float, passes: bool
) -> None:
    """Photo queries of a model with an anchor head are answered by the head: its image_reid figures are the head's,
    whatever the tower's own pooled vector reaches."""
    env = settings_for(tmp_path / "data", tiny_yolo_dir, tiny_siglip_dir)
    services = Services(make_settings({**env, "CAMTRACE_PROMOTE_METRIC": "image_reid.map", "CAMTRACE_PROMOTE_MARGIN": "1"}))
    serving = services.registry.register(other_models[0], metrics={"image_reid": {"map": 50.0}})
    candidate = services.registry.register(
        other_models[1], metrics={"image_reid": {"map": 55.0}, "image_reid_head": {"map": head_map}}
    )
    comparison = judge(services, services.registry.get(candidate), services.registry.get(serving))
    assert (comparison.candidate, comparison.baseline, comparison.passed) == (head_map, 50.0, passes)
    services.close()
