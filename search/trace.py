"""A person's path across cameras, built from decided and candidate tracks (no I/O here).

Rules, in order:
- the seed track and the tracks confirmed as the same person are certain (score 1.0);
- an undecided candidate that overlaps in time with a certain track is flagged ``implausible``:
  one person cannot be in two places at once (on another camera, or as a second track of the
  same camera at the same moment);
- tracks are ordered by start time, and consecutive tracks of one camera merge into one step
  (a person split at a segment boundary, or a tracker losing and finding them again). Certain
  tracks merge with certain ones and candidates with candidates, never across: a candidate stays
  visible as such until someone decides on it. Implausible candidates never merge, and do not
  keep the tracks around them from merging;
- each step's ``transit_seconds`` is the gap from the previous step's end (negative: overlap).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

from camtrace.search.records import Trace, TraceStep

_RANK = {"seed": 0, "confirmed": 1, "candidate": 2}
CERTAIN = ("seed", "confirmed")


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


def overlaps(a: TraceEntry, b: TraceEntry) -> bool:
    return a.ts_start <= b.ts_end and b.ts_start <= a.ts_end


def build_trace(seed_track_id: str, entries: Sequence[TraceEntry], min_score: float | None = None) -> Trace:
    certain = [e for e in entries if e.status in CERTAIN]
    flagged = {
        e.track_id
        for e in entries
        if e.status not in CERTAIN and any(overlaps(e, c) for c in certain if c.track_id != e.track_id)
    }
    ordered = sorted(entries, key=lambda e: (e.ts_start, e.ts_end, _RANK[e.status], e.track_id))
    # Implausible candidates stand alone and do not break the runs of the others.
    groups: list[list[TraceEntry]] = [[e] for e in ordered if e.track_id in flagged]
    runs: list[list[TraceEntry]] = []
    for entry in (e for e in ordered if e.track_id not in flagged):
        last = runs[-1][-1] if runs else None
        if last is not None and last.camera_id == entry.camera_id and (last.status in CERTAIN) == (entry.status in CERTAIN):
            runs[-1].append(entry)
        else:
            runs.append([entry])
    groups = sorted(groups + runs, key=lambda g: (g[0].ts_start, g[0].ts_end, _RANK[g[0].status], g[0].track_id))
    steps: list[TraceStep] = []
    for group in groups:
        lead = min(group, key=lambda e: (_RANK[e.status], -e.score, e.ts_start))
        step = TraceStep(
            track_id=lead.track_id,
            camera_id=lead.camera_id,
            ts_start=min(e.ts_start for e in group),
            ts_end=max(e.ts_end for e in group),
            score=round(max(e.score for e in group), 6),
            status=lead.status,
            crop_key=lead.crop_key,
            transit_seconds=None if not steps else round(min(e.ts_start for e in group) - steps[-1].ts_end, 3),
            implausible=lead.track_id in flagged,
            merged_track_ids=[e.track_id for e in group if e.track_id != lead.track_id],
        )
        steps.append(step)
    return Trace(seed_track_id=seed_track_id, steps=steps, min_score=min_score)


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
            if row.verdict == "same":
                for track in (row.track_id, row.candidate_track_id):
                    if track not in group:
                        group.add(track)
                        found.append(track)
        frontier = found
    rejected = {
        other
        for (a, b), verdict in rows.items()
        if verdict == "different"
        for member, other in ((a, b), (b, a))
        if member in group and other not in group
    }
    return Identity(seed_track_id, tuple(sorted(group - {seed_track_id})), tuple(sorted(rejected)))
