"""Which images evaluate_model takes as queries and gallery, per kind of dataset."""

from __future__ import annotations

import pytest
from camtrace.embedding.encoder import ImageTextEncoder
from camtrace.training.datasets import PersonDataset, Sample, load_dataset
from camtrace.training.evaluate import evaluate_model, evaluation_set, format_table
from camtrace.training.metrics import reid_metrics, text_to_identity_metrics
from PIL import Image

from camtrace.errors import InputError
from camtrace.synthetic import person_crops


def _market(root, crops):
    names = {
        "bounding_box_test": ["0001_c2s1_000001_00", "0001_c1s1_000002_00", "0002_c2s1_000003_00", "0000_c3s1_000004_00",
                              "-1_c1s1_000005_00"],
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
    expected = reid_metrics(q @ g.T, [s.identity for s in query], [s.identity for s in gallery],
                            [s.camera for s in query], [s.camera for s in gallery])
    assert result["image_reid"] == pytest.approx(expected)
    assert "n/a" in format_table(result) and "map" in format_table(result)


def test_a_test_split_is_searched_image_against_the_rest_and_caption_against_all(tiny_siglip_dir):
    crops = person_crops(6, seed=9, heights=(40, 80), min_width=12)
    samples = [
        Sample(lambda c=crop: Image.fromarray(c), identity, "", captions, "test")
        for crop, (identity, captions) in zip(
            crops,
            [("a", ["red top"]), ("a", ["red top"]), ("b", ["blue top"]), ("b", ["blue top", "blue top, bag"]),
             ("c", ["black top"]), ("c", [])],
        )
    ] + [Sample(lambda: Image.fromarray(crops[0]), "z", "cam", ["white top"], "train")]
    dataset = PersonDataset(samples, "mixed")
    chosen = evaluation_set(dataset)
    assert len(chosen.gallery) == 6 and chosen.queries is chosen.gallery  # train images stay out
    assert chosen.text_queries == [("a", "red top"), ("b", "blue top"), ("b", "blue top, bag"), ("c", "black top")]
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
