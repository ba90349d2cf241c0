"""Live alert latency: from the frame where a watched person first appears on a live camera to the alert on MQTT.

    python benchmarks/bench_live_alert.py                        # default settings, 8 appearances
    python benchmarks/bench_live_alert.py --segment-seconds 60   # CAMTRACE_LIVE_SEGMENT_SECONDS=60

A synthetic live camera (the tests' MJPEG server playing camtrace.synthetic footage: the empty scene, then a
person walking through, again and again) is recorded by the path of `camtrace camera run` (segment files,
each ingested in the process), with the tiny random embedder and ``FigureDetector`` (a random detector finds no
people), a watch entry that matches anyone (a description with the lowest bar; each of the person's tracks
alerts: CAMTRACE_ALERT_REPEAT_SECONDS=0), and an MQTT subscriber on the broker (Mosquitto on 127.0.0.1:1883 by
default). For each appearance: the time from its first frame leaving the camera to the first alert on one of
its tracks arriving on MQTT. Prints p50/p95 and the segment length used; asserts nothing about time.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))  # the tests' live camera, MQTT subscriber and settings helpers


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--appearances", type=int, default=8)
    parser.add_argument("--gap", type=float, default=7.3, help="seconds of empty scene between appearances")
    parser.add_argument("--segment-seconds", type=float, help="CAMTRACE_LIVE_SEGMENT_SECONDS (default: the setting's)")
    parser.add_argument("--mqtt-port", type=int, default=1883)
    args = parser.parse_args()

    from distributed_fixtures import camtrace_env, settings_from
    from live_fixtures import PersonLoop, run_live_camera

    from camtrace.detection.tiny_model import build_tiny_yolo
    from camtrace.embedding.tiny_model import build_tiny_siglip

    with tempfile.TemporaryDirectory(prefix="camtrace-live-") as tmp:
        root = Path(tmp)
        os.environ.setdefault("YOLO_CONFIG_DIR", str(root / "ultralytics"))
        topic = f"camtrace/alerts/bench-{uuid.uuid4().hex[:8]}"
        extra = {"CAMTRACE_LIVE_SEGMENT_SECONDS": str(args.segment_seconds)} if args.segment_seconds else {}
        env = camtrace_env(
            root / "data",
            build_tiny_yolo(root / "tiny-yolo"),
            build_tiny_siglip(root / "tiny-siglip"),
            CAMTRACE_MQTT_URL=f"mqtt://127.0.0.1:{args.mqtt_port}",
            CAMTRACE_MQTT_TOPIC=topic,
            CAMTRACE_ALERT_REPEAT_SECONDS="0",
            CAMTRACE_LOG_LEVEL="WARNING",
            **extra,
        )
        del env["CAMTRACE_SEGMENT_SECONDS"]  # the tests' short segments: here every setting is the default
        settings = settings_from(env)
        loop = PersonLoop(root / "footage", args.gap)
        walk_seconds = len(loop.walk) / 10.0
        found = run_live_camera(env, loop, args.mqtt_port, topic, args.appearances, patience=settings.live_segment_length + 30)
        report = {
            "live_segment_seconds": settings.live_segment_length,
            "sample_fps": settings.sample_fps,
            "appearance_seconds": round(walk_seconds, 1),
            "gap_seconds": args.gap,
            **found.summary(),
            "latencies_s": [round(s, 2) for s in found.seconds],
            "cpus": os.cpu_count(),
        }
        print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
