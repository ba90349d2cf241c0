"""Identity evidence: calibration and camera links learned from tracks without labels, taught by verdicts.

Tracks are made here with known answers: people walk cam1 -> cam2 -> cam3 or back, taking 20 s from cam1 to cam2
and 35 s from cam2 to cam3 (5% spread of pace); a track's crops are the person's look plus the camera's tint plus
noise; some people look like someone else.
"""

from __future__ import annotations

import numpy as np
import pytest

from camtrace.search.evidence import (
    BINS,
    CROSS,
    IdentityEvidence,
    TrackSample,
    Verdict,
    _Appearance,
    learn_evidence,
    pair_set,
)

TRANSIT = {("cam1", "cam2"): 20.0, ("cam2", "cam3"): 35.0}


def corridor(people=80, seconds=1200.0, noise=0.6, lookalikes=0.3, fragments=0.0, seed=0, dim=32):
    """Tracks of people walking the corridor, and who each track is."""
    rng = np.random.default_rng(seed)
    looks = rng.normal(size=(people, dim))
    for i in range(people):
        if rng.random() < lookalikes:
            looks[i] = looks[int(rng.integers(people))] + 0.3 * rng.normal(size=dim)
    tint = {camera: 0.3 * rng.normal(size=dim) for camera in ("cam1", "cam2", "cam3")}

    def crops(person, camera):
        vectors = looks[person] + tint[camera] + noise * rng.normal(size=(4, dim))
        return (vectors / np.linalg.norm(vectors, axis=1, keepdims=True)).astype(np.float32)

    tracks, truth = [], {}
    for person in range(people):
        clock = rng.uniform(0, seconds)
        route = ["cam1", "cam2", "cam3"] if rng.random() < 0.5 else ["cam3", "cam2", "cam1"]
        pace = rng.normal(1, 0.05)
        for k, camera in enumerate(route):
            duration = rng.uniform(3, 7)
            name = f"p{person}-{camera}"
            if rng.random() < fragments:  # the tracker lost them for a moment
                cut, hole = rng.uniform(1, duration - 1), rng.uniform(0.3, 1.5)
                tracks += [
                    TrackSample(name, camera, clock, clock + cut, crops(person, camera)),
                    TrackSample(name + "b", camera, clock + cut + hole, clock + duration, crops(person, camera)),
                ]
                truth[name + "b"] = person
            else:
                tracks.append(TrackSample(name, camera, clock, clock + duration, crops(person, camera)))
            truth[name] = person
            clock += duration
            if k + 1 < len(route):
                clock += TRANSIT[tuple(sorted((camera, route[k + 1])))] * pace
    return tracks, truth


def reliability(evidence, tracks, truth, same_camera=False):
    """Predicted probability and outcome of every pair within the window (cross-camera or one camera)."""
    pairs = pair_set(tracks, evidence.window, per_track=None)
    predicted, outcome = [], []
    for k in range(len(pairs)):
        a, b = tracks[pairs.first[k]], tracks[pairs.second[k]]
        if (a.camera_id == b.camera_id) != same_camera:
            continue
        predicted.append(evidence.probability(pairs.score[k], a.camera_id, b.camera_id, pairs.gap[k]))
        outcome.append(truth[a.track_id] == truth[b.track_id])
    return np.array(predicted), np.array(outcome)


def expected_calibration_error(predicted, outcome, bins=10):
    edges = np.linspace(0, 1, bins + 1)
    which = np.clip(np.digitize(predicted, edges) - 1, 0, bins - 1)
    return sum(
        abs(predicted[which == b].mean() - outcome[which == b].mean()) * np.sum(which == b)
        for b in range(bins)
        if np.any(which == b)
    ) / len(predicted)


def test_calibration_on_a_hand_made_score_set_is_monotone_and_matches_bayes():
    # Two people score ~N(0.3, 0.15), one person ~N(0.85, 0.05); 1 pair in 20 is one person.
    rng = np.random.default_rng(1)
    negatives, positives = rng.normal(0.3, 0.15, 19_000), rng.normal(0.85, 0.05, 1_000)
    appearance = _Appearance(pairs=20_000.0, same=1_000.0)
    np.add.at(appearance.negative, np.clip(((negatives + 1) / 2 * BINS).astype(int), 0, BINS - 1), 1.0)
    np.add.at(appearance.positive, np.clip(((positives + 1) / 2 * BINS).astype(int), 0, BINS - 1), 1.0)
    evidence = IdentityEvidence(appearance={"same_camera": _Appearance(), CROSS: appearance})
    scores = np.linspace(-0.5, 1.0, 61)
    probability = np.array([evidence.appearance_probability(s, same_camera=False) for s in scores])
    assert np.all(np.diff(probability) >= -1e-12)  # never less likely for a better score
    assert probability[0] < 0.01 and probability[-1] > 0.95
    # Where both kinds of pair occur, the learned probability is the frequency of one person among pairs.
    both = np.concatenate([negatives, positives])
    truth = np.concatenate([np.zeros(len(negatives)), np.ones(len(positives))])
    for low, high in ((0.55, 0.65), (0.65, 0.72), (0.72, 0.8)):
        inside = (both >= low) & (both < high)
        predicted = np.mean([evidence.appearance_probability(s, same_camera=False) for s in both[inside]])
        assert predicted == pytest.approx(truth[inside].mean(), abs=0.12), (low, high)


def test_cross_camera_probabilities_hold_without_labels():
    tracks, truth = corridor()
    evidence = learn_evidence(tracks)
    predicted, outcome = reliability(evidence, tracks, truth)
    assert outcome.sum() >= 200
    assert expected_calibration_error(predicted, outcome) < 0.02
    # The pairs it calls likely are the person, those it calls unlikely are not.
    assert outcome[predicted > 0.9].mean() > 0.95 and outcome[predicted < 0.1].mean() < 0.01
    assert np.mean(predicted[outcome] > 0.5) > 0.9  # and it finds most of them
    same_predicted, same_outcome = reliability(evidence, tracks, truth, same_camera=True)
    assert not same_outcome.any() and same_predicted.max() < 0.05  # nobody comes back to a camera here


def test_camera_links_recover_the_transit_times():
    tracks, truth = corridor()
    links = {link.key: link for link in learn_evidence(tracks).links()}
    for (a, b), transit in TRANSIT.items():
        for key in (f"{a}->{b}", f"{b}->{a}"):  # people walk both ways
            assert links[key].transit_seconds == pytest.approx(transit, abs=1.5), key
            assert links[key].spread_seconds < 3.0 and links[key].evidence > 30
    # Through cam2: 20 s + a walk across its view + 35 s.
    assert links["cam1->cam3"].transit_seconds == pytest.approx(60.0, abs=3.0)
    assert set(links) == {"cam1->cam2", "cam2->cam1", "cam2->cam3", "cam3->cam2", "cam1->cam3", "cam3->cam1"}


@pytest.mark.parametrize("seed", [0, 1])
def test_a_link_with_a_few_passages_among_many_strangers_stays_narrow(seed):
    """16 people in 4 minutes, looks hard to tell apart: about a dozen passages per link among hundreds of chance
    pairs. Fitted freely, the transit widened by taking in chance matches (12 s of spread for a 1 s truth on
    seed 0); the spread's prior keeps it near the passages'."""
    tracks, truth = corridor(people=16, seconds=240.0, noise=1.5, seed=seed)
    links = {link.key: link for link in learn_evidence(tracks).links()}
    for key in ("cam1->cam2", "cam2->cam1"):
        assert links[key].transit_seconds == pytest.approx(20.0, abs=1.5), key
        assert links[key].spread_seconds < 3.0, key


def test_a_track_split_on_one_camera_is_found_again():
    tracks, truth = corridor(people=300, seconds=1800.0, fragments=0.2)
    evidence = learn_evidence(tracks)
    # One camera has no transit to learn (a re-find comes within seconds): the score decides, against how one
    # person's crops score on one camera and how two people seen together do.
    assert all(link.camera_from != link.camera_to for link in evidence.links())
    predicted, outcome = reliability(evidence, tracks, truth, same_camera=True)
    assert outcome.sum() > 100 and predicted[outcome].mean() > 0.8 and predicted[~outcome].mean() < 0.01
    assert expected_calibration_error(predicted, outcome) < 0.02


def test_verdicts_find_a_link_the_footage_alone_cannot():
    # Four people: too few passages cam1 -> cam2 to tell the link from chance matches.
    tracks, truth = corridor(people=4, seconds=600.0, seed=3)
    assert learn_evidence(tracks).link("cam1", "cam2") is None
    by_person: dict[int, list[str]] = {}
    for track in tracks:
        by_person.setdefault(truth[track.track_id], []).append(track.track_id)
    confirmed = [Verdict(ids[0], other, True) for ids in list(by_person.values())[:4] for other in ids[1:]]
    link = learn_evidence(tracks, confirmed).link("cam1", "cam2")
    assert link is not None and link.transit_seconds == pytest.approx(20.0, abs=1.5)

    # Counted at once, without learning again: the same verdicts sharpen the stored evidence in place.
    evidence = learn_evidence(tracks)
    index = {t.track_id: t for t in tracks}
    for verdict in confirmed:
        a, b = sorted((index[verdict.track_a], index[verdict.track_b]), key=lambda t: t.ts_start)
        score = float(np.max(a.vectors @ b.vectors.T))
        evidence.add_verdict(score, a.camera_id, b.camera_id, b.ts_start - a.ts_end, same=True)
    assert evidence.link("cam1", "cam2") is not None and evidence.verdicts == len(confirmed)


def test_evidence_survives_storage_and_learning_is_bounded():
    tracks, truth = corridor(people=40, seconds=900.0)
    evidence = learn_evidence(tracks)
    again = IdentityEvidence.from_dict(evidence.to_dict())
    for score, gap in ((0.2, 20.0), (0.8, 20.0), (0.8, 45.0), (0.95, -1.0)):
        assert again.probability(score, "cam1", "cam2", gap) == pytest.approx(
            evidence.probability(score, "cam1", "cam2", gap), abs=1e-6
        )
    assert evidence.probability(0.99, "cam1", "cam2", -1.0) == 0.0  # seen at the same time: two people
    capped = pair_set(tracks, 600.0, per_track=5)
    assert np.bincount(capped.first).max() <= 5  # each track compared with its 5 best matches at most
    assert len(pair_set([], 600.0)) == 0 and not learn_evidence([]).links()


def test_candidates_of_one_camera_share_one_person():
    from camtrace.search.evidence import share_one_person

    # Three look-alikes on cam2 after the sighting each fit the link (0.6 alone); one person at most is among them.
    shared = share_one_person(
        {"a": 0.6, "b": 0.6, "c": 0.6, "d": 0.3, "e": 0.2}, {"a": "cam2", "b": "cam2", "c": "cam2", "d": "cam3", "e": "cam3"}
    )
    assert shared["a"] == shared["b"] == shared["c"] == pytest.approx(1 / 3)
    assert shared["d"] == 0.3 and shared["e"] == 0.2  # on cam3 they add up to less than one person: unchanged
    assert share_one_person({}, {}) == {}
