"""The model card's metrics on small hand-computed cases."""

from __future__ import annotations

import numpy as np
import pytest

from camtrace.training.metrics import count_reid_queries, reid_metrics, text_to_identity_metrics


def test_text_to_identity_takes_the_best_image_per_identity_and_breaks_ties_pessimistically():
    gallery_ids = ["A", "A", "B", "C"]
    scores = np.array(
        [
            [0.2, 0.9, 0.5, 0.1],  # A: its second image wins -> rank 1
            [0.8, 0.1, 0.3, 0.6],  # B: A (0.8) and C (0.6) beat it -> rank 3
            [0.5, 0.5, 0.5, 0.5],  # C: all tied -> ranked after both others -> rank 3
            [0.9, 0.9, 0.9, 0.9],  # D has no gallery image: skipped
        ]
    )
    figures = text_to_identity_metrics(scores, ["A", "B", "C", "D"], gallery_ids)
    assert (figures["queries"], figures["images"]) == (3, 4)  # D is not counted
    assert figures["top1"] == pytest.approx(100 / 3)
    assert figures["top5"] == pytest.approx(100.0)
    assert figures["top10"] == pytest.approx(100.0)
    assert figures["mrr"] == pytest.approx(100 * (1 + 1 / 3 + 1 / 3) / 3)
    # CMC(1) = CMC(2) = 1/3, CMC(3..20) = 1
    assert figures["cmc_auc20"] == pytest.approx(100 * (2 / 3 + 18) / 20)


def test_text_to_identity_rank_beyond_five_and_the_truncated_auc():
    gallery_ids = [f"id{k}" for k in range(8)]
    scores = np.array([[0.9, 0.8, 0.7, 0.6, 0.5, 0.4, 0.3, 0.2]])  # the query's identity (id5) ranks 6th
    figures = text_to_identity_metrics(scores, ["id5"], gallery_ids)
    assert (figures["top1"], figures["top5"], figures["top10"]) == (0.0, 0.0, 100.0)
    assert figures["mrr"] == pytest.approx(100 / 6)
    assert figures["cmc_auc20"] == pytest.approx(100 * 15 / 20)


def test_reid_follows_the_market_protocol():
    gallery_ids = ["1", "2", "1", "0", "-1", "1"]
    gallery_cams = ["c1", "c2", "c2", "c3", "c2", "c3"]
    scores = np.array(
        [
            # id 1 on c1: g0 (same id, same camera) and g4 (junk) are removed; ranking g1 x, g2 v, g3 x, g5 v
            [0.99, 0.9, 0.8, 0.7, 0.95, 0.5],
            # id 3: no image of it in the gallery -> skipped
            [0.5, 0.5, 0.5, 0.5, 0.5, 0.5],
            # id 2 on c1: g0, g1 (the match), g2 tie at 0.6 -> the match ranks after both non-matches
            [0.6, 0.6, 0.6, 0.1, 0.1, 0.1],
            # id 1 on c2: g2 removed (same camera); g0 and g5 rank first and second
            [0.9, 0.1, 0.95, 0.2, 0.99, 0.8],
        ]
    )
    figures = reid_metrics(scores, ["1", "3", "2", "1"], gallery_ids, ["c1", "c1", "c1", "c2"], gallery_cams)
    # first matches at ranks 2, 3, 1; AP = (1/2 + 2/4) / 2, 1/3, (1/1 + 2/2) / 2
    assert figures["top1"] == pytest.approx(100 / 3)
    assert figures["top5"] == pytest.approx(100.0)
    assert figures["top10"] == pytest.approx(100.0)
    assert figures["map"] == pytest.approx(100 * (0.5 + 1 / 3 + 1.0) / 3)
    assert count_reid_queries(["1", "3", "2", "1"], gallery_ids, ["c1", "c1", "c1", "c2"], gallery_cams) == 3


def test_reid_distractors_count_as_non_matches_and_a_gallery_without_matches_gives_zeros():
    scores = np.array([[0.9, 0.1]])
    figures = reid_metrics(scores, ["5"], ["0000", "5"], ["c1"], ["c2", "c2"])
    assert figures["top1"] == 0.0 and figures["top5"] == 100.0
    assert figures["map"] == pytest.approx(50.0)
    assert reid_metrics(scores, ["5"], ["0000", "5"], ["c1"], ["c2", "c1"]) == {
        "top1": 0.0,
        "top5": 0.0,
        "top10": 0.0,
        "map": 0.0,
        "queries": 0,
        "images": 2,
    }


def test_metrics_reject_mismatched_shapes():
    with pytest.raises(ValueError, match="scores"):
        text_to_identity_metrics(np.zeros((2, 3)), ["a"], ["a", "b", "c"])
    with pytest.raises(ValueError, match="2-D"):
        reid_metrics(np.zeros(3), ["a"], ["a"], ["c"], ["c"])
