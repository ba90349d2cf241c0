"""Text search over HTTP: latency (p50/p95) and requests/s with 1 and 8 concurrent clients.

For each index size (random unit vectors grouped in tracks, upserted straight
into the index, with their SQL track rows) the real app (``create_app``:
authentication by Bearer token, the search stage, one audit row per search)
is served by uvicorn in a thread and loaded by clients in another process.
Three backends on the same data, in one run:

- ``edge/open-per-call``: Qdrant Edge opening the shard for every search (the
  behaviour before CAMTRACE_INDEX_KEEP_OPEN_SECONDS; the baseline),
- ``edge/kept-open``: the query service keeps the shard loaded between searches,
- ``server-path``: the server backend's client code (``ServerIndex`` on
  qdrant-client's in-memory mode).

The text encoder is a random SigLIP text tower with 768-d output but a single
layer (``--encoder small``), or the full siglip2-base sizes (``--encoder base``):
random weights either way, nothing is downloaded.

    .venv/bin/python benchmarks/bench_search_http.py                       # 10k and 100k points
    .venv/bin/python benchmarks/bench_search_http.py --points 5000 --seconds 5
"""

from __future__ import annotations

import argparse
import multiprocessing
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_index import make_data  # noqa: E402

QUERIES = [
    "man, grey hoodie, blue jeans",
    "woman, red coat, black backpack",
    "person with a yellow umbrella",
    "child, green jacket",
    "man, white shirt, dark trousers, briefcase",
    "woman, blue dress",
    "black cap, orange vest",
]


def load(url: str, token: str, clients: int, seconds: float, queue) -> None:
    """Runs in a child process: ``clients`` threads search back to back for ``seconds`` (each at least twice);
    reports every latency and the wall time."""
    import httpx

    def worker(offset: int) -> list[float]:
        latencies: list[float] = []
        deadline = time.perf_counter() + seconds
        with httpx.Client(base_url=url, headers={"Authorization": f"Bearer {token}"}, timeout=300) as client:
            i = offset
            while len(latencies) < 2 or time.perf_counter() < deadline:
                i += 1
                started = time.perf_counter()
                response = client.post("/api/search/text", json={"text": QUERIES[i % len(QUERIES)], "limit": 20})
                latencies.append(time.perf_counter() - started)
                assert response.status_code == 200, response.text
        return latencies

    started = time.perf_counter()
    with ThreadPoolExecutor(clients) as pool:
        latencies = [value for part in pool.map(worker, range(clients)) for value in part]
    queue.put((latencies, time.perf_counter() - started))


def run_load(url: str, token: str, clients: int, seconds: float) -> tuple[list[float], float]:
    context = multiprocessing.get_context("spawn")
    queue = context.Queue()
    process = context.Process(target=load, args=(url, token, clients, seconds, queue))
    process.start()
    result = queue.get(timeout=1800)
    process.join()
    return result


def build_encoder(folder: Path, kind: str) -> Path:
    from camtrace.embedding.tiny_model import build_base_like_siglip, build_random_siglip

    if kind == "base":
        return build_base_like_siglip(folder)
    return build_random_siglip(
        folder, hidden_size=768, num_layers=1, num_heads=12, intermediate_size=768, image_size=32, patch_size=8
    )


def free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def serve(app, port: int):
    import uvicorn

    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    while not server.started:
        time.sleep(0.05)
    return server, thread


def bench_size(n: int, args, model_dir: Path, rows: list) -> None:
    from qdrant_client import QdrantClient

    from camtrace.api.app import create_app
    from camtrace.services import EmbeddingModel, Services
    from camtrace.settings import Settings
    from camtrace.storage.access import AccessStore
    from camtrace.storage.server import ServerIndex

    data_dir = Path(tempfile.mkdtemp(prefix=f"bench-http-{n}-"))
    base = dict(data_dir=data_dir, embed_model=str(model_dir), device="cpu", log_level="WARNING")
    services = Services(Settings(**base, index_keep_open_seconds=0))
    encoder = services.encoder
    encoder.load()
    data = make_data(n, encoder.dim, cameras=8, hours=24, per_track=4, seed=1)
    started = time.perf_counter()
    with services.index.session():
        for i in range(0, n, 2000):
            services.index.upsert(data.points[i : i + 2000])
    tracks = {}
    for point in data.points:
        p = point.payload
        row = tracks.setdefault(
            p["track_id"],
            {
                "id": p["track_id"],
                "camera_id": p["camera_id"],
                "video_id": p["video_id"],
                "segment_index": 0,
                "ts_start": p["ts"],
                "ts_end": p["ts"],
                "n_boxes": 0,
                "best_crop_key": p["crop_key"],
            },
        )
        row["ts_end"] = max(row["ts_end"], p["ts"])
        row["n_boxes"] += 1
    services.db.upsert_tracks(list(tracks.values()))
    token = AccessStore(services.db).add_user("bench", "operator").token
    services.close()
    print(f"{n} points ({len(tracks)} tracks, {encoder.dim}-d) indexed in {time.perf_counter() - started:.1f} s", flush=True)

    server_index = None
    if "server-path" in args.backends:
        server_index = ServerIndex(QdrantClient(location=":memory:"), encoder.model_version, encoder.dim, location=":memory:")
        server_index.ensure()
        started = time.perf_counter()
        for i in range(0, n, 2000):
            server_index.upsert(data.points[i : i + 2000])
        print(f"  in-memory qdrant-client loaded in {time.perf_counter() - started:.1f} s", flush=True)

    for backend in args.backends:
        keep_open = 0.0 if backend == "edge/open-per-call" else 2.0
        app = create_app(Settings(**base, index_keep_open_seconds=keep_open))
        if backend == "server-path":
            services = app.state.services  # the model built from settings, with its index swapped for this run
            services.pin(EmbeddingModel(services.settings, services.model().encoder, index=server_index))
        port = free_port()
        server, thread = serve(app, port)
        try:
            run_load(f"http://127.0.0.1:{port}", token, 1, 1.0)  # warm-up: models loaded, shard opened
            for clients in args.clients:
                latencies, wall = run_load(f"http://127.0.0.1:{port}", token, clients, args.seconds)
                ms = np.array(latencies) * 1000
                rows.append(
                    (
                        n,
                        backend,
                        clients,
                        float(np.percentile(ms, 50)),
                        float(np.percentile(ms, 95)),
                        len(latencies) / wall,
                        len(latencies),
                    )
                )
                print("  " + line(rows[-1], rows), flush=True)
        finally:
            server.should_exit = True
            thread.join(timeout=30)
            if backend != "server-path":
                app.state.services.close()


def baseline(row, rows):
    for other in rows:
        if other[0] == row[0] and other[2] == row[2] and other[1] == "edge/open-per-call":
            return other
    return None


def line(row, rows) -> str:
    n, backend, clients, p50, p95, rps, count = row
    base = baseline(row, rows)
    ratio = f"{rps / base[5]:6.2f}x" if base else "     -"
    return f"{n:>7} {backend:<20} {clients:>7} {count:>8} {p50:>8.1f} {p95:>8.1f} {rps:>8.2f} {ratio}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--points", default="10000,100000", help="Comma-separated index sizes.")
    parser.add_argument("--clients", default="1,8", help="Comma-separated numbers of concurrent clients.")
    parser.add_argument("--seconds", type=float, default=20.0, help="Seconds per measurement (each client: 2 searches at least).")
    parser.add_argument("--encoder", choices=["small", "base"], default="small")
    parser.add_argument("--backends", default="edge/open-per-call,edge/kept-open,server-path")
    args = parser.parse_args()
    args.clients = [int(c) for c in args.clients.split(",")]
    args.backends = args.backends.split(",")
    import os

    os.environ.setdefault("YOLO_OFFLINE", "1")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    model_dir = build_encoder(Path(tempfile.mkdtemp(prefix="bench-http-model-")), args.encoder)
    rows: list = []
    for n in (int(p) for p in args.points.split(",")):
        bench_size(n, args, model_dir, rows)
    print(
        f"\ntext search over HTTP, encoder: random SigLIP ({args.encoder}), {args.seconds:.0f} s per row, "
        "ratio: requests/s against edge/open-per-call at the same size and clients"
    )
    print(f"{'points':>7} {'backend':<20} {'clients':>7} {'searches':>8} {'p50 ms':>8} {'p95 ms':>8} {'req/s':>8} {'ratio':>7}")
    for row in rows:
        print(line(row, rows))


if __name__ == "__main__":
    main()
