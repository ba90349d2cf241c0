"""Re-index throughput of a promotion: crops/s re-embedded from the crop store into a new index.

    python benchmarks/bench_reindex.py --cameras 3 --seconds 20     # tiny random models (no downloads)

Ingests synthetic footage with model A (local mode), registers a second model
B and promotes it (forced), then measures in the same run the baseline: B
encoding the same crops already decoded in memory. The ratio shows what the
re-index adds around the encoder (reading and decoding JPEGs, SQL paging,
upserts, the switch). It asserts nothing about time.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cameras", type=int, default=3)
    parser.add_argument("--seconds", type=float, default=20.0)
    args = parser.parse_args()

    work = Path(tempfile.mkdtemp(prefix="camtrace-bench-reindex-"))
    os.environ.setdefault("YOLO_CONFIG_DIR", str(work / "ultralytics"))
    os.environ.setdefault("YOLO_OFFLINE", "1")
    from camtrace.detection.tiny_model import build_tiny_yolo
    from camtrace.embedding.tiny_model import build_tiny_siglip

    os.environ.update(
        CAMTRACE_DATA_DIR=str(work / "data"),
        CAMTRACE_DETECTOR_MODEL=str(build_tiny_yolo(work / "tiny-yolo")),
        CAMTRACE_EMBED_MODEL=str(build_tiny_siglip(work / "model-a", seed=0)),
        CAMTRACE_DETECTOR_CONF="0.25",
        CAMTRACE_DETECTOR_MAX_DET="6",
        CAMTRACE_MODEL_REFRESH_SECONDS="0",
    )
    model_b = build_tiny_siglip(work / "model-b", seed=1)

    import cv2

    from camtrace.services import Services
    from camtrace.settings import load_settings
    from camtrace.synthetic import generate_footage
    from camtrace.training.promotion import promote
    from camtrace.workers.local import ingest_local

    services = Services(load_settings())
    footage = generate_footage(work / "footage", cameras=args.cameras, seconds=args.seconds, seed=1)
    for camera_id, path in footage.videos.items():
        ingest_local(services, str(path), camera_id, footage.start_ts[camera_id], progress=False)
    crops = services.db.counts()["detections"]

    b = services.registry.register(model_b)
    encoder_b = services.encoder_for(services.registry.get(b))
    encoder_b.load()
    started = time.perf_counter()
    result = promote(services, b, force=True, progress=True)
    reindex_seconds = time.perf_counter() - started

    images = [
        cv2.cvtColor(cv2.imread(str(services.crops.path(row.crop_key))), cv2.COLOR_BGR2RGB)
        for page in services.db.detection_pages()
        for row in page
    ]
    started = time.perf_counter()
    for start in range(0, len(images), services.settings.reindex_batch_size):
        encoder_b.encode_images(images[start : start + services.settings.reindex_batch_size])
    encode_seconds = time.perf_counter() - started

    print(f"{crops} crops; index of model {b}: {result.reindex.points} points")
    print(f"promotion (re-index + switch): {reindex_seconds:.2f} s, {crops / reindex_seconds:.1f} crops/s")
    print(f"encoder alone on decoded crops: {encode_seconds:.2f} s, {crops / encode_seconds:.1f} crops/s")
    print(f"promotion / encoder alone: {encode_seconds / reindex_seconds:.2f} of the encoder's throughput")
    services.close()


if __name__ == "__main__":
    main()
