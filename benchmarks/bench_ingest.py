"""Ingest throughput on synthetic footage: frames/s and crops/s of the local pipeline.

    python benchmarks/bench_ingest.py                # tiny random models (no downloads)
    CAMTRACE_EMBED_MODEL=... CAMTRACE_DETECTOR_MODEL=... python benchmarks/bench_ingest.py --real

Prints figures for the whole pipeline and for detection alone, so the share of
each stage is visible in one run. It asserts nothing about time.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path


def ingest_footage(services, footage) -> tuple[int, int, float]:
    """Ingest every camera of ``footage`` in local mode, models loaded first; (frames, crops, seconds)."""
    from camtrace.workers.local import ingest_local

    services.detector.load()
    services.encoder.load()
    frames = crops = 0
    started = time.perf_counter()
    for camera_id, path in footage.videos.items():
        summary = ingest_local(services, str(path), camera_id, footage.start_ts[camera_id], progress=False)
        frames += summary.frames
        crops += summary.crops
    return frames, crops, time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cameras", type=int, default=2)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--real", action="store_true", help="use the models named by CAMTRACE_* settings")
    args = parser.parse_args()

    work = Path(tempfile.mkdtemp(prefix="camtrace-bench-ingest-"))
    os.environ.setdefault("CAMTRACE_DATA_DIR", str(work / "data"))
    os.environ.setdefault("YOLO_CONFIG_DIR", str(work / "ultralytics"))
    os.environ.setdefault("YOLO_OFFLINE", "1")
    os.environ.setdefault("CAMTRACE_SAMPLE_FPS", "5")
    if not args.real:
        from camtrace.detection.tiny_model import build_tiny_yolo
        from camtrace.embedding.tiny_model import build_tiny_siglip

        os.environ["CAMTRACE_DETECTOR_MODEL"] = str(build_tiny_yolo(work / "tiny-yolo"))
        os.environ["CAMTRACE_EMBED_MODEL"] = str(build_tiny_siglip(work / "tiny-siglip"))
        os.environ.setdefault("CAMTRACE_DETECTOR_CONF", "0.25")
        os.environ.setdefault("CAMTRACE_DETECTOR_MAX_DET", "6")

    from camtrace.services import Services
    from camtrace.settings import load_settings
    from camtrace.synthetic import generate_footage

    settings = load_settings()
    services = Services(settings)
    footage = generate_footage(work / "footage", cameras=args.cameras, seconds=args.seconds, seed=1)
    frames, crops, elapsed = ingest_footage(services, footage)

    # Detection alone on the same frames, to show what the rest of the pipeline costs.
    from camtrace.detection import VideoSource

    sampled = []
    for path in footage.videos.values():
        with VideoSource(str(path), start_ts=0.0) as video:
            sampled.extend(frame.image for frame in video.frames(settings.sample_fps))
    started = time.perf_counter()
    services.detector.detect(sampled)
    detect_elapsed = time.perf_counter() - started
    services.close()

    print(f"device {settings.torch_device()}  detector {settings.detector_model}  embedder {settings.embed_model}")
    print(
        f"pipeline   {frames} frames, {crops} crops in {elapsed:.2f} s: {frames / elapsed:.1f} frames/s, "
        f"{crops / elapsed:.1f} crops/s"
    )
    print(f"detection  {len(sampled)} frames in {detect_elapsed:.2f} s: {len(sampled) / detect_elapsed:.1f} frames/s")
    print(f"ratio pipeline/detection-only frames/s: {(frames / elapsed) / (len(sampled) / detect_elapsed):.2f}")


if __name__ == "__main__":
    main()
