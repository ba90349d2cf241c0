"""The query stage on an index built with the real pipeline (tiny random detector and encoder,
Qdrant Edge, SQLite, crop store) from synthetic footage of three cameras.

With random models the vectors mean nothing, so these tests check what holds whatever the
vectors are: one result per track, filters, paging, person picking, re-id's camera rules,
track views, frames and exports. tests/test_search_reid.py checks the ranking logic on
hand-made vectors.
"""

from __future__ import annotations

import csv
import io
import json
from html.parser import HTMLParser

import cv2
import numpy as np
import pytest
from distributed_fixtures import camtrace_env, settings_from

from camtrace.errors import InputError
from camtrace.search import SearchService
from camtrace.search.export import CSV_COLUMNS, trace_csv, trace_html, trace_json
from camtrace.search.frames import BOX_COLOUR, read_frame
from camtrace.services import Services
from camtrace.workers.local import ingest_local


@pytest.fixture(scope="module")
def service(tmp_path_factory, tiny_yolo_dir, tiny_siglip_dir, footage):
    env = camtrace_env(tmp_path_factory.mktemp("search-data"), tiny_yolo_dir, tiny_siglip_dir)
    services = Services(settings_from(env))
    for camera, path in footage.videos.items():
        ingest_local(services, str(path), camera, footage.start_ts[camera], progress=False)
    # One open Edge shard for the module instead of an open and close per call.
    with services.index.session():
        yield SearchService(services)
    services.close()


def ids(results) -> list[str]:
    return [r.track_id for r in results]


def test_text_search_gives_one_result_per_track_best_first(service):
    results = service.by_text("woman, red coat, black backpack", None, 50)
    assert len(results) > 5 and len(set(ids(results))) == len(results)
    assert [r.score for r in results] == sorted((r.score for r in results), reverse=True)
    for result in results[:3]:
        assert service.crop_camera(result.crop_key) == result.camera_id
        assert open(result.crop, "rb").read()[:2] == b"\xff\xd8"


def test_filters_are_inside_the_query(service, footage):
    text = "man, grey hoodie"
    top = service.by_text(text, None, 1)[0]
    other = next(camera for camera in sorted(footage.videos) if camera != top.camera_id)
    only = service.by_text(text, service.make_filter([other]), 200)
    # The best match overall is on another camera: a filter applied after a top-k cut would
    # lose tracks; inside the query it finds every track of the chosen camera.
    assert only and {r.camera_id for r in only} == {other}
    tracks_on_other = [
        t for t in service.services.db.tracks_by_ids(ids(service.by_text(text, None, 200))).values() if t.camera_id == other
    ]
    assert sorted(ids(only)) == sorted(t.id for t in tracks_on_other)

    start = footage.start_ts[other]
    window = service.make_filter([other], start + 2, start + 5)
    in_window = service.by_text(text, window, 50)
    assert in_window and all(start + 2 <= r.ts <= start + 5 for r in in_window)
    limited = service.make_filter(allowed_cameras=[other])
    assert {r.camera_id for r in service.by_text(text, limited, 50)} == {other}


def test_pages_concatenate_to_the_unpaged_list(service):
    whole = service.by_text("person", None, 9)
    pages = [service.by_text("person", None, 3, offset=offset) for offset in (0, 3, 6)]
    assert [r.track_id for page in pages for r in page] == ids(whole)
    floor = whole[4].score - 1e-6  # scores are rounded to 6 digits
    assert ids(service.by_text("person", None, 9, min_score=floor)) == ids(whole)[:5]
    with pytest.raises(InputError, match="maximum of 200"):
        service.by_text("person", None, 10_000)


def test_a_full_frame_lists_every_person_and_searches_the_chosen_one(service, footage):
    camera = sorted(footage.videos)[0]
    frame = read_frame(str(footage.videos[camera]), 20)
    detections = service.services.detector.detect([frame])[0]
    persons = service.persons(frame)
    assert len(persons) == len(detections) >= 2
    assert [p.index for p in persons] == list(range(len(persons)))
    assert [p.box[0] for p in persons] == sorted(p.box[0] for p in persons)  # left to right
    assert sorted(p.confidence for p in persons) == pytest.approx(sorted(float(d[4]) for d in detections), abs=1e-3)
    for person in persons:
        crop = cv2.imdecode(np.frombuffer(person.crop_jpeg, np.uint8), cv2.IMREAD_COLOR)
        x1, y1, x2, y2 = person.box
        assert crop.shape[:2] == (y2 - y1, x2 - x1)

    largest = max(persons, key=lambda p: (p.box[2] - p.box[0]) * (p.box[3] - p.box[1]))
    default = service.by_photo(frame, None, 5)
    assert default.person == largest.index and len(default.persons) == len(persons)
    pick = next(p.index for p in persons if p.index != largest.index)
    x1, y1, x2, y2 = (int(v) for v in persons[pick].box)
    picked = service.by_photo(frame, None, 5, person=pick)
    assert picked.person == pick
    assert ids(picked.results) == ids(service.by_image(frame[y1:y2, x1:x2], None, 5, detect=False))
    with pytest.raises(InputError, match=f"person {len(persons)} is not on the photo"):
        service.by_photo(frame, None, 5, person=len(persons))


def test_a_stored_crop_searched_as_a_crop_finds_its_own_track_first(service):
    result = service.by_text("person", None, 1)[0]
    crop = cv2.imread(result.crop)
    found = service.by_image(crop, None, 3, detect=False)
    assert found[0].track_id == result.track_id and found[0].score > 0.99


def test_reid_from_a_real_track_keeps_to_other_cameras(service):
    seed = service.by_text("person", None, 1)[0]
    others = service.reid(seed.track_id, limit=30)
    assert others and seed.track_id not in ids(others)
    assert all(r.camera_id != seed.camera_id for r in others)
    # Each with its probability of being the person (appearance with the cameras' links, among its rivals).
    assert all(0.0 <= r.probability <= 1.0 for r in others)
    everywhere = service.reid(seed.track_id, limit=30, same_camera=True)
    assert seed.track_id not in ids(everywhere) and seed.camera_id in {r.camera_id for r in everywhere}


def test_track_view_and_its_frame_with_the_box_drawn(service):
    seed = service.by_text("person", None, 1)[0]
    view = service.track(seed.track_id)
    assert view.crops and all(c.crop_key for c in view.crops)
    assert view.ts_start <= min(c.ts for c in view.crops) <= max(c.ts for c in view.crops) <= view.ts_end
    best = next(c for c in view.crops if c.crop_key == view.best_crop_key)

    jpeg = service.frame_jpeg(seed.track_id)
    drawn = cv2.imdecode(np.frombuffer(jpeg, np.uint8), cv2.IMREAD_COLOR)
    video = service.services.db.get_video(view.video_id)
    raw = read_frame(video.source, best.frame_index)
    assert drawn.shape == raw.shape == (video.height, video.width, 3)
    x1, y1, x2, y2 = (int(round(v)) for v in best.bbox)
    x1, y1 = max(x1, 0), max(y1, 0)
    edge_pixel = drawn[y1 + 1, (x1 + min(x2, video.width - 1)) // 2].astype(int)
    assert np.abs(edge_pixel - np.array(BOX_COLOUR)).max() < 60  # the outline, JPEG noise aside
    inside = (slice(y1 + 8, y2 - 8), slice(x1 + 8, x2 - 8))
    assert np.abs(drawn[inside].astype(int) - raw[inside].astype(int)).mean() < 8  # the person is not painted over


class _Html(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.images: list[str] = []
        self.links: list[str] = []
        self.step_rows = 0

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if tag == "img":
            self.images.append(attrs["src"])
        for name in ("href", "src"):
            if name in attrs and tag != "img":
                self.links.append(attrs[name])
        if tag == "tr" and attrs.get("class") == "step":
            self.step_rows += 1


def test_a_trace_exports_to_csv_json_and_a_self_contained_html(service):
    import base64

    seed = service.by_text("person", None, 1)[0]
    trace = service.trace(seed.track_id, min_probability=0.01, limit=6)
    # The seed and its 6 candidates: on the path or alternatives (tracks of one camera in a row merge into a step).
    assert trace.steps and sum(1 + len(s.merged_track_ids) for s in trace.steps) == 7
    assert "seed" in {s.status for s in trace.steps}
    assert {s.status for s in trace.steps} <= {"seed", "candidate", "alternative"}
    crops = service.services.crops
    when = 1_767_225_600.0  # 2026-01-01T00:00:00Z

    rows = list(csv.DictReader(io.StringIO(trace_csv(trace, exported_by="ines", exported_at=when, crops=crops))))
    assert list(rows[0]) == list(CSV_COLUMNS)
    assert [r["track_id"] for r in rows] == [s.track_id for s in trace.steps]
    assert [float(r["ts_start"]) for r in rows] == [s.ts_start for s in trace.steps]
    assert [r["status"] for r in rows] == [s.status for s in trace.steps]
    assert rows[0]["exported_by"] == "ines" and rows[0]["exported_at"] == "2026-01-01T00:00:00+00:00"

    document = json.loads(trace_json(trace, exported_by="ines", exported_at=when, crops=crops))
    assert document["seed_track_id"] == seed.track_id and document["exported_by"] == "ines"
    assert [s["track_id"] for s in document["steps"]] == [s.track_id for s in trace.steps]
    assert document["steps"][0]["transit_seconds"] is None
    assert document["min_probability"] == 0.01 and all(0.0 <= s["probability"] <= 1.0 for s in document["steps"])

    page = trace_html(trace, exported_by="ines <admin>", exported_at=when, crops=crops)
    parser = _Html()
    parser.feed(page)
    assert parser.step_rows == len(trace.steps)
    assert parser.links == []  # nothing external: no stylesheet, script or link
    assert len(parser.images) == len(trace.steps) and all(src.startswith("data:image/jpeg;base64,") for src in parser.images)
    first = base64.b64decode(parser.images[0].split(",", 1)[1])
    assert first == crops.get(trace.steps[0].crop_key)
    assert "ines &lt;admin&gt;" in page and "2026-01-01T00:00:00+00:00" in page
    cameras = {s.camera_id for s in trace.steps}
    assert page.count('class="lane"') == len(cameras)  # one timeline lane per camera


def test_a_model_without_an_anchor_head_writes_one_index(service):
    model = service.services.model()
    assert not model.encoder.has_reid_head and model.reid_index is None and model.match_index is model.index
    shards = [p.name for p in service.services.settings.index_dir.iterdir() if p.is_dir()]
    assert shards and not any("reid" in name for name in shards)
