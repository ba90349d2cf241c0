"""Training throughput and evaluation time: a base-size SigLIP against the tiny one, in one run.

    python benchmarks/bench_training.py                  # base-size random SigLIP + tiny (minutes on a CPU)
    python benchmarks/bench_training.py --skip-base      # tiny only: seconds; checks the plumbing
    python benchmarks/bench_training.py --steps 50 --batch-size 64   # on a GPU

Both models have random weights (the base one with the tower sizes of
siglip2-base-patch16-224: 768 hidden, 12 layers, 224 px, patch 16), written to a
temporary folder: real compute, no download. A training step is the trainer's
own: batch building (P identities x K crops of synthetic footage, with
augmentation), image and text towers, the contrastive loss, backward and an
AdamW step of the whole model; on CUDA under bf16 autocast, as in training.
One warm-up step is not timed. Evaluation is ``evaluate_model`` (both protocols)
over the footage's crops with the encoder used in production. The baseline of
the ratios is the tiny model measured in the same run. Runs unchanged on a GPU
(--device auto picks CUDA when present).
"""

from __future__ import annotations

import argparse
import tempfile
import time
from dataclasses import replace
from pathlib import Path


def _sync(device) -> None:
    import torch

    if device.type == "cuda":
        torch.cuda.synchronize(device)


def train_throughput(folder: Path, dataset, batch_size: int, steps: int, device_name: str) -> float:
    """Samples per second of whole-model training steps (after one warm-up step)."""
    import torch

    from camtrace.embedding.families import pooled_output
    from camtrace.inference import resolve_device
    from camtrace.training.losses import PersonContrastiveLoss
    from camtrace.training.trainer import BatchBuilder, TrainConfig, _autocast, load_base, plan_epoch

    device = resolve_device(device_name)
    loaded = load_base(str(folder), None, 64)
    model = loaded.model.to(device).train()
    config = TrainConfig(datasets=["bench"], out_dir=Path("."), batch_size=batch_size, images_per_identity=4)
    identities = {identity: i for i, identity in enumerate(dataset.identities)}
    labels = [identities[s.identity] for s in dataset.samples]
    plan = plan_epoch(labels, 0, 0, steps + 1, config.images_per_identity, batch_size)
    builder = BatchBuilder(dataset.samples, labels, plan, 0, loaded.processor, loaded.text_kwargs, loaded.lowercase, config)
    optimizer = torch.optim.AdamW(model.parameters(), lr=5e-6)
    loss_fn = PersonContrastiveLoss()
    samples = 0
    start = 0.0
    for index in range(len(builder)):
        if index == 1:
            _sync(device)
            start = time.perf_counter()
        batch = builder[index]
        with _autocast(device):
            images = pooled_output(model.get_image_features(**{k: v.to(device) for k, v in batch["images"].items()}))
            texts = pooled_output(model.get_text_features(**{k: v.to(device) for k, v in batch["texts"].items()}))
        loss = loss_fn(images, texts, batch["image_ids"].to(device), batch["text_ids"].to(device), model.logit_scale.exp())
        loss.total.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        if index >= 1:
            samples += len(batch["image_ids"])
    _sync(device)
    return samples / (time.perf_counter() - start)


def evaluation_seconds(folder: Path, dataset, device_name: str, batch_size: int) -> tuple[float, dict]:
    from camtrace.embedding.encoder import ImageTextEncoder
    from camtrace.training.evaluate import evaluate_model

    encoder = ImageTextEncoder(folder, device=device_name, batch_size=batch_size)
    encoder.load()
    encoder.encode_texts(["warm up"])
    start = time.perf_counter()
    figures = evaluate_model(encoder, dataset, batch_size=batch_size)
    return time.perf_counter() - start, figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=3, help="timed training steps of the base-size model")
    parser.add_argument("--tiny-steps", type=int, default=20, help="timed training steps of the tiny model")
    parser.add_argument("--batch-size", type=int, default=16, help="training batch (P identities x 4 crops)")
    parser.add_argument("--eval-batch-size", type=int, default=64)
    parser.add_argument("--identities", type=int, default=12, help="people in the synthetic footage")
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N")
    parser.add_argument("--skip-base", action="store_true", help="measure the tiny model only")
    args = parser.parse_args()

    import torch

    from camtrace.embedding.encoder import resolve_device
    from camtrace.embedding.tiny_model import build_base_like_siglip, build_tiny_siglip
    from camtrace.synthetic import generate_footage
    from camtrace.training.datasets import PersonDataset, load_dataset

    device = resolve_device(args.device)
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else f"cpu ({torch.get_num_threads()} threads)"
    with tempfile.TemporaryDirectory(prefix="camtrace-bench-training-") as tmp:
        root = Path(tmp)
        footage = generate_footage(root / "footage", cameras=3, identities=args.identities, seconds=10, fps=4, seed=1)
        everything = load_dataset(f"synthetic:{footage.root}")
        train_set = everything.split("train")
        # Evaluation over every crop: each image against the rest, every description against all crops.
        eval_set = PersonDataset([replace(s, split="test") for s in everything.samples], "all crops")
        print(f"device: {name}; {len(train_set)} training crops, {len(eval_set)} evaluation crops")

        models = [("tiny", build_tiny_siglip(root / "tiny"), args.tiny_steps)]
        if not args.skip_base:
            models.append(("siglip2-base sizes", build_base_like_siglip(root / "base"), args.steps))
        rows = []
        for label, folder, steps in models:
            throughput = train_throughput(folder, train_set, args.batch_size, steps, args.device)
            seconds, _ = evaluation_seconds(folder, eval_set, args.device, args.eval_batch_size)
            rows.append((label, throughput, seconds))
            print(
                f"{label:<20} train {throughput:8.1f} samples/s   evaluation {seconds:7.2f} s "
                f"({len(eval_set) / seconds:7.1f} images/s)"
            )
        tiny_throughput, tiny_seconds = rows[0][1], rows[0][2]
        for label, throughput, seconds in rows[1:]:
            print(
                f"{label} vs tiny: training throughput x{throughput / tiny_throughput:.3f}, "
                f"evaluation time x{seconds / tiny_seconds:.1f}"
            )


if __name__ == "__main__":
    main()
