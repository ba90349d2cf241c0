"""A person's path across cameras, built from decided and candidate tracks (no I/O here).

The seed track and the tracks confirmed as the same person are certain. Each
candidate comes with its appearance score against them; ``pair_probability``
(the identity evidence) says how likely a candidate is the person given a
neighbouring track of the path: the transit between the two must fit the
cameras' link, and one person is in one place at a time.

A trace is the most probable time-consistent path (``TraceMethod.PATH``, the
default): every certain track and the set of candidates, no two seen at the
same time, whose summed log-odds against ``min_probability`` is largest (a
candidate at that probability neither helps nor hurts). Each candidate's
probability is its best against an anchor (0 when seen while an anchor was): a
certain sighting, or a candidate found 90% likely against those (so one doubtful step cannot lead
the path along a stranger's walk); a step the link from the previous one makes
unlikely costs that transit's odds.
Candidates not on the chain stay in the answer with status ``alternative`` and
their own best probability; one seen while the chain is elsewhere is flagged
``implausible``. Consecutive tracks of one camera on the chain merge into one
step (a person split by the tracker or a segment boundary); certain tracks
merge with certain ones and candidates with candidates, never across.

The other methods exist to measure what each part adds: ``SCORE`` keeps every
candidate at a cosine of ``min_probability`` or more (what traces did before
probabilities), ``APPEARANCE`` every candidate whose calibrated appearance
probability reaches it, ``LINKS`` every candidate whose probability with camera
links (against the nearest certain track) reaches it; those three flag
candidates seen at the same time as a certain track instead of building a
chain.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from enum import StrEnum

from camtrace.enums import TraceStatus, Verdict
from camtrace.search.evidence import share_one_person
from camtrace.search.records import Trace, TraceStep


class TraceMethod(StrEnum):
    PATH = "path"
    LINKS = "links"
    APPEARANCE = "appearance"
    SCORE = "score"


_RANK = {status: rank for rank, status in enumerate(TraceStatus)}
CERTAIN = (TraceStatus.SEED, TraceStatus.CONFIRMED)
_PROBABILITY_CLIP = 1e-6


@dataclass(frozen=True)
class TraceEntry:
    """One track before merging."""

    track_id: str
    camera_id: str
    ts_start: float
    ts_end: float
    score: float
    status: str
    crop_key: str | None


# P(candidate is the person | appearance score, a neighbouring track of the path): (earlier, later, score).
PairProbability = Callable[[TraceEntry, TraceEntry, float], float]
# The link's typical transit and spread from one camera to another (None: no learned link).
ExpectedTransit = Callable[[str, str], tuple[float, float] | None]
# How much more likely one person takes the gap from an earlier step to a later one than two people would
# (1: the cameras say nothing).
TransitRatio = Callable[[TraceEntry, TraceEntry], float]
CERTAIN_GAIN = 1e6  # what a certain track adds to a path: it is on it whatever the candidates around it say
ANCHOR_PROBABILITY = 0.9  # a candidate this likely also anchors the others' probabilities
ANCHOR_ROUNDS = 4


def overlaps(a: TraceEntry, b: TraceEntry) -> bool:
    return a.ts_start <= b.ts_end and b.ts_start <= a.ts_end


def _ordered(a: TraceEntry, b: TraceEntry) -> tuple[TraceEntry, TraceEntry]:
    return (a, b) if (a.ts_start, a.ts_end) <= (b.ts_start, b.ts_end) else (b, a)


def _logit(p: float) -> float:
    p = min(max(p, _PROBABILITY_CLIP), 1 - _PROBABILITY_CLIP)
    return math.log(p / (1 - p))


def build_trace(
    seed_track_id: str,
    certain: Sequence[TraceEntry],
    candidates: Sequence[TraceEntry],
    pair_probability: PairProbability,
    min_probability: float,
    method: TraceMethod = TraceMethod.PATH,
    expected_transit: ExpectedTransit | None = None,
    transit_ratio: TransitRatio | None = None,
) -> Trace:
    """The trace of the seed's person (see the module doc)."""
    certain = sorted(certain, key=_time_key)
    if method == TraceMethod.PATH:
        chain, probability = _best_chain(certain, candidates, pair_probability, min_probability, transit_ratio)
    else:
        chain, probability = _independent(certain, candidates, pair_probability, min_probability, method)
    on_chain = {e.track_id for e in chain}
    steps = _merged_steps(chain, probability, expected_transit)
    for entry in candidates:
        if entry.track_id in on_chain:
            continue
        implausible = any(overlaps(entry, e) for e in (chain if method == TraceMethod.PATH else certain))
        steps.append(_step(entry, TraceStatus.ALTERNATIVE, probability.get(entry.track_id, 0.0), implausible=implausible))
    steps.sort(key=lambda s: (s.ts_start, s.ts_end, _RANK[s.status], s.track_id))
    return Trace(seed_track_id=seed_track_id, steps=steps, min_probability=min_probability, method=str(method))


def _time_key(entry: TraceEntry) -> tuple[float, float, str]:
    return entry.ts_start, entry.ts_end, entry.track_id


def _best_chain(
    certain: Sequence[TraceEntry],
    candidates: Sequence[TraceEntry],
    pair_probability: PairProbability,
    min_probability: float,
    transit_ratio: TransitRatio | None,
) -> tuple[list[TraceEntry], dict[str, float]]:
    """The most probable time-consistent path: every certain track, and the candidates whose probability
    (against the anchors: ``_anchored_probabilities``) beats ``min_probability`` most in total, no two of them
    seen at the same time; a step the link from the step before makes unlikely costs what that transit costs.

    A candidate is judged against the person's sightings, never against a doubtful candidate: a path that took
    one wrong step must not then follow that stranger's own walk (whose transits fit the links perfectly)."""
    if not certain:
        return [], {}
    offset = _logit(min_probability)
    anchored = anchored_probabilities(certain, candidates, pair_probability)
    nodes = sorted([*certain, *(e for e in candidates if not any(overlaps(e, c) for c in certain))], key=_time_key)
    must = {e.track_id for e in certain}
    gain = {e.track_id: CERTAIN_GAIN if e.track_id in must else _logit(anchored[e.track_id]) - offset for e in nodes}
    # best[k]: the best total of a path ending at nodes[k]; the path may start anywhere.
    best: list[float] = []
    before: list[int | None] = []
    for k, node in enumerate(nodes):
        choice, total = None, gain[node.track_id]
        for i in range(k):
            previous = nodes[i]
            if (
                node.ts_start < previous.ts_end
                and previous.camera_id != node.camera_id
                and not (previous.track_id in must and node.track_id in must)
            ):
                continue  # one person, one place at a time (one camera may show them as two tracks at once)
            penalty = 0.0
            if transit_ratio is not None:
                penalty = min(0.0, math.log(max(transit_ratio(previous, node), _PROBABILITY_CLIP)))
            if best[i] + gain[node.track_id] + penalty > total:
                choice, total = i, best[i] + gain[node.track_id] + penalty
        best.append(total)
        before.append(choice)
    end = max(range(len(nodes)), key=lambda k: best[k])
    chain: list[TraceEntry] = []
    position: int | None = end
    while position is not None:
        chain.append(nodes[position])
        position = before[position]
    chain.reverse()
    # Certain tracks the path could not pass through (seen at the same time as another) stay on it all the same.
    chain += [e for e in certain if e.track_id not in {c.track_id for c in chain}]
    chain.sort(key=_time_key)
    return chain, anchored


def anchored_probabilities(
    certain: Sequence[TraceEntry],
    candidates: Sequence[TraceEntry],
    pair_probability: PairProbability,
    rounds: int = ANCHOR_ROUNDS,
    share: bool = True,
) -> dict[str, float]:
    """Each candidate's probability of being the person, against the anchors: the certain tracks, then also the
    candidates found ANCHOR_PROBABILITY likely or more (so a person is followed past cameras whose link to the
    seed's camera is unknown, but only through steps that are near certain; ``rounds=1``: the certain only).

    Candidates compete: one person is at most one of the tracks a camera shows after (or before) a sighting, so
    the candidates of one camera on one side of one anchor share that one person (``share_one_person``;
    ``share=False``: each pair's own probability, the strength of its evidence alone)."""
    anchors = list(certain)
    probability: dict[str, float] = {}
    for _ in range(max(1, rounds)):
        best = {e.track_id: _best_anchor(e, anchors, pair_probability) for e in candidates}
        if not share:
            return {track: p for track, (p, _) in best.items()}
        probability = share_one_person(
            {track: p for track, (p, _) in best.items()},
            {
                e.track_id: (best[e.track_id][1], e.camera_id, e.ts_start >= _anchor_end(best[e.track_id][1], anchors))
                for e in candidates
            },
        )
        confident = [e for e in candidates if probability[e.track_id] >= ANCHOR_PROBABILITY]
        if len(confident) + len(certain) == len(anchors):
            break
        anchors = [*certain, *confident]
    return probability


def _best_anchor(entry: TraceEntry, anchors: Sequence[TraceEntry], pair_probability: PairProbability) -> tuple[float, str]:
    """The best probability an entry gets against one anchor, and that anchor (0 when seen while one was)."""
    others = [a for a in anchors if a.track_id != entry.track_id]
    if not others or any(overlaps(entry, a) for a in others):
        return 0.0, ""
    return max((pair_probability(*_ordered(a, entry), entry.score), a.track_id) for a in others)


def _anchor_end(track_id: str, anchors: Sequence[TraceEntry]) -> float:
    return next((a.ts_end for a in anchors if a.track_id == track_id), 0.0)


def _independent(
    certain: Sequence[TraceEntry],
    candidates: Sequence[TraceEntry],
    pair_probability: PairProbability,
    min_probability: float,
    method: TraceMethod,
) -> tuple[list[TraceEntry], dict[str, float]]:
    """Every candidate judged on its own against the certain tracks (or by its cosine, for ``SCORE``); those
    seen while a certain track was elsewhere are left for the alternatives (flagged)."""
    if method == TraceMethod.SCORE:
        probability = {e.track_id: e.score for e in candidates}
    else:
        probability = anchored_probabilities(certain, candidates, pair_probability, rounds=1)
    kept = list(certain)
    for entry in candidates:
        if any(overlaps(entry, c) for c in certain if c.track_id != entry.track_id):
            continue
        if probability[entry.track_id] >= min_probability:
            kept.append(entry)
    kept.sort(key=_time_key)
    return kept, probability


def _merged_steps(
    chain: Sequence[TraceEntry], probability: dict[str, float], expected_transit: ExpectedTransit | None
) -> list[TraceStep]:
    runs: list[list[TraceEntry]] = []
    for entry in chain:
        last = runs[-1][-1] if runs else None
        if last is not None and last.camera_id == entry.camera_id and (last.status in CERTAIN) == (entry.status in CERTAIN):
            runs[-1].append(entry)
        else:
            runs.append([entry])
    steps: list[TraceStep] = []
    for run in runs:
        # A stop is named by its seed or first track; a candidate stop is as likely as its entry into the path
        # (the tracks after it in the stop are each conditional on the one before).
        lead = min(run, key=lambda e: (_RANK[e.status], e.ts_start))
        status = lead.status
        p = 1.0 if status in CERTAIN else probability.get(run[0].track_id, 0.0)
        step = _step(lead, status, p, run=run)
        if steps:
            prior = steps[-1]
            step.transit_seconds = round(step.ts_start - prior.ts_end, 3)
            expected = expected_transit(prior.camera_id, step.camera_id) if expected_transit else None
            if expected is not None and prior.camera_id != step.camera_id:
                step.expected_transit_seconds, step.transit_spread_seconds = expected
        steps.append(step)
    return steps


def _step(
    lead: TraceEntry, status: str, probability: float, *, run: Iterable[TraceEntry] = (), implausible: bool = False
) -> TraceStep:
    run = list(run) or [lead]
    return TraceStep(
        track_id=lead.track_id,
        camera_id=lead.camera_id,
        ts_start=min(e.ts_start for e in run),
        ts_end=max(e.ts_end for e in run),
        score=round(max(e.score for e in run), 6),
        probability=round(float(probability), 4),
        status=status,
        crop_key=lead.crop_key,
        implausible=implausible,
        merged_track_ids=[e.track_id for e in run if e.track_id != lead.track_id],
    )


@dataclass(frozen=True)
class Identity:
    """What investigators decided about one person: the tracks confirmed to be them (besides the
    seed, following "same" verdicts from track to track) and the tracks rejected as someone else."""

    seed_track_id: str
    confirmed: tuple[str, ...]
    rejected: tuple[str, ...]

    @property
    def decided(self) -> tuple[str, ...]:
        return (self.seed_track_id, *self.confirmed, *self.rejected)


MAX_IDENTITY_TRACKS = 500


def resolve_identity(seed_track_id: str, read_feedback: Callable[[Iterable[str]], Iterable]) -> Identity:
    """Follow "same" verdicts from the seed (A same as B, B same as C: C is confirmed too); a track
    judged "different" from any of them is rejected. ``read_feedback(track_ids)`` returns the current
    verdicts (rows with track_id, candidate_track_id, verdict) on pairs that involve those tracks."""
    group = {seed_track_id}
    frontier = [seed_track_id]
    rows: dict[tuple[str, str], str] = {}
    while frontier and len(group) < MAX_IDENTITY_TRACKS:
        found = []
        for row in read_feedback(frontier):
            rows[(row.track_id, row.candidate_track_id)] = row.verdict
            if row.verdict == Verdict.SAME:
                for track in (row.track_id, row.candidate_track_id):
                    if track not in group:
                        group.add(track)
                        found.append(track)
        frontier = found
    rejected = {
        other
        for (a, b), verdict in rows.items()
        if verdict == Verdict.DIFFERENT
        for member, other in ((a, b), (b, a))
        if member in group and other not in group
    }
    return Identity(seed_track_id, tuple(sorted(group - {seed_track_id})), tuple(sorted(rejected)))
