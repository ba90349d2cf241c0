"""End-to-end crops/s of one embed worker draining a full queue: broker, batch gathering, JPEG decoding,
embedding, Qdrant and SQL writes, on the CPU here or a GPU with ``--device cuda``.

    python benchmarks/bench_embed_worker.py                        # siglip2-base-sized SigLIP, random weights, CPU
    python benchmarks/bench_embed_worker.py --device cuda --batch-sizes 64 128 256 512
    python benchmarks/bench_embed_worker.py --tiny                 # the tests' tiny models: checks the plumbing

Starts a Redis of its own and real `camtrace worker` processes: one CPU worker (ingest, detect) and one embed
worker (`camtrace worker --queues embed --device ...`). A warm-up job loads both workers' models. The embed
worker then stops consuming (Celery remote control) while the CPU worker detects the synthetic footage, so every
crop's embed message waits in the queue (every crop of every track is kept, for a long queue); the clock runs
from the moment it consumes again until every job is done. Prints crops/s per
batch size (CAMTRACE_EMBED_BATCH_SIZE) next to the encoder alone on the same crops in this process, so the
share lost to the worker's other work shows in the same run.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))  # the tests' helpers for a private Redis and worker processes

from bench_distributed import submit  # noqa: E402
from distributed_fixtures import RedisServer, Worker, camtrace_env, settings_from, wait_for, wait_jobs  # noqa: E402


def queue_length(url: str, queue: str) -> int:
    import redis

    return int(redis.Redis.from_url(url).llen(queue))


def detected(env: dict, job_ids: list[str]) -> bool:
    """Every segment of the jobs has sent its embed parts (or needed none)."""
    from sqlalchemy import select

    from camtrace.storage import Database
    from camtrace.storage.sql import Segment

    db = Database(settings_from(env).sql_url)
    try:
        with db.engine.connect() as conn:
            rows = conn.execute(select(Segment.status, Segment.parts_total).where(Segment.job_id.in_(job_ids))).all()
    finally:
        db.close()
    return bool(rows) and all(status != "pending" or parts is not None for status, parts in rows)


def measure(env: dict, redis_url: str, footage, warmup, logs: Path, device: str) -> tuple[int, int, float]:
    """Embed messages, crops and seconds of one embed worker draining the queue of the footage's crops.

    Both workers first run a warm-up job (models loaded). The embed worker then stops consuming (Celery's
    remote control) while the CPU worker detects the footage; the clock starts when it consumes again.
    """
    from camtrace.workers.celery_app import make_celery

    control = make_celery(settings_from(env)).control
    batch = env["CAMTRACE_EMBED_BATCH_SIZE"]
    detect = Worker("ingest,detect", env, logs / f"detect-{batch}.log")
    embed = Worker("embed", env, logs / f"embed-{batch}.log", "--device", device, "--name", f"embed-{batch}@bench")
    try:
        warm = [submit(env, path, f"warm-{camera}", warmup.start_ts[camera]) for camera, path in warmup.videos.items()]
        wait_jobs(env, warm, timeout=1800, interval=0.2)
        control.cancel_consumer("embed", destination=[f"embed-{batch}@bench"], reply=True, timeout=10)
        job_ids = [submit(env, path, camera, footage.start_ts[camera]) for camera, path in footage.videos.items()]
        wait_for(
            lambda: queue_length(redis_url, "ingest") == 0 and queue_length(redis_url, "detect") == 0 and detected(env, job_ids),
            1800,
            "detection of every segment",
            interval=0.5,
        )
        waiting = queue_length(redis_url, "embed")
        started = time.perf_counter()
        control.add_consumer("embed", destination=[f"embed-{batch}@bench"], reply=True, timeout=10)
        jobs = wait_jobs(env, job_ids, timeout=3600, interval=0.05)
        elapsed = time.perf_counter() - started
    finally:
        embed.stop()
        detect.stop()
    failed = [job.error for job in jobs if job.status != "done" or job.segments_failed]
    if failed:
        raise SystemExit(f"benchmark jobs failed: {failed}")
    return waiting, sum(job.crops_indexed for job in jobs), elapsed


def encoder_alone(env: dict, batch_size: int, device: str) -> float:
    """crops/s of the encoder on the crops the worker embedded, in this process (decoded beforehand)."""
    import cv2

    from camtrace.embedding import ImageTextEncoder

    settings = settings_from(env)
    files = sorted(Path(settings.crops_dir).rglob("*.jpg"))[:2048]
    crops = [cv2.cvtColor(cv2.imread(str(path)), cv2.COLOR_BGR2RGB) for path in files]
    encoder = ImageTextEncoder.from_settings(settings.model_copy(update={"embed_batch_size": batch_size, "device": device}))
    encoder.encode_images(crops[:batch_size])  # loads, warms up
    started = time.perf_counter()
    encoder.encode_images(crops)
    return len(crops) / (time.perf_counter() - started)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cameras", type=int, default=2)
    parser.add_argument("--seconds", type=float, default=12.0)
    parser.add_argument("--device", default="cpu", help="the embed worker's device: cpu, cuda or cuda:N")
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[64])
    parser.add_argument("--tiny", action="store_true", help="the tests' tiny models")
    parser.add_argument("--embed-model", help="a checkpoint folder (default: random siglip2-base sizes)")
    args = parser.parse_args()
    print(f"load average at start: {' '.join(f'{v:.2f}' for v in os.getloadavg())} on {os.cpu_count()} cores")

    from camtrace.detection.tiny_model import build_tiny_yolo
    from camtrace.embedding.tiny_model import build_base_like_siglip, build_tiny_siglip
    from camtrace.synthetic import generate_footage

    work = Path(tempfile.mkdtemp(prefix="camtrace-bench-embed-worker-"))
    os.environ.setdefault("YOLO_CONFIG_DIR", str(work / "ultralytics"))
    os.environ.setdefault("YOLO_OFFLINE", "1")
    yolo = build_tiny_yolo(work / "tiny-yolo")
    if args.embed_model:
        siglip, label = Path(args.embed_model), args.embed_model
    elif args.tiny:
        siglip, label = build_tiny_siglip(work / "tiny-siglip"), "tiny random SigLIP"
    else:
        siglip, label = build_base_like_siglip(work / "siglip"), "random SigLIP with siglip2-base sizes"
    footage = generate_footage(work / "footage", cameras=args.cameras, seconds=args.seconds, seed=3)
    warmup = generate_footage(work / "warmup", cameras=1, seconds=4.0, seed=4)
    (work / "exports").mkdir()
    redis = RedisServer(work / "redis")
    redis.start()
    print(
        f"embedder: {label}; {args.cameras} cameras x {args.seconds:g} s, every crop of every track kept; "
        f"embed worker on {args.device}"
    )
    try:
        for batch in args.batch_sizes:
            env = camtrace_env(
                work / f"data-{batch}",
                yolo,
                siglip,
                redis.url,
                CAMTRACE_VISIBILITY_TIMEOUT="3600",
                CAMTRACE_LOG_LEVEL="WARNING",
                CAMTRACE_EMBED_BATCH_SIZE=str(batch),
                CAMTRACE_CROPS_PER_TRACK="100000",
                CAMTRACE_MIN_CROP_SHARPNESS="0",
                CAMTRACE_EMBED_GATHER_SECONDS="0.5",
            )
            data = work / f"data-{batch}"
            data.mkdir()
            (data / "exports").symlink_to(work / "exports", target_is_directory=True)  # one export for all sizes
            waiting, crops, elapsed = measure(env, redis.url, footage, warmup, work, args.device)
            alone = encoder_alone(env, batch, args.device)
            rate = crops / elapsed
            print(
                f"  batch {batch:>4}: {waiting} messages, {crops} crops in {elapsed:6.2f} s: {rate:8.1f} crops/s "
                f"end to end; encoder alone {alone:8.1f} crops/s (worker / encoder {rate / alone:.2f})"
            )
    finally:
        redis.stop()
    print(f"load average at end: {' '.join(f'{v:.2f}' for v in os.getloadavg())}")


if __name__ == "__main__":
    main()
