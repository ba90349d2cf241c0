"""A site's own footage as training data, without labels (the ``site:DATA_DIR`` dataset kind).

Every site already holds what it needs to adapt a model to its cameras (the
tracklet-association idea of TAUDL/UTAL, Li et al. ECCV 2018 / TPAMI 2019):

- **positives**: the crops of one track are one person; tracks an investigator
  confirmed as one person are one person; and so are two tracks on two cameras
  that are each other's best match with a probability of SITE_MATCH_PROBABILITY
  or more (camtrace.search.evidence: appearance, camera links and transit time),
  unless a verdict says they are not;
- **negatives**: tracks seen together on one camera are different people. Each
  sample carries its track's co-occurrence group (its camera and a stretch of
  CO_OCCURRENCE_SECONDS), and the trainer sets the people of one group against
  each other in a batch, with no label needed.

Identities are split by time: people first seen before the last HELD_OUT_SHARE
of the footage train; the rest are the ``val`` split, held out (never trained
on) for the promotion check, where the model in service and the adapted one are
compared on the same people.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from camtrace.enums import Verdict
from camtrace.errors import InputError

log = logging.getLogger(__name__)

SITE_MATCH_PROBABILITY = 0.9  # a cross-camera match this likely (and mutual best) joins two tracks into one person
CO_OCCURRENCE_SECONDS = 60.0  # tracks of one camera starting within one such stretch are set against each other
HELD_OUT_SHARE = 0.2  # the latest share of the footage's people is held out for validation
MIN_CROPS = 2  # a person with fewer stored crops teaches nothing


@dataclass(frozen=True)
class SitePerson:
    """One pseudo-identity: its tracks, its first sighting and its co-occurrence group."""

    name: str
    tracks: tuple[str, ...]
    first_seen: float
    group: str


def load_site(path: Path):
    """The ``Sample`` list of a data dir (its database, crop store and index, through the model in service)."""
    from camtrace.search.evidence_service import EvidenceService
    from camtrace.services import Services
    from camtrace.settings import load_settings
    from camtrace.training.datasets import Sample

    if not path.is_dir():
        raise InputError(f"site:{path} must name a camtrace data dir (CAMTRACE_DATA_DIR)")
    services = Services(load_settings(data_dir=path))
    try:
        model = services.model()
        evidence = EvidenceService(services)
        tracks = evidence.recent_tracks(model)
        if not tracks:
            raise InputError(f"site:{path} holds no indexed tracks to learn from; ingest footage first")
        verdicts = services.db.feedback_pairs()
        people = site_people(tracks, evidence.current(model), verdicts)
        held_out = _held_out_after(people)
        crops = services.crops
        samples = []
        for person in people:
            split = "val" if person.first_seen >= held_out else "train"
            for track_id in person.tracks:
                for detection in services.db.track_detections(track_id):
                    image = crops.path(detection.crop_key)
                    if image.is_file():  # retention may have removed it
                        samples.append(Sample(image, person.name, detection.camera_id, [], split, person.group))
        log.info("site %s: %d tracks -> %d people, %d crops", path, len(tracks), len(people), len(samples))
        return samples
    finally:
        services.close()


def site_people(tracks, evidence, verdicts) -> list[SitePerson]:
    """Tracks joined into people: confirmed verdicts, then confident mutual best matches across cameras (never
    joining two tracks a verdict says are two people); people with too few crops are left out."""
    index = {t.track_id: i for i, t in enumerate(tracks)}
    apart = {frozenset((v.track_id, v.candidate_track_id)) for v in verdicts if v.verdict == Verdict.DIFFERENT}
    groups = _TrackGroups([t.track_id for t in tracks], apart)
    for verdict in verdicts:
        a, b = index.get(verdict.track_id), index.get(verdict.candidate_track_id)
        if verdict.verdict == Verdict.SAME and a is not None and b is not None:
            groups.join(a, b)
    for a, b in _mutual_best_matches(tracks, evidence):
        groups.join(a, b)
    people = []
    for group in groups.members.values():
        if sum(len(tracks[i].vectors) for i in group) < MIN_CROPS:
            continue
        first = min(group, key=lambda i: (tracks[i].ts_start, tracks[i].track_id))
        start = tracks[first].ts_start
        people.append(
            SitePerson(
                f"site-{tracks[first].track_id}",
                tuple(tracks[i].track_id for i in group),
                start,
                f"{tracks[first].camera_id}:{int(start // CO_OCCURRENCE_SECONDS)}",
            )
        )
    return sorted(people, key=lambda p: (p.first_seen, p.name))


class _TrackGroups:
    """Tracks joined into groups (union-find), never joining two groups a verdict set apart."""

    def __init__(self, track_ids: list[str], apart: set[frozenset[str]]) -> None:
        self.track_ids, self.apart = track_ids, apart
        self.parent = list(range(len(track_ids)))
        self.members = {i: [i] for i in range(len(track_ids))}

    def root(self, i: int) -> int:
        parent = self.parent
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    def join(self, a: int, b: int) -> None:
        """One person, unless a verdict set one of a's tracks apart from one of b's."""
        ra, rb = self.root(a), self.root(b)
        ids = self.track_ids
        if ra == rb or any(frozenset((ids[x], ids[y])) in self.apart for x in self.members[ra] for y in self.members[rb]):
            return
        self.parent[ra] = rb
        self.members[rb] += self.members.pop(ra)


def _mutual_best_matches(tracks, evidence) -> list[tuple[int, int]]:
    """Pairs of tracks of two cameras, each the other's most probable match on that camera, at
    SITE_MATCH_PROBABILITY or more under the site's identity evidence."""
    from camtrace.search.evidence import pair_set

    pairs = pair_set(tracks, evidence.window)
    best: dict[tuple[int, str], tuple[float, int]] = {}  # (track, other camera) -> (probability, pair)
    probability = np.zeros(len(pairs))
    for k in range(len(pairs)):
        a, b = int(pairs.first[k]), int(pairs.second[k])
        if tracks[a].camera_id == tracks[b].camera_id or pairs.gap[k] < 0:
            continue
        probability[k] = evidence.probability(float(pairs.score[k]), tracks[a].camera_id, tracks[b].camera_id, float(pairs.gap[k]))
        for key in ((a, tracks[b].camera_id), (b, tracks[a].camera_id)):
            if key not in best or probability[k] > best[key][0]:
                best[key] = (probability[k], k)
    matches = []
    for k in np.flatnonzero(probability >= SITE_MATCH_PROBABILITY):
        a, b = int(pairs.first[k]), int(pairs.second[k])
        if best[(a, tracks[b].camera_id)][1] == k and best[(b, tracks[a].camera_id)][1] == k:
            matches.append((a, b))
    return matches


def _held_out_after(people: list[SitePerson]) -> float:
    """The first-sighting time after which people are held out (the latest HELD_OUT_SHARE of them)."""
    if len(people) < 5:
        return float("inf")  # too few to hold any out
    times = sorted(p.first_seen for p in people)
    return times[int(len(times) * (1 - HELD_OUT_SHARE))]
