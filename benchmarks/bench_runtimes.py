"""Runtimes compared in one run: the embedder on PyTorch fp32 / bf16 and ONNX Runtime fp32 / int8, the detector
on PyTorch and ONNX Runtime, with the retrieval quality each fast path keeps.

    python benchmarks/bench_runtimes.py                       # siglip2-base-sized SigLIP and yolo11n-sized YOLO, random weights
    python benchmarks/bench_runtimes.py --model /models/reid  # a trained checkpoint folder instead (quality then means something)
    python benchmarks/bench_runtimes.py --tiny                # the tests' tiny models: seconds, checks the plumbing

Quality: synthetic person crops (identities x views, ``camtrace.synthetic.identity_views``) are embedded by each
path; every crop queries all others (image -> image), and Top-1 and mAP are compared with PyTorch fp32's on the
same gallery, with the smallest cosine between a path's vector and fp32's. A fast path may be the default only
where Top-1 and mAP stay within 0.5 points of fp32. On CUDA the GPU section prints crops/s per batch size
(bf16, SDPA, preprocessing on the GPU) end to end and split into preprocessing and forward pass, the TFLOP/s
reached and its share of the GPU's dense bf16 peak, bf16's quality against fp32, and the detector in fp16.
Without CUDA it is skipped with a message; ``--gpu-device cpu --tiny`` runs its code here as a check.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import tempfile
import time
from pathlib import Path

import numpy as np

os.environ.setdefault("YOLO_OFFLINE", "1")
os.environ.setdefault("YOLO_AUTOINSTALL", "False")
os.environ.setdefault("YOLO_VERBOSE", "False")


def retrieval(vectors: np.ndarray, labels: list[int]) -> tuple[float, float]:
    """Top-1 and mAP (percent) of image->image retrieval: each crop queries all the others."""
    labels_arr = np.asarray(labels)
    sims = vectors @ vectors.T
    np.fill_diagonal(sims, -np.inf)
    top1, aps = [], []
    for i in range(len(vectors)):
        order = np.argsort(-sims[i])[:-1]  # the query itself (-inf) is last
        hits = labels_arr[order] == labels_arr[i]
        top1.append(bool(hits[0]))
        ranks = np.flatnonzero(hits) + 1
        aps.append(float(np.mean(np.arange(1, len(ranks) + 1) / ranks)) if len(ranks) else 0.0)
    return 100 * float(np.mean(top1)), 100 * float(np.mean(aps))


def timed(fn, *args):
    start = time.perf_counter()
    out = fn(*args)
    return out, time.perf_counter() - start


def embed_section(args, tmp: Path) -> None:
    import torch

    from camtrace.embedding import ImageTextEncoder
    from camtrace.embedding.tiny_model import build_base_like_siglip, build_tiny_siglip
    from camtrace.synthetic import identity_views

    if args.model:
        model, label = args.model, args.model
    elif args.tiny:
        model, label = build_tiny_siglip(tmp / "tiny-siglip"), "tiny random SigLIP"
    else:
        model, took = timed(build_base_like_siglip, tmp / "base-like-siglip")
        label = f"random SigLIP with siglip2-base sizes (built in {took:.0f} s)"
    crops, labels = identity_views(args.identities, args.views, seed=1)
    print(
        f"embedder: {label}; {len(crops)} crops ({args.identities} identities x {args.views} views), "
        f"torch threads {torch.get_num_threads()}"
    )

    def encoder(runtime: str, quantize: str = "auto") -> ImageTextEncoder:
        enc = ImageTextEncoder(
            model,
            args.processor,
            device="cpu",
            batch_size=args.batch_size,
            runtime=runtime,
            exports_dir=tmp / "exports",
            onnx_quantize=quantize,
        )
        _, took = timed(enc.load)
        print(f"  loaded {runtime} {quantize if runtime == 'onnx' else ''} in {took:.1f} s (exports built on first use)")
        return enc

    paths: dict[str, tuple[np.ndarray, float]] = {}

    def measure(name: str, enc: ImageTextEncoder, autocast: bool = False) -> None:
        ctx = torch.autocast("cpu", dtype=torch.bfloat16) if autocast else contextlib.nullcontext()
        with ctx:
            enc.encode_images(crops[:2])  # warm-up
            vectors, took = timed(enc.encode_images, crops)
        paths[name] = (vectors.astype(np.float32), len(crops) / took)

    torch_enc = encoder("torch")
    measure("torch fp32", torch_enc)
    measure("torch bf16 (autocast)", torch_enc, autocast=True)
    torch_enc.unload()
    for quantize in ("fp32", "int8"):
        enc = encoder("onnx", quantize)
        measure(f"onnx {quantize}", enc)
        if quantize == "int8":  # what one crop per run (batch-independent vectors) costs against batched runs
            few = [np.ascontiguousarray(c) for c in crops[: args.batch_size * 2]]
            _, single_s = timed(enc.encode_images, few)
            enc.vision.batch_size = len(few)  # one run for them all
            _, batched_s = timed(enc.encode_images, few)
            print(
                f"  int8 one crop per run vs batches of {len(few)}: {len(few) / single_s:.2f} vs "
                f"{len(few) / batched_s:.2f} crops/s ({single_s / batched_s:.2f}x the time)"
            )
        enc.unload()

    base_vectors, base_rate = paths["torch fp32"]
    base_top1, base_map = retrieval(base_vectors, labels)
    print(f"\n  {'path':<30} {'crops/s':>8} {'x fp32':>7} {'min cos':>8} {'Top-1':>6} {'dTop-1':>7} {'mAP':>6} {'dmAP':>6}")
    for name, (vectors, rate) in paths.items():
        top1, mean_ap = retrieval(vectors, labels)
        cos = float(np.min(np.sum(vectors * base_vectors, axis=1)))
        print(
            f"  {name:<30} {rate:8.2f} {rate / base_rate:6.2f}x {cos:8.5f} {top1:6.1f} {top1 - base_top1:+7.2f} "
            f"{mean_ap:6.1f} {mean_ap - base_map:+6.2f}"
        )
    int8_top1, int8_map = retrieval(paths["onnx int8"][0], labels)
    ok = int8_top1 - base_top1 >= -0.5 and int8_map - base_map >= -0.5  # a gain is no loss
    print(f"  int8 loses at most 0.5 points of fp32's Top-1 and mAP: {'yes' if ok else 'NO: set CAMTRACE_ONNX_QUANTIZE=fp32'}")


def detector_section(args, tmp: Path) -> None:
    from camtrace.detection import PersonDetector
    from camtrace.detection.tiny_model import N_SCALE, build_tiny_yolo

    if args.tiny:
        folder, label = build_tiny_yolo(tmp / "tiny-yolo"), "tiny random YOLO (320 px)"
    else:
        folder, took = timed(build_tiny_yolo, tmp / "yolo11n-sized", 0, N_SCALE, 640)
        label = f"random YOLO with yolo11n sizes at 640 px (built in {took:.0f} s)"
    frames = [np.random.default_rng(i).integers(0, 256, (360, 640, 3), np.uint8) for i in range(args.frames)]
    print(f"\ndetector: {label}; {len(frames)} frames of 640x360, batch {args.detector_batch}")
    rates = {}
    for runtime in ("torch", "onnx"):
        det = PersonDetector(
            str(folder), device="cpu", batch_size=args.detector_batch, runtime=runtime, exports_dir=tmp / "exports"
        )
        _, took = timed(det.load)
        det.detect(frames[:2])
        _, took = timed(det.detect, frames)
        rates[runtime] = len(frames) / took
        print(f"  {runtime:<6} {rates[runtime]:6.1f} frames/s at {det.imgsz} px")
    print(f"  onnx / torch: {rates['onnx'] / rates['torch']:.2f}x")


def vision_gflops(model: str) -> float:
    """Forward GFLOP per crop of the vision tower (patch embedding, attention and MLP; 2 FLOP per multiply-add)."""
    from transformers import AutoConfig

    vision = AutoConfig.from_pretrained(model).vision_config
    tokens = (vision.image_size // vision.patch_size) ** 2
    d, inner = vision.hidden_size, vision.intermediate_size
    per_layer = 8 * tokens * d * d + 4 * tokens * d * inner + 4 * tokens * tokens * d
    patches = 2 * tokens * 3 * vision.patch_size**2 * d
    return (vision.num_hidden_layers * per_layer + patches) / 1e9


# Dense bf16 tensor-core peaks (TFLOP/s) of GPUs the section may meet, for the share of the roofline reached.
BF16_PEAK_TFLOPS = {"H200": 989.0, "H100 PCIe": 756.0, "H100": 989.0, "A100": 312.0, "L40S": 362.0, "L4": 121.0}


def gpu_section(args, tmp: Path) -> None:
    import torch

    device = args.gpu_device
    if device.startswith("cuda") and not torch.cuda.is_available():
        print(
            "\nGPU section skipped: CUDA is not available on this machine (the same code runs there unchanged; "
            "--gpu-device cpu runs it here as a check of the code)."
        )
        return
    from camtrace.embedding import ImageTextEncoder
    from camtrace.embedding.tiny_model import build_base_like_siglip, build_tiny_siglip
    from camtrace.synthetic import person_crops

    def sync() -> None:
        if device.startswith("cuda"):
            torch.cuda.synchronize()

    if args.model:
        model = args.model
    else:
        model = build_tiny_siglip(tmp / "gpu-siglip") if args.tiny else build_base_like_siglip(tmp / "gpu-siglip")
    gflops = vision_gflops(model)
    name = torch.cuda.get_device_name(0) if device.startswith("cuda") else "CPU (a check of the code, not a figure)"
    peak = next((tflops for key, tflops in BF16_PEAK_TFLOPS.items() if key in name), None)
    crops = person_crops(args.gpu_crops, heights=(64, 257), min_width=16, background_max=80)
    print(
        f"\nGPU section on {name}: embedder {gflops:.3g} GFLOP per crop, bf16, SDPA, preprocessing on the device; "
        f"{len(crops)} crops"
    )
    print(f"  {'batch':>5} {'end to end':>11} {'preprocess':>11} {'forward':>11} {'TFLOP/s':>8} {'roofline':>8}")
    for batch in args.gpu_batches:
        enc = ImageTextEncoder(model, args.processor, device=device, batch_size=batch, runtime="torch")
        enc.encode_images(crops[:batch])  # loads and warms up
        sync()
        _, took = timed(enc.encode_images, crops)
        sync()
        vision = enc.vision

        def preprocess(chunk, vision=vision, enc=enc):
            if vision.pixel_transform is not None:
                return vision.pixel_transform(chunk)
            pixels = vision.image_processor(chunk, return_tensors="pt", input_data_format="channels_last")
            return pixels["pixel_values"].to(device=enc.device, dtype=vision.torch_model.dtype)

        chunks = [crops[i : i + batch] for i in range(0, len(crops), batch)]
        started = time.perf_counter()
        pixels = [preprocess(chunk) for chunk in chunks]
        sync()
        pre_s = time.perf_counter() - started
        with torch.inference_mode():
            started = time.perf_counter()
            for tensor in pixels:
                vision.torch_model.model.get_image_features(pixel_values=tensor)
            sync()
            forward_s = time.perf_counter() - started
        forward_rate = len(crops) / forward_s
        tflops = forward_rate * gflops / 1000
        share = f"{100 * tflops / peak:7.1f}%" if peak else "      -"
        print(
            f"  {batch:>5} {len(crops) / took:11.1f} {len(crops) / pre_s:11.1f} {forward_rate:11.1f} {tflops:8.1f} "
            f"{share}   crops/s ({enc.runtime_label})"
        )
        enc.unload()
    print(
        "  end to end = preprocessing, forward, normalising and the copy back, as encode_images runs them; "
        "preprocess and forward are each timed alone"
    )

    from camtrace.synthetic import identity_views

    views, labels = identity_views(args.identities, args.views, seed=1)
    scores = {}
    for precision in ("fp32", "bf16"):
        enc = ImageTextEncoder(model, args.processor, device=device, batch_size=256, gpu_precision=precision)
        vectors = enc.encode_images(views)
        scores[precision] = (vectors, retrieval(vectors, labels))
        enc.unload()
    (fp32_vectors, (top1, mean_ap)), (bf16_vectors, (b_top1, b_map)) = scores["fp32"], scores["bf16"]
    cos = float(np.min(np.sum(fp32_vectors * bf16_vectors, axis=1)))
    print(
        f"  bf16 vs fp32 on the device: min cos {cos:.5f}, Top-1 {b_top1:.1f} vs {top1:.1f} ({b_top1 - top1:+.2f}), "
        f"mAP {b_map:.1f} vs {mean_ap:.1f} ({b_map - mean_ap:+.2f}); CAMTRACE_GPU_PRECISION=fp32 where it loses more "
        "than 0.5"
    )

    from camtrace.detection import PersonDetector
    from camtrace.detection.tiny_model import N_SCALE, build_tiny_yolo

    folder = build_tiny_yolo(tmp / "gpu-yolo", 0, N_SCALE, 640)
    frames = [np.random.default_rng(i).integers(0, 256, (360, 640, 3), np.uint8) for i in range(args.gpu_frames)]
    for batch in (16, 64):
        det = PersonDetector(str(folder), device=device, batch_size=batch, runtime="torch")
        det.detect(frames[:batch])
        sync()
        _, took = timed(det.detect, frames)
        print(f"  detector batch {batch:>3}: {len(frames) / took:8.1f} frames/s ({det.runtime_label} at {det.imgsz} px)")
    print(f"  the embed worker end to end: python benchmarks/bench_embed_worker.py --device {device} --batch-sizes 64 128 256 512")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", help="embedding checkpoint folder (default: random base-size SigLIP)")
    parser.add_argument("--processor", help="processor folder (default: the model's own)")
    parser.add_argument("--tiny", action="store_true", help="the tests' tiny models")
    parser.add_argument("--identities", type=int, default=32)
    parser.add_argument("--views", type=int, default=4)
    parser.add_argument("--batch-size", type=int, default=16, help="embedder batch on the CPU")
    parser.add_argument("--frames", type=int, default=48)
    parser.add_argument("--detector-batch", type=int, default=16)
    parser.add_argument("--skip", nargs="*", default=[], choices=["embed", "detector", "gpu"])
    parser.add_argument("--gpu-device", default="cuda", help="the GPU section's device (cpu: a check of its code)")
    parser.add_argument("--gpu-batches", type=int, nargs="+", default=[64, 128, 256, 512])
    parser.add_argument("--gpu-crops", type=int, default=4096)
    parser.add_argument("--gpu-frames", type=int, default=256)
    args = parser.parse_args()
    print(f"load average at start: {' '.join(f'{v:.2f}' for v in os.getloadavg())} on {os.cpu_count()} cores")
    with tempfile.TemporaryDirectory(prefix="camtrace-bench-") as tmp:
        os.environ.setdefault("YOLO_CONFIG_DIR", str(Path(tmp) / "ultralytics"))
        if "embed" not in args.skip:
            embed_section(args, Path(tmp))
        if "detector" not in args.skip:
            detector_section(args, Path(tmp))
        if "gpu" not in args.skip:
            gpu_section(args, Path(tmp))
    print(f"load average at end: {' '.join(f'{v:.2f}' for v in os.getloadavg())}")


if __name__ == "__main__":
    main()
