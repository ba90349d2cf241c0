"""Retrieval metrics of the model card, as pure functions of a score matrix and id/camera arrays.

Scores are similarities (higher is better); every figure is a percentage, except ``queries`` (the
queries scored) and ``images`` (the gallery's size), which are counts.

Ties are broken pessimistically: an item that scores the same as the true match
ranks before it. A model that gives every candidate the same score therefore
scores worst, not best, and the figures do not depend on the gallery's order.
"""

from __future__ import annotations

import numpy as np

CMC_AUC_RANKS = 20


def _as_arrays(scores, *arrays):
    scores = np.asarray(scores, dtype=np.float64)
    if scores.ndim != 2:
        raise ValueError(f"scores must be a 2-D (queries x gallery) matrix, not shape {scores.shape}")
    out = [np.asarray(a).astype(str) for a in arrays]
    return scores, out


def text_to_identity_metrics(scores, query_ids, gallery_ids, max_rank: int = CMC_AUC_RANKS) -> dict[str, float]:
    """Text -> identity retrieval: Top-1/5/10, MRR and CMC AUC up to ``max_rank``.

    ``scores[q, g]`` is the similarity of text query q to gallery image g. An
    identity's score is the maximum over its gallery images; identities are
    ranked by that score. The rank of the query's identity r (1-based, ties
    pessimistic) gives Top-k = mean(r <= k), MRR = mean(1 / r) and
    CMC AUC@20 = the mean of CMC(1..20). Queries whose identity has no gallery
    image are skipped.
    """
    scores, (query_ids, gallery_ids) = _as_arrays(scores, query_ids, gallery_ids)
    if scores.shape != (len(query_ids), len(gallery_ids)):
        raise ValueError(f"scores are {scores.shape}, ids give {(len(query_ids), len(gallery_ids))}")
    identities, inverse = np.unique(gallery_ids, return_inverse=True)
    # Per-identity maximum over its images: (queries x identities).
    order = np.argsort(inverse, kind="stable")
    starts = np.searchsorted(inverse[order], np.arange(len(identities)))
    per_identity = np.maximum.reduceat(scores[:, order], starts, axis=1) if scores.size else scores
    ranks = []
    for q, identity in enumerate(query_ids):
        position = np.searchsorted(identities, identity)
        if position >= len(identities) or identities[position] != identity:
            continue
        true_score = per_identity[q, position]
        ranks.append(int(np.sum(per_identity[q] >= true_score)))  # itself included: rank >= 1
    return {**_rank_figures(np.array(ranks), max_rank), "queries": len(ranks), "images": len(gallery_ids)}


def _rank_figures(ranks: np.ndarray, max_rank: int) -> dict[str, float]:
    if len(ranks) == 0:
        return {"top1": 0.0, "top5": 0.0, "top10": 0.0, "mrr": 0.0, f"cmc_auc{max_rank}": 0.0}
    cmc = np.array([np.mean(ranks <= k) for k in range(1, max_rank + 1)])
    return {
        "top1": 100.0 * float(np.mean(ranks <= 1)),
        "top5": 100.0 * float(np.mean(ranks <= 5)),
        "top10": 100.0 * float(np.mean(ranks <= 10)),
        "mrr": 100.0 * float(np.mean(1.0 / ranks)),
        f"cmc_auc{max_rank}": 100.0 * float(np.mean(cmc)),
    }


def reid_metrics(
    scores,
    query_ids,
    gallery_ids,
    query_cameras,
    gallery_cameras,
    junk_ids: tuple[str, ...] = ("-1",),
) -> dict[str, float]:
    """Image re-identification under the Market-1501 protocol: Top-1/5/10 (CMC) and mAP.

    For each query, gallery images of the same identity on the same camera and
    images of a junk identity are removed; the rest are ranked by score (ties
    pessimistic: non-matches first). Top-k = the first true match is within the
    first k; AP is the non-interpolated average precision over the whole
    ranking (the mean of precision at each true match). A query with no valid
    match left is skipped. Distractors (identity 0000) stay in the gallery and
    never match.
    """
    scores, (query_ids, gallery_ids, query_cameras, gallery_cameras) = _as_arrays(
        scores, query_ids, gallery_ids, query_cameras, gallery_cameras
    )
    if scores.shape != (len(query_ids), len(gallery_ids)):
        raise ValueError(f"scores are {scores.shape}, ids give {(len(query_ids), len(gallery_ids))}")
    junk = np.isin(gallery_ids, np.asarray(junk_ids, dtype=str))
    first_match, average_precisions = [], []
    for q in range(len(query_ids)):
        keep = ~junk & ~((gallery_ids == query_ids[q]) & (gallery_cameras == query_cameras[q]))
        matches = gallery_ids[keep] == query_ids[q]
        if not matches.any():
            continue
        # Sort by score descending; among equal scores non-matches (False) come first.
        order = np.lexsort((matches, -scores[q, keep]))
        hits = matches[order]
        positions = np.flatnonzero(hits)
        first_match.append(positions[0] + 1)
        average_precisions.append(np.mean(np.arange(1, len(positions) + 1) / (positions + 1)))
    counts = {"queries": len(first_match), "images": len(gallery_ids)}
    if not first_match:
        return {"top1": 0.0, "top5": 0.0, "top10": 0.0, "map": 0.0, **counts}
    ranks = np.array(first_match)
    return {
        "top1": 100.0 * float(np.mean(ranks <= 1)),
        "top5": 100.0 * float(np.mean(ranks <= 5)),
        "top10": 100.0 * float(np.mean(ranks <= 10)),
        "map": 100.0 * float(np.mean(average_precisions)),
        **counts,
    }


def count_reid_queries(query_ids, gallery_ids, query_cameras, gallery_cameras, junk_ids=("-1",)) -> int:
    """How many queries have a valid match (the rest are skipped by ``reid_metrics``)."""
    q_ids, g_ids = np.asarray(query_ids).astype(str), np.asarray(gallery_ids).astype(str)
    q_cams, g_cams = np.asarray(query_cameras).astype(str), np.asarray(gallery_cameras).astype(str)
    valid = ~np.isin(g_ids, np.asarray(junk_ids, dtype=str))
    same_id = q_ids[:, None] == g_ids[None, :]
    same_cam = q_cams[:, None] == g_cams[None, :]
    return int(np.sum(np.any(same_id & ~same_cam & valid[None, :], axis=1)))
