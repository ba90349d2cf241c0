"""Each dataset kind on a small folder written here; captions, junk/distractors and bad input."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from camtrace.errors import InputError
from camtrace.training.datasets import PersonDataset, load_dataset, normalise_caption


def _image(path: Path, colour=(200, 30, 30)) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.full((24, 12, 3), colour, np.uint8)).save(path)
    return path


@pytest.mark.parametrize(
    ("text", "features"),
    [
        ("A man wearing a grey hoodie and blue jeans.", "man, grey hoodie, blue jeans"),
        ("The woman has long black hair. She is carrying a red bag", "woman, long black hair, red bag"),
        ("red top, blue trousers, green backpack", "red top, blue trousers, green backpack"),
        ("Man with a T-shirt; man with a T-shirt", "man, t shirt"),
    ],
)
def test_captions_become_comma_separated_features(text, features):
    assert normalise_caption(text) == features


def test_cuhk_json_with_relative_paths_and_splits(tmp_path):
    _image(tmp_path / "imgs" / "a.jpg")
    _image(tmp_path / "imgs" / "b.jpg", (20, 20, 200))
    entries = [
        {"file_path": "imgs/a.jpg", "id": 7, "captions": ["A man in a red coat.", "Red coat and black shoes"], "split": "train"},
        {"file_path": "imgs/b.jpg", "id": 8, "captions": ["A woman wearing a blue dress."], "split": "test"},
    ]
    (tmp_path / "reid_raw.json").write_text(json.dumps(entries))
    for spec in (f"cuhk-pedes:{tmp_path}", f"icfg-pedes:{tmp_path / 'reid_raw.json'}"):
        ds = load_dataset(spec)
        assert len(ds) == 2 and ds.splits == {"train", "test"}
        first = ds.split("train")[0]
        assert first.identity == "7" and first.captions == ["man, red coat", "red coat, black shoes"]
        assert first.load_image().size == (12, 24)
        assert ds.split("test")[0].captions == ["woman, blue dress"]


def test_rstpreid_reads_img_path_and_a_missing_key_names_the_entry(tmp_path):
    _image(tmp_path / "x.png")
    file = tmp_path / "data_captions.json"
    file.write_text(json.dumps([{"img_path": "x.png", "id": 1, "captions": ["a girl"], "split": "val"}]))
    assert load_dataset(f"rstpreid:{file}")[0].split == "val"
    file.write_text(json.dumps([{"img_path": "x.png", "id": 1, "captions": ["a"]}, {"id": 2, "captions": []}]))
    with pytest.raises(InputError, match=r"data_captions.json entry 1 lacks img_path"):
        load_dataset(f"rstpreid:{file}")
    file.write_text(json.dumps([{"img_path": "gone.png", "id": 1, "captions": ["a"]}]))
    with pytest.raises(InputError, match=r"data_captions.json entry 0: image .*gone.png does not exist"):
        load_dataset(f"rstpreid:{file}")
    file.write_text("[{not json")
    with pytest.raises(InputError, match="data_captions.json is not valid JSON"):
        load_dataset(f"rstpreid:{file}")


def test_market1501_names_junk_and_distractors(tmp_path):
    for name in ("0002_c1s1_000451_03.jpg", "0002_c2s1_000551_01.jpg", "-1_c3s1_000001_00.jpg"):
        _image(tmp_path / "bounding_box_train" / name)
    for name in ("0002_c1s1_000801_01.jpg", "0000_c4s1_000001_00.jpg", "-1_c1s1_000002_00.jpg", "0003_c3s1_000001_00.jpg"):
        _image(tmp_path / "bounding_box_test" / name)
    _image(tmp_path / "query" / "0003_c1s1_000101_00.jpg")
    (tmp_path / "query" / "readme.txt").write_text("not an image")
    ds = load_dataset(f"market1501:{tmp_path}")
    train, gallery, query = ds.split("train"), ds.split("gallery"), ds.split("query")
    assert [(s.identity, s.camera) for s in train] == [("0002", "c1"), ("0002", "c2")]  # junk dropped
    assert sorted(s.identity for s in gallery) == ["0000", "0002", "0003"]  # distractor kept
    assert [(s.identity, s.camera, s.captions) for s in query] == [("0003", "c1", [])]
    _image(tmp_path / "query" / "IMG_1234.jpg")
    with pytest.raises(InputError, match="IMG_1234.jpg: name does not start with IDENTITY_cCAMERA"):
        load_dataset(f"market1501:{tmp_path}")


def test_csv_merges_captions_per_image_and_names_the_bad_line(tmp_path):
    _image(tmp_path / "p" / "1.jpg")
    _image(tmp_path / "p" / "2.jpg")
    file = tmp_path / "labels.csv"
    file.write_text(
        "path,identity,caption,split\n"
        "p/1.jpg,alice,A woman wearing a red coat.,train\n"
        "p/1.jpg,alice,Red coat with a black bag,train\n"
        "p/2.jpg,bob,,test\n"
    )
    ds = load_dataset(f"csv:{file}")
    alice = ds.split("train")[0]
    assert alice.captions == ["woman, red coat", "red coat, black bag"] and alice.camera == ""
    assert ds.split("test")[0].captions == []
    file.write_text("path,identity,caption,split\np/1.jpg,alice,a man,train\np/2.jpg,bob,a man,holidays\n")
    with pytest.raises(InputError, match=r"labels.csv line 3: split 'holidays'"):
        load_dataset(f"csv:{file}")
    file.write_text("path,identity,caption,split\np/1.jpg,alice,a man,train\np/9.jpg,bob,a man,train\n")
    with pytest.raises(InputError, match=r"labels.csv line 3: image .*9.jpg does not exist"):
        load_dataset(f"csv:{file}")
    file.write_text("path,identity,caption\np/1.jpg,alice,a man\n")
    with pytest.raises(InputError, match=r"labels.csv line 1: header lacks split"):
        load_dataset(f"csv:{file}")
    file.write_text("path,identity,caption,split\np/1.jpg,alice,a man,train,extra\n")
    with pytest.raises(InputError, match=r"labels.csv line 2: expected 4 fields"):
        load_dataset(f"csv:{file}")


def test_synthetic_footage_crops_ground_truth_boxes(footage):
    ds = load_dataset(f"synthetic:{footage.root}")
    assert set(ds.identities) == set(footage.identities)
    for sample in ds.samples[:20]:
        assert sample.captions == [footage.descriptions[sample.identity]]
        assert sample.camera in footage.cameras_of(sample.identity)
        image = sample.load_image()
        assert image.mode == "RGB" and image.size[1] > image.size[0]  # people are tall
    # identities split in ground-truth order: 5 people -> 3 train, 1 val, 1 test
    by_split = {split: {s.identity for s in ds.split(split)} for split in ("train", "val", "test")}
    assert [len(by_split[k]) for k in ("train", "val", "test")] == [3, 1, 1]
    assert not (by_split["train"] & by_split["test"])


def test_feedback_makes_one_identity_of_tracks_confirmed_as_the_same_person(tmp_path, monkeypatch):
    from camtrace.settings import Settings
    from camtrace.storage import CropStore, Database

    monkeypatch.delenv("CAMTRACE_DATABASE_URL", raising=False)
    settings = Settings(data_dir=tmp_path / "data")
    crops = CropStore(settings.crops_dir)
    tracks = {"a": "gate", "b": "lobby", "c": "garage", "d": "gate", "e": "lobby"}
    with Database(settings.sql_url) as db:
        db.migrate()
        db.upsert_video("v", "gate", "/footage/v.mp4", 10.0, 640, 360, 0.0, 60.0, 600)
        db.upsert_tracks(
            [
                {"id": t, "camera_id": cam, "video_id": "v", "segment_index": 0, "ts_start": 0.0, "ts_end": 1.0, "n_boxes": 2}
                for t, cam in tracks.items()
            ]
        )
        rows = []
        for track, camera in tracks.items():
            for k in range(2):
                key = f"{camera}/v/{track}{k}.jpg"
                _image(crops.path(key))
                rows.append(
                    {
                        "point_id": f"{track}{k}",
                        "track_id": track,
                        "camera_id": camera,
                        "video_id": "v",
                        "frame_index": k,
                        "ts": float(k),
                        "bbox": (0, 0, 12, 24),
                        "det_conf": 0.9,
                        "quality": 0.5,
                        "crop_key": key,
                        "model_version": "m",
                    }
                )
        db.upsert_detections(rows)
        db.add_feedback("a", "b", "same", "ann")
        db.add_feedback("c", "b", "same", "ann")  # a = b = c: one person over three cameras
        db.add_feedback("a", "d", "different", "ann")  # rejected: not training data
        db.add_feedback("d", "e", "different", "ann")
        db.add_feedback("d", "e", "same", "bob")  # the newest verdict on a pair wins
    crops.path("gate/v/d1.jpg").unlink()  # footage removed by retention since the verdict

    ds = load_dataset(f"feedback:{tmp_path / 'data'}")
    people = {identity: sorted(s.image.name for s in ds.samples if s.identity == identity) for identity in ds.identities}
    assert people == {
        "feedback-a": ["a0.jpg", "a1.jpg", "b0.jpg", "b1.jpg", "c0.jpg", "c1.jpg"],
        "feedback-d": ["d0.jpg", "e0.jpg", "e1.jpg"],
    }
    assert {s.camera for s in ds.samples if s.identity == "feedback-a"} == {"gate", "lobby", "garage"}
    assert all(s.split == "train" and s.captions == [] for s in ds.samples)
    with pytest.raises(InputError, match="data dir"):
        load_dataset(f"feedback:{crops.path('gate/v/a0.jpg')}")


def test_bad_specs_are_refused_with_the_reason(tmp_path):
    with pytest.raises(InputError, match="unknown dataset kind 'coco'"):
        load_dataset(f"coco:{tmp_path}")
    with pytest.raises(InputError, match="KIND:PATH"):
        load_dataset(str(tmp_path))
    with pytest.raises(InputError, match="does not exist"):
        load_dataset(f"market1501:{tmp_path / 'nowhere'}")
    with pytest.raises(InputError, match="holds no ground_truth.json"):
        load_dataset(f"synthetic:{tmp_path}")
    with pytest.raises(InputError, match="not a Market-1501 folder"):
        load_dataset(f"market1501:{tmp_path}")


def test_concat_keeps_identities_of_different_datasets_apart(tmp_path):
    _image(tmp_path / "a" / "1.jpg")
    _image(tmp_path / "b" / "1.jpg")
    for name in ("a", "b"):
        (tmp_path / f"{name}.csv").write_text(f"path,identity,caption,split\n{name}/1.jpg,1,a man,train\n")
    merged = PersonDataset.concat([load_dataset(f"csv:{tmp_path / 'a.csv'}"), load_dataset(f"csv:{tmp_path / 'b.csv'}")])
    assert len(merged.identities) == 2
