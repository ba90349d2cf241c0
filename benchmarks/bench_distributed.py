"""End-to-end throughput of the distributed pipeline against local mode, in one run.

    python benchmarks/bench_distributed.py                 # tiny random models (no downloads)
    python benchmarks/bench_distributed.py --cameras 4 --seconds 20
    CAMTRACE_EMBED_MODEL=... CAMTRACE_DETECTOR_MODEL=... python benchmarks/bench_distributed.py --real

Starts a Redis of its own and real `camtrace worker` processes, and ingests the
same synthetic footage three ways, each into a fresh data dir:

- local mode (one process, `ingest_local` camera after camera);
- distributed with 1 CPU worker (ingest+detect) and 1 embed worker;
- distributed with 2 CPU workers and 1 embed worker.

Workers are warmed up (models loaded) on a short job first; the clock runs
from the first submission until every job is done. Prints frames/s and
crops/s of each and the ratio to local mode. It asserts nothing about time.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))  # the tests' helpers for a private Redis and worker processes

from bench_ingest import ingest_footage  # noqa: E402
from distributed_fixtures import RedisServer, Worker, camtrace_env, run_cli, settings_from, wait_jobs  # noqa: E402


def submit(env: dict, path: Path, camera: str, start_ts: float) -> str:
    start = datetime.fromtimestamp(start_ts, tz=UTC).isoformat()
    proc = run_cli(env, "ingest", str(path), "--camera", camera, "--start", start)
    if proc.returncode != 0:
        raise SystemExit(f"submitting {path} failed:\n{proc.stderr}")
    return proc.stdout.split()[-1]


def run_local(env: dict, footage) -> tuple[int, int, float]:
    from camtrace.services import Services

    services = Services(settings_from(env))
    try:
        return ingest_footage(services, footage)
    finally:
        services.close()


def run_distributed(env: dict, footage, warmup, cpu_workers: int, logs: Path) -> tuple[int, int, float]:
    workers = [Worker("ingest,detect", env, logs / f"cpu-{i}.log", "--concurrency", "1") for i in range(cpu_workers)]
    workers.append(Worker("embed", env, logs / "embed.log"))
    try:
        # Warm-up: every CPU worker and the embed worker load their models.
        warm_jobs = [submit(env, path, f"warm-{camera}", warmup.start_ts[camera]) for camera, path in warmup.videos.items()]
        wait_jobs(env, warm_jobs, timeout=1800, interval=0.1)
        started = time.perf_counter()
        job_ids = [submit(env, path, camera, footage.start_ts[camera]) for camera, path in footage.videos.items()]
        jobs = wait_jobs(env, job_ids, timeout=1800, interval=0.1)
        elapsed = time.perf_counter() - started
    finally:
        for worker in workers:
            worker.stop()
    failed = [job.error for job in jobs if job.status != "done" or job.segments_failed]
    if failed:
        raise SystemExit(f"benchmark jobs failed: {failed}")
    return sum(job.frames for job in jobs), sum(job.crops_indexed for job in jobs), elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cameras", type=int, default=4)
    parser.add_argument("--seconds", type=float, default=16.0)
    parser.add_argument("--imgsz", type=int, default=640, help="detector input size (the default's size)")
    parser.add_argument("--real", action="store_true", help="use the models named by CAMTRACE_* settings")
    args = parser.parse_args()

    import os

    from camtrace.synthetic import generate_footage

    work = Path(tempfile.mkdtemp(prefix="camtrace-bench-distributed-"))
    os.environ.setdefault("YOLO_CONFIG_DIR", str(work / "ultralytics"))
    os.environ.setdefault("YOLO_OFFLINE", "1")
    if args.real:
        yolo = Path(os.environ["CAMTRACE_DETECTOR_MODEL"])
        siglip = Path(os.environ["CAMTRACE_EMBED_MODEL"])
    else:
        from camtrace.detection.tiny_model import build_tiny_yolo
        from camtrace.embedding.tiny_model import build_tiny_siglip

        yolo = build_tiny_yolo(work / "tiny-yolo")
        siglip = build_tiny_siglip(work / "tiny-siglip")
    footage = generate_footage(work / "footage", cameras=args.cameras, seconds=args.seconds, seed=3)
    warmup = generate_footage(work / "warmup", cameras=2, seconds=4.0, seed=4)  # one video per CPU worker

    redis = RedisServer(work / "redis")
    redis.start()
    results: dict[str, tuple[int, int, float]] = {}
    try:
        sizes = {"CAMTRACE_DETECTOR_IMGSZ": str(args.imgsz)}
        results["local mode"] = run_local(camtrace_env(work / "local", yolo, siglip, **sizes), footage)
        for cpu_workers in (1, 2):
            env = camtrace_env(
                work / f"dist{cpu_workers}",
                yolo,
                siglip,
                redis.url,
                **sizes,
                CAMTRACE_VISIBILITY_TIMEOUT="600",
                CAMTRACE_LOG_LEVEL="WARNING",
            )
            label = f"distributed, {cpu_workers} CPU worker{'s' if cpu_workers > 1 else ''}"
            results[label] = run_distributed(env, footage, warmup, cpu_workers, work)
    finally:
        redis.stop()

    print(
        f"{args.cameras} cameras x {args.seconds:g} s synthetic footage, models: {'real' if args.real else 'tiny'}, "
        f"detector input {args.imgsz} px, {os.cpu_count()} CPU cores"
    )
    local_fps = results["local mode"][0] / results["local mode"][2]
    for label, (frames, crops, elapsed) in results.items():
        fps = frames / elapsed
        print(
            f"{label:<26} {frames} frames, {crops} crops in {elapsed:6.2f} s: {fps:7.1f} frames/s "
            f"{crops / elapsed:7.1f} crops/s  ({fps / local_fps:.2f}x local)"
        )


if __name__ == "__main__":
    main()
