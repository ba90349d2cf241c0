"""Batched crop embedding against the naive one-crop-at-a-time loop, in one run.

    python benchmarks/bench_embedding.py                 # base-size random SigLIP, 256 crops
    python benchmarks/bench_embedding.py --tiny          # seconds; checks the plumbing
    python benchmarks/bench_embedding.py --model /models/siglip2-reid --processor /models/siglip2-base

Without --model, a randomly initialised SigLIP with the tower sizes of
siglip2-base-patch16-224 (768 hidden, 12 layers, 12 heads, 224 px, patch 16)
is written to a temporary folder: real compute, no download. Both loops use
the same loaded encoder and include preprocessing; the figure compared is
crops per second, so the naive loop may run on fewer crops (--naive-crops).
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

import numpy as np


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", help="checkpoint folder or hub id (default: a random base-size SigLIP)")
    parser.add_argument("--processor", help="processor folder or hub id (default: the model's own)")
    parser.add_argument("--tiny", action="store_true", help="use the tiny random SigLIP of the tests")
    parser.add_argument("--crops", type=int, default=256, help="crops embedded by the batched encoder")
    parser.add_argument("--naive-crops", type=int, help="crops for the one-at-a-time loop (default: min(crops, 64))")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N")
    args = parser.parse_args()

    import torch

    from camtrace.embedding import ImageTextEncoder
    from camtrace.embedding.tiny_model import build_base_like_siglip, build_tiny_siglip
    from camtrace.synthetic import person_crops

    with tempfile.TemporaryDirectory(prefix="camtrace-bench-") as tmp:
        if args.model:
            model, label = args.model, args.model
        elif args.tiny:
            model, label = build_tiny_siglip(Path(tmp) / "tiny-siglip"), "tiny random SigLIP"
        else:
            start = time.perf_counter()
            model = build_base_like_siglip(Path(tmp) / "base-like-siglip")
            label = f"random SigLIP, siglip2-base sizes (built in {time.perf_counter() - start:.0f} s)"

        encoder = ImageTextEncoder(model, args.processor, device=args.device, batch_size=args.batch_size)
        start = time.perf_counter()
        encoder.load()
        load_s = time.perf_counter() - start
        crops = person_crops(args.crops, heights=(64, 257), min_width=16, background_max=80)
        naive_n = min(args.crops, args.naive_crops if args.naive_crops is not None else 64)

        # Warm-up: first calls pay for allocator growth, kernel selection and lazy imports
        # (a full batch on a GPU; on a CPU a few crops suffice and a full batch costs seconds).
        warm = args.batch_size if encoder.device.type == "cuda" else 4
        encoder.encode_images(crops[: min(warm, len(crops))])
        encoder.encode_images(crops[:1])

        start = time.perf_counter()
        batched = encoder.encode_images(crops)
        batched_s = time.perf_counter() - start

        start = time.perf_counter()
        naive = np.concatenate([encoder.encode_images([crop]) for crop in crops[:naive_n]])
        naive_s = time.perf_counter() - start

        query = "woman, red coat, black backpack"
        encoder.encode_texts([query])
        start = time.perf_counter()
        repeats = 10
        for _ in range(repeats):
            encoder.encode_texts([query])
        text_ms = (time.perf_counter() - start) / repeats * 1000

        device = encoder.device
        name = torch.cuda.get_device_name(device) if device.type == "cuda" else f"{torch.get_num_threads()} threads"
        batched_rate = len(crops) / batched_s
        naive_rate = naive_n / naive_s
        print(f"device          {device} ({name}), torch {torch.__version__}, runs {encoder.runtime_label}")
        print(f"model           {label}; dim {encoder.dim}; loaded in {load_s:.1f} s")
        print(f"version         {encoder.model_version}")
        batch_note = f"{len(crops)} crops, batch {args.batch_size}, {batched_s:.2f} s"
        print(f"batched         {batched_rate:8.1f} crops/s  ({batch_note})")
        print(f"one at a time   {naive_rate:8.1f} crops/s  ({naive_n} crops, {naive_s:.2f} s)")
        print(f"ratio           {batched_rate / naive_rate:8.2f} x  (batched / one at a time)")
        print(f"max |diff|      {np.abs(batched[:naive_n] - naive).max():.2e}  (same crops, both ways)")
        print(f"text query      {text_ms:8.1f} ms  (one query)")
        if hasattr(os, "getloadavg"):  # shared machines: other work skews CPU figures
            print(f"load average    {os.getloadavg()[0]:.2f} at the end, on {os.cpu_count()} cores")


if __name__ == "__main__":
    main()
