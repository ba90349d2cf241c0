"""The evaluation protocols of the model card, run with an ImageTextEncoder on a PersonDataset.

Which images are queries and which the gallery:
- a dataset with ``query`` and ``gallery`` splits (Market-1501): query images against the gallery
  for re-identification; the captions of query images against the gallery for text -> identity;
- otherwise (CUHK-style JSON, CSV, synthetic) the ``test`` split (or, for a dataset holding only
  ``val`` samples, those): every image is a query against all the others (the query itself and
  same-identity images on its own camera are removed, as the Market-1501 protocol does), and every
  caption of every image is a text query against all the images of the split.
An image with no camera ("" = unknown) counts as its own camera, so only the image itself is removed.

Text queries follow the model card's count: one per caption of each query image, a caption that
several images share (or one image repeats) counting once for each (CUHK-PEDES test: 3,074 images,
6,156 queries). Whether captions are normalised is the dataset loader's choice (``load_dataset``).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np
from tqdm import tqdm

from camtrace.errors import InputError
from camtrace.training.datasets import PersonDataset, Sample
from camtrace.training.metrics import count_reid_queries, reid_metrics, text_to_identity_metrics

log = logging.getLogger(__name__)


@dataclass
class EvaluationSet:
    """Queries and gallery picked from a dataset by the protocol above."""

    queries: list[Sample]
    gallery: list[Sample]
    text_queries: list[tuple[str, str]]  # (identity, caption), one per caption of each query image
    protocol: str


def evaluation_set(dataset: PersonDataset) -> EvaluationSet:
    splits = dataset.splits
    if {"query", "gallery"} <= splits:
        queries, gallery = dataset.split("query").samples, dataset.split("gallery").samples
        protocol = "query/gallery"
    else:
        name = next((s for s in ("test", "val") if s in splits), None)
        if name is None:
            raise InputError(
                f"dataset {dataset.name} has no query/gallery, test or val split to evaluate on "
                f"(it holds {', '.join(sorted(splits)) or 'nothing'})"
            )
        samples = [
            s if s.camera else Sample(s.image, s.identity, f"image-{i}", s.captions, s.split)
            for i, s in enumerate(dataset.split(name).samples)
        ]
        queries, gallery, protocol = samples, samples, f"{name} split, each image against the rest"
    text_queries = [(s.identity, caption) for s in queries for caption in s.captions]
    return EvaluationSet(queries, gallery, text_queries, protocol)


def _encode_images(encoder, samples: list[Sample], batch_size: int, progress: bool, label: str) -> np.ndarray:
    chunks = []
    for start in tqdm(range(0, len(samples), batch_size), desc=label, disable=not progress, unit="batch", leave=False):
        chunks.append(encoder.encode_images([s.load_image() for s in samples[start : start + batch_size]]))
    return np.concatenate(chunks) if chunks else np.zeros((0, encoder.dim), np.float32)


def evaluate_model(encoder, dataset: PersonDataset, *, batch_size: int = 64, progress: bool = False) -> dict:
    """Text -> identity and image re-id figures (percentages) of ``encoder`` on ``dataset``; an encoder with an
    anchor re-id head (``has_reid_head``) adds ``image_reid_head``, the head's re-id figures.

    Returns {"text_to_identity": {top1, top5, top10, mrr, cmc_auc20, queries, images} or None
    when the dataset has no captions, "image_reid": {top1, top5, top10, map, queries, images} or
    None when no query has a valid match}; ``queries`` and ``images`` count the queries scored and
    the gallery images.
    """
    chosen = evaluation_set(dataset)
    log.info("evaluating %s: %s", dataset.name, chosen.protocol)
    gallery = _encode_images(encoder, chosen.gallery, batch_size, progress, "gallery")
    gallery_ids = [s.identity for s in chosen.gallery]
    result: dict = {"text_to_identity": None, "image_reid": None}
    if chosen.text_queries:
        # Each distinct caption is encoded once; its vector then stands for every query that uses it.
        distinct = list(dict.fromkeys(caption for _, caption in chosen.text_queries))
        row = {caption: i for i, caption in enumerate(distinct)}
        texts = encoder.encode_texts(distinct)[[row[caption] for _, caption in chosen.text_queries]]
        result["text_to_identity"] = text_to_identity_metrics(
            texts @ gallery.T, [identity for identity, _ in chosen.text_queries], gallery_ids
        )
    query_ids = [s.identity for s in chosen.queries]
    query_cams = [s.camera for s in chosen.queries]
    gallery_cams = [s.camera for s in chosen.gallery]
    if count_reid_queries(query_ids, gallery_ids, query_cams, gallery_cams):
        queries = (
            gallery
            if chosen.queries is chosen.gallery
            else _encode_images(encoder, chosen.queries, batch_size, progress, "queries")
        )
        result["image_reid"] = reid_metrics(queries @ gallery.T, query_ids, gallery_ids, query_cams, gallery_cams)
        if getattr(encoder, "has_reid_head", False):  # the anchor head's re-id vectors, beside the pooled ones
            result["image_reid_head"] = _head_reid(encoder, chosen, batch_size, progress)
    return result


def _head_reid(encoder, chosen: EvaluationSet, batch_size: int, progress: bool) -> dict:
    head_encoder = _ReidImages(encoder)
    gallery = _encode_images(head_encoder, chosen.gallery, batch_size, progress, "gallery (head)")
    queries = (
        gallery
        if chosen.queries is chosen.gallery
        else _encode_images(head_encoder, chosen.queries, batch_size, progress, "queries (head)")
    )
    return reid_metrics(
        queries @ gallery.T,
        [s.identity for s in chosen.queries],
        [s.identity for s in chosen.gallery],
        [s.camera for s in chosen.queries],
        [s.camera for s in chosen.gallery],
    )


class _ReidImages:
    """An encoder's ``encode_reid_images`` in the place of its ``encode_images``."""

    def __init__(self, encoder) -> None:
        self.encoder = encoder
        self.dim = encoder.reid_dim

    def encode_images(self, images):
        return self.encoder.encode_reid_images(images)


def format_table(result: dict) -> str:
    """The figures as a small text table."""
    lines = []
    protocols = [
        ("text_to_identity", ("top1", "top5", "top10", "mrr", "cmc_auc20")),
        ("image_reid", ("top1", "top5", "top10", "map")),
    ]
    if result.get("image_reid_head") is not None:
        protocols.append(("image_reid_head", ("top1", "top5", "top10", "map")))
    for protocol, keys in protocols:
        figures = result.get(protocol)
        header = f"{protocol:<17}" + "".join(f"{key:>10}" for key in (*keys, "queries", "images"))
        lines.append(header)
        if figures is None:
            lines.append(f"{'':<17}{'n/a (no queries)':>20}")
        else:
            counts = "".join(f"{figures.get(key, '-'):>10}" for key in ("queries", "images"))
            lines.append(f"{'':<17}" + "".join(f"{figures[key]:>10.1f}" for key in keys) + counts)
    return "\n".join(lines)
