"""Re-identification, feedback and traces on a hand-made scene (tests/search_scene.py) where the
right answers are known, on both index backends, through the real SearchService."""

from __future__ import annotations

import pytest
from camtrace.search import SearchService
from camtrace.search.trace import TraceEntry, build_trace
from search_scene import CAMERAS, PERSON, T0, build_scene, expected_similarity
from sqlalchemy import delete

from camtrace.errors import InputError, NotFoundError


@pytest.fixture(scope="module", params=["edge", "server"])
def service(request, tmp_path_factory):
    services = build_scene(tmp_path_factory.mktemp(f"scene-{request.param}"), request.param)
    # One open Edge shard for the module instead of an open and close per call (~0.2 s each).
    with services.index.session():
        yield SearchService(services)
    services.close()
    services.db.close()


@pytest.fixture(autouse=True)
def no_feedback(service):
    yield
    from camtrace.storage.sql import Feedback

    with service.services.db.engine.begin() as conn:
        conn.execute(delete(Feedback))


def ids(results) -> list[str]:
    return [r.track_id for r in results]


def test_reid_finds_the_person_on_other_cameras_only_and_never_the_track_itself(service):
    results = service.reid("A1", limit=20)
    assert "A1" not in ids(results) and all(r.camera_id != "camA" for r in results)
    assert ids(results) == ["B1", "B2", "L1", "L2", "C1", "Q", "X"]
    for result in results:  # every crop of the track is a query: the score is the best pair's similarity
        assert result.score == pytest.approx(expected_similarity(result.track_id, ["A1"]), abs=1e-4)

    same = service.reid("A1", limit=20, same_camera=True)
    assert "A1" not in ids(same) and "A2" in ids(same)
    assert ids(service.reid("A1", limit=3, offset=2)) == ids(results)[2:5]
    assert ids(service.reid("A1", min_score=0.85)) == ["B1", "B2", "L1", "L2"]


def test_camera_limit_goes_into_the_query_and_hides_tracks(service):
    assert ids(service.reid("A1", allowed_cameras=["camA", "camD"])) == ["L2", "Q"]
    with pytest.raises(NotFoundError, match="track 'C1' does not exist") as outside:
        service.reid("C1", allowed_cameras=["camA", "camB"])
    with pytest.raises(NotFoundError, match="track 'nobody' does not exist") as unknown:
        service.reid("nobody")
    assert str(outside.value).replace("C1", "?") == str(unknown.value).replace("nobody", "?")
    for call in (service.track, service.trace, service.frame_jpeg):
        with pytest.raises(NotFoundError, match="track 'C1' does not exist"):
            call("C1", allowed_cameras=["camA"])
    with pytest.raises(NotFoundError, match="track 'A1' does not exist"):
        service.reid("A1", allowed_cameras=[])  # a user allowed no camera sees no track


def test_a_camera_filter_never_returns_another_camera_even_when_it_scores_higher(service):
    only_d = service.make_filter(["camD"])
    results = service.by_vector(PERSON, only_d, 5)
    assert ids(results) == ["L2", "Q"]  # B1 and A1 score far higher but are on other cameras
    limited = service.make_filter(allowed_cameras=["camC"])
    assert {r.camera_id for r in service.by_vector(PERSON, limited, 10)} == {"camC"}
    with pytest.raises(NotFoundError, match="unknown camera"):
        service.make_filter(["camB"], allowed_cameras=["camC"])  # outside the limit: like an unknown camera
    nothing = service.make_filter(allowed_cameras=[])
    assert service.by_vector(PERSON, nothing, 10) == []


def test_search_pages_do_not_overlap_and_concatenate_to_the_unpaged_list(service):
    whole = service.by_vector(PERSON, None, 9)
    pages = [service.by_vector(PERSON, None, 2, offset=offset) for offset in range(0, 9, 2)]
    assert [r.track_id for page in pages for r in page] == ids(whole)
    assert len(set(ids(whole))) == len(whole) == 9  # one result per track
    above = service.by_vector(PERSON, None, 9, min_score=0.85)
    assert ids(above) == ids(whole)[: len(above)] and all(r.score >= 0.85 for r in above)


def test_confirmed_tracks_pull_and_rejected_tracks_push(service):
    before = ids(service.reid("A1"))
    assert before.index("Q") > before.index("C1")
    service.feedback("A1", "C1", "same", user="ines")
    after = service.reid("A1")
    assert "C1" not in ids(after)  # decided: no longer offered
    # Q looks like C1's crops, now positive examples: its score is its similarity to C1.
    q = next(r for r in after if r.track_id == "Q")
    assert q.score == pytest.approx(expected_similarity("Q", ["A1", "C1"]), abs=1e-4)
    assert q.score > 0.9 and ids(after).index("Q") < ids(after).index("L1")

    service.feedback("L1", "A1", "different", user="ines")  # either order names the pair
    pushed = service.reid("A1")
    assert "L1" not in ids(pushed)
    assert ids(pushed)[-1] == "L2" and pushed[-1].score < 0  # nearer to the rejected lookalike than to the person
    assert "L2" not in ids(service.reid("A1", min_score=0.0))


def test_confirmations_chain_from_track_to_track(service):
    service.feedback("A1", "A2", "same", user="ines")
    service.feedback("A2", "B1", "same", user="omar")
    identity = service.identity("A1")
    assert identity.confirmed == ("A2", "B1")
    assert "B1" not in ids(service.reid("A1", same_camera=True))


def test_the_trace_orders_merges_and_flags(service):
    trace = service.trace("A1", min_score=0.85)
    steps = [(s.track_id, s.status, s.camera_id) for s in trace.steps]
    assert steps == [("A1", "seed", "camA"), ("L1", "candidate", "camC"), ("A2", "candidate", "camA"),
                     ("B1", "candidate", "camB"), ("L2", "candidate", "camD")]
    flagged = {s.track_id for s in trace.steps if s.implausible}
    assert flagged == {"L1"}  # on camC while the seed was on camA
    b = trace.steps[3]
    assert b.merged_track_ids == ["B2"] and (b.ts_start, b.ts_end) == (T0 + 40, T0 + 58)  # B1 and B2: one stop
    assert trace.steps[0].transit_seconds is None and trace.steps[1].transit_seconds == -5.0
    assert trace.steps[0].score == 1.0 and trace.steps[0].crop_key
    assert [s.ts_start for s in trace.steps] == sorted(s.ts_start for s in trace.steps)
    assert len(service.trace("A1").steps) > len(trace.steps)  # the default threshold (0.7) lets C1 and Q in

    # Investigators decide: the trace follows.
    service.feedback("A1", "A2", "same", user="ines")
    service.feedback("A1", "L1", "different", user="ines")
    service.feedback("A1", "C1", "same", user="ines")
    trace = service.trace("A1", min_score=0.85)
    steps = [(s.track_id, s.status, s.merged_track_ids, s.transit_seconds) for s in trace.steps]
    assert steps == [("A1", "seed", ["A2"], None), ("B1", "candidate", ["B2"], 20.0),
                     ("C1", "confirmed", [], 22.0), ("Q", "candidate", [], 30.0)]
    assert not any(s.implausible for s in trace.steps)
    assert service.trace("A1", min_score=0.85, allowed_cameras=["camA", "camD"]).steps[-1].track_id == "Q"
    assert {s.camera_id for s in service.trace("A1", min_score=0.85, allowed_cameras=["camA", "camD"]).steps} == {
        "camA", "camD"}


def test_build_trace_flags_only_candidates_that_overlap_certain_tracks():
    entries = [TraceEntry("s", "cam1", 0, 10, 1.0, "seed", None),
               TraceEntry("c", "cam2", 20, 30, 1.0, "confirmed", None),
               TraceEntry("ok", "cam3", 11, 19, 0.8, "candidate", None),
               TraceEntry("clash", "cam1", 25, 26, 0.9, "candidate", None),
               TraceEntry("late", "cam2", 31, 40, 0.75, "candidate", None)]
    trace = build_trace("s", entries)
    assert [(s.track_id, s.implausible) for s in trace.steps] == [
        ("s", False), ("ok", False), ("c", False), ("clash", True), ("late", False)]
    assert [s.transit_seconds for s in trace.steps] == [None, 1, 1, -5, 5]

    # The seed split in two on cam1, with a lookalike seen meanwhile elsewhere: still one step for the seed.
    split = build_trace("s", [TraceEntry("s", "cam1", 0, 10, 1.0, "seed", "k1"),
                              TraceEntry("s2", "cam1", 12, 20, 1.0, "confirmed", "k2"),
                              TraceEntry("look", "cam2", 5, 8, 0.9, "candidate", "k3")])
    assert [(s.track_id, s.merged_track_ids, s.ts_end, s.implausible) for s in split.steps] == [
        ("s", ["s2"], 20, False), ("look", [], 8, True)]
    assert split.steps[0].crop_key == "k1"


def test_feedback_is_stored_with_who_and_when_and_the_newest_verdict_wins(service):
    first = service.feedback("A1", "B1", "same", user="ines")
    assert (first.track_id, first.candidate_track_id, first.verdict, first.username) == ("A1", "B1", "same", "ines")
    assert first.as_dict()["created_at"] == first.created_at > 0
    second = service.feedback("B1", "A1", "different", user="omar")
    db = service.services.db
    pairs = db.feedback_pairs()
    assert [(p.track_id, p.candidate_track_id, p.verdict, p.username) for p in pairs] == [("B1", "A1", "different", "omar")]
    assert db.feedback_pairs(verdict="same") == []
    assert [p.id for p in db.feedback_pairs(since=second.created_at)] == [second.id]
    assert db.feedback_pairs(since=second.created_at + 60) == []
    assert "B1" not in ids(service.reid("A1")) and service.identity("A1").rejected == ("B1",)


def test_bad_input_is_named(service):
    with pytest.raises(InputError, match="verdict 'maybe'"):
        service.feedback("A1", "B1", "maybe", user="ines")
    with pytest.raises(InputError, match="two different tracks"):
        service.feedback("A1", "A1", "same", user="ines")
    with pytest.raises(NotFoundError, match="track 'ghost' does not exist"):
        service.feedback("A1", "ghost", "same", user="ines")
    with pytest.raises(NotFoundError, match="track 'B1' does not exist"):
        service.feedback("A1", "B1", "same", user="ines", allowed_cameras=["camA"])
    with pytest.raises(InputError, match="maximum of 200"):
        service.reid("A1", limit=5000)
    with pytest.raises(InputError, match="maximum of 200"):
        service.by_vector(PERSON, None, 201)
    with pytest.raises(InputError, match="offset"):
        service.reid("A1", offset=-1)
    assert service.services.db.feedback_pairs() == []  # nothing was stored by the refused calls


def test_track_view_and_crop_camera(service):
    view = service.track("B2")
    assert (view.camera_id, view.ts_start, view.ts_end) == ("camB", T0 + 52, T0 + 58)
    assert len(view.crops) == 3 and [c.ts for c in view.crops] == sorted(c.ts for c in view.crops)
    assert view.best_crop_key == view.crops[0].crop_key
    assert all(service.crop_camera(c.crop_key) == "camB" for c in view.crops)
    with pytest.raises(NotFoundError, match="crop"):
        service.crop_camera("camB/none/0000.jpg")
    assert set(CAMERAS) == set(service.services.db.camera_ids())
