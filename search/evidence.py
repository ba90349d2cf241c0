"""Identity evidence: the probability that two tracks show the same person, learned from the footage.

A raw re-id score (the best cosine between two tracks' crops) says little on
its own: its scale drifts between models and sites. This module turns it, with
where and when the two tracks were seen, into P(same person), learned per
model and per site without labels (no I/O here: ``learn_evidence`` takes the
tracks and their vectors, ``IdentityEvidence`` answers questions).

The model. For two tracks, the earlier on camera *a* and the later on camera
*b*, let *s* be their score and *g* the gap from the end of the first to the
start of the second. Either they are one person, and then *s* follows the
same-person score distribution f1 and *g* the transit time of the link a->b
(a normal distribution per directed camera pair, learned), or two people, and
then *s* follows f0 and *g* is as likely as any other gap up to ``window``:

    odds(same | s, a, b, g) = prior(a->b) * f1(s) / f0(s) * transit(g | a->b) / (1 / window)

What the footage says for certain: two tracks seen at the same moment are two
people (on one camera, or on two cameras that do not share a view). Those pairs
give f0 directly, for same-camera and cross-camera pairs apart (crops of one
camera look more alike than a person on two cameras). The rest is learned by
EM over every pair of tracks within ``window`` of each other, starting from
confident mutual best matches: same-person pairs pile up at a pair's
characteristic transit time while chance matches spread over every gap, which
is what separates a look-alike from the person. Investigators' verdicts enter
as labelled pairs worth ``VERDICT_WEIGHT`` pairs each, at once
(``add_verdict``) and in every later learning run.

Everything the model needs is kept as counts (score histograms, weighted
transit sums), so a verdict updates it in microseconds and the whole of it is a
small JSON document stored per model version.
"""

from __future__ import annotations

import math
from collections.abc import Hashable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TypeVar

import numpy as np

K = TypeVar("K", bound=Hashable)

BINS = 100  # score histogram bins over [-1, 1]
SMOOTH_BINS = 1.5  # Gaussian smoothing of the score histograms, in bins
PSEUDO_COUNT = 0.5  # per bin, so an empty bin never makes a ratio infinite
VERDICT_WEIGHT = 10.0  # an investigator's verdict counts as this many self-supervised pairs
MIN_LINK_EVIDENCE = 2.0  # same-person transits (expected count) before a camera pair counts as linked
MIN_TRANSIT_SPREAD = 0.5  # seconds: a link's transit-time spread never goes below this
# A link's spread is estimated with a prior: about a tenth of its transit, worth this many passages. Without it the
# fit of a link with a dozen passages among thousands of chance pairs feeds on itself: a wider transit takes in
# more chance matches, which widen it further (on a synthetic corridor, 12 +- 0.8 s was learned as 11 +- 6 s).
TRANSIT_SPREAD_PRIOR_SHARE = 0.1
TRANSIT_SPREAD_PRIOR_PASSAGES = 10.0
# A "link" whose transit times spread over more than this share of the window is no characteristic transit
# (people come back to a camera at any time): it says nothing about the gap.
MAX_SPREAD_SHARE = 0.1
# A domain with fewer certain negatives than this borrows the other domain's score shape for the rest.
MIN_NEGATIVES = 50.0
# A track found again on its own camera within this many seconds is the tracker losing its person for a moment
# (the links of a camera to itself are fitted on these gaps only).
FRAGMENT_SECONDS = 10.0
INITIAL_SPREAD_SHARE = 0.01  # a link's fit starts this narrow (a share of the window) around its most common gap
DEFAULT_WINDOW = 600.0  # seconds within which two tracks are compared
EM_ROUNDS = 25
# Per track, the later tracks it is compared with in learning: its best-scoring ones within the window, seen at
# the same time or not (what re-id offers; bounds the work on a busy site). The certain negatives are those of
# them seen at the same time, so both come from the same selection and the score distributions stay comparable.
PAIRS_PER_TRACK = 64
MAX_PARTNERS = 1.0  # expected same-person tracks of one track on another camera, within the window
SAME, CROSS = "same_camera", "cross_camera"


@dataclass(frozen=True)
class TrackSample:
    """One track as the learner sees it: where, when, and its crops' unit vectors (k x dim)."""

    track_id: str
    camera_id: str
    ts_start: float
    ts_end: float
    vectors: np.ndarray


@dataclass(frozen=True)
class Verdict:
    """An investigator's decision on two tracks."""

    track_a: str
    track_b: str
    same: bool


@dataclass(frozen=True)
class PairSet:
    """Every pair of tracks within the window: scores, gaps (negative: seen at the same time), cameras."""

    first: np.ndarray  # index of the earlier track
    second: np.ndarray  # index of the later track
    score: np.ndarray
    gap: np.ndarray
    link: list[str]  # "a->b": the earlier track's camera, then the later one's

    def __len__(self) -> int:
        return len(self.score)


@dataclass(frozen=True)
class Link:
    """What the site's footage says about people passing from one camera to another."""

    camera_from: str
    camera_to: str
    transit_seconds: float  # typical time from leaving the first view to entering the second
    spread_seconds: float  # standard deviation of that time
    evidence: float  # same-person passages behind it (expected count, verdicts weighted)
    share: float  # of the pairs of tracks seen on these cameras within the window, the share that is one person

    @property
    def key(self) -> str:
        return link_key(self.camera_from, self.camera_to)


def link_key(camera_from: str, camera_to: str) -> str:
    return f"{camera_from}->{camera_to}"


def share_one_person(probability: Mapping[K, float], groups: Mapping[K, Hashable]) -> dict[K, float]:
    """Candidates of one group (one camera, after or before one sighting) compete for one person: scaled so
    their probabilities add up to MAX_PARTNERS at most. The probabilities answer for a pair alone; the person
    is at most one of the tracks a camera shows in the window (what the fit assumed), so three look-alikes that
    each fit the link cannot each be 60% likely."""
    totals: dict[Hashable, float] = {}
    for key, p in probability.items():
        totals[groups[key]] = totals.get(groups[key], 0.0) + p
    return {key: p / max(1.0, totals[groups[key]] / MAX_PARTNERS) for key, p in probability.items()}


def track_score(a: np.ndarray, b: np.ndarray) -> float:
    """A pair of tracks' score: the best cosine similarity between their crops (what re-id ranks by)."""
    if len(a) == 0 or len(b) == 0:
        return float("nan")
    return float(np.max(np.asarray(a, np.float32) @ np.asarray(b, np.float32).T))


def order_pair(a: TrackSample, b: TrackSample) -> tuple[TrackSample, TrackSample]:
    """The earlier track first (by start, then end, then id)."""
    return (a, b) if (a.ts_start, a.ts_end, a.track_id) <= (b.ts_start, b.ts_end, b.track_id) else (b, a)


def gap_between(earlier_end: float, later_start: float) -> float:
    return later_start - earlier_end


def _bin(score: float | np.ndarray) -> np.ndarray:
    return np.clip(((np.asarray(score, np.float64) + 1.0) / 2.0 * BINS).astype(int), 0, BINS - 1)


def _smoothed_density(counts: np.ndarray) -> np.ndarray:
    radius = int(math.ceil(3 * SMOOTH_BINS))
    offsets = np.arange(-radius, radius + 1)
    kernel = np.exp(-0.5 * (offsets / SMOOTH_BINS) ** 2)
    padded = np.pad(np.asarray(counts, np.float64), radius, mode="edge")
    smooth = np.convolve(padded, kernel / kernel.sum(), mode="valid") + PSEUDO_COUNT
    return smooth / smooth.sum()


@dataclass
class _Appearance:
    """Score counts for one domain (same-camera or cross-camera pairs)."""

    positive: np.ndarray = field(default_factory=lambda: np.zeros(BINS))
    negative: np.ndarray = field(default_factory=lambda: np.zeros(BINS))
    pairs: float = 0.0  # candidate pairs (not seen at the same time), verdicts included
    same: float = 0.0  # of which one person (expected count)

    def odds_table(self) -> np.ndarray:
        """Appearance-only odds of one person per score bin, made non-decreasing in the score."""
        from sklearn.isotonic import IsotonicRegression

        prior = min(max(self.same / self.pairs, 1e-6), 1 - 1e-6) if self.pairs > 0 else 1e-3
        ratio = _smoothed_density(self.positive) / _smoothed_density(self.negative)
        probability = prior * ratio / (prior * ratio + 1 - prior)
        centres = np.linspace(-1 + 1 / BINS, 1 - 1 / BINS, BINS)
        weights = self.positive + self.negative + 1.0
        monotone = IsotonicRegression(y_min=1e-6, y_max=1 - 1e-6, increasing=True).fit_transform(
            centres, probability, sample_weight=weights
        )
        return monotone / (1 - monotone)

    def to_dict(self) -> dict:
        return {"positive": _compact(self.positive), "negative": _compact(self.negative), "pairs": self.pairs, "same": self.same}

    @classmethod
    def from_dict(cls, data: dict) -> _Appearance:
        return cls(
            np.asarray(data["positive"], float), np.asarray(data["negative"], float), float(data["pairs"]), float(data["same"])
        )


@dataclass
class _LinkStats:
    """Weighted sums over the same-person transits of one directed camera pair, and its pair counts."""

    pairs: float = 0.0
    same: float = 0.0
    sum_gap: float = 0.0
    sum_gap2: float = 0.0

    @classmethod
    def around(cls, mean: float, spread: float, same: float, pairs: float) -> _LinkStats:
        """Stats of ``same`` passages with this mean and spread (a starting point for the fit)."""
        same = max(same, MIN_LINK_EVIDENCE)
        return cls(pairs=pairs, same=same, sum_gap=same * mean, sum_gap2=same * (spread * spread + mean * mean))

    def add_transit(self, gap: float, weight: float) -> None:
        self.same += weight
        self.sum_gap += weight * gap
        self.sum_gap2 += weight * gap * gap

    def linked(self, window: float | None) -> bool:
        """Enough same-person passages, concentrated in time (``window`` None: however spread, as while the
        fit is still converging from a broad start)."""
        if self.same < MIN_LINK_EVIDENCE:
            return False
        return window is None or self.transit()[1] <= MAX_SPREAD_SHARE * window

    def transit(self) -> tuple[float, float]:
        mean = self.sum_gap / self.same if self.same > 0 else 0.0
        variance = max(self.sum_gap2 / self.same - mean * mean, 0.0) if self.same > 0 else 0.0
        return mean, max(math.sqrt(variance), MIN_TRANSIT_SPREAD)

    def shrink_spread(self) -> None:
        """The fit's spread shrunk towards a tenth of the mean, as if TRANSIT_SPREAD_PRIOR_PASSAGES more passages
        had that spread (a maximum a posteriori estimate; the mean and the passages stay as they are)."""
        if self.same <= 0:
            return
        mean, spread = self.transit()
        prior = max(MIN_TRANSIT_SPREAD, TRANSIT_SPREAD_PRIOR_SHARE * abs(mean)) ** 2
        variance = (self.same * spread * spread + TRANSIT_SPREAD_PRIOR_PASSAGES * prior) / (
            self.same + TRANSIT_SPREAD_PRIOR_PASSAGES
        )
        self.sum_gap2 = self.same * (variance + mean * mean)

    def to_dict(self) -> dict:
        return {"pairs": self.pairs, "same": self.same, "sum_gap": self.sum_gap, "sum_gap2": self.sum_gap2}


def _compact(values: np.ndarray) -> list[float]:
    return [round(float(v), 4) for v in values]


class IdentityEvidence:
    """P(same person) for two tracks from their score, cameras and gap (see the module doc)."""

    def __init__(
        self,
        window: float = DEFAULT_WINDOW,
        appearance: dict[str, _Appearance] | None = None,
        links: dict[str, _LinkStats] | None = None,
        *,
        tracks: int = 0,
        verdicts: int = 0,
    ) -> None:
        self.window = float(window)
        self.appearance = appearance or {SAME: _Appearance(), CROSS: _Appearance()}
        self.link_stats = links or {}
        self.tracks = tracks
        self.verdicts = verdicts
        self._odds: dict[str, np.ndarray] = {}

    # Questions ------------------------------------------------------------------------------------------
    @property
    def learned(self) -> bool:
        """Whether any footage was learned from (else every answer rests on the priors alone)."""
        return self.appearance[CROSS].negative.sum() > 0 or self.appearance[SAME].negative.sum() > 0

    def appearance_odds(self, score: float | np.ndarray, same_camera: bool) -> np.ndarray:
        domain = SAME if same_camera else CROSS
        if domain not in self._odds:
            self._odds[domain] = self.appearance[domain].odds_table()
        return self._odds[domain][_bin(score)]

    def appearance_probability(self, score: float, same_camera: bool) -> float:
        """P(same) from the score alone, for a pair of tracks on one camera or on two, at any time apart."""
        odds = float(self.appearance_odds(score, same_camera))
        return odds / (1 + odds)

    def transit_ratio(self, camera_from: str, camera_to: str, gap: float) -> float:
        """How much more likely the gap is for one person than for two (1: the cameras say nothing)."""
        return float(self._transit_ratios(camera_from, camera_to, np.array([float(gap)]), fitting=False)[0])

    def _transit_ratios(self, camera_from: str, camera_to: str, gaps: np.ndarray, fitting: bool) -> np.ndarray:
        """``transit_ratio`` for many gaps of one directed camera pair. ``fitting``: a link counts however spread
        its transits still are (they narrow round by round while the fit converges)."""
        ratios = np.ones(len(gaps))
        if camera_from == camera_to:
            # One camera: a tracker re-finding its person happens within FRAGMENT_SECONDS; a return later is taken
            # to be as likely as a re-find in any one such stretch of the window. No transit time is fitted here.
            ratios[gaps > FRAGMENT_SECONDS] = FRAGMENT_SECONDS / self.window
            return ratios  # within a re-find's time every gap is alike: the score decides
        stats = self.link_stats.get(link_key(camera_from, camera_to))
        if stats is None or not stats.linked(None if fitting else self.window):
            return ratios
        mean, spread = stats.transit()
        near = gaps <= self.window
        density = np.exp(-0.5 * ((gaps[near] - mean) / spread) ** 2) / (spread * math.sqrt(2 * math.pi))
        ratios[near] = density * self.window
        return ratios

    def prior_ratio(self, camera_from: str, camera_to: str) -> float:
        """The odds that two tracks on these cameras are one person, relative to any pair of the domain."""
        stats = self.link_stats.get(link_key(camera_from, camera_to))
        domain = self.appearance[SAME if camera_from == camera_to else CROSS]
        if stats is None or stats.pairs <= 0 or domain.pairs <= 0 or domain.same <= 0:
            return 1.0
        pair_prior = min(max(stats.same / stats.pairs, 1e-6), 1 - 1e-6)
        domain_prior = min(max(domain.same / domain.pairs, 1e-6), 1 - 1e-6)
        return (pair_prior / (1 - pair_prior)) / (domain_prior / (1 - domain_prior))

    def probability(self, score: float, camera_from: str, camera_to: str, gap: float) -> float:
        """P(same person) for the earlier track on ``camera_from`` and the later on ``camera_to``, ``gap``
        seconds apart (negative: seen at the same time, which two cameras without a shared view rule out)."""
        if math.isnan(score):
            return 0.0
        if gap < 0:
            return 0.0
        odds = float(self.appearance_odds(score, camera_from == camera_to))
        if gap <= self.window:
            odds *= self.prior_ratio(camera_from, camera_to) * self.transit_ratio(camera_from, camera_to, gap)
        return odds / (1 + odds)

    def probabilities(self, pairs: PairSet, same_camera: np.ndarray, mask: np.ndarray, fitting: bool = False) -> np.ndarray:
        """``probability`` for the pairs of ``pairs`` selected by ``mask`` (0 elsewhere), vectorised. ``fitting``:
        links between two cameras count however spread their transits still are (they narrow round by round)."""
        out = np.zeros(len(pairs))
        if not mask.any():
            return out
        odds = np.zeros(len(pairs))
        for flag in (True, False):
            chosen = mask & (same_camera == flag)
            if chosen.any():
                odds[chosen] = self.appearance_odds(pairs.score[chosen], flag)
        names = np.asarray(pairs.link)
        within = mask & (pairs.gap >= 0) & (pairs.gap <= self.window)
        for name in set(names[within]):
            chosen = within & (names == name)
            camera_from, camera_to = name.split("->", 1)
            odds[chosen] *= self.prior_ratio(camera_from, camera_to) * self._transit_ratios(
                camera_from, camera_to, pairs.gap[chosen], fitting
            )
        odds[mask & (pairs.gap < 0)] = 0.0
        out[mask] = odds[mask] / (1 + odds[mask])
        return out

    def links(self) -> list[Link]:
        """The learned links between cameras, strongest first (one camera has none: a re-find is judged by the
        score alone)."""
        out = []
        for key, stats in self.link_stats.items():
            camera_from, camera_to = key.split("->", 1)
            if not stats.linked(self.window) or camera_from == camera_to:
                continue
            mean, spread = stats.transit()
            out.append(
                Link(
                    camera_from,
                    camera_to,
                    round(mean, 2),
                    round(spread, 2),
                    round(stats.same, 1),
                    round(stats.same / stats.pairs, 4) if stats.pairs else 0.0,
                )
            )
        return sorted(out, key=lambda link: (-link.evidence, link.key))

    def link(self, camera_from: str, camera_to: str) -> Link | None:
        return next((link for link in self.links() if link.key == link_key(camera_from, camera_to)), None)

    # Teaching ---------------------------------------------------------------------------------------------
    def add_verdict(self, score: float, camera_from: str, camera_to: str, gap: float, same: bool) -> None:
        """An investigator's verdict on a pair (earlier track on ``camera_from``): counted at once."""
        if math.isnan(score):
            return
        domain = self.appearance[SAME if camera_from == camera_to else CROSS]
        target = domain.positive if same else domain.negative
        target[_bin(score)] += VERDICT_WEIGHT
        self.verdicts += 1
        if gap < 0 or gap > self.window:
            self._odds.clear()
            return  # outside what the links describe: appearance only
        domain.pairs += VERDICT_WEIGHT
        stats = self.link_stats.setdefault(link_key(camera_from, camera_to), _LinkStats())
        stats.pairs += VERDICT_WEIGHT
        if same:
            domain.same += VERDICT_WEIGHT
            if not stats.linked(self.window):
                # What the footage fitted here was no characteristic transit: the confirmed passages start one.
                stats.same = stats.sum_gap = stats.sum_gap2 = 0.0
            stats.add_transit(gap, VERDICT_WEIGHT)
        self._odds.clear()

    # Storage ----------------------------------------------------------------------------------------------
    def to_dict(self) -> dict:
        return {
            "format": 1,
            "window": self.window,
            "tracks": self.tracks,
            "verdicts": self.verdicts,
            "appearance": {domain: stats.to_dict() for domain, stats in self.appearance.items()},
            "links": {key: stats.to_dict() for key, stats in sorted(self.link_stats.items())},
        }

    @classmethod
    def from_dict(cls, data: dict) -> IdentityEvidence:
        return cls(
            float(data.get("window", DEFAULT_WINDOW)),
            {domain: _Appearance.from_dict(stats) for domain, stats in data["appearance"].items()},
            {key: _LinkStats(**stats) for key, stats in data.get("links", {}).items()},
            tracks=int(data.get("tracks", 0)),
            verdicts=int(data.get("verdicts", 0)),
        )


# Learning -------------------------------------------------------------------------------------------------


def pair_set(tracks: Sequence[TrackSample], window: float, per_track: int | None = PAIRS_PER_TRACK) -> PairSet:
    """Pairs of tracks at most ``window`` seconds apart, with score, gap and directed camera pair: for each track,
    its ``per_track`` best-scoring later ones (None: all)."""
    order = sorted(range(len(tracks)), key=lambda i: (tracks[i].ts_start, tracks[i].ts_end, tracks[i].track_id))
    firsts, seconds, scores, gaps, links = [], [], [], [], []
    starts = np.array([tracks[i].ts_start for i in order])
    for position, i in enumerate(order):
        earlier = tracks[i]
        # Later-starting tracks that start before this one's end + window.
        stop = int(np.searchsorted(starts, earlier.ts_end + window, side="right"))
        if stop <= position + 1 or len(earlier.vectors) == 0:
            continue
        others = [order[k] for k in range(position + 1, stop) if len(tracks[order[k]].vectors)]
        if not others:
            continue
        stacked = np.concatenate([tracks[j].vectors for j in others])
        owners = np.repeat(np.arange(len(others)), [len(tracks[j].vectors) for j in others])
        best = np.full(len(others), -np.inf)
        np.maximum.at(best, owners, (np.asarray(earlier.vectors, np.float32) @ stacked.T).max(axis=0))
        chosen = range(len(others))
        if per_track is not None and len(others) > per_track:
            chosen = sorted(int(k) for k in np.argsort(-best, kind="stable")[:per_track])
        for k in chosen:
            j = others[k]
            later = tracks[j]
            firsts.append(i)
            seconds.append(j)
            scores.append(best[k])
            gaps.append(gap_between(earlier.ts_end, later.ts_start))
            links.append(link_key(earlier.camera_id, later.camera_id))
    return PairSet(np.asarray(firsts, int), np.asarray(seconds, int), np.asarray(scores, float), np.asarray(gaps, float), links)


def learn_evidence(
    tracks: Sequence[TrackSample],
    verdicts: Iterable[Verdict] = (),
    window: float = DEFAULT_WINDOW,
    rounds: int = EM_ROUNDS,
) -> IdentityEvidence:
    """Fit the evidence model to a site's tracks (and any verdicts on them) by EM; see the module doc."""
    pairs = pair_set(tracks, window)
    index = {t.track_id: i for i, t in enumerate(tracks)}
    cameras = np.array([t.camera_id for t in tracks])
    same_camera = cameras[pairs.first] == cameras[pairs.second] if len(pairs) else np.zeros(0, bool)
    labelled = _verdict_labels(pairs, verdicts, index)

    # Seen at the same moment: two people, for certain.
    together = pairs.gap < 0
    candidate = ~together & np.isnan(labelled) & ~(same_camera & (pairs.gap > FRAGMENT_SECONDS))
    appearance = _fixed_appearance(tracks, pairs, same_camera, together, labelled)
    link_names = sorted(set(pairs.link))
    link_of = np.array([link_names.index(name) for name in pairs.link], int) if len(pairs) else np.zeros(0, int)
    groups = _partner_groups(pairs, cameras)
    responsibility = _initial_responsibility(pairs, candidate, groups)
    # One camera: start from what the score alone says against the fixed same-person shape, at even odds.
    one_camera = candidate & same_camera
    if one_camera.any():
        ratio = _smoothed_density(appearance[SAME].positive) / _smoothed_density(appearance[SAME].negative)
        responsibility[one_camera] = (ratio / (1 + ratio))[_bin(pairs.score[one_camera])]
    n_verdicts = int(np.sum(~np.isnan(labelled)))
    evidence = _maximise(
        pairs, candidate, same_camera, labelled, responsibility, appearance, link_names, link_of, window, len(tracks), n_verdicts
    )
    # Each link starts from a one-dimensional fit of its likely pairs' gaps (a transit peak over a flat
    # background), tried from the strongest peaks of their histogram: started from the broad mean of every gap,
    # the joint fit would drift away from a small cluster of true passages.
    for position, name in enumerate(link_names):
        on_link = candidate & (link_of == position)
        if on_link.any() and responsibility[on_link].sum() > 0:
            mean, spread = _initial_transit(pairs.gap[on_link], responsibility[on_link], window)
            evidence.link_stats[name] = _LinkStats.around(
                mean, spread, evidence.link_stats[name].same, evidence.link_stats[name].pairs
            )
    for _ in range(max(1, rounds)):
        responsibility = _expect(evidence, pairs, candidate, same_camera, groups)
        evidence = _maximise(
            pairs,
            candidate,
            same_camera,
            labelled,
            responsibility,
            appearance,
            link_names,
            link_of,
            window,
            len(tracks),
            n_verdicts,
        )
    return evidence


def _fixed_appearance(
    tracks, pairs: PairSet, same_camera: np.ndarray, together: np.ndarray, labelled: np.ndarray
) -> dict[str, _Appearance]:
    """The score histograms EM starts from and keeps: pairs seen together (two people), verdicts, and one track's
    crops against its other crops (one person on one camera)."""
    appearance = {SAME: _Appearance(), CROSS: _Appearance()}
    for domain, mask in ((SAME, same_camera), (CROSS, ~same_camera)):
        np.add.at(appearance[domain].negative, _bin(pairs.score[together & mask]), 1.0)
    for domain, other in ((SAME, CROSS), (CROSS, SAME)):
        own, borrowed = appearance[domain].negative, appearance[other].negative
        if own.sum() < MIN_NEGATIVES and borrowed.sum() > 0:
            own += borrowed / borrowed.sum() * (MIN_NEGATIVES - own.sum())
    for domain, mask in ((SAME, same_camera), (CROSS, ~same_camera)):
        for label, target in ((1.0, appearance[domain].positive), (0.0, appearance[domain].negative)):
            np.add.at(target, _bin(pairs.score[(labelled == label) & mask]), VERDICT_WEIGHT)
    # One person on one camera: a track's crops against its other crops (its first half against its second).
    # This is the same-camera score distribution of one person, fixed: the free-form fit that works across cameras
    # (where transit times make it identifiable) would fit chance matches on one camera.
    halves = [
        track_score(t.vectors[: len(t.vectors) // 2], t.vectors[len(t.vectors) // 2 :]) for t in tracks if len(t.vectors) >= 2
    ]
    np.add.at(appearance[SAME].positive, _bin(np.asarray(halves, float)), 1.0)
    return appearance


def _initial_transit(gaps: np.ndarray, weights: np.ndarray, window: float, peaks: int = 3) -> tuple[float, float]:
    """Mean and spread of the best one-dimensional "transit peak over a flat background" fit of weighted gaps,
    started at each of the ``peaks`` highest peaks of their histogram (bins of 1% of the window)."""
    gaps = np.clip(gaps, 0.0, window)
    edges = np.linspace(0.0, window, 101)
    counts, _ = np.histogram(gaps, bins=edges, weights=weights)
    smooth = np.convolve(counts, np.array([0.25, 0.5, 0.25]), mode="same")
    best, best_fit = -math.inf, (float(edges[1] / 2), INITIAL_SPREAD_SHARE * window)
    for top in np.argsort(-smooth, kind="stable")[:peaks]:
        mean, spread, share = float((edges[top] + edges[top + 1]) / 2), INITIAL_SPREAD_SHARE * window, 0.5
        for _ in range(30):
            peak = share * np.exp(-0.5 * ((gaps - mean) / spread) ** 2) / (spread * math.sqrt(2 * math.pi))
            flat = (1 - share) / window
            owned = weights * peak / np.maximum(peak + flat, 1e-300)
            if owned.sum() <= 1e-9:
                break
            share = float(owned.sum() / weights.sum())
            mean = float(np.sum(owned * gaps) / owned.sum())
            spread = max(float(np.sqrt(np.sum(owned * (gaps - mean) ** 2) / owned.sum())), MIN_TRANSIT_SPREAD)
        peak = share * np.exp(-0.5 * ((gaps - mean) / spread) ** 2) / (spread * math.sqrt(2 * math.pi))
        # Floored, and only gaps that weigh: a peak owning every gap leaves no background, and a far gap's
        # density underflows to 0 (0 * log 0 would make the fit NaN and lose it).
        density = np.maximum(peak + (1 - share) / window, 1e-300)
        used = weights > 0
        likelihood = float(np.sum(weights[used] * np.log(density[used])))
        if likelihood > best:
            best, best_fit = likelihood, (mean, spread)
    return best_fit


def _verdict_labels(pairs: PairSet, verdicts: Iterable[Verdict], index: dict[str, int]) -> np.ndarray:
    """1 / 0 for pairs an investigator decided (the newest verdict given), NaN elsewhere."""
    labels = np.full(len(pairs), np.nan)
    if not len(pairs):
        return labels
    position = {(int(a), int(b)): k for k, (a, b) in enumerate(zip(pairs.first, pairs.second))}
    for verdict in verdicts:
        a, b = index.get(verdict.track_a), index.get(verdict.track_b)
        if a is None or b is None:
            continue
        k = position.get((a, b), position.get((b, a)))
        if k is not None:
            labels[k] = 1.0 if verdict.same else 0.0
    return labels


def _initial_responsibility(pairs: PairSet, candidate: np.ndarray, groups: tuple[np.ndarray, np.ndarray]) -> np.ndarray:
    """Mutual best matches start as one person (at even odds): the pair is its earlier track's best partner on
    the later track's camera and the later track's best partner on the earlier one's. Every other pair: two."""
    responsibility = np.zeros(len(pairs))
    chosen = np.flatnonzero(candidate)
    if not len(chosen):
        return responsibility
    mutual = np.ones(len(chosen), bool)
    for labels in groups:
        best: dict[int, int] = {}
        for k in chosen:
            label = int(labels[k])
            if label not in best or pairs.score[k] > pairs.score[best[label]]:
                best[label] = int(k)
        mutual &= np.array([best[int(labels[k])] == k for k in chosen])
    responsibility[chosen[mutual]] = 0.5
    return responsibility


def _maximise(
    pairs, candidate, same_camera, labelled, responsibility, appearance, link_names, link_of, window, n_tracks, n_verdicts
) -> IdentityEvidence:
    fitted = {}
    for domain, mask in ((SAME, same_camera), (CROSS, ~same_camera)):
        stats = _Appearance(negative=appearance[domain].negative.copy(), positive=appearance[domain].positive.copy())
        weights = responsibility[candidate & mask]
        if domain == CROSS:  # the same-camera positives are the tracks' own halves, fixed
            np.add.at(stats.positive, _bin(pairs.score[candidate & mask]), weights)
        decided = ~np.isnan(labelled) & mask & (pairs.gap >= 0)
        stats.pairs = float(np.sum(candidate & mask)) + VERDICT_WEIGHT * float(np.sum(decided))
        stats.same = float(weights.sum()) + VERDICT_WEIGHT * float(np.sum(labelled[decided] == 1.0))
        fitted[domain] = stats
    links: dict[str, _LinkStats] = {}
    for position, name in enumerate(link_names):
        on_link = link_of == position
        stats = _LinkStats()
        free = candidate & on_link
        decided = ~np.isnan(labelled) & on_link & (pairs.gap >= 0)
        stats.pairs = float(np.sum(free)) + VERDICT_WEIGHT * float(np.sum(decided))
        weights = np.concatenate([responsibility[free], np.full(int(np.sum(decided & (labelled == 1.0))), VERDICT_WEIGHT)])
        gaps = np.concatenate([pairs.gap[free], pairs.gap[decided & (labelled == 1.0)]])
        stats.same = float(weights.sum())
        stats.sum_gap = float(np.sum(weights * gaps))
        stats.sum_gap2 = float(np.sum(weights * gaps * gaps))
        stats.shrink_spread()
        links[name] = stats
    return IdentityEvidence(window, fitted, links, tracks=n_tracks, verdicts=n_verdicts)


def _expect(
    evidence: IdentityEvidence,
    pairs: PairSet,
    candidate: np.ndarray,
    same_camera: np.ndarray,
    groups: tuple[np.ndarray, np.ndarray] | None = None,
) -> np.ndarray:
    responsibility = evidence.probabilities(pairs, same_camera, candidate, fitting=True)
    return _one_person_each(responsibility, groups) if groups is not None else responsibility


def _partner_groups(pairs: PairSet, cameras: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """For each pair, the group of its earlier track's partners on the later track's camera, and of its later
    track's partners on the earlier track's camera (as integer labels)."""
    if not len(pairs):
        return np.zeros(0, int), np.zeros(0, int)
    forwards = [f"{a}|{cameras[b]}" for a, b in zip(pairs.first, pairs.second)]
    backwards = [f"{b}|{cameras[a]}" for a, b in zip(pairs.first, pairs.second)]
    return np.unique(forwards, return_inverse=True)[1], np.unique(backwards, return_inverse=True)[1]


def _one_person_each(responsibility: np.ndarray, groups: tuple[np.ndarray, np.ndarray], passes: int = 3) -> np.ndarray:
    """A person seen on one camera is at most one of the tracks that camera shows in the window: the expected
    same-person partners of a track on another camera are scaled down to at most ``MAX_PARTNERS`` (a little
    more than one: the tracker may split a walk). This is what keeps the fit from calling every look-alike
    the person."""
    scaled = responsibility.copy()
    for _ in range(passes):
        for labels in groups:
            totals = np.bincount(labels, weights=scaled)
            scaled *= np.minimum(1.0, MAX_PARTNERS / np.maximum(totals[labels], 1e-12))
    return scaled
