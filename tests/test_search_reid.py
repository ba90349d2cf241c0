"""Re-identification, feedback and traces on a hand-made scene (tests/search_scene.py) where the
right answers are known, on both index backends, through the real SearchService."""

from __future__ import annotations

import pytest
from search_scene import CAMERAS, PERSON, T0, build_scene, expected_similarity, install_evidence
from sqlalchemy import delete

from camtrace.errors import InputError, NotFoundError
from camtrace.search import SearchService
from camtrace.search.trace import TraceEntry, TraceMethod, build_trace


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
    install_evidence(service.services)
    yield
    from camtrace.storage.sql import Feedback

    with service.services.db.engine.begin() as conn:
        conn.execute(delete(Feedback))


def ids(results) -> list[str]:
    return [r.track_id for r in results]


def test_reid_finds_the_person_on_other_cameras_only_and_never_the_track_itself(service):
    results = service.reid("A1", limit=20)
    assert "A1" not in ids(results) and all(r.camera_id != "camA" for r in results)
    assert set(ids(results)) == {"B1", "B2", "L1", "L2", "C1", "Q", "X"}
    for result in results:  # every crop of the track is a query: the score is the best pair's similarity
        assert result.score == pytest.approx(expected_similarity(result.track_id, ["A1"]), abs=1e-4)
    # B1 arrives on camB 30 s after the seed left camA (the link: 20 +- 3 s), B2 (the same walk, split) 42 s;
    # L1 was on camC while the seed was on camA: impossible; X looks like nobody.
    probability = {r.track_id: r.probability for r in results}
    assert probability["L1"] == 0.0 and probability["X"] < 0.01
    assert ids(results)[0] in ("B1", "B2") and ids(results)[-2:] == sorted(["L1", "X"], key=ids(results).index)
    # B1 and B2 are both on camB after the seed: one person at most, so their probabilities add up to one at most.
    assert probability["B1"] + probability["B2"] <= 1.0 + 1e-6

    same = service.reid("A1", limit=20, same_camera=True)
    assert "A1" not in ids(same) and "A2" in ids(same)
    assert next(r for r in same if r.track_id == "A2").probability > 0.9  # the seed found again 2 s later
    assert ids(service.reid("A1", limit=3, offset=2)) == ids(results)[2:5]
    likely = service.reid("A1", min_probability=0.3)
    assert likely and all(r.probability >= 0.3 for r in likely)
    assert ids(likely) == [t for t in ids(results) if probability[t] >= 0.3]
    with pytest.raises(InputError, match="probability"):
        service.reid("A1", min_probability=1.5)


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
    before = {r.track_id: r for r in service.reid("A1")}
    assert before["Q"].score < before["C1"].score
    service.feedback("A1", "C1", "same", user="ines")
    after = {r.track_id: r for r in service.reid("A1")}
    assert "C1" not in after  # decided: no longer offered
    # Q looks like C1's crops, now positive examples: its score is its similarity to C1, and it arrives on camD
    # 30 s after C1 left camC, as the link says.
    q = after["Q"]
    assert q.score == pytest.approx(expected_similarity("Q", ["A1", "C1"]), abs=1e-4)
    assert q.score > 0.9 and q.probability > 0.9 > before["Q"].probability

    service.feedback("L1", "A1", "different", user="ines")  # either order names the pair
    pushed = service.reid("A1")
    assert "L1" not in ids(pushed)
    l2 = next(r for r in pushed if r.track_id == "L2")
    assert l2.score < 0 and l2.probability == 0.0  # nearer to the rejected lookalike than to the person
    assert "L2" not in ids(service.reid("A1", min_probability=0.01))


def test_confirmations_chain_from_track_to_track(service):
    service.feedback("A1", "A2", "same", user="ines")
    service.feedback("A2", "B1", "same", user="omar")
    identity = service.identity("A1")
    assert identity.confirmed == ("A2", "B1")
    assert "B1" not in ids(service.reid("A1", same_camera=True))


def test_the_trace_is_the_most_probable_path_with_the_rest_as_alternatives(service):
    assert service.trace("A1").min_probability == 0.3  # CAMTRACE_TRACE_MIN_SCORE's default
    trace = service.trace("A1", min_probability=0.5)
    path = [(s.track_id, s.status, s.camera_id, s.merged_track_ids) for s in trace.path]
    # A2 (the seed found again 2 s later: a step of its own until confirmed), B1 and B2 20 s later (one stop),
    # C1 22 s after that, Q 30 s after C1.
    assert path == [
        ("A1", "seed", "camA", []),
        ("A2", "candidate", "camA", []),
        ("B1", "candidate", "camB", ["B2"]),
        ("C1", "candidate", "camC", []),
        ("Q", "candidate", "camD", []),
    ]
    assert [s.transit_seconds for s in trace.path] == [None, 2.0, 20.0, 22.0, 30.0]
    assert [s.expected_transit_seconds for s in trace.path] == [None, None, 20.0, 22.0, 30.0]
    assert all(s.probability >= 0.5 for s in trace.path) and trace.path[0].probability == 1.0
    alternatives = {s.track_id: s for s in trace.steps if s.status == "alternative"}
    assert set(alternatives) <= {"L1", "L2", "X"} and "L1" in alternatives
    assert alternatives["L1"].implausible  # on camC while the seed was on camA
    assert all(s.probability < 0.5 for s in alternatives.values())
    assert [s.ts_start for s in trace.steps] == sorted(s.ts_start for s in trace.steps)
    assert trace.steps[0].crop_key and trace.min_probability == 0.5
    # A stricter threshold keeps only steps sure enough (a weaker step stays when the steps after it make up for it).
    strict = service.trace("A1", min_probability=0.999)
    assert len(strict.path) < len(trace.path) and strict.min_probability == 0.999

    # Investigators decide: the trace follows.
    service.feedback("A1", "C1", "same", user="ines")
    service.feedback("A1", "B1", "different", user="ines")
    trace = service.trace("A1")
    path = [(s.track_id, s.status) for s in trace.path]
    assert ("C1", "confirmed") in path and "B1" not in ids(trace.steps)
    assert path[-1] == ("Q", "candidate")
    limited = service.trace("A1", allowed_cameras=["camA", "camD"])
    assert {s.camera_id for s in limited.steps} <= {"camA", "camD"} and "Q" in ids(limited.steps)


def test_each_part_of_the_evidence_can_be_measured_alone(service):
    by_score = service.trace("A1", min_probability=0.85, method=TraceMethod.SCORE)
    on_path = {t for s in by_score.path for t in (s.track_id, *s.merged_track_ids)}
    assert on_path == {"A1", "A2", "B1", "B2", "L2"}  # cosine >= 0.85, L1 (seen with the seed) left out
    appearance = service.trace("A1", method=TraceMethod.APPEARANCE)
    links = service.trace("A1", method=TraceMethod.LINKS)
    assert "L1" not in ids(appearance.path) and "L1" not in ids(links.path)  # seen with the seed: never a step
    assert all(s.status in ("seed", "confirmed", "candidate", "alternative") for s in links.steps)


def test_build_trace_keeps_the_path_time_consistent_and_leaves_an_impossible_lookalike_out():
    fits = {("cam1", "cam2"): 10, ("cam2", "cam3"): 10, ("cam3", "cam4"): 10}

    def probability(earlier, later, score):
        if later.ts_start < earlier.ts_end:
            return 0.0  # one person, one place at a time
        fit = fits.get((earlier.camera_id, later.camera_id))
        return score if fit is not None and abs(later.ts_start - earlier.ts_end - fit) <= 2 else 0.05 * score

    def transit(earlier, later):
        fit = fits.get((earlier.camera_id, later.camera_id))
        return 1.0 if fit is None or abs(later.ts_start - earlier.ts_end - fit) <= 2 else 0.01

    seed = TraceEntry("s", "cam1", 0, 10, 1.0, "seed", "k0")
    person = [TraceEntry("p2", "cam2", 20, 30, 0.95, "candidate", "k1"), TraceEntry("p3", "cam3", 40, 50, 0.7, "candidate", "k2")]
    # The look-alike scores higher than the person but is on cam3 while the person is on cam2.
    lookalike = TraceEntry("look", "cam3", 22, 28, 0.97, "candidate", "k3")
    trace = build_trace("s", [seed], [*person, lookalike], probability, 0.5, transit_ratio=transit)
    # p3's camera has no link to the seed's: p2, near certain, anchors it.
    assert [(s.track_id, s.status) for s in trace.path] == [("s", "seed"), ("p2", "candidate"), ("p3", "candidate")]
    look = next(s for s in trace.steps if s.track_id == "look")
    assert look.status == "alternative" and look.implausible
    assert [s.transit_seconds for s in trace.path] == [None, 10, 10]

    # A doubtful step anchors nothing: a stranger's walk that fits the links from it is not followed.
    doubtful = [
        TraceEntry("x2", "cam2", 20, 30, 0.7, "candidate", "k5"),
        TraceEntry("x3", "cam3", 40, 50, 0.99, "candidate", "k6"),
        TraceEntry("x4", "cam4", 60, 70, 0.99, "candidate", "k7"),
    ]
    wary = build_trace("s", [seed], doubtful, probability, 0.5, transit_ratio=transit)
    assert [s.track_id for s in wary.path] == ["s", "x2"]

    # A confirmed track is on the path whatever the candidates around it say; candidates never merge with it.
    confirmed = TraceEntry("c", "cam2", 31, 33, 1.0, "confirmed", "k4")
    trace = build_trace("s", [seed, confirmed], [*person, lookalike], probability, 0.5, transit_ratio=transit)
    assert ("c", "confirmed") in [(s.track_id, s.status) for s in trace.path]
    assert next(s for s in trace.path if s.track_id == "p2").merged_track_ids == []

    # Without candidates worth it, the path is the seed alone and everything else an alternative.
    alone = build_trace("s", [seed], person, lambda *_: 0.1, 0.5)
    assert [s.track_id for s in alone.path] == ["s"] and {s.status for s in alone.steps[1:]} == {"alternative"}


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


def test_a_verdict_teaches_the_evidence_at_once_and_changes_other_traces(service):
    def probability_of(trace, track):
        return max((s.probability for s in trace.steps if track in (s.track_id, *s.merged_track_ids)), default=0.0)

    before = service.trace("B1")
    assert service.evidence.current().link("camB", "camD") is None
    # An investigator confirms that someone went from camB to camD in 2 s (B2 then L2).
    service.feedback("B2", "L2", "same", user="ines")
    link = service.evidence.current().link("camB", "camD")
    assert link is not None and link.transit_seconds == pytest.approx(2.0, abs=0.01)
    # Another seed's trace: B1 is not part of that verdict, yet L2 after it is now far more likely.
    after = service.trace("B1")
    assert probability_of(after, "L2") > probability_of(before, "L2") + 0.3
    # A rejection teaches the calibration: the same score counts for less everywhere.
    evidence = service.evidence.current()
    odds_before = evidence.appearance_probability(0.89, same_camera=False)
    service.feedback("A1", "L2", "different", user="ines")
    assert service.evidence.current().appearance_probability(0.89, same_camera=False) < odds_before


def test_learning_runs_again_only_when_tracks_changed(tmp_path):
    services = build_scene(tmp_path / "scene", "edge")
    try:
        from camtrace.search.evidence_service import EvidenceService

        evidence = EvidenceService(services)
        first = evidence.learn_if_stale()
        assert first is not None and first.tracks == 9
        assert evidence.learn_if_stale() is None  # nothing new since
        services.db.upsert_tracks(
            [
                {
                    "id": "late",
                    "camera_id": "camA",
                    "video_id": "camA-video",
                    "segment_index": 1,
                    "ts_start": T0 + 900,
                    "ts_end": T0 + 905,
                    "n_boxes": 1,
                    "best_crop_key": None,
                }
            ]
        )
        assert evidence.learn_if_stale() is not None  # a new track: learn again
        assert evidence.stored().document["tracks"] == 9  # (the new track has no vectors: not learned from)
    finally:
        services.close()
        services.db.close()
