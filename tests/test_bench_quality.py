"""The quality benchmark's ground-truth matching and ranking figures, on hand-made cases with known answers."""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))

from quality_eval import (  # noqa: E402 (the benchmarks folder is not a package)
    GroundTruth,
    average_precision,
    box_iou,
    identity_of_track,
    ranking_figures,
    trace_precision_recall,
    track_ids_in,
)


def test_box_iou_of_known_boxes():
    assert box_iou((0, 0, 10, 10), (0, 0, 10, 10)) == 1.0
    assert box_iou((0, 0, 10, 10), (5, 0, 15, 10)) == pytest.approx(50 / 150)
    assert box_iou((0, 0, 10, 10), (10, 0, 20, 10)) == 0.0  # touching edges share no area
    assert box_iou((0, 0, 0, 10), (0, 0, 10, 10)) == 0.0  # an empty box


TRUTH = GroundTruth(
    boxes={
        ("cam1", 0): [("alice", (0, 0, 10, 20)), ("bob", (30, 0, 40, 20))],
        ("cam1", 2): [("alice", (2, 0, 12, 20)), ("bob", (8, 0, 18, 20))],  # bob walks past alice
        ("cam1", 4): [("bob", (10, 0, 20, 20))],
    },
    descriptions={"alice": "red top, blue trousers", "bob": "green top, black shorts"},
)


def test_track_takes_the_identity_most_of_its_boxes_overlap():
    # Frames 0 and 2 overlap alice best, frame 4 only bob: alice wins 2 votes to 1.
    track = [("cam1", 0, (0, 0, 10, 20)), ("cam1", 2, (2, 0, 12, 20)), ("cam1", 4, (10, 0, 20, 20))]
    assert identity_of_track(track, TRUTH) == "alice"
    # The same box in frame 2 is closer to bob once it moves right (IoU 0.82 against 0.33).
    assert identity_of_track([("cam1", 2, (7, 0, 17, 20))], TRUTH) == "bob"


def test_track_without_enough_overlap_is_a_false_track():
    assert identity_of_track([("cam1", 0, (50, 50, 60, 70))], TRUTH) is None  # nobody there
    assert identity_of_track([("cam1", 0, (6, 0, 16, 20))], TRUTH) is None  # IoU 0.25 with alice: below 0.5
    assert identity_of_track([("cam2", 0, (0, 0, 10, 20))], TRUTH) is None  # another camera's frame 0
    assert identity_of_track([], TRUTH) is None


def test_tied_votes_go_to_the_larger_overlap():
    track = [("cam1", 0, (30, 0, 40, 20)), ("cam1", 2, (2, 0, 12, 19))]  # bob IoU 1.0, alice IoU 0.95
    assert identity_of_track(track, TRUTH) == "bob"


def test_ground_truth_reads_the_generator_file(tmp_path):
    from camtrace.synthetic import generate_footage

    footage = generate_footage(tmp_path, cameras=2, identities=2, seconds=4.0, fps=5, size=(320, 240), seed=1)
    truth = GroundTruth.from_json(footage.ground_truth_path)
    assert truth.descriptions == footage.descriptions
    box = footage.boxes[0]
    assert (box.identity, box.box) in truth.boxes[(box.camera, box.frame_index)]
    detections = [(b.camera, b.frame_index, b.box) for b in footage.boxes if b.identity == box.identity]
    assert identity_of_track(detections, truth) == box.identity


def test_average_precision_and_ranking_figures():
    assert average_precision([True, False, True], 2) == pytest.approx((1 + 2 / 3) / 2)
    assert average_precision([False, True], 3) == pytest.approx(0.5 / 3)  # two relevant never returned
    with pytest.raises(ValueError):
        average_precision([True], 0)
    figures = ranking_figures([[True, False], [False, False, False, False, True], [False] * 6 + [True]], [1, 1, 1])
    assert figures["queries"] == 3
    assert figures["top1"] == pytest.approx(100 / 3)
    assert figures["top5"] == pytest.approx(200 / 3)
    assert figures["map"] == pytest.approx(100 * (1 + 1 / 5 + 1 / 7) / 3)


def test_trace_precision_recall():
    assert trace_precision_recall({"a", "b", "x"}, {"a", "b", "c", "d"}) == pytest.approx((200 / 3, 50.0))
    assert trace_precision_recall(set(), {"a"}) == (0.0, 0.0)


@dataclass
class Entry:
    track_id: str
    camera_id: str


def test_track_ids_are_found_anywhere_in_a_trace_result():
    result = {"seed": Entry("t0", "cam1"), "lanes": {"cam2": [Entry("t1", "cam2"), {"track_id": "t2"}]}}
    assert track_ids_in(result) == ["t0", "t1", "t2"]
    assert track_ids_in([Entry("t1", "c"), Entry("t1", "c")]) == ["t1"]


def test_train_and_test_footage_share_scenes_but_no_people(tmp_path):
    from camtrace.synthetic import generate_footage

    common = {"cameras": 2, "seconds": 4.0, "fps": 5, "size": (320, 240), "background_seed": 3}
    train = generate_footage(tmp_path / "train", identities=6, seed=3, identity_prefix="train", **common)
    test = generate_footage(
        tmp_path / "test",
        identities=6,
        seed=4,
        identity_prefix="test",
        exclude_descriptions=set(train.descriptions.values()),
        **common,
    )
    assert sorted(test.identities) == [f"test{k}" for k in range(1, 7)]
    assert not set(test.descriptions.values()) & set(train.descriptions.values())
    assert test.boxes != train.boxes  # other people, other walks
    # Frame 0 shows the empty scene (nobody enters before frame 1): it comes from background_seed alone.
    own_scene = generate_footage(tmp_path / "own", identities=1, seed=4, **(common | {"background_seed": None}))
    first = {name: first_frame(f.videos["cam1"]) for name, f in [("train", train), ("test", test), ("own", own_scene)]}
    assert np.abs(first["train"].astype(int) - first["test"]).mean() < 1.0
    assert np.abs(first["train"].astype(int) - first["own"]).mean() > 10.0


def first_frame(path):
    capture = cv2.VideoCapture(str(path))
    ok, image = capture.read()
    capture.release()
    assert ok, path
    return image


def test_trace_figures_average_over_seeds_and_f1_joins_the_averages():
    from quality_eval import trace_figures_over

    figures = trace_figures_over({"s1": {"a", "x"}, "s2": {"c"}}, {"s1": {"a", "b"}, "s2": {"c"}, "s3": set()})
    assert figures["seeds"] == 2  # a seed with nobody to find is not counted
    assert figures["precision"] == pytest.approx((50 + 100) / 2) and figures["recall"] == pytest.approx((50 + 100) / 2)
    assert figures["f1"] == pytest.approx(75.0)


def test_reliability_table_and_calibration_error():
    from quality_eval import reliability

    table = reliability([0.05, 0.05, 0.95, 0.95, 0.55, 1.0], [False, False, True, True, False, True])
    assert [row["bin"] for row in table["table"]] == ["0.0-0.1", "0.5-0.6", "0.9-1.0"]
    assert table["table"][0] == {"bin": "0.0-0.1", "pairs": 2, "predicted": 0.05, "observed": 0.0}
    # |0.05 - 0| * 2 + |0.55 - 0| * 1 + |0.9667 - 1| * 3, over 6 pairs
    assert table["ece"] == pytest.approx((0.1 + 0.55 + 0.1) / 6)
    with pytest.raises(ValueError):
        reliability([0.5], [])
