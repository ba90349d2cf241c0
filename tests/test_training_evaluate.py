"""Which images evaluate_model takes as queries and gallery, per kind of dataset; the text protocol's
query count and figures against a hand computation and against an independent implementation."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

from camtrace.cli import cli
from camtrace.embedding.encoder import ImageTextEncoder
from camtrace.errors import InputError
from camtrace.settings import Settings
from camtrace.synthetic import person_crops
from camtrace.training.datasets import PersonDataset, Sample, load_dataset, normalise_caption
from camtrace.training.evaluate import evaluate_model, evaluation_set, format_table
from camtrace.training.metrics import reid_metrics, text_to_identity_metrics


def _market(root, crops):
    names = {
        "bounding_box_test": [
            "0001_c2s1_000001_00",
            "0001_c1s1_000002_00",
            "0002_c2s1_000003_00",
            "0000_c3s1_000004_00",
            "-1_c1s1_000005_00",
        ],
        "query": ["0001_c1s1_000010_00", "0002_c1s1_000011_00", "0003_c1s1_000012_00"],
    }
    k = 0
    for folder, files in names.items():
        (root / folder).mkdir(parents=True)
        for name in files:
            Image.fromarray(crops[k]).save(root / folder / f"{name}.png")
            k += 1


def test_market_queries_search_the_gallery_under_the_protocol(tiny_siglip_dir, tmp_path):
    _market(tmp_path, person_crops(8, seed=5, heights=(40, 80), min_width=12))
    dataset = load_dataset(f"market1501:{tmp_path}")
    encoder = ImageTextEncoder(tiny_siglip_dir, device="cpu")
    result = evaluate_model(encoder, dataset, batch_size=4)
    assert result["text_to_identity"] is None  # Market-1501 has no captions

    query, gallery = dataset.split("query").samples, dataset.split("gallery").samples
    assert len(gallery) == 4  # the junk image is gone, the distractor stays
    q = encoder.encode_images([s.load_image() for s in query])
    g = encoder.encode_images([s.load_image() for s in gallery])
    expected = reid_metrics(
        q @ g.T, [s.identity for s in query], [s.identity for s in gallery], [s.camera for s in query], [s.camera for s in gallery]
    )
    assert result["image_reid"] == pytest.approx(expected)
    assert "n/a" in format_table(result) and "map" in format_table(result)


def test_a_test_split_is_searched_image_against_the_rest_and_caption_against_all(tiny_siglip_dir):
    crops = person_crops(6, seed=9, heights=(40, 80), min_width=12)
    samples = [
        Sample(lambda c=crop: Image.fromarray(c), identity, "", captions, "test")
        for crop, (identity, captions) in zip(
            crops,
            [
                ("a", ["red top"]),
                ("a", ["red top"]),
                ("b", ["blue top"]),
                ("b", ["blue top", "blue top, bag"]),
                ("c", ["black top"]),
                ("c", []),
            ],
        )
    ] + [Sample(lambda: Image.fromarray(crops[0]), "z", "cam", ["white top"], "train")]
    dataset = PersonDataset(samples, "mixed")
    chosen = evaluation_set(dataset)
    assert len(chosen.gallery) == 6 and chosen.queries is chosen.gallery  # train images stay out
    # Every caption of every image is a query: the two images of "a" give two, "b" three.
    assert chosen.text_queries == [
        ("a", "red top"),
        ("a", "red top"),
        ("b", "blue top"),
        ("b", "blue top"),
        ("b", "blue top, bag"),
        ("c", "black top"),
    ]
    assert len({s.camera for s in chosen.gallery}) == 6  # unknown cameras: each image only drops itself

    encoder = ImageTextEncoder(tiny_siglip_dir, device="cpu")
    result = evaluate_model(encoder, dataset, batch_size=4)
    images = encoder.encode_images([s.load_image() for s in chosen.gallery])
    texts = encoder.encode_texts([c for _, c in chosen.text_queries])
    ids = [s.identity for s in chosen.gallery]
    assert result["text_to_identity"] == pytest.approx(
        text_to_identity_metrics(texts @ images.T, [i for i, _ in chosen.text_queries], ids)
    )
    cams = [s.camera for s in chosen.gallery]
    assert result["image_reid"] == pytest.approx(reid_metrics(images @ images.T, ids, ids, cams, cams))


def test_a_dataset_without_an_evaluation_split_is_refused():
    only_train = PersonDataset([Sample(lambda: None, "a", "", [], "train")], "train-only")
    with pytest.raises(InputError, match="train-only has no query/gallery, test or val split"):
        evaluation_set(only_train)


# The text -> identity protocol -------------------------------------------------------------------------------


def write_cuhk_json(root: Path, entries: list[tuple[str, list[str], str, Image.Image]]) -> Path:
    """A CUHK-PEDES-style annotation file: (identity, captions, split, image) per entry, images as PNG."""
    rows = []
    for k, (identity, captions, split, image) in enumerate(entries):
        (root / "imgs").mkdir(parents=True, exist_ok=True)
        image.save(root / "imgs" / f"{k:03d}.png")
        rows.append({"file_path": f"imgs/{k:03d}.png", "id": identity, "captions": captions, "split": split})
    file = root / "reid_raw.json"
    file.write_text(json.dumps(rows))
    return file


# Six test images: identity 1 twice, 2 once, 3 three times; each image's colour says which it is.
HAND_GALLERY = [
    ("1", ["A man in a red coat.", "A man in a red coat."]),
    ("1", ["A man in a red coat."]),
    ("2", ["A woman with a blue bag."]),
    ("3", ["Green shirt."]),
    ("3", ["Green shirt."]),
    ("3", ["Green shirt."]),
]
# Each caption's similarity to the six images, in that order.
HAND_SCORES = {
    "man, red coat": [0.5, 0.7, 0.9, 0.1, 0.2, 0.3],  # identity 1 scores 0.7, 2 scores 0.9: rank 2
    "woman, blue bag": [0.1, 0.2, 0.8, 0.3, 0.3, 0.3],  # identity 2 first: rank 1
    "green shirt": [0.9, 0.1, 0.8, 0.6, 0.5, 0.7],  # 0.9 (1) and 0.8 (2) beat 0.7 (3): rank 3
}


class LookupEncoder:
    """Image k (told by its colour) -> the k-th unit vector; a caption -> its row of HAND_SCORES."""

    dim = 6

    def __init__(self) -> None:
        self.texts: list[str] = []

    def encode_images(self, images) -> np.ndarray:
        return np.eye(6, dtype=np.float32)[[int(np.asarray(image)[0, 0, 0]) // 40 for image in images]]

    def encode_texts(self, texts) -> np.ndarray:
        self.texts.extend(texts)
        return np.array([HAND_SCORES[normalise_caption(text)] for text in texts], dtype=np.float32)


@pytest.mark.parametrize("raw", [False, True])
def test_every_caption_of_every_image_is_a_query_and_the_figures_match_a_hand_computation(tmp_path, raw):
    entries = [
        (identity, captions, "test", Image.new("RGB", (8, 16), (40 * k, 0, 0)))
        for k, (identity, captions) in enumerate(HAND_GALLERY)
    ]
    entries.append(("9", ["A man in a red coat."], "train", Image.new("RGB", (8, 16), (0, 0, 0))))
    dataset = load_dataset(f"cuhk-pedes:{write_cuhk_json(tmp_path, entries)}", raw_captions=raw)
    encoder = LookupEncoder()
    figures = evaluate_model(encoder, dataset, batch_size=4)["text_to_identity"]

    # 7 queries (3 of identity 1, one an image's repeated caption; 1 of 2; 3 of 3), ranked 2, 2, 2, 1, 3, 3, 3.
    assert (figures["queries"], figures["images"]) == (7, 6)
    assert figures["top1"] == pytest.approx(100 / 7)
    assert figures["top5"] == pytest.approx(100.0)
    assert figures["mrr"] == pytest.approx(100 * (3 / 2 + 1 + 3 / 3) / 7)  # 50.0
    # CMC(1) = 1/7, CMC(2) = 4/7, CMC(3..20) = 1.
    assert figures["cmc_auc20"] == pytest.approx(100 * (1 / 7 + 4 / 7 + 18) / 20)
    # Each distinct caption is encoded once, as given or normalised.
    given = ["A man in a red coat.", "A woman with a blue bag.", "Green shirt."]
    assert encoder.texts == (given if raw else [normalise_caption(text) for text in given])


def reference_text_to_identity(images: np.ndarray, image_ids: list[str], texts: np.ndarray, text_ids: list[str]):
    """The model card's protocol written out plainly: each caption ranks the identities by their best image."""
    scores = texts @ images.T
    identities = sorted(set(image_ids))
    columns = {identity: [k for k, i in enumerate(image_ids) if i == identity] for identity in identities}
    best = np.stack([scores[:, columns[identity]].max(axis=1) for identity in identities], axis=1)
    ranks = np.array([np.sum(best[q] >= best[q, identities.index(identity)]) for q, identity in enumerate(text_ids)])
    return {
        "queries": len(ranks),
        "top1": 100 * np.mean(ranks == 1),
        "mrr": 100 * np.mean(1 / ranks),
        "cmc_auc20": 100 * np.mean([np.mean(ranks <= k) for k in range(1, 21)]),
    }


def shared_caption_dataset(root: Path) -> Path:
    """CUHK-PEDES-style test split where the images of one identity share a caption: 9 people with 1-4 images,
    some images with a second caption of their own; train entries beside it."""
    colours = ["red", "blue", "green", "black", "white", "yellow", "grey", "pink", "brown"]
    crops = person_crops(40, seed=11, heights=(40, 80), min_width=12)
    entries, k = [], 0
    for person, colour in enumerate(colours):
        shared = f"A person wearing a {colour} top and {colours[-1 - person]} trousers, carrying a bag."
        for view in range(1 + person % 4):
            extra = [f"The {colour} top has long sleeves."] if view == 1 else []
            entries.append((str(person), [shared, *extra], "test", Image.fromarray(crops[k])))
            k += 1
    entries += [(f"t{n}", ["A man in a coat."], "train", Image.fromarray(crops[k + n])) for n in range(3)]
    return write_cuhk_json(root, entries)


def test_camtrace_eval_matches_an_independent_implementation_of_the_protocol(tmp_path, tiny_siglip_dir):
    file = shared_caption_dataset(tmp_path / "cuhk")
    env = {"CAMTRACE_DATA_DIR": str(tmp_path / "data"), "CAMTRACE_EMBED_MODEL": str(tiny_siglip_dir), "CAMTRACE_DEVICE": "cpu"}
    # The reference reads the JSON itself and embeds with an encoder of the same settings.
    encoder = ImageTextEncoder.from_settings(Settings(data_dir=tmp_path / "data", embed_model=str(tiny_siglip_dir), device="cpu"))
    test = [entry for entry in json.loads(file.read_text()) if entry["split"] == "test"]
    images = encoder.encode_images([Image.open(file.parent / entry["file_path"]).convert("RGB") for entry in test])
    image_ids = [str(entry["id"]) for entry in test]
    runner = CliRunner()
    for raw in (False, True):
        captions = [(str(entry["id"]), text if raw else normalise_caption(text)) for entry in test for text in entry["captions"]]
        expected = reference_text_to_identity(
            images, image_ids, encoder.encode_texts([c for _, c in captions]), [i for i, _ in captions]
        )
        args = ["eval", "--dataset", f"cuhk-pedes:{file}", "--json", "--no-progress"] + (["--raw-captions"] * raw)
        shown = runner.invoke(cli, args, env=env)
        assert shown.exit_code == 0, shown.output
        record = json.loads(shown.output)
        got = record["text_to_identity"]
        assert record["captions"] == ("raw" if raw else "normalised") and record["runtime"] == "onnx int8"
        assert got["queries"] == expected["queries"] == 27 and got["images"] == len(test) == 21
        for key in ("top1", "mrr", "cmc_auc20"):
            assert abs(got[key] - expected[key]) <= 0.1, (raw, key, got[key], expected[key])
