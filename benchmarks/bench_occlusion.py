"""Re-id under occlusion: the tower's global pooling against the anchor head, on held-out people, in one run.

    .venv/bin/python benchmarks/bench_occlusion.py                 # small SigLIP trained here (minutes on a CPU)
    .venv/bin/python benchmarks/bench_occlusion.py --quick         # the plumbing only (under a minute)

An Occluded-Duke-style protocol on synthetic people (camtrace.synthetic.person_view): queries are views of
held-out people with 0/20/40/60% of their silhouette hidden by an occluder (a block of street furniture or
another person in front, alternately); the gallery holds other views of the same people, mostly whole (one view
in four 20% hidden). Queries and gallery are on different cameras, so nothing is set aside.

The model is trained here from random weights: a small SigLIP (``--hidden``, ``--layers``, ``--image-size`` with
8-pixel patches) fine-tuned by the trainer on the training people's views (contrastive image-text and
image-image losses; views occluded at random, 0-60%), then an anchor head trained on that frozen model with
``--head anchors``'s recipe (identity loss, triplet 0.3, diversity). Both vectors come from the same encoder
(``ImageTextEncoder.encode_image_pair``): "global" is the tower's pooled, text-aligned vector, "head" the anchor
head's. Prints re-id mAP and Top-1 per occlusion level. Figures, not pass/fail; a different seed moves them by a
few points.
"""

from __future__ import annotations

import argparse
import math
import tempfile
import time
from pathlib import Path

import numpy as np

LEVELS = (0.0, 0.2, 0.4, 0.6)


def _loader(array: np.ndarray):
    def load():
        from PIL import Image

        return Image.fromarray(array, "RGB")

    return load


def make_views(people, rng, count: int, levels, others, gallery: bool = False) -> list:
    """``count`` views per person; each view's occlusion drawn from ``levels``, the occluder alternating."""
    from camtrace.synthetic import person_view

    views = []
    for person in people:
        for number in range(count):
            level = float(levels[int(rng.integers(len(levels)))]) if not gallery else (0.2 if number % 4 == 3 else 0.0)
            occluder = "object" if number % 2 == 0 else "person"
            views.append(person_view(person, rng, occlusion=level, occluder=occluder, others=others))
    return views


def training_set(people, rng, views_per_person: int, others):
    from camtrace.training.datasets import PersonDataset, Sample

    views = make_views(people, rng, views_per_person, (0.0, 0.0, 0.2, 0.4, 0.6), others)
    by_id = {p.id: p for p in people}
    samples = [
        Sample(_loader(v.image), v.identity, f"c{i % 4}", [by_id[v.identity].description], "train") for i, v in enumerate(views)
    ]
    return PersonDataset(samples, "occluded-synthetic")


def build_model(folder: Path, hidden: int, layers: int, image_size: int, seed: int) -> Path:
    """Random SigLIP weights with SigLIP's initial logit scale (a random one makes the batch softmax flat)."""
    import torch
    from transformers import AutoModel

    from camtrace.embedding.tiny_model import build_random_siglip

    build_random_siglip(
        folder,
        hidden_size=hidden,
        num_layers=layers,
        num_heads=max(1, hidden // 32),
        intermediate_size=2 * hidden,
        image_size=image_size,
        patch_size=8,
        max_length=16,
        seed=seed,
    )
    model = AutoModel.from_pretrained(folder)
    with torch.no_grad():
        model.logit_scale.fill_(math.log(10.0))
    model.save_pretrained(folder)
    return folder


def train_backbone(base: Path, out: Path, train_set, args) -> Path:
    from camtrace.training.trainer import TrainConfig, TrainingRun

    config = TrainConfig(
        ["occluded-synthetic"],
        out,
        base=str(base),
        head_epochs=0,
        epochs=args.epochs,
        lr=args.lr,
        warmup_ratio=0.05,
        batch_size=args.batch_size,
        images_per_identity=4,
        device="cpu",
        text_max_length=16,
        seed=args.seed,
        checkpoint_every=10**6,
    )
    run = TrainingRun(config, train_set, None, progress=False)
    run.restore(None)
    run.fit(None)
    run.save()
    return out


def train_head(base: Path, out: Path, train_set, args) -> Path:
    from camtrace.training.head_training import AnchorHeadRun
    from camtrace.training.trainer import TrainConfig

    config = TrainConfig(
        ["occluded-synthetic"],
        out,
        base=str(base),
        head="anchors",
        epochs=args.head_epochs,
        head_lr=args.head_lr,
        warmup_ratio=0.05,
        batch_size=args.batch_size,
        images_per_identity=4,
        device="cpu",
        text_max_length=16,
        seed=args.seed,
        anchor_layer=args.layer,
    )
    run = AnchorHeadRun(config, train_set, None, progress=False)
    run.fit()
    run.save()
    return out


def evaluate(model_dir: Path, test_people, others, args) -> list[dict]:
    from camtrace.embedding import ImageTextEncoder
    from camtrace.training.metrics import reid_metrics

    rng = np.random.default_rng(args.seed + 1000)
    encoder = ImageTextEncoder(model_dir, None, device="cpu", batch_size=64, runtime="torch")
    gallery = make_views(test_people, rng, args.gallery_views, (), others, gallery=True)
    g_text, g_head = encoder.encode_image_pair([v.image for v in gallery])
    g_ids = [v.identity for v in gallery]
    rows = []
    for level in LEVELS:
        queries = make_views(test_people, rng, args.queries, (level,), others)
        q_text, q_head = encoder.encode_image_pair([v.image for v in queries])
        q_ids = [v.identity for v in queries]
        row = {"level": level, "hidden": float(np.mean([v.occluded for v in queries])), "queries": len(queries)}
        for name, q, g in (("global", q_text, g_text), ("head", q_head, g_head)):
            figures = reid_metrics(q @ g.T, q_ids, g_ids, ["q"] * len(q_ids), ["g"] * len(g_ids))
            row[name] = (figures["map"], figures["top1"])
        rows.append(row)
    return rows


def table(rows: list[dict]) -> str:
    lines = ["| occlusion (hidden) | queries | global mAP | head mAP | global Top-1 | head Top-1 |", "|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(
            f"| {r['level']:.0%} ({r['hidden']:.0%}) | {r['queries']} | {r['global'][0]:.1f} | "
            f"{r['head'][0]:.1f} | {r['global'][1]:.1f} | {r['head'][1]:.1f} |"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--train-ids", type=int, default=60)
    parser.add_argument("--test-ids", type=int, default=30)
    parser.add_argument("--views", type=int, default=6, help="Training views per person.")
    parser.add_argument("--gallery-views", type=int, default=4)
    parser.add_argument("--queries", type=int, default=3, help="Query views per person and occlusion level.")
    parser.add_argument("--hidden", type=int, default=64)
    parser.add_argument("--layers", type=int, default=3)
    parser.add_argument("--image-size", type=int, default=48)
    parser.add_argument("--layer", type=int, default=-1, help="Block whose tokens the head reads (-1: the last).")
    parser.add_argument("--epochs", type=int, default=15, help="Epochs fine-tuning the whole model.")
    parser.add_argument("--head-epochs", type=int, default=40)
    parser.add_argument("--lr", type=float, default=5e-4)
    parser.add_argument("--head-lr", type=float, default=1e-3)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--quick", action="store_true", help="A few people, one epoch each: checks the plumbing.")
    args = parser.parse_args()
    if args.quick:
        args.train_ids, args.test_ids, args.views, args.epochs, args.head_epochs = 12, 6, 4, 1, 1
        args.hidden, args.layers, args.image_size = 32, 2, 32
    import torch

    from camtrace.synthetic import make_identities

    torch.set_num_threads(args.threads)
    rng = np.random.default_rng(args.seed)
    people = make_identities(rng, args.train_ids + args.test_ids)
    train_people, test_people = people[: args.train_ids], people[args.train_ids :]
    started = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        train_set = training_set(train_people, rng, args.views, train_people)
        base = build_model(root / "random", args.hidden, args.layers, args.image_size, args.seed)
        backbone = train_backbone(base, root / "backbone", train_set, args)
        trained_at = time.perf_counter()
        headed = train_head(backbone, root / "headed", train_set, args)
        head_at = time.perf_counter()
        rows = evaluate(headed, test_people, test_people, args)
    print(
        f"SigLIP from random weights: hidden {args.hidden}, {args.layers} blocks, {args.image_size} px, patch 8; "
        f"head on block {args.layer}; {args.train_ids} training people x {args.views} views, "
        f"{args.test_ids} held-out people ({args.gallery_views} gallery views, {args.queries} queries per level); "
        f"CPU, {args.threads} threads: model {trained_at - started:.0f} s, head {head_at - trained_at:.0f} s"
    )
    print(table(rows))


if __name__ == "__main__":
    main()
