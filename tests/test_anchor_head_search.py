"""A model with an anchor head, through the real pipeline: both vectors are stored, text search reads the
text-aligned one and photo and track queries the head's (tiny random detector and encoder, Qdrant Edge)."""

from __future__ import annotations

import shutil

import cv2
import numpy as np
import pytest
from distributed_fixtures import camtrace_env, settings_from

from camtrace.search import SearchService
from camtrace.services import Services
from camtrace.workers.local import ingest_local
from camtrace.workers.pipeline import decode_jpeg


@pytest.fixture(scope="module")
def headed_service(tmp_path_factory, tiny_yolo_dir, tiny_siglip_dir, footage):
    from camtrace.embedding.anchor_head import build_anchor_head
    from camtrace.training.trainer import load_base

    folder = tmp_path_factory.mktemp("headed-model") / "tiny-siglip-anchors"
    shutil.copytree(tiny_siglip_dir, folder)
    loaded = load_base(str(folder), None, 64)
    build_anchor_head(loaded.model, loaded.processor.tokenizer, loaded.text_kwargs, loaded.lowercase, seed=2).eval().save(folder)
    env = camtrace_env(tmp_path_factory.mktemp("headed-data"), tiny_yolo_dir, folder, CAMTRACE_RUNTIME="torch")
    services = Services(settings_from(env))
    for camera, path in footage.videos.items():
        ingest_local(services, str(path), camera, footage.start_ts[camera], progress=False)
    yield SearchService(services)
    services.close()


def _vectors(index, ids):
    return {p.id: np.asarray(p.vector, np.float32) for p in index.retrieve(ids)}


def test_both_vectors_are_written_under_the_same_point_ids(headed_service):
    model = headed_service.services.model()
    assert model.reid_index is not None and model.reid_index.name != model.index.name
    ids = sorted(model.index.point_ids())
    assert len(ids) > 10 and set(ids) == model.reid_index.point_ids()
    sample = ids[:: max(1, len(ids) // 5)]
    main, reid = _vectors(model.index, sample), _vectors(model.reid_index, sample)
    for pid in sample:
        key = model.index.retrieve([pid])[0].payload["crop_key"]
        crop = cv2.cvtColor(decode_jpeg(headed_service.services.crops.get(key)), cv2.COLOR_BGR2RGB)
        text, head = model.encoder.encode_image_pair([crop])
        np.testing.assert_allclose(main[pid], text[0], atol=1e-4)
        np.testing.assert_allclose(reid[pid], head[0], atol=1e-4)
    assert model.index.retrieve(sample[:1])[0].payload == model.reid_index.retrieve(sample[:1])[0].payload


def test_text_search_reads_the_text_vectors_and_photo_search_the_reid_vectors(headed_service):
    model = headed_service.services.model()
    top = headed_service.by_text("red top", None, 1)[0]
    query = model.encoder.encode_texts(["red top"])[0]
    main = _vectors(model.index, [top.point_id])[top.point_id]
    assert top.score == pytest.approx(float(query @ main), abs=1e-4)
    # A photo: its re-id vector against the re-id index.
    crop = cv2.imread(top.crop)
    found = headed_service.by_image(crop, None, 5, detect=False)
    assert found[0].track_id == top.track_id and found[0].score > 0.99
    reid_query = model.encoder.encode_reid_images([cv2.cvtColor(crop, cv2.COLOR_BGR2RGB)])[0]
    text_query = model.encoder.encode_images([cv2.cvtColor(crop, cv2.COLOR_BGR2RGB)])[0]
    second = found[1]
    reid_vec = _vectors(model.reid_index, [second.point_id])[second.point_id]
    main_vec = _vectors(model.index, [second.point_id])[second.point_id]
    assert second.score == pytest.approx(float(reid_query @ reid_vec), abs=1e-3)
    assert abs(float(text_query @ main_vec) - float(reid_query @ reid_vec)) > 1e-3  # the two spaces differ here


def test_reid_from_a_track_ranks_by_the_reid_vectors(headed_service):
    model = headed_service.services.model()
    seed = headed_service.by_text("person", None, 1)[0]
    others = headed_service.reid(seed.track_id, limit=10)
    assert others and all(r.camera_id != seed.camera_id for r in others)
    positives = [p.vector for p in model.reid_index.track_points(seed.track_id)]
    best = others[0]
    candidate = [np.asarray(p.vector) for p in model.reid_index.track_points(best.track_id)]
    expected = max(float(np.dot(a, b)) for a in positives for b in candidate)
    assert best.score == pytest.approx(expected, abs=1e-3)


def test_reembedding_writes_both_vectors(headed_service, tmp_path):
    from camtrace.storage.edge import EdgeIndex
    from camtrace.training.promotion import reembed

    services = headed_service.services
    model = services.model()
    rows = services.db.detections_by_ids(sorted(model.index.point_ids())[:6])
    main = EdgeIndex(tmp_path, "copy", model.encoder.dim)
    reid = EdgeIndex(tmp_path, "copy+reid", model.encoder.reid_dim)
    main.ensure()
    reid.ensure()
    written, missing = reembed(model.encoder, main, services.crops, rows, model.encoder.model_version, reid)
    assert written == len(rows) == 6 and not missing
    ids = [row.point_id for row in rows]
    for fresh, stored in ((main, model.index), (reid, model.reid_index)):
        got, expected = _vectors(fresh, ids), _vectors(stored, ids)
        for pid in ids:
            np.testing.assert_allclose(got[pid], expected[pid], atol=1e-4)
    main.close()
    reid.close()


def test_reindex_restores_both_vectors_and_drops_stale_reid_points(headed_service):
    from camtrace.training.promotion import reindex
    from camtrace.types import IndexPoint

    services = headed_service.services
    model = services.model()
    gone = sorted(model.index.point_ids())[:3]
    main_before, reid_before = _vectors(model.index, gone), _vectors(model.reid_index, gone)
    payload = model.reid_index.retrieve(gone[:1])[0].payload
    model.index.delete(gone)
    model.reid_index.delete(gone)
    stale = "00000000-0000-0000-0000-000000000001"
    model.reid_index.upsert([IndexPoint(id=stale, vector=reid_before[gone[0]], payload=payload)])
    summary = reindex(services, None, progress=False)
    assert summary.embedded == 3
    assert model.index.point_ids() == model.reid_index.point_ids()
    main_after, reid_after = _vectors(model.index, gone), _vectors(model.reid_index, gone)
    for pid in gone:
        np.testing.assert_allclose(main_after[pid], main_before[pid], atol=1e-5)
        np.testing.assert_allclose(reid_after[pid], reid_before[pid], atol=1e-5)


def test_retention_deletes_from_both_indexes(headed_service):
    from camtrace.workers.jobs import apply_retention

    services = headed_service.services
    model = services.model()
    before = len(model.index.point_ids())
    times = sorted(p.payload["ts"] for p in model.index.retrieve(sorted(model.index.point_ids())))
    deleted = apply_retention(services, times[len(times) // 2])
    assert 0 < deleted < before
    assert model.index.point_ids() == model.reid_index.point_ids() and len(model.index.point_ids()) == before - deleted


def test_a_watched_person_is_matched_on_the_reid_vectors(headed_service):
    """A person on the watchlist is compared on the head's re-id vectors, as re-id and the identity evidence
    are: a new track whose re-id vectors are the person's scores 1 however unlike its text-aligned vectors are."""
    from camtrace.search.watch import NewTrack, Watcher, WatchService

    services = headed_service.services
    model = services.model()
    track = max(services.db.tracks_by_ids(list(_track_ids(services))).values(), key=lambda t: t.n_boxes)
    WatchService(services).add(username="ines", track_id=track.id, min_probability=0.001)
    with model.match_index.session():
        reid = np.stack([p.vector for p in model.match_index.track_points(track.id)])
    unlike = np.random.default_rng(0).normal(size=(len(reid), model.encoder.dim)).astype(np.float32)
    unlike /= np.linalg.norm(unlike, axis=1, keepdims=True)
    later = track.ts_end + 3600.0  # an hour on: no camera link says anything, appearance decides
    new = NewTrack("later:0:1", track.camera_id, later, later + 5, unlike, None, reid)
    found = Watcher(services, model).matches([new])
    assert [alert.track_id for alert in found] == ["later:0:1"] and found[0].score == pytest.approx(1.0, abs=1e-4)


def _track_ids(services):
    return {row.track_id for page in services.db.detection_pages() for row in page}
