"""Ground-truth matching and retrieval figures for ``bench_quality.py`` (pure functions, no models).

An indexed track is given the ground-truth identity its boxes overlap most:
each of its stored detections votes for the synthetic person whose drawn box
(same camera, same frame) has the highest IoU with it, if that IoU reaches
``MIN_IOU``; the identity with most votes wins (ties: the larger summed IoU,
then the smaller id). A track whose boxes overlap nobody is a false track
(``None``): it stays in every gallery as a distractor and is never a query.

Rankings are lists of booleans, best first: ``True`` where the result belongs
to the identity searched for. Figures are percentages.
"""

from __future__ import annotations

import json
from collections import Counter, defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, is_dataclass
from pathlib import Path

Box = tuple[float, float, float, float]
MIN_IOU = 0.5  # the usual detection-matching threshold (PASCAL VOC, mAP50)


def box_iou(a: Sequence[float], b: Sequence[float]) -> float:
    """Intersection over union of two ``x1, y1, x2, y2`` boxes (0 when either is empty)."""
    width = min(a[2], b[2]) - max(a[0], b[0])
    height = min(a[3], b[3]) - max(a[1], b[1])
    if width <= 0 or height <= 0:
        return 0.0
    inter = width * height
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0


@dataclass(frozen=True)
class GroundTruth:
    """Who is drawn where, read from a synthetic footage folder's ``ground_truth.json``."""

    boxes: Mapping[tuple[str, int], list[tuple[str, Box]]]  # (camera, frame index) -> [(identity, box)]
    descriptions: Mapping[str, str]  # identity -> operator-style description
    # Each walk of one person across one camera's view: (identity, camera, first frame, last frame).
    crossings: Sequence[tuple[str, str, int, int]] = ()

    @classmethod
    def from_json(cls, path: str | Path) -> GroundTruth:
        truth = json.loads(Path(path).read_text())
        boxes: dict[tuple[str, int], list[tuple[str, Box]]] = defaultdict(list)
        for row in truth["boxes"]:
            boxes[(row["camera"], int(row["frame_index"]))].append((row["identity"], tuple(row["box"])))
        descriptions = {key: ident["description"] for key, ident in truth["identities"].items()}
        crossings = [(a["identity"], a["camera"], int(a["frame_start"]), int(a["frame_end"])) for a in truth.get("appearances", [])]
        return cls(boxes=dict(boxes), descriptions=descriptions, crossings=crossings)


def identity_of_track(
    detections: Iterable[tuple[str, int, Sequence[float]]], truth: GroundTruth, min_iou: float = MIN_IOU
) -> str | None:
    """The identity a track's detections ``(camera, frame_index, box)`` overlap most, by majority vote."""
    votes: Counter[str] = Counter()
    overlap: Counter[str] = Counter()
    for camera, frame_index, box in detections:
        scored = [(box_iou(box, drawn), identity) for identity, drawn in truth.boxes.get((camera, frame_index), [])]
        if not scored:
            continue
        iou, identity = min(scored, key=lambda pair: (-pair[0], pair[1]))
        if iou >= min_iou:
            votes[identity] += 1
            overlap[identity] += iou
    if not votes:
        return None
    return min(votes, key=lambda identity: (-votes[identity], -overlap[identity], identity))


def crossing_of_track(
    detections: Sequence[tuple[str, int, Sequence[float]]], truth: GroundTruth, min_iou: float = MIN_IOU
) -> tuple[str, str, int, int] | None:
    """The walk across a view that a track's detections belong to: its identity's crossing on that camera
    nearest the track's middle frame (None for a false track)."""
    identity = identity_of_track(detections, truth, min_iou)
    if identity is None or not detections:
        return None
    camera = detections[0][0]
    middle = sorted(frame for _, frame, _ in detections)[len(detections) // 2]
    walks = [c for c in truth.crossings if c[0] == identity and c[1] == camera]
    if not walks:
        return None
    return min(walks, key=lambda c: 0 if c[2] <= middle <= c[3] else min(abs(middle - c[2]), abs(middle - c[3])))


def crossing_figures(
    tracks: Mapping[str, Sequence[tuple[str, int, Sequence[float]]]],
    truth: GroundTruth,
    cameras: Iterable[str] | None = None,
) -> dict[str, float]:
    """How well tracking kept walkers: the share of crossings (walks across a view, on ``cameras``) that left
    at least one track, tracks per crossing found (1.0: never split), and tracks matching nobody."""
    counted = [c for c in truth.crossings if cameras is None or c[1] in set(cameras)]
    per_crossing: Counter[tuple[str, str, int, int]] = Counter()
    false_tracks = 0
    for detections in tracks.values():
        crossing = crossing_of_track(detections, truth)
        if crossing is None:
            false_tracks += 1
        else:
            per_crossing[crossing] += 1
    found = sum(1 for c in counted if per_crossing[c])
    return {
        "crossings": len(counted),
        "found": found,
        "found_pct": 100.0 * found / len(counted) if counted else float("nan"),
        "tracks_per_crossing": sum(per_crossing[c] for c in counted) / found if found else float("nan"),
        "false_tracks": false_tracks,
    }


def average_precision(ranking: Sequence[bool], n_relevant: int) -> float:
    """AP of one ranked list; relevant items that never appear in it count as missed."""
    if n_relevant <= 0:
        raise ValueError("average precision needs at least one relevant item")
    hits = 0
    total = 0.0
    for position, relevant in enumerate(ranking, start=1):
        if relevant:
            hits += 1
            total += hits / position
    return total / n_relevant


def ranking_figures(rankings: Sequence[Sequence[bool]], n_relevant: Sequence[int]) -> dict[str, float]:
    """Top-1, Top-5 (a relevant item within the first k) and mAP over queries, in percent."""
    if len(rankings) != len(n_relevant):
        raise ValueError(f"{len(rankings)} rankings but {len(n_relevant)} relevant counts")
    if not rankings:
        return {"queries": 0, "top1": float("nan"), "top5": float("nan"), "map": float("nan")}
    count = len(rankings)
    return {
        "queries": count,
        "top1": 100.0 * sum(any(r[:1]) for r in rankings) / count,
        "top5": 100.0 * sum(any(r[:5]) for r in rankings) / count,
        "map": 100.0 * sum(average_precision(r, n) for r, n in zip(rankings, n_relevant)) / count,
    }


def trace_precision_recall(returned: Iterable[str], relevant: Iterable[str]) -> tuple[float, float]:
    """Precision and recall (percent) of the tracks a trace returned against those it should have."""
    returned, relevant = set(returned), set(relevant)
    precision = 100.0 * len(returned & relevant) / len(returned) if returned else 0.0
    recall = 100.0 * len(returned & relevant) / len(relevant) if relevant else float("nan")
    return precision, recall


def trace_figures_over(returned: Mapping[str, Iterable[str]], wanted: Mapping[str, Iterable[str]]) -> dict[str, float]:
    """Precision and recall of each seed's trace (percent), averaged over seeds, and F1 of the two averages."""
    precisions, recalls = [], []
    for seed, relevant in wanted.items():
        relevant = set(relevant)
        if not relevant:
            continue
        precision, recall = trace_precision_recall(returned.get(seed, ()), relevant)
        precisions.append(precision)
        recalls.append(recall)
    if not precisions:
        return {"seeds": 0, "precision": float("nan"), "recall": float("nan"), "f1": float("nan")}
    precision, recall = sum(precisions) / len(precisions), sum(recalls) / len(recalls)
    f1 = 2 * precision * recall / (precision + recall) if precision + recall > 0 else 0.0
    return {"seeds": len(precisions), "precision": precision, "recall": recall, "f1": f1}


def reliability(predicted: Sequence[float], outcome: Sequence[bool], bins: int = 10) -> dict:
    """A reliability table (per probability bin: pairs, mean predicted probability, share that was one person)
    and the expected calibration error (the pair-weighted mean gap between the two, in probability points)."""
    if len(predicted) != len(outcome):
        raise ValueError(f"{len(predicted)} probabilities but {len(outcome)} outcomes")
    rows = []
    total = len(predicted)
    error = 0.0
    for b in range(bins):
        low, high = b / bins, (b + 1) / bins
        inside = [(p, o) for p, o in zip(predicted, outcome) if low <= p < high or (b == bins - 1 and p == 1.0)]
        if not inside:
            continue
        mean_p = sum(p for p, _ in inside) / len(inside)
        share = sum(1 for _, o in inside if o) / len(inside)
        error += abs(mean_p - share) * len(inside)
        rows.append({"bin": f"{low:.1f}-{high:.1f}", "pairs": len(inside), "predicted": mean_p, "observed": share})
    return {"pairs": total, "ece": error / total if total else float("nan"), "table": rows}


def track_ids_in(result: object) -> list[str]:
    """Every ``track_id`` named anywhere in a trace result (dataclasses, mappings, sequences, objects)."""
    found: list[str] = []

    def walk(value: object) -> None:
        if isinstance(value, str | bytes | int | float | bool) or value is None:
            return
        if is_dataclass(value) and not isinstance(value, type):
            value = vars(value)
        elif hasattr(value, "model_dump"):
            value = value.model_dump()
        if isinstance(value, Mapping):
            track = value.get("track_id")
            if isinstance(track, str):
                found.append(track)
            for item in value.values():
                walk(item)
        elif isinstance(value, Iterable):
            for item in value:
                walk(item)
        elif hasattr(value, "__dict__"):
            walk(vars(value))

    walk(result)
    return list(dict.fromkeys(found))
