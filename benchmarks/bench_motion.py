"""Ingest with and without motion gating on footage with idle stretches, and the headline figure: how many
5 fps cameras one worker keeps up with on the default settings.

    python benchmarks/bench_motion.py            # yolo11n-sized YOLO and siglip2-base-sized SigLIP, random weights
    python benchmarks/bench_motion.py --tiny     # the tests' tiny models: checks the plumbing
    python benchmarks/bench_motion.py --embed-model /models/reid --detector-model /models/yolo11n.pt --boxes network

Real ingests through the local pipeline (decode, sample, detect, track, select, JPEG, embed, write Qdrant Edge,
SQLite and the crop store) with the default settings: runtime auto (ONNX Runtime on a CPU, int8 embedder), the
detector at its weights' own input size (640 px here), motion gating on or off. Random detector weights find
no people, so by default (``--boxes figures``) the network runs on every frame the pipeline gives it (its cost
is paid and measured) while the boxes come from ``camtrace.synthetic.FigureDetector``, which finds the drawn
figures: tracks, crops and idle stretches then behave as they would with a trained detector. ``--boxes network``
keeps the network's own boxes (trained weights). Cameras kept up with = sampled frames processed per second /
CAMTRACE_SAMPLE_FPS.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

os.environ.setdefault("YOLO_OFFLINE", "1")
os.environ.setdefault("YOLO_AUTOINSTALL", "False")
os.environ.setdefault("YOLO_VERBOSE", "False")


class NetworkCostFigureBoxes:
    """Runs the real detector on every frame it is given (cost), answers with the synthetic figures' boxes."""

    def __init__(self, detector) -> None:
        self.detector = detector
        self.figures = None
        self.frames = 0

    @property
    def batch_size(self) -> int:
        return self.detector.batch_size

    def load(self) -> None:
        self.detector.load()

    def detect(self, images):
        self.detector.detect(images)
        self.frames += len(images)
        return self.figures.detect(images)


def run_ingest(settings, footage, boxes: str) -> dict:
    from camtrace.services import Services
    from camtrace.synthetic import FigureDetector
    from camtrace.workers.local import ingest_local

    services = Services(settings)
    try:
        stand_in = NetworkCostFigureBoxes(services.detector) if boxes == "figures" else None
        if stand_in is not None:
            services.__dict__["detector"] = stand_in
        services.detector.load()
        services.encoder.load()
        totals = {"frames": 0, "crops": 0, "tracks": 0}
        started = time.perf_counter()
        for camera_id, path in footage.videos.items():
            if stand_in is not None:
                stand_in.figures = FigureDetector(footage.background(camera_id))
            summary = ingest_local(services, str(path), camera_id, footage.start_ts[camera_id], progress=False)
            totals["frames"] += summary.frames
            totals["crops"] += summary.crops
            totals["tracks"] += summary.tracks
        totals["seconds"] = time.perf_counter() - started
        totals["detected"] = stand_in.frames if stand_in is not None else None
        network = stand_in.detector if stand_in is not None else services.detector
        totals["runtime"] = f"detector {network.runtime_label} at {network.imgsz} px, embedder {services.encoder.runtime_label}"
        return totals
    finally:
        services.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cameras", type=int, default=4)
    parser.add_argument("--seconds", type=float, default=12.0, help="seconds of walks per camera")
    parser.add_argument("--idle", type=float, default=6.0, help="seconds of each empty stretch (3 per camera)")
    parser.add_argument("--fps", type=float, default=10.0, help="the cameras' frame rate (5 fps are sampled)")
    parser.add_argument("--size", default="640x360", help="the cameras' frame size, WxH (1280x720: a main stream)")
    parser.add_argument("--tiny", action="store_true")
    parser.add_argument("--embed-model")
    parser.add_argument("--detector-model")
    parser.add_argument("--boxes", choices=["figures", "network"], default="figures")
    parser.add_argument("--device", default="auto", help="auto (CUDA when present: the GPU path end to end), cpu, cuda:N")
    parser.add_argument(
        "--compare-tracker",
        default="bytetrack.yaml",
        help="also run the gated ingest with this tracker, against the default (empty: skip)",
    )
    args = parser.parse_args()
    print(f"load average at start: {' '.join(f'{v:.2f}' for v in os.getloadavg())} on {os.cpu_count()} cores")

    from camtrace.detection.tiny_model import N_SCALE, build_tiny_yolo
    from camtrace.embedding.tiny_model import build_base_like_siglip, build_tiny_siglip
    from camtrace.settings import Settings
    from camtrace.synthetic import generate_footage

    with tempfile.TemporaryDirectory(prefix="camtrace-bench-motion-") as tmp_name:
        tmp = Path(tmp_name)
        os.environ.setdefault("YOLO_CONFIG_DIR", str(tmp / "ultralytics"))
        if args.tiny:
            embed, detector = build_tiny_siglip(tmp / "siglip"), build_tiny_yolo(tmp / "yolo")
        else:
            embed = args.embed_model or build_base_like_siglip(tmp / "siglip")
            detector = args.detector_model or build_tiny_yolo(tmp / "yolo", 0, N_SCALE, 640)
        footage = generate_footage(
            tmp / "footage",
            cameras=args.cameras,
            identities=2 * args.cameras,
            seconds=args.seconds,
            seed=3,
            idle_seconds=args.idle,
            fps=args.fps,
            size=tuple(int(v) for v in args.size.lower().split("x")),
        )
        video_s = footage.n_frames / footage.fps
        print(
            f"footage: {args.cameras} cameras x {video_s:.0f} s ({3 * args.idle:.0f} s of it empty scene), "
            f"{footage.fps:.0f} fps, {args.size}; boxes from {args.boxes}"
        )
        results = {}
        for gating in (False, True):
            data = tmp / f"data-{gating}"
            data.mkdir()
            if gating:  # the exports built by the first run, not built again
                (data / "exports").symlink_to(tmp / "data-False" / "exports")
            settings = Settings(
                data_dir=data, embed_model=str(embed), detector_model=str(detector), device=args.device, motion_gating=gating
            )
            results[gating] = run_ingest(settings, footage, args.boxes)
            r = results[gating]
            rate = r["frames"] / r["seconds"]
            detected = f", detector on {r['detected']} frames" if r["detected"] is not None else ""
            print(
                f"  gating {'on ' if gating else 'off'}: {r['frames']} frames, {r['tracks']} tracks, {r['crops']} crops "
                f"in {r['seconds']:.1f} s: {rate:.1f} frames/s, {r['crops'] / r['seconds']:.1f} crops/s end to end"
                f"{detected} ({settings.torch_device()}: {r['runtime']})"
            )
        off, on = results[False], results[True]
        speedup = (on["frames"] / on["seconds"]) / (off["frames"] / off["seconds"])
        print(
            f"  gating on / off: {speedup:.2f}x frames/s; tracks {on['tracks']} vs {off['tracks']}, "
            f"crops {on['crops']} vs {off['crops']}"
        )
        sample_fps = Settings().sample_fps
        for gating, r in results.items():
            cameras = r["frames"] / r["seconds"] / sample_fps
            print(
                f"  cameras at {sample_fps:g} fps kept up with (gating {'on' if gating else 'off'}, "
                f"{Settings().tracker} tracker): {cameras:.1f}"
            )
        if args.compare_tracker:
            data = tmp / "data-compare"
            data.mkdir()
            (data / "exports").symlink_to(tmp / "data-False" / "exports")
            settings = Settings(
                data_dir=data,
                embed_model=str(embed),
                detector_model=str(detector),
                device=args.device,
                tracker=args.compare_tracker,
            )
            other = run_ingest(settings, footage, args.boxes)
            print(
                f"  {args.compare_tracker} (gating on): {other['frames'] / other['seconds']:.1f} frames/s, "
                f"{other['tracks']} tracks: the default tracker runs at "
                f"{(on['frames'] / on['seconds']) / (other['frames'] / other['seconds']):.2f}x its frame rate"
            )
    print(f"load average at end: {' '.join(f'{v:.2f}' for v in os.getloadavg())}")


if __name__ == "__main__":
    main()
